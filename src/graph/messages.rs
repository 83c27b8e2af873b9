//! The DB-Sync protocol's messages as types (seed 002): what a client sends
//! on `/sync/:graph-id` ([`ClientMessage`], parsed once here), and what the
//! server sends on the socket or answers over HTTP ([`ServerMessage`],
//! serialised once here; a home node's verdict is read back with the same
//! type when a batch was forwarded to it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest `client` name and `editing-block-uuid` kept, in characters.
const MAX_CLIENT: usize = 256;
const MAX_BLOCK: usize = 128;

/// A client message on the graph WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `hello`, optionally naming the client (kept in each tx's tags).
    Hello {
        client: Option<String>,
    },
    /// `presence`: the block the user is editing, if any.
    Presence {
        editing: Option<String>,
    },
    /// `pull` of the txs after `since` (`None`: not a log position).
    Pull {
        since: Option<u64>,
    },
    /// `tx/batch`: the body as sent, read by `log::BatchRequest` (the HTTP
    /// endpoint takes the same body).
    TxBatch(Value),
    Ping,
}

/// Why a client message was not understood: the `error` it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Not JSON, or no string `type`.
    Invalid,
    UnknownType,
}

impl Unreadable {
    pub fn reply(self) -> ServerMessage {
        ServerMessage::error(match self {
            Unreadable::Invalid => "invalid request",
            Unreadable::UnknownType => "unknown type",
        })
    }
}

/// A log position as clients send it: a number, a numeric string, or
/// nothing (0).
pub fn since(value: Option<&Value>) -> Option<u64> {
    match value {
        None | Some(Value::Null) => Some(0),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok())),
    }
}

/// Reads one client message.
pub fn parse(text: &str) -> Result<ClientMessage, Unreadable> {
    let message: Value = serde_json::from_str(text).map_err(|_| Unreadable::Invalid)?;
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .ok_or(Unreadable::Invalid)?;
    let text_of = |names: &[&str], max: usize| {
        names
            .iter()
            .find_map(|name| message.get(*name))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(max).collect::<String>())
    };
    Ok(match kind {
        "hello" => ClientMessage::Hello {
            client: text_of(&["client"], MAX_CLIENT),
        },
        "presence" => ClientMessage::Presence {
            editing: text_of(&["editing-block-uuid", "editing_block_uuid"], MAX_BLOCK),
        },
        "pull" => ClientMessage::Pull {
            since: since(message.get("since")),
        },
        "tx/batch" => ClientMessage::TxBatch(message),
        "ping" => ClientMessage::Ping,
        _ => return Err(Unreadable::UnknownType),
    })
}

/// One tx of a `pull/ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledTx {
    pub t: u64,
    pub tx: String,
}

/// A user on the graph's sockets, for `online-users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineUser {
    #[serde(rename = "user-id")]
    pub user_id: String,
    #[serde(
        rename = "editing-block-uuid",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub editing: Option<String>,
}

/// A server message (socket) or reply (HTTP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    #[serde(rename = "hello")]
    Hello { t: u64 },
    #[serde(rename = "pong")]
    Pong,
    #[serde(rename = "error")]
    Error { message: String },
    #[serde(rename = "changed")]
    Changed { t: u64 },
    #[serde(rename = "online-users")]
    OnlineUsers {
        #[serde(rename = "online-users")]
        online_users: Vec<OnlineUser>,
    },
    #[serde(rename = "pull/ok")]
    PullOk { t: u64, txs: Vec<PulledTx> },
    /// `events`: the signed tx events, only for a mesh node that forwarded
    /// the batch (it stores them at once).
    #[serde(rename = "tx/batch/ok")]
    TxBatchOk {
        t: u64,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        events: Option<Vec<String>>,
    },
    /// `t`: the log's position, on `stale`.
    #[serde(rename = "tx/reject")]
    TxReject {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        t: Option<u64>,
    },
}

impl ServerMessage {
    pub fn error(message: &str) -> ServerMessage {
        ServerMessage::Error {
            message: message.to_string(),
        }
    }

    pub fn server_error() -> ServerMessage {
        ServerMessage::error("server error")
    }

    pub fn reject(reason: &str) -> ServerMessage {
        ServerMessage::TxReject {
            reason: reason.to_string(),
            t: None,
        }
    }

    pub fn stale(t: u64) -> ServerMessage {
        ServerMessage::TxReject {
            reason: "stale".into(),
            t: Some(t),
        }
    }

    /// The message as sent on the socket.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_messages_keep_the_seeds_spelling() {
        let cases = [
            (
                ServerMessage::Hello { t: 3 },
                json!({"type": "hello", "t": 3}),
            ),
            (ServerMessage::Pong, json!({"type": "pong"})),
            (
                ServerMessage::stale(4),
                json!({"type": "tx/reject", "reason": "stale", "t": 4}),
            ),
            (
                ServerMessage::reject("invalid tx"),
                json!({"type": "tx/reject", "reason": "invalid tx"}),
            ),
            (
                ServerMessage::TxBatchOk { t: 5, events: None },
                json!({"type": "tx/batch/ok", "t": 5}),
            ),
            (
                ServerMessage::OnlineUsers {
                    online_users: vec![OnlineUser {
                        user_id: "a".into(),
                        editing: Some("b".into()),
                    }],
                },
                json!({"type": "online-users", "online-users": [{"user-id": "a", "editing-block-uuid": "b"}]}),
            ),
            (
                ServerMessage::PullOk {
                    t: 1,
                    txs: vec![PulledTx {
                        t: 1,
                        tx: "x".into(),
                    }],
                },
                json!({"type": "pull/ok", "t": 1, "txs": [{"t": 1, "tx": "x"}]}),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(serde_json::to_value(&message).unwrap(), expected);
            assert_eq!(
                serde_json::from_value::<ServerMessage>(expected).unwrap(),
                message
            );
        }
    }

    #[test]
    fn client_messages_parse_once() {
        assert_eq!(
            parse(r#"{"type":"hello","client":"c"}"#),
            Ok(ClientMessage::Hello {
                client: Some("c".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"presence","editing_block_uuid":"b"}"#),
            Ok(ClientMessage::Presence {
                editing: Some("b".into())
            })
        );
        assert_eq!(
            parse(r#"{"type":"pull","since":"7"}"#),
            Ok(ClientMessage::Pull { since: Some(7) })
        );
        assert_eq!(
            parse(r#"{"type":"pull","since":-1}"#),
            Ok(ClientMessage::Pull { since: None })
        );
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(parse("nope"), Err(Unreadable::Invalid));
        assert_eq!(parse(r#"{"type":5}"#), Err(Unreadable::Invalid));
        assert_eq!(parse(r#"{"type":"what"}"#), Err(Unreadable::UnknownType));
    }
}
