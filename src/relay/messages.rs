//! Client → relay message parsing (NIP-01, NIP-42, NIP-45, NIP-77 framing) and
//! relay → client message rendering. Parsing only splits the array and checks
//! shapes; events are parsed by `event/wire.rs` and filters by `filter.rs`.

use serde_json::value::RawValue;
use serde_json::Value;

use crate::filter::{Filter, FilterError};
use crate::refusal::Refusal;

/// The one rendering of a refusal as text: NIP-01's `prefix: detail`.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.prefix.as_str(), self.detail)
    }
}

/// A message from a client, borrowing from the received text.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    Event(&'a RawValue),
    Req {
        sub_id: String,
        filters: Result<Vec<Filter>, FilterError>,
    },
    Count {
        sub_id: String,
        filters: Result<Vec<Filter>, FilterError>,
    },
    Close(String),
    Auth(&'a RawValue),
    NegOpen {
        sub_id: String,
        filter: &'a RawValue,
        message: String,
    },
    NegMsg {
        sub_id: String,
        message: String,
    },
    NegClose {
        sub_id: String,
    },
    /// The mesh handshake (`node_auth.rs`): a dialling node's nonce for
    /// this node to sign.
    NodeAuth(String),
}

/// A message that could not be understood, with the reason for the NOTICE or
/// CLOSED it gets. `sub_id` is set when the reply should be a CLOSED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub reason: Refusal,
    pub sub_id: Option<String>,
    /// The reply for `sub_id` is a NEG-ERR (NIP-77) rather than a CLOSED.
    pub negentropy: bool,
}

fn notice(reason: impl Into<std::borrow::Cow<'static, str>>) -> ParseError {
    ParseError {
        reason: Refusal::invalid(reason),
        sub_id: None,
        negentropy: false,
    }
}

/// An error answered on a subscription (CLOSED) or session (NEG-ERR).
fn sub_error(
    sub_id: &str,
    reason: impl Into<std::borrow::Cow<'static, str>>,
    negentropy: bool,
) -> ParseError {
    ParseError {
        reason: Refusal::invalid(reason),
        sub_id: Some(sub_id.to_string()),
        negentropy,
    }
}

/// Limits applied while parsing, before any work is spent on the content.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_filters: usize,
    pub max_subid_length: usize,
}

fn as_string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

fn sub_id(
    raw: Option<&&RawValue>,
    limits: &ParseLimits,
    negentropy: bool,
) -> Result<String, ParseError> {
    let id = raw
        .and_then(|r| as_string(r))
        .ok_or_else(|| notice("subscription id must be a string"))?;
    if id.is_empty() || id.chars().count() > limits.max_subid_length {
        let reason = format!(
            "subscription id must be 1 to {} characters",
            limits.max_subid_length
        );
        return Err(sub_error(&id, reason, negentropy));
    }
    Ok(id)
}

fn filters(
    sub_id: &str,
    raws: &[&RawValue],
    limits: &ParseLimits,
) -> Result<Result<Vec<Filter>, FilterError>, ParseError> {
    if raws.is_empty() {
        return Err(sub_error(sub_id, "at least one filter is required", false));
    }
    if raws.len() > limits.max_filters {
        let reason = format!("too many filters ({} > {})", raws.len(), limits.max_filters);
        return Err(sub_error(sub_id, reason, false));
    }
    Ok(raws
        .iter()
        .map(|raw| {
            let value: Value = serde_json::from_str(raw.get())
                .map_err(|_| FilterError("filter is not valid JSON".into()))?;
            Filter::from_value(&value)
        })
        .collect())
}

