//! Outgoing HTTP, on one maintained client (reqwest, HTTP/1.1, rustls with
//! the process's trust from [`crate::tls`]): the CLI's JSON calls
//! (`echo-sync`, the control subcommands), a peer's NIP-11 document, asset
//! blobs from mesh peers and batches forwarded to a graph's home. One
//! client per process keeps connections alive per server, so frequent
//! calls to the same node pay one TCP and TLS handshake.
//!
//! Every call is bounded: the reply's head must arrive within the call's
//! timeout, a body read whole must arrive by the same deadline and within a
//! byte limit, and a streamed body is read chunk by chunk by its caller.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("URL must be http://HOST[:PORT][/...] or https://..., got {0:?}")]
    BadUrl(String),
    #[error("HTTP client setup: {0}")]
    Setup(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0} sent a reply larger than {1} bytes")]
    TooLarge(String, usize),
    #[error("{0}: {1}")]
    Failed(String, String),
}

/// Where to send requests: scheme, host, port and a path prefix.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `scheme://host:port` with the port always written (the NIP-98 `u`
    /// tags this node signs name it so).
    origin: String,
    base_path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, HttpError> {
        let bad = || HttpError::BadUrl(url.to_string());
        let parsed = url::Url::parse(url).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad());
        }
        let port = parsed.port_or_known_default().ok_or_else(bad)?;
        let host = match parsed.host().ok_or_else(bad)? {
            url::Host::Ipv6(ip) => format!("[{ip}]"),
            host => host.to_string(),
        };
        Ok(Endpoint {
            origin: format!("{}://{host}:{port}", parsed.scheme()),
            base_path: parsed.path().trim_end_matches('/').to_string(),
        })
    }

    /// A relay's `ws://` or `wss://` URL as the `http://` or `https://`
    /// endpoint of the same place (its NIP-11 document, its other APIs).
    pub fn of_relay(relay_url: &str) -> Option<Endpoint> {
        let mut url = url::Url::parse(relay_url.trim()).ok()?;
        let scheme = match url.scheme() {
            "ws" => "http",
            "wss" => "https",
            _ => return None,
        };
        url.set_scheme(scheme).ok()?;
        Endpoint::parse(url.as_str()).ok()
    }

    /// The same host without the base path.
    pub fn host_root(mut self) -> Endpoint {
        self.base_path.clear();
        self
    }

    /// The absolute URL of `path` under this endpoint (the endpoint itself,
    /// with no base path and no path, is `/`).
    pub fn url(&self, path: &str) -> String {
        match format!("{}{path}", self.base_path) {
            target if target.is_empty() => format!("{}/", self.origin),
            target => format!("{}{target}", self.origin),
        }
    }
}

/// The process's client, built on first use (after `serve` or the CLI set
/// the extra TLS roots).
fn client() -> Result<&'static reqwest::Client, HttpError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let tls = crate::tls::client_config()?;
            reqwest::Client::builder()
                .tls_backend_preconfigured((*tls).clone())
                .connect_timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| describe(&e))
        })
        .as_ref()
        .map_err(|e| HttpError::Setup(e.clone()))
}

/// A reply whose head has arrived; its body is still to be read.
pub struct Reply {
    pub status: u16,
    url: String,
    /// Until when a body read whole may take.
    deadline: Instant,
    timeout: Duration,
    response: reqwest::Response,
}

