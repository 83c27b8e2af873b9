//! NIP-98 HTTP auth: `Authorization: Nostr <base64 event>` where the event
//! is kind 27235, signed, created within a minute of now, and names this
//! request's URL (`u`) and method (`method`). The URL's path and query must
//! equal the request's, and its host (default ports aside) this relay's:
//! the host of `server.relay_url` when configured, else the one the request
//! was sent to, so an auth event made for another server does not open this
//! one. A mesh node's event must also be made for this node (`auth/tokens.rs`
//! `bound_to_node`). Each event is good for one request ([`Replays`]); a request with a
//! body must name the body's sha256 in a `payload` tag (checked as the body
//! is read, `auth/payload.rs`).

use std::collections::HashMap;

use base64::Engine;
use parking_lot::Mutex;

use crate::event::{now, Event};

/// The kind of NIP-98 auth events.
pub const HTTP_AUTH_KIND: u16 = 27235;
/// Largest clock difference accepted, in seconds.
const WINDOW_SECS: u64 = 60;
/// Largest encoded header accepted.
const MAX_HEADER: usize = 16 * 1024;

/// Most auth events remembered at once; past it, new ones are refused until
/// old ones leave the window (only allowed keys' valid events get here).
const MAX_REMEMBERED: usize = 100_000;
/// Most of them one key may hold (about 80 requests a second, sustained).
const MAX_PER_KEY: usize = 10_000;