/// Parses one text frame from a client.
pub fn parse_client_message<'a>(
    text: &'a str,
    limits: &ParseLimits,
) -> Result<ClientMessage<'a>, ParseError> {
    let parts: Vec<&'a RawValue> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            notice("message must be a JSON array")
        } else {
            notice("message is not valid JSON")
        }
    })?;
    let kind = parts
        .first()
        .and_then(|r| as_string(r))
        .ok_or_else(|| notice("message must start with a type string"))?;
    let arity = |n: usize| -> Result<(), ParseError> {
        if parts.len() == n {
            Ok(())
        } else {
            Err(notice(format!("{kind} takes {} elements", n - 1)))
        }
    };
    match kind.as_str() {
        "EVENT" => {
            arity(2)?;
            Ok(ClientMessage::Event(parts[1]))
        }
        "REQ" | "COUNT" => {
            let id = sub_id(parts.get(1), limits, false)?;
            let filters = filters(&id, &parts[2..], limits)?;
            Ok(if kind == "REQ" {
                ClientMessage::Req {
                    sub_id: id,
                    filters,
                }
            } else {
                ClientMessage::Count {
                    sub_id: id,
                    filters,
                }
            })
        }
        "CLOSE" => {
            arity(2)?;
            Ok(ClientMessage::Close(sub_id(parts.get(1), limits, false)?))
        }
        "AUTH" => {
            arity(2)?;
            Ok(ClientMessage::Auth(parts[1]))
        }
        "NODE-AUTH" => {
            arity(2)?;
            match as_string(parts[1]) {
                Some(nonce) if crate::node_auth::is_nonce(&nonce) => {
                    Ok(ClientMessage::NodeAuth(nonce))
                }
                _ => Err(notice(
                    "NODE-AUTH nonce must be 64 lowercase hex characters",
                )),
            }
        }
        "NEG-OPEN" => {
            if parts.len() != 4 {
                return Err(notice("NEG-OPEN takes 3 elements"));
            }
            let id = sub_id(parts.get(1), limits, true)?;
            let message = as_string(parts[3])
                .ok_or_else(|| sub_error(&id, "NEG-OPEN message must be a hex string", true))?;
            Ok(ClientMessage::NegOpen {
                sub_id: id,
                filter: parts[2],
                message,
            })
        }
        "NEG-MSG" => {
            arity(3)?;
            let id = sub_id(parts.get(1), limits, true)?;
            let message = as_string(parts[2])
                .ok_or_else(|| sub_error(&id, "NEG-MSG message must be a hex string", true))?;
            Ok(ClientMessage::NegMsg {
                sub_id: id,
                message,
            })
        }
        "NEG-CLOSE" => {
            arity(2)?;
            Ok(ClientMessage::NegClose {
                sub_id: sub_id(parts.get(1), limits, true)?,
            })
        }
        other => Err(notice(format!(
            "unknown message type {}",
            json_string(truncate(other, 32))
        ))),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((pos, _)) => &text[..pos],
        None => text,
    }
}

/// JSON string literal of `text` (quotes included).
pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// NEG-OPEN's filter: one object, or an array of them (NDK's sync sends
/// one). A one-element array is that filter; several reconcile their union.
pub fn neg_open_filters(raw: &RawValue, max_filters: usize) -> Result<Vec<Filter>, Refusal> {
    let value = serde_json::from_str::<serde_json::Value>(raw.get())
        .map_err(|_| Refusal::invalid("NEG-OPEN filter is not JSON"))?;
    let objects = match value {
        serde_json::Value::Object(_) => vec![value],
        serde_json::Value::Array(list) if list.is_empty() => {
            return Err(Refusal::invalid("NEG-OPEN filter array is empty"))
        }
        serde_json::Value::Array(list) if list.len() > max_filters => {
            return Err(Refusal::invalid(format!(
                "too many filters ({} > {max_filters})",
                list.len()
            )))
        }
        serde_json::Value::Array(list) => list,
        _ => {
            return Err(Refusal::invalid(
                "NEG-OPEN takes a filter object or an array of filters",
            ))
        }
    };
    objects
        .iter()
        .map(|object| {
            if !object.is_object() {
                return Err(Refusal::invalid("NEG-OPEN filters must be objects"));
            }
            Filter::from_value(object).map_err(|e| e.refusal())
        })
        .collect()
}

/// Who waits for the answer to a message refused before parsing (too large,
/// over the rate), as far as its first elements can be read: enough to
/// refuse it in the form its sender waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressee {
    /// An EVENT whose id could be read: OK false.
    Event(String),
    /// REQ or COUNT: CLOSED.
    Query(String),
    /// NEG-OPEN or NEG-MSG: NEG-ERR.
    Negentropy(String),
    /// Nothing the sender waits for could be read: NOTICE.
    Unknown,
}