impl Reply {
    /// The value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name)?.to_str().ok()
    }

    /// Reads the whole body, at most `max` bytes, by the call's deadline.
    pub async fn bytes(mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        let (deadline, timeout) = (self.deadline, self.timeout);
        let url = self.url.clone();
        let read = async {
            let mut body = Vec::new();
            while let Some(chunk) = self.chunk().await? {
                if body.len() + chunk.len() > max {
                    return Err(HttpError::TooLarge(self.url.clone(), max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout_at(deadline, read)
            .await
            .map_err(|_| HttpError::Timeout(url, timeout))?
    }

    /// The next piece of a streamed body (no deadline: a stream may be
    /// quiet for long); `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, HttpError> {
        self.response
            .chunk()
            .await
            .map_err(|e| HttpError::Failed(self.url.clone(), describe(&e)))
    }
}

/// Sends one request to `path` under `endpoint` and waits, at most
/// `timeout`, for the reply's status and headers.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, HttpError> {
    let deadline = Instant::now() + timeout;
    let url = endpoint.url(path);
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| HttpError::Failed(url.clone(), e.to_string()))?;
    let mut builder = client()?.request(method, &url).body(body.to_vec());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = tokio::time::timeout_at(deadline, builder.send())
        .await
        .map_err(|_| HttpError::Timeout(url.clone(), timeout))?
        .map_err(|e| match e.is_connect() {
            true => HttpError::Connect(url.clone(), describe(&e)),
            false => HttpError::Failed(url.clone(), describe(&e)),
        })?;
    Ok(Reply {
        status: response.status().as_u16(),
        url,
        deadline,
        timeout,
        response,
    })
}

/// Calls whose replies are read whole into memory (a graph home's
/// verdicts): each within a byte limit and a timeout (its wait for one of
/// the [`MAX_IN_FLIGHT`] turns included), so at most that many replies are
/// buffered at once.
pub struct BoundedCalls {
    max_body: usize,
    timeout: Duration,
    in_flight: tokio::sync::Semaphore,
}

/// Most calls a [`BoundedCalls`] has in flight at once.
const MAX_IN_FLIGHT: usize = 16;

/// A whole reply: status and body.
pub struct FullReply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl BoundedCalls {
    pub fn new(max_body: usize, timeout: Duration) -> BoundedCalls {
        BoundedCalls {
            max_body,
            timeout,
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// One request, its reply read whole.
    pub async fn request(
        &self,
        endpoint: &Endpoint,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<FullReply, HttpError> {
        let url = endpoint.url(path);
        let started = Instant::now();
        let _turn = tokio::time::timeout(self.timeout, self.in_flight.acquire())
            .await
            .map_err(|_| HttpError::Timeout(url.clone(), self.timeout))?
            .map_err(|e| HttpError::Failed(url, e.to_string()))?;
        let left = self.timeout.saturating_sub(started.elapsed());
        let reply = request(endpoint, method, path, headers, body, left).await?;
        let status = reply.status;
        let body = reply.bytes(self.max_body).await?;
        Ok(FullReply { status, body })
    }
}

/// A reqwest error by its innermost cause (its own text names only the
/// stage, "error sending request for url"; the cause says what happened:
/// "Connection refused", "invalid peer certificate: UnknownIssuer").
fn describe(error: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("https://echo.example/api/").unwrap();
        assert_eq!(
            e.url("/echo/pull"),
            "https://echo.example:443/api/echo/pull"
        );
        let e = Endpoint::parse("http://127.0.0.1:7777").unwrap();
        assert_eq!(e.url("/x"), "http://127.0.0.1:7777/x");
        assert_eq!(e.url(""), "http://127.0.0.1:7777/");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://").is_err());
        assert!(Endpoint::parse("http://user:pw@host/").is_err());
        // An IPv6 literal gets its scheme's default port.
        let e = Endpoint::parse("http://[::1]/x").unwrap();
        assert_eq!(e.url("/y"), "http://[::1]:80/x/y");
    }

    #[test]
    fn relay_urls_map_to_http() {
        let e = Endpoint::of_relay("wss://relay.example/nostr").unwrap();
        assert_eq!(e.url(""), "https://relay.example:443/nostr");
        assert_eq!(
            e.host_root().url("/assets"),
            "https://relay.example:443/assets"
        );
        let e = Endpoint::of_relay(" ws://127.0.0.1:7777 ").unwrap();
        assert_eq!(e.url(""), "http://127.0.0.1:7777/");
        assert!(Endpoint::of_relay("http://relay.example").is_none());
        assert!(Endpoint::of_relay("wss://").is_none());
    }
}
