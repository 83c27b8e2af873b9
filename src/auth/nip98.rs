//! NIP-98 HTTP auth: `Authorization: Nostr <base64 event>` where the event
//! is kind 27235, signed, created within a minute of now, and names this
//! request's URL (`u`) and method (`method`). The URL's path and query must
//! equal the request's; when the relay knows its public URL
//! (`server.relay_url`), the URL's host must be that one (default ports
//! aside), so an auth event made for another server does not open this one.
//! The request's own `Host` header proves nothing: the sender chooses it.

use base64::Engine;

use crate::event::{now, Event};

/// The kind of NIP-98 auth events.
pub const HTTP_AUTH_KIND: u16 = 27235;
/// Largest clock difference accepted, in seconds.
const WINDOW_SECS: u64 = 60;
/// Largest encoded header accepted.
const MAX_HEADER: usize = 16 * 1024;

/// Checks an encoded auth event for this request; returns the signer's
/// hex pubkey.
/// `host` is this relay's public host, when configured.
pub fn check(
    encoded: &str,
    method: &str,
    path_and_query: &str,
    host: Option<&str>,
) -> Result<String, String> {
    if encoded.len() > MAX_HEADER {
        return Err("header too large".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "not base64".to_string())?;
    let json = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let event = Event::from_json(&json).map_err(|e| e.to_string())?;
    if event.kind != HTTP_AUTH_KIND {
        return Err(format!("kind must be {HTTP_AUTH_KIND}"));
    }
    event.verify().map_err(|e| e.to_string())?;
    if event.created_at.abs_diff(now()) > WINDOW_SECS {
        return Err("created_at is too far from now".into());
    }
    let url = event.tag_values("u").next().ok_or("missing u tag")?;
    if path_of(url) != path_and_query {
        return Err("u tag does not match the request URL".into());
    }
    if let Some(host) = host {
        if !same_host(url, host) {
            return Err("u tag names another host".into());
        }
    }
    let tagged = event
        .tag_values("method")
        .next()
        .ok_or("missing method tag")?;
    if !tagged.eq_ignore_ascii_case(method) {
        return Err("method tag does not match the request".into());
    }
    Ok(hex::encode(event.pubkey))
}

/// Whether the authority of `url` is `host`, ignoring case and the
/// scheme's default port.
fn same_host(url: &str, host: &str) -> bool {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => ":443",
        _ => ":80",
    };
    let normal = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(bare) => bare.to_string(),
            None => a,
        }
    };
    normal(authority) == normal(host)
}

/// The path and query of an absolute URL (`/` when it has no path).
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.find('/') {
        Some(i) => &rest[i..],
        None => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Keys;
    use axum::http::Method;

    fn header(keys: &Keys, url: &str, method: &str, at: u64) -> String {
        let event = keys.sign(
            at,
            HTTP_AUTH_KIND,
            vec![
                vec!["u".into(), url.into()],
                vec!["method".into(), method.into()],
            ],
            String::new(),
        );
        base64::engine::general_purpose::STANDARD.encode(event.to_json())
    }

    #[test]
    fn accepts_the_right_request_only() {
        let keys = Keys::generate();
        let good = header(&keys, "https://node.example/graphs?x=1", "GET", now());
        let me = Ok(hex::encode(keys.public_key()));
        let host = Some("node.example");
        assert_eq!(check(&good, Method::GET.as_str(), "/graphs?x=1", host), me);
        assert_eq!(check(&good, Method::GET.as_str(), "/graphs?x=1", None), me);
        for other in ["NODE.example:443", "node.example:443"] {
            assert_eq!(
                check(&good, Method::GET.as_str(), "/graphs?x=1", Some(other)),
                me
            );
        }
        for other in ["evil.example", "node.example:8443", "node.example.evil"] {
            assert_eq!(
                check(&good, Method::GET.as_str(), "/graphs?x=1", Some(other)),
                Err("u tag names another host".into()),
                "{other}"
            );
        }
        assert!(check(&good, Method::POST.as_str(), "/graphs?x=1", host).is_err());
        assert!(check(&good, Method::GET.as_str(), "/graphs", host).is_err());
        let old = header(&keys, "https://node.example/graphs", "GET", now() - 3600);
        assert!(check(&old, Method::GET.as_str(), "/graphs", host).is_err());
        assert!(check("%%%", Method::GET.as_str(), "/graphs", host).is_err());
        let not_json = base64::engine::general_purpose::STANDARD.encode("{}");
        assert!(check(&not_json, Method::GET.as_str(), "/graphs", host).is_err());
    }
}