/// A client message's type, read before the message is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Event,
    Req,
    Count,
    Close,
    Auth,
    NegOpen,
    NegMsg,
    NegClose,
    NodeAuth,
    /// A string no NIP defines here.
    Unknown,
}

impl MessageType {
    fn of(word: &str) -> MessageType {
        match word {
            "EVENT" => MessageType::Event,
            "REQ" => MessageType::Req,
            "COUNT" => MessageType::Count,
            "CLOSE" => MessageType::Close,
            "AUTH" => MessageType::Auth,
            "NEG-OPEN" => MessageType::NegOpen,
            "NEG-MSG" => MessageType::NegMsg,
            "NEG-CLOSE" => MessageType::NegClose,
            crate::node_auth::MESSAGE => MessageType::NodeAuth,
            _ => MessageType::Unknown,
        }
    }

    /// NEG-OPEN and NEG-MSG carry negentropy payloads (their own size limit).
    pub fn is_negentropy(self) -> bool {
        matches!(self, MessageType::NegOpen | MessageType::NegMsg)
    }
}

/// The message's type (its first element), when it is a JSON array that
/// starts with a string. Cheap: reads only the first few bytes.
pub fn message_type(text: &str) -> Option<MessageType> {
    let rest = text.trim_start().strip_prefix('[')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    let kind = &rest[..end];
    (!kind.contains('\\')).then(|| MessageType::of(kind))
}

/// Reads a refused message's type and id (one pass of the JSON parser,
/// nothing kept but borrowed slices), so it can be refused as what it is.
pub fn addressee(text: &str) -> Addressee {
    let Ok(parts) = serde_json::from_str::<Vec<&RawValue>>(text) else {
        return Addressee::Unknown;
    };
    let kind = parts
        .first()
        .and_then(|r| as_string(r))
        .map(|k| MessageType::of(&k));
    let second = parts.get(1);
    match kind {
        Some(MessageType::Event) => second
            .and_then(|raw| salvage_event_id(raw))
            .map_or(Addressee::Unknown, Addressee::Event),
        Some(MessageType::Req | MessageType::Count) => second
            .and_then(|r| as_string(r))
            .map_or(Addressee::Unknown, Addressee::Query),
        Some(MessageType::NegOpen | MessageType::NegMsg) => second
            .and_then(|r| as_string(r))
            .map_or(Addressee::Unknown, Addressee::Negentropy),
        _ => Addressee::Unknown,
    }
}