/// The auth event inside a header, not yet checked.
pub fn decode(encoded: &str) -> Result<Event, String> {
    if encoded.len() > MAX_HEADER {
        return Err("header too large".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "not base64".to_string())?;
    let json = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    Event::from_json(&json).map_err(|e| e.to_string())
}

/// The sha256 a `payload` tag names, if the event has one (`Err` when the
/// tag is not 64 hex characters).
pub fn payload(event: &Event) -> Result<Option<[u8; 32]>, String> {
    match event.tag_values("payload").next() {
        None => Ok(None),
        Some(hex) => crate::event::decode_hex::<32>(hex)
            .map(Some)
            .ok_or_else(|| "payload tag must be a sha256 in hex".into()),
    }
}

/// Checks an encoded auth event for this request; returns the event.
/// `host` is this relay's host: the public one, else the request's.
pub fn check(
    encoded: &str,
    method: &str,
    path_and_query: &str,
    host: &str,
) -> Result<Event, String> {
    check_event(decode(encoded)?, method, path_and_query, host)
}

/// [`check`] of an already decoded auth event.
pub fn check_event(
    event: Event,
    method: &str,
    path_and_query: &str,
    host: &str,
) -> Result<Event, String> {
    if event.kind != HTTP_AUTH_KIND {
        return Err(format!("kind must be {HTTP_AUTH_KIND}"));
    }
    event.verify().map_err(|e| e.to_string())?;
    if event.created_at.abs_diff(now()) > WINDOW_SECS {
        return Err("created_at is too far from now".into());
    }
    let url = event.tag_values("u").next().ok_or("missing u tag")?;
    if path_of(url).as_deref() != Some(path_and_query) {
        return Err("u tag does not match the request URL".into());
    }
    if !same_host(url, host) {
        return Err("u tag names another host".into());
    }
    let tagged = event
        .tag_values("method")
        .next()
        .ok_or("missing method tag")?;
    if !tagged.eq_ignore_ascii_case(method) {
        return Err("method tag does not match the request".into());
    }
    payload(&event)?;
    Ok(event)
}

/// `Authorization: Nostr ...` for one request this node makes to the mesh
/// peer whose key is `peer` (hex, named in a `p` tag so the header opens
/// that node only), with the body's sha256 as `payload` when there is a body.
pub fn header(
    key: &crate::event::Keys,
    peer: &str,
    url: &str,
    method: &str,
    body: &[u8],
) -> String {
    use sha2::Digest;
    let mut tags = vec![
        vec!["u".to_string(), url.to_string()],
        vec!["method".to_string(), method.to_string()],
        vec!["p".to_string(), peer.to_string()],
    ];
    if !body.is_empty() {
        tags.push(vec![
            "payload".into(),
            hex::encode(sha2::Sha256::digest(body)),
        ]);
    }
    let event = key.sign(now(), HTTP_AUTH_KIND, tags, String::new());
    format!(
        "Nostr {}",
        base64::engine::general_purpose::STANDARD.encode(event.to_json())
    )
}

/// Auth events already used, for as long as they could be accepted: a
/// captured header cannot be sent a second time. Keyed by signature, not
/// id: a client that signs the same request again in the same second (same
/// id, fresh BIP-340 nonce) makes a new header, while a replay repeats the
/// signature, which no one without the key can vary. Each key may hold at
/// most [`MAX_PER_KEY`] of the places, so one busy or hostile key cannot
/// lock every other caller out.
#[derive(Debug, Default)]
pub struct Replays(Mutex<Seen>);

#[derive(Debug, Default)]
struct Seen {
    /// Signature → (created_at, signer).
    sigs: HashMap<[u8; 64], (u64, [u8; 32])>,
    per_key: HashMap<[u8; 32], usize>,
}

impl Seen {
    /// Forgets events too old to be accepted again.
    fn expire(&mut self) {
        let oldest = now().saturating_sub(WINDOW_SECS);
        let per_key = &mut self.per_key;
        self.sigs.retain(|_, (created_at, key)| {
            let keep = *created_at >= oldest;
            if !keep {
                if let Some(n) = per_key.get_mut(key) {
                    *n -= 1;
                }
            }
            keep
        });
        per_key.retain(|_, n| *n > 0);
    }

    fn of_key(&self, key: &[u8; 32]) -> usize {
        self.per_key.get(key).copied().unwrap_or(0)
    }
}

impl Replays {
    /// Records `event`'s first use; `Err` when it was used before.
    pub fn first_use(&self, event: &Event) -> Result<(), String> {
        let mut seen = self.0.lock();
        if seen.sigs.contains_key(&event.sig) {
            return Err("this auth event was already used".into());
        }
        let full = |seen: &Seen| {
            seen.sigs.len() >= MAX_REMEMBERED || seen.of_key(&event.pubkey) >= MAX_PER_KEY
        };
        if full(&seen) {
            seen.expire();
            if full(&seen) {
                return Err("too many recent auth events; retry shortly".into());
            }
        }
        seen.sigs
            .insert(event.sig, (event.created_at, event.pubkey));
        *seen.per_key.entry(event.pubkey).or_default() += 1;
        Ok(())
    }
}

/// Whether `url` names `host` (a `Host` header value: name or address,
/// optional port), ignoring case and the scheme's default port; parsed
/// with `url`, so IPv6 literals and default ports compare as they should.
fn same_host(url: &str, host: &str) -> bool {
    let Ok(named) = url::Url::parse(url) else {
        return false;
    };
    let Ok(here) = url::Url::parse(&format!("{}://{}", named.scheme(), host.trim())) else {
        return false;
    };
    named.host() == here.host()
        && named.port_or_known_default() == here.port_or_known_default()
        && here.path() == "/"
}

/// The path and query of an absolute URL (`/` when it has no path), with
/// the escaping an HTTP client applies before it sends the request line.
fn path_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(url[url::Position::BeforePath..url::Position::AfterQuery].to_string())
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
        let signer = |r: Result<Event, String>| r.map(|e| hex::encode(e.pubkey));
        let host = "node.example";
        assert_eq!(
            signer(check(&good, Method::GET.as_str(), "/graphs?x=1", host)),
            me
        );
        for other in ["NODE.example:443", "node.example:443"] {
            assert_eq!(
                signer(check(&good, Method::GET.as_str(), "/graphs?x=1", other)),
                me
            );
        }
        for other in ["evil.example", "node.example:8443", "node.example.evil"] {
            assert_eq!(
                signer(check(&good, Method::GET.as_str(), "/graphs?x=1", other)),
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

    #[test]
    fn an_auth_event_is_good_once_and_payloads_are_hashes() {
        let keys = Keys::generate();
        let event = decode(&header(&keys, "https://n/x", "GET", now())).unwrap();
        let replays = Replays::default();
        assert_eq!(replays.first_use(&event), Ok(()));
        assert!(replays.first_use(&event).is_err(), "a replay");
        assert_eq!(payload(&event), Ok(None));
        let tagged = |value: &str| {
            keys.sign(
                now(),
                HTTP_AUTH_KIND,
                vec![vec!["payload".into(), value.into()]],
                String::new(),
            )
        };
        assert_eq!(payload(&tagged(&"ab".repeat(32))), Ok(Some([0xab; 32])));
        assert!(payload(&tagged("not hex")).is_err());
    }

    #[test]
    fn hosts_compare_as_urls() {
        assert!(same_host("http://[::1]:80/x", "[::1]"));
        assert!(same_host("https://Node.Example/graphs", "node.example:443"));
        assert!(same_host("http://127.0.0.1:7777/a?b", "127.0.0.1:7777"));
        assert!(!same_host("http://127.0.0.1:7777/a", "127.0.0.1:7778"));
        assert!(!same_host("http://a.example/x", "b.example"));
        assert!(!same_host("http://a.example/x", "a.example/evil"));
        assert!(!same_host("not a url", "a.example"));
    }

    #[test]
    fn paths_compare_as_sent() {
        assert_eq!(path_of("http://h:1").as_deref(), Some("/"));
        assert_eq!(path_of("http://h:1/a?b=c").as_deref(), Some("/a?b=c"));
        // A client escapes a space before sending; the tag's path matches that.
        assert_eq!(path_of("http://h/a b/c").as_deref(), Some("/a%20b/c"));
        assert_eq!(path_of("http://h/x#frag").as_deref(), Some("/x"));
        assert_eq!(path_of("/relative"), None);
    }

    #[test]
    fn one_key_cannot_fill_the_replay_cache() {
        // Only the signature, signer and time are remembered, so distinct
        // signatures stand in for distinct signed events here.
        let busy = decode(&header(&Keys::generate(), "https://n/x", "GET", now())).unwrap();
        let replays = Replays::default();
        let mut sig = 0u64;
        let mut next = |mut event: Event| {
            sig += 1;
            event.sig[..8].copy_from_slice(&sig.to_be_bytes());
            replays.first_use(&event)
        };
        for _ in 0..MAX_PER_KEY {
            assert_eq!(next(busy.clone()), Ok(()));
        }
        assert!(next(busy.clone()).is_err(), "the busy key's share is used");
        let other = decode(&header(&Keys::generate(), "https://n/x", "GET", now())).unwrap();
        assert_eq!(next(other), Ok(()), "another key still gets in");
    }
}
