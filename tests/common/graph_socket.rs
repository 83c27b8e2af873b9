//! A DB-Sync graph socket (`/sync/<graph>?token=`) that hands back the
//! server's messages by type, with a timeout.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::WAIT;

/// A graph socket that hands back messages by type.
pub struct GraphSocket {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl GraphSocket {
    pub async fn open(addr: SocketAddr, graph: &str, token: &str) -> GraphSocket {
        let url = format!("ws://{addr}/sync/{graph}?token={token}");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        GraphSocket { ws }
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next message of `kind`, skipping others (presence chatter).
    pub async fn next(&mut self, kind: &str) -> Value {
        self.next_of(&[kind]).await
    }

    /// The next message of any of `kinds`.
    pub async fn next_of(&mut self, kinds: &[&str]) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a graph message")
                .expect("socket closed")
                .expect("socket error");
            if let Message::Text(text) = msg {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if kinds.iter().any(|k| value["type"] == *k) {
                    return value;
                }
            }
        }
    }

    pub async fn ask(&mut self, value: Value, reply: &str) -> Value {
        self.send(value).await;
        self.next(reply).await
    }
}