/// Best effort: the `id` of an event that failed to parse, so the refusal can
/// be an OK (which needs the id) rather than a NOTICE.
pub fn salvage_event_id(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OnlyId {
        id: String,
    }
    let only: OnlyId = serde_json::from_str(raw.get()).ok()?;
    (only.id.len() == 64 && only.id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(only.id)
}

fn ok(id_hex: &str, accepted: bool, reason: &str) -> String {
    format!("[\"OK\",\"{id_hex}\",{accepted},{}]", json_string(reason))
}

/// `OK true` with no message: the event was stored (or fanned out).
pub fn accepted(id_hex: &str) -> String {
    ok(id_hex, true, "")
}

/// `OK true` with a note, e.g. `duplicate:` for an event already held.
pub fn accepted_noting(id_hex: &str, note: &Refusal) -> String {
    ok(id_hex, true, &note.to_string())
}

/// `OK false`: the event was refused.
pub fn refused(id_hex: &str, why: &Refusal) -> String {
    ok(id_hex, false, &why.to_string())
}

/// The start of every EVENT message of one subscription, `["EVENT","id",`,
/// rendered once: a REQ answers hundreds of events, and quoting the id and
/// formatting each message cost a tenth of the REQ path (measured).
pub struct EventPrefix(String);

impl EventPrefix {
    pub fn new(sub_id: &str) -> EventPrefix {
        EventPrefix(format!("[\"EVENT\",{},", json_string(sub_id)))
    }

    /// The EVENT message carrying `json` (an event's canonical JSON).
    pub fn frame(&self, json: &str) -> String {
        let mut text = String::with_capacity(self.0.len() + json.len() + 1);
        text.push_str(&self.0);
        text.push_str(json);
        text.push(']');
        text
    }
}

pub fn eose(sub_id: &str) -> String {
    format!("[\"EOSE\",{}]", json_string(sub_id))
}

pub fn closed(sub_id: &str, why: &Refusal) -> String {
    format!(
        "[\"CLOSED\",{},{}]",
        json_string(sub_id),
        json_string(&why.to_string())
    )
}

pub fn notice_msg(why: &Refusal) -> String {
    format!("[\"NOTICE\",{}]", json_string(&why.to_string()))
}

/// NIP-77's reply: the next negentropy message of session `sub_id`.
pub fn neg_msg(sub_id: &str, message: &[u8]) -> String {
    format!(
        "[\"NEG-MSG\",{},\"{}\"]",
        json_string(sub_id),
        hex::encode(message)
    )
}

/// NEG-ERR for a NEG-OPEN whose filters match more than `cap` events:
/// strfry's form, with the cap as a fourth element.
pub fn neg_err_over_cap(sub_id: &str, cap: usize) -> String {
    let why = Refusal::blocked("too many query results");
    format!(
        "[\"NEG-ERR\",{},{},{cap}]",
        json_string(sub_id),
        json_string(&why.to_string())
    )
}

/// NIP-77's error for a negentropy session.
pub fn neg_err(sub_id: &str, why: &Refusal) -> String {
    format!(
        "[\"NEG-ERR\",{},{}]",
        json_string(sub_id),
        json_string(&why.to_string())
    )
}

pub fn count(sub_id: &str, count: u64) -> String {
    format!("[\"COUNT\",{},{{\"count\":{count}}}]", json_string(sub_id))
}

pub fn auth_challenge(challenge: &str) -> String {
    format!("[\"AUTH\",{}]", json_string(challenge))
}

/// This node's answer to a NODE-AUTH nonce.
pub fn node_proof(proof_json: &str) -> String {
    format!("[\"{}\",{proof_json}]", crate::node_auth::MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParseLimits = ParseLimits {
        max_filters: 10,
        max_subid_length: 64,
    };

    #[test]
    fn parses_each_type() {
        assert!(matches!(
            parse_client_message(r#"["EVENT",{}]"#, &LIMITS),
            Ok(ClientMessage::Event(_))
        ));
        assert!(matches!(
            parse_client_message(r#"["REQ","s",{"kinds":[1]},{}]"#, &LIMITS),
            Ok(ClientMessage::Req { filters: Ok(f), .. }) if f.len() == 2
        ));
        assert!(
            matches!(parse_client_message(r#"["CLOSE","s"]"#, &LIMITS), Ok(ClientMessage::Close(s)) if s == "s")
        );
        assert!(matches!(
            parse_client_message(r#"["REQ","s",{"kinds":"x"}]"#, &LIMITS),
            Ok(ClientMessage::Req {
                filters: Err(_),
                ..
            })
        ));
    }

    #[test]
    fn refuses_bad_messages() {
        for text in [
            "nope",
            "{}",
            "[]",
            "[1]",
            r#"["WHAT"]"#,
            r#"["EVENT"]"#,
            r#"["CLOSE"]"#,
            r#"["REQ",5,{}]"#,
            r#"["NODE-AUTH","not hex"]"#,
        ] {
            let e = parse_client_message(text, &LIMITS).unwrap_err();
            assert!(
                e.reason.is(crate::refusal::Prefix::Invalid),
                "{text}: {}",
                e.reason
            );
            assert!(
                !e.reason.to_string().contains("invalid: invalid:"),
                "{}",
                e.reason
            );
        }
        let long = format!(r#"["REQ","{}",{{}}]"#, "x".repeat(65));
        assert!(parse_client_message(&long, &LIMITS)
            .unwrap_err()
            .sub_id
            .is_some());
        let many = format!(r#"["REQ","s"{}]"#, ",{}".repeat(11));
        assert_eq!(
            parse_client_message(&many, &LIMITS)
                .unwrap_err()
                .sub_id
                .as_deref(),
            Some("s")
        );
    }

    #[test]
    fn renders_escaped() {
        assert_eq!(
            closed("a\"b", &Refusal::error("x")),
            r#"["CLOSED","a\"b","error: x"]"#
        );
        assert_eq!(count("c", 3), r#"["COUNT","c",{"count":3}]"#);
    }
}
