//! The CLI's way to call a running node's control API: one HTTP/1.0 request
//! per call (`Connection: close`, so a streamed reply simply ends when the
//! server closes), plain TCP on the admin address. Kept this small on
//! purpose: the API listens on loopback or a private network.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why a call failed before the API answered with JSON.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("admin URL must look like http://HOST:PORT, got {0:?}")]
    BadUrl(String),
    #[error("cannot reach the control API at {0}: {1} (is `echorelay serve` running?)")]
    Connect(String, std::io::Error),
    #[error("control API at {0} did not answer in time")]
    Timeout(String),
    #[error("control API connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("control API sent a malformed reply: {0}")]
    Malformed(String),
    /// The API answered with an error status and `{"error": ...}`.
    #[error("{1} (HTTP {0})")]
    Status(u16, String),
}

/// A control API endpoint and its token.
pub struct AdminClient {
    host_port: String,
    token: String,
    timeout: Duration,
}

impl AdminClient {
    pub fn new(url: &str, token: &str) -> Result<AdminClient, AdminClientError> {
        let host_port = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        if host_port.is_empty() || host_port.contains('/') || !host_port.contains(':') {
            return Err(AdminClientError::BadUrl(url.to_string()));
        }
        Ok(AdminClient {
            host_port: host_port.to_string(),
            token: token.to_string(),
            timeout: Duration::from_secs(30),
        })
    }

    /// Calls `method` with `args` and returns the JSON reply.
    pub async fn call(&self, method: &str, args: &Value) -> Result<Value, AdminClientError> {
        let mut reader = self.request(method, args).await?;
        let mut body = Vec::new();
        tokio::time::timeout(self.timeout, reader.read_to_end(&mut body))
            .await
            .map_err(|_| AdminClientError::Timeout(self.host_port.clone()))??;
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
        let mut reader = self.request(method, args).await?;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line.trim().is_empty() {
                continue;
            }
            let record: Value = serde_json::from_str(&line)
                .map_err(|e| AdminClientError::Malformed(e.to_string()))?;
            on_record(&record);
        }
    }

    /// Sends the request and reads the head; an error status becomes
    /// [`AdminClientError::Status`]. Returns the body reader.
    async fn request(
        &self,
        method: &str,
        args: &Value,
    ) -> Result<BufReader<TcpStream>, AdminClientError> {
        let connect = TcpStream::connect(&self.host_port);
        let mut stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| AdminClientError::Timeout(self.host_port.clone()))?
            .map_err(|e| AdminClientError::Connect(self.host_port.clone(), e))?;
        let body = args.to_string();
        let head = format!(
            "POST {}{method} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            super::API_PREFIX,
            self.host_port,
            self.token,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut reader = BufReader::new(stream);
        let status = tokio::time::timeout(self.timeout, read_head(&mut reader))
            .await
            .map_err(|_| AdminClientError::Timeout(self.host_port.clone()))??;
        if status >= 300 {
            let mut body = Vec::new();
            let _ = tokio::time::timeout(self.timeout, reader.read_to_end(&mut body)).await;
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(AdminClientError::Status(status, reason));
        }
        Ok(reader)
    }
}

/// Reads the status line and headers; returns the status code.
async fn read_head(reader: &mut BufReader<TcpStream>) -> Result<u16, AdminClientError> {
    let mut reader = reader.take(64 * 1024);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| AdminClientError::Malformed(format!("status line {:?}", line.trim())))?;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            return Ok(status);
        }
    }
}
