//! What a peer relay sends the sync client, as a type (NIP-01, NIP-42,
//! NIP-77 and NODE-AUTH). Each frame is read once here; the callers match
//! on [`FromRelay`] and on [`Refusal`] variants, never on raw arrays or
//! reason prefixes.

use serde_json::Value;

use crate::refusal::Refusal;

/// One message from a peer relay.
#[derive(Debug, Clone, PartialEq)]
pub enum FromRelay {
    /// A stored or live event on subscription `sub` (the event as JSON).
    Event {
        sub: String,
        event: Value,
    },
    Eose {
        sub: String,
    },
    Closed {
        sub: String,
        why: Refusal,
    },
    /// The answer to an EVENT or AUTH: `note` is the peer's message (a
    /// refusal when not accepted, a `duplicate:` remark sometimes when it
    /// was).
    Ok {
        id: String,
        accepted: bool,
        note: String,
    },
    Notice(String),
    /// A NIP-42 challenge.
    Auth {
        challenge: String,
    },
    /// The peer's answer to our NODE-AUTH nonce (its signed event).
    NodeAuth(Value),
    NegMsg {
        sub: String,
        message: String,
    },
    NegErr {
        sub: String,
        why: Refusal,
    },
    /// Anything else (an unknown type, or a known one in a wrong shape).
    Other,
}

impl FromRelay {
    /// Reads a frame already split into its JSON array.
    pub fn parse(parts: Vec<Value>) -> FromRelay {
        let text = |i: usize| parts.get(i).and_then(Value::as_str).map(str::to_string);
        let Some(kind) = text(0) else {
            return FromRelay::Other;
        };
        let parsed = match kind.as_str() {
            "EVENT" => text(1)
                .zip(parts.get(2).cloned())
                .map(|(sub, event)| FromRelay::Event { sub, event }),
            "EOSE" => text(1).map(|sub| FromRelay::Eose { sub }),
            "CLOSED" => text(1).map(|sub| FromRelay::Closed {
                sub,
                why: Refusal::from_wire(&text(2).unwrap_or_default()),
            }),
            "OK" => text(1)
                .zip(parts.get(2).and_then(Value::as_bool))
                .map(|(id, accepted)| FromRelay::Ok {
                    id,
                    accepted,
                    note: text(3).unwrap_or_default(),
                }),
            "NOTICE" => Some(FromRelay::Notice(text(1).unwrap_or_default())),
            "AUTH" => text(1).map(|challenge| FromRelay::Auth { challenge }),
            crate::node_auth::MESSAGE => Some(FromRelay::NodeAuth(
                parts.get(1).cloned().unwrap_or(Value::Null),
            )),
            "NEG-MSG" => text(1)
                .zip(text(2))
                .map(|(sub, message)| FromRelay::NegMsg { sub, message }),
            "NEG-ERR" => text(1).map(|sub| FromRelay::NegErr {
                sub,
                why: Refusal::from_wire(&text(2).unwrap_or_default()),
            }),
            _ => None,
        };
        parsed.unwrap_or(FromRelay::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Prefix;
    use serde_json::json;

    fn parse(v: Value) -> FromRelay {
        FromRelay::parse(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn every_message_reads_once() {
        assert_eq!(
            parse(json!(["EVENT", "s", {"id": "x"}])),
            FromRelay::Event {
                sub: "s".into(),
                event: json!({"id": "x"})
            }
        );
        assert_eq!(
            parse(json!(["CLOSED", "s", "auth-required: who are you"])),
            FromRelay::Closed {
                sub: "s".into(),
                why: Refusal::auth_required("who are you")
            }
        );
        assert_eq!(
            parse(json!(["OK", "id", false, "blocked: no"])),
            FromRelay::Ok {
                id: "id".into(),
                accepted: false,
                note: "blocked: no".into()
            }
        );
        assert!(
            matches!(parse(json!(["NEG-ERR", "n", "closed: gone"])), FromRelay::NegErr { why, .. } if why.is(Prefix::Closed))
        );
        assert_eq!(
            parse(json!(["NEG-MSG", "n", "61"])),
            FromRelay::NegMsg {
                sub: "n".into(),
                message: "61".into()
            }
        );
        assert_eq!(
            parse(json!(["AUTH", "c"])),
            FromRelay::Auth {
                challenge: "c".into()
            }
        );
        assert_eq!(parse(json!(["OK", "id", "yes"])), FromRelay::Other);
        assert_eq!(parse(json!(["EVENT"])), FromRelay::Other);
        assert_eq!(parse(json!([5])), FromRelay::Other);
        assert_eq!(parse(json!(["WHAT", 1])), FromRelay::Other);
    }
}
