//! Where a request comes from and what URL it was sent to, read from the
//! request and believed only as far as the configuration allows: the
//! client's IP (`server.real_ip_header`, walked right to left past the
//! `server.trusted_proxies`, so a client cannot pick its own address by
//! sending the header) and the relay URL a NIP-42 AUTH event must name
//! (`server.relay_url`, else the scheme, host and port of the upgrade
//! request; `X-Forwarded-Proto` / `X-Forwarded-Host` only from a trusted
//! proxy).

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap};

use crate::edge::{canonical, TrustedProxies};

/// How requests are read: the configured header names and proxies.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    pub real_ip_header: String,
    pub proxies: TrustedProxies,
    /// `server.relay_url`, normalised; empty when not configured.
    pub relay_url: String,
}

impl Origins {
    pub fn new(server: &crate::config::ServerConfig) -> Result<Origins, String> {
        Ok(Origins {
            real_ip_header: server.real_ip_header.to_ascii_lowercase(),
            proxies: TrustedProxies::parse(&server.trusted_proxies)?,
            relay_url: if server.relay_url.is_empty() {
                String::new()
            } else {
                normalize_url(&server.relay_url)
                    .ok_or_else(|| format!("server.relay_url is not a URL: {}", server.relay_url))?
            },
        })
    }

    /// The client's address: the socket peer, unless the peer is a trusted
    /// proxy and sent `real_ip_header`; then the right-most address of the
    /// header that is not itself a trusted proxy.
    pub fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        let peer_ip = canonical(peer.ip());
        if self.real_ip_header.is_empty() || !self.proxies.contains(peer_ip) {
            return peer_ip;
        }
        let mut chain: Vec<IpAddr> = headers
            .get_all(self.real_ip_header.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|v| v.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .collect();
        let first = chain.first().copied();
        chain.reverse();
        chain
            .into_iter()
            .find(|ip| !self.proxies.contains(*ip))
            .or(first)
            .unwrap_or(peer_ip)
    }

    /// The URL the client connected to, normalised: `server.relay_url` when
    /// configured, else built from the upgrade request.
    /// `secure`: the connection came over this listener's own TLS.
    pub fn relay_url(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        path: &str,
        secure: bool,
    ) -> String {
        if !self.relay_url.is_empty() {
            return self.relay_url.clone();
        }
        let forwarded = |name: &str| {
            self.proxies
                .forwarded(headers, peer.ip(), name)
                .map(str::to_ascii_lowercase)
        };
        let scheme = match forwarded("x-forwarded-proto").as_deref() {
            _ if secure => "wss",
            Some("https" | "wss") => "wss",
            _ => "ws",
        };
        let host = forwarded("x-forwarded-host").or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        let host = host.unwrap_or_else(|| peer.to_string());
        normalize_url(&format!("{scheme}://{host}{path}")).unwrap_or_default()
    }
}

/// A relay URL in one spelling: lowercase scheme and host, no default port
/// (80 for ws/http, 443 for wss/https), no trailing slash, no query;
/// http(s) read as ws(s). `None` when it is not a URL.
pub fn normalize_url(text: &str) -> Option<String> {
    let url = url::Url::parse(text.trim()).ok()?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return None,
    };
    let host = url.host_str()?;
    let default_port = if scheme == "ws" { 80 } else { 443 };
    let port = match url.port_or_known_default() {
        Some(port) if port != default_port => format!(":{port}"),
        _ => String::new(),
    };
    let path = url.path().trim_end_matches('/');
    Some(format!("{scheme}://{host}{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(header: &str, proxies: &[&str]) -> Origins {
        Origins {
            real_ip_header: header.into(),
            proxies: TrustedProxies::parse(
                &proxies.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap(),
            relay_url: String::new(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn urls_have_one_spelling() {
        for (given, want) in [
            ("ws://Relay.Example.com/", "ws://relay.example.com"),
            ("wss://relay.example.com:443", "wss://relay.example.com"),
            ("ws://relay.example.com:80/", "ws://relay.example.com"),
            ("https://relay.example.com/", "wss://relay.example.com"),
            ("ws://127.0.0.1:7777", "ws://127.0.0.1:7777"),
            (
                "wss://relay.example.com:7777/nostr/",
                "wss://relay.example.com:7777/nostr",
            ),
        ] {
            assert_eq!(normalize_url(given).as_deref(), Some(want), "{given}");
        }
        assert_eq!(normalize_url("relay.example.com"), None);
        assert_eq!(normalize_url("ftp://x"), None);
        assert_ne!(normalize_url("ws://a:1"), normalize_url("wss://a:1"));
    }

    #[test]
    fn the_client_ip_header_is_believed_only_from_a_trusted_proxy() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let spoofed = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4")]);
        let direct = origins("x-forwarded-for", &[]);
        assert_eq!(direct.client_ip(&spoofed, peer), peer.ip());
        let proxied = origins("x-forwarded-for", &["10.0.0.0/8"]);
        // The proxy appended the address it saw; what the client wrote
        // before it is ignored.
        assert_eq!(
            proxied.client_ip(&spoofed, peer),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let chained = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(
            proxied.client_ip(&chained, peer),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(proxied.client_ip(&HeaderMap::new(), peer), peer.ip());
    }

    #[test]
    fn the_relay_url_comes_from_the_request_or_the_config() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let h = headers(&[("host", "Node.Example:80"), ("x-forwarded-proto", "https")]);
        assert_eq!(
            origins("", &[]).relay_url(&h, peer, "/", false),
            "ws://node.example"
        );
        let behind = origins("", &["127.0.0.1"]);
        assert_eq!(
            behind.relay_url(&h, peer, "/", false),
            "wss://node.example:80"
        );
        // A client's own X-Forwarded-Host before the proxy's is not believed.
        let h2 = headers(&[("x-forwarded-host", "evil.example, node.example")]);
        assert_eq!(behind.relay_url(&h2, peer, "/", false), "ws://node.example");
        // Over the listener's own TLS the URL is wss://, whatever was sent.
        assert_eq!(
            origins("", &[]).relay_url(&h2, peer, "/", true),
            "wss://127.0.0.1:4000"
        );
        let mut configured = origins("", &[]);
        configured.relay_url = normalize_url("wss://relay.example.com/").unwrap();
        assert_eq!(
            configured.relay_url(&h, peer, "/", false),
            "wss://relay.example.com"
        );
    }
}
