//! The CLI's way to call a running node's control API, over the shared
//! HTTP client (`http_client.rs`): one request per call, a JSON reply, or
//! for a streaming method one JSON record per line until the server closes.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::http_client::{self, Endpoint, HttpError};

/// Why a call failed before the API answered with JSON.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("control API: {0} (is `echorelay serve` running?)")]
    Http(#[from] HttpError),
    #[error("control API sent a malformed reply: {0}")]
    Malformed(String),
    /// The API answered with an error status and `{"error": ...}`.
    #[error("{1} (HTTP {0})")]
    Status(u16, String),
}

/// A control API endpoint and its token.
pub struct AdminClient {
    endpoint: Endpoint,
    auth: String,
    timeout: Duration,
}

impl AdminClient {
    /// `url` is `http://HOST:PORT` (the scheme may be left out).
    pub fn new(url: &str, token: &str) -> Result<AdminClient, AdminClientError> {
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        Ok(AdminClient {
            endpoint: Endpoint::parse(&url)?,
            auth: format!("Bearer {token}"),
            timeout: Duration::from_secs(30),
        })
    }

    /// Calls `method` with `args` and returns the JSON reply.
    pub async fn call(&self, method: &str, args: &Value) -> Result<Value, AdminClientError> {
        let reply = self.request(method, args).await?;
        let body = tokio::time::timeout(self.timeout, reply.bytes(64 * 1024 * 1024))
            .await
            .map_err(|_| HttpError::Timeout(self.endpoint.url(""), self.timeout))??;
        serde_json::from_slice(&body).map_err(|e| AdminClientError::Malformed(e.to_string()))
    }

    /// Calls a streaming method and hands each JSON line to `on_record`.
    /// A stream may be quiet for long (a big transfer), so no read timeout.
    pub async fn stream(
        &self,
        method: &str,
        args: &Value,
        mut on_record: impl FnMut(&Value),
    ) -> Result<(), AdminClientError> {
        let reply = self.request(method, args).await?;
        let mut lines = BufReader::new(reply.body).lines();
        while let Some(line) = lines.next_line().await.map_err(HttpError::from)? {
            if line.trim().is_empty() {
                continue;
            }
            let record: Value = serde_json::from_str(&line)
                .map_err(|e| AdminClientError::Malformed(e.to_string()))?;
            on_record(&record);
        }
        Ok(())
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
            let body = tokio::time::timeout(self.timeout, reply.bytes(64 * 1024))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(AdminClientError::Status(status, reason));
        }
        Ok(reply)
    }
}
