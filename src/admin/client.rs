//! The CLI's way to call a running node's control API, over the shared
//! HTTP client (`http_client.rs`): one request per call, a JSON reply, or
//! for a streaming method one JSON record per line until the server closes.

use std::time::Duration;

use serde_json::Value;

use crate::http_client::{self, Endpoint, HttpError};

/// Why a call failed before the API answered with JSON.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("control API call failed (is `echorelay serve` running?)")]
    Http(#[from] HttpError),
    #[error("control API sent a malformed reply: {0}")]
    Malformed(String),
    /// The API answered with an error status and `{"error": ...}`.
    #[error("{1} (HTTP {0})")]
    Status(u16, String),
}

/// Largest JSON reply read from the API.
const MAX_REPLY: usize = 64 * 1024 * 1024;
/// Longest line of a streamed reply.
const MAX_LINE: usize = 1024 * 1024;

/// A control API endpoint and its token.
pub struct AdminClient {
    endpoint: Endpoint,
    auth: String,
    timeout: Duration,
}

impl AdminClient {
    /// `url` is `http://HOST:PORT` (the scheme may be left out); every
    /// call must be answered within `timeout`.
    pub fn new(url: &str, token: &str, timeout: Duration) -> Result<AdminClient, AdminClientError> {
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        Ok(AdminClient {
            endpoint: Endpoint::parse(&url)?,
            auth: format!("Bearer {token}"),
            timeout,
        })
    }

    /// Calls `method` with `args` and returns the JSON reply.
    pub async fn call(&self, method: &str, args: &Value) -> Result<Value, AdminClientError> {
        let body = self.request(method, args).await?.bytes(MAX_REPLY).await?;
        serde_json::from_slice(&body).map_err(|e| AdminClientError::Malformed(e.to_string()))
    }

    /// Calls a streaming method and hands each JSON line to `on_record`.
    /// A stream may be quiet for long (a big transfer), so only its head
    /// has to arrive within the timeout.
    pub async fn stream(
        &self,
        method: &str,
        args: &Value,
        mut on_record: impl FnMut(&Value),
    ) -> Result<(), AdminClientError> {
        let mut reply = self.request(method, args).await?;
        let mut pending = Vec::new();
        while let Some(chunk) = reply.chunk().await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                record_of(&line, &mut on_record)?;
            }
            if pending.len() > MAX_LINE {
                return Err(AdminClientError::Malformed(format!(
                    "a streamed line longer than {MAX_LINE} bytes"
                )));
            }
        }
        record_of(&pending, &mut on_record)
    }

    /// Sends the request; an error status becomes [`AdminClientError::Status`].
    async fn request(
        &self,
        method: &str,
        args: &Value,
    ) -> Result<http_client::Reply, AdminClientError> {
        let headers = [
            ("Authorization", self.auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        let path = format!("{}{method}", super::API_PREFIX);
        let body = args.to_string();
        let reply = http_client::request(
            &self.endpoint,
            "POST",
            &path,
            &headers,
            body.as_bytes(),
            self.timeout,
        )
        .await?;
        if reply.status >= 300 {
            let status = reply.status;
            let body = reply.bytes(64 * 1024).await.unwrap_or_default();
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(AdminClientError::Status(status, reason));
        }
        Ok(reply)
    }
}

/// Hands one line of a stream to `on_record` (blank lines are skipped).
fn record_of(line: &[u8], on_record: &mut impl FnMut(&Value)) -> Result<(), AdminClientError> {
    if line.trim_ascii().is_empty() {
        return Ok(());
    }
    let record: Value =
        serde_json::from_slice(line).map_err(|e| AdminClientError::Malformed(e.to_string()))?;
    on_record(&record);
    Ok(())
}
