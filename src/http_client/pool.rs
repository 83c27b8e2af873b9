//! Kept-alive HTTP/1.1 connections to the same few servers (a graph's home
//! node, asked for every forwarded batch): one TCP (and TLS) handshake per
//! connection instead of per request. A connection is taken for one request
//! and put back once its reply is read; one that failed or was closed by
//! the server is dropped, and the next request opens a new one.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

use super::{Endpoint, HttpError};

/// Idle connections per server authority, and the bounds of each call.
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
    max_body: usize,
    timeout: Duration,
    /// Calls in flight at once: each may buffer up to `max_body`.
    in_flight: tokio::sync::Semaphore,
}

/// Most calls a pool has in flight at once.
const MAX_IN_FLIGHT: usize = 16;

/// A whole reply: status and body.
pub struct FullReply {
    pub status: u16,
    pub body: Bytes,
}

impl Pool {
    /// Replies are read whole, at most `max_body` bytes, each call (its wait
    /// for one of the [`MAX_IN_FLIGHT`] turns included) within `timeout`.
    pub fn new(max_body: usize, timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::default(),
            max_body,
            timeout,
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// One request on a kept-alive connection to `endpoint`.
    pub async fn request(
        &self,
        endpoint: &Endpoint,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<FullReply, HttpError> {
        let (max_body, timeout) = (self.max_body, self.timeout);
        let work = async {
            let _turn = self
                .in_flight
                .acquire()
                .await
                .map_err(|e| HttpError::Io(std::io::Error::other(e)))?;
            // An idle connection the server has closed since (its keep-alive
            // ran out) is found here, before anything is sent on it.
            let mut sender = match self.take(endpoint) {
                Some(mut pooled) => match pooled.ready().await {
                    Ok(()) => pooled,
                    Err(_) => connect(endpoint).await?,
                },
                None => connect(endpoint).await?,
            };
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(format!("{}{path}", endpoint.base_path))
                .header(hyper::header::HOST, endpoint.authority.as_str());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request
                .body(Full::new(Bytes::copy_from_slice(body)))
                .map_err(|e| HttpError::Malformed(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| HttpError::Io(std::io::Error::other(e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| HttpError::Malformed(e.to_string()))?
                .to_bytes();
            self.put_back(endpoint, sender);
            Ok(FullReply { status, body })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| HttpError::Timeout(endpoint.authority.clone(), timeout))?
    }

    fn take(&self, endpoint: &Endpoint) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock();
        let senders = idle.get_mut(&endpoint.authority)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_back(&self, endpoint: &Endpoint, sender: SendRequest<Full<Bytes>>) {
        if !sender.is_closed() {
            let mut idle = self.idle.lock();
            idle.entry(endpoint.authority.clone())
                .or_default()
                .push(sender);
        }
    }
}

/// A new HTTP/1.1 connection (TLS for https://), driven by its own task.
async fn connect(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, HttpError> {
    let stream = super::open(endpoint).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Connect(endpoint.authority.clone(), e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
