//! A small HTTP client for what this node asks of other HTTP servers: the
//! CLI's JSON calls (`echo-sync`) and asset blobs from mesh peers, one
//! request per connection (`Connection: close`, so a body simply ends with
//! the connection); and kept-alive connections for frequent calls to the
//! same node ([`Pool`]). http:// and https:// (rustls, webpki roots).

mod pool;

pub use pool::{FullReply, Pool};

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest response head (status line and headers) read.
const MAX_HEAD: u64 = 64 * 1024;

/// Why a request failed before a status line arrived.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("URL must be http://HOST[:PORT][/...] or https://..., got {0:?}")]
    BadUrl(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed reply: {0}")]
    Malformed(String),
}

/// Where to send requests: scheme, host:port, and a path prefix.
#[derive(Debug, Clone)]
pub struct Endpoint {
    tls: bool,
    host: String,
    authority: String,
    base_path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, HttpError> {
        let bad = || HttpError::BadUrl(url.to_string());
        let parsed = url::Url::parse(url).map_err(|_| bad())?;
        let tls = match parsed.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad()),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad());
        }
        let port = parsed.port_or_known_default().ok_or_else(bad)?;
        // The name TLS checks is the bare host (an IPv6 literal without its
        // brackets); the address dialled keeps them.
        let (host, authority) = match parsed.host().ok_or_else(bad)? {
            url::Host::Ipv6(ip) => (ip.to_string(), format!("[{ip}]:{port}")),
            url::Host::Ipv4(ip) => (ip.to_string(), format!("{ip}:{port}")),
            url::Host::Domain(name) => (name.to_string(), format!("{name}:{port}")),
        };
        Ok(Endpoint {
            tls,
            host,
            authority,
            base_path: parsed.path().trim_end_matches('/').to_string(),
        })
    }

    /// A relay's `ws://` or `wss://` URL as the `http://` or `https://`
    /// endpoint of the same place (its NIP-11 document, its other APIs).
    pub fn of_relay(relay_url: &str) -> Option<Endpoint> {
        let http = match (
            relay_url.strip_prefix("ws://"),
            relay_url.strip_prefix("wss://"),
        ) {
            (Some(rest), _) => format!("http://{rest}"),
            (_, Some(rest)) => format!("https://{rest}"),
            _ => return None,
        };
        Endpoint::parse(&http).ok()
    }

    /// The same host without the base path.
    pub fn host_root(mut self) -> Endpoint {
        self.base_path.clear();
        self
    }

    /// The absolute URL of `path` under this endpoint.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{}{path}", self.authority, self.base_path)
    }
}

/// A reply: status, headers (lowercased names) and the body reader.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Box<dyn AsyncRead + Unpin + Send>,
}

impl Reply {
    /// Reads the whole body (bounded by `max` bytes).
    pub async fn bytes(mut self, max: u64) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        (&mut self.body).take(max).read_to_end(&mut out).await?;
        Ok(out)
    }
}

/// Sends one request to `endpoint` and reads the status line and headers.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, HttpError> {
    let work = async {
        let stream = open(endpoint).await?;
        exchange(stream, endpoint, method, path, headers, body).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout(endpoint.authority.clone(), timeout))?
}

/// A stream both ways to `endpoint`, for any byte stream.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for S {}

/// Connects to `endpoint` (TLS with the webpki roots for https://).
async fn open(endpoint: &Endpoint) -> Result<Box<dyn Stream>, HttpError> {
    let tcp = tokio::net::TcpStream::connect(&endpoint.authority)
        .await
        .map_err(|e| HttpError::Connect(endpoint.authority.clone(), e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    if !endpoint.tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
        .map_err(|e| HttpError::Connect(endpoint.authority.clone(), e.to_string()))?;
    let connector = crate::tls::client_connector()
        .map_err(|e| HttpError::Connect(endpoint.authority.clone(), e))?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| HttpError::Connect(endpoint.authority.clone(), e.to_string()))?;
    Ok(Box::new(stream))
}

async fn exchange<S>(
    mut stream: S,
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The endpoint itself (no base path, no path) is the root: `/`.
    let target = match format!("{}{path}", endpoint.base_path) {
        target if target.is_empty() => "/".to_string(),
        target => target,
    };
    let mut head = format!(
        "{method} {target} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        endpoint.authority,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut reader = BufReader::new(stream);
    // The head is read with a bound: a server cannot make us buffer an
    // endless status or header line.
    let mut head_reader = (&mut reader).take(MAX_HEAD);
    let mut line = String::new();
    head_reader.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line {:?}", line.trim())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if head_reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    Ok(Reply {
        status,
        headers,
        body: Box::new(reader),
    })
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
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://").is_err());
        assert!(Endpoint::parse("http://user:pw@host/").is_err());
        // An IPv6 literal gets its scheme's default port; TLS sees the bare address.
        let e = Endpoint::parse("http://[::1]/x").unwrap();
        assert_eq!((e.authority.as_str(), e.host.as_str()), ("[::1]:80", "::1"));
        assert_eq!(e.url("/y"), "http://[::1]:80/x/y");
    }
}
