//! A client of `GET /echo/stream` for tests: opens the stream over the
//! crate's HTTP client (reqwest) and parses Server-Sent Events as the
//! EventSource specification reads them (fields `id`, `event`, `data`;
//! comment lines ignored; an event ends at a blank line).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// One event of the stream.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// An open stream.
pub struct Sse {
    reply: echorelay::http_client::Reply,
    pending: String,
}

/// Opens `/echo/stream?<query>` with `token` (and `Last-Event-ID`); the
/// status, and the stream when it is 200.
pub async fn open_stream(
    addr: SocketAddr,
    query: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> (u16, Option<Sse>) {
    let endpoint = echorelay::http_client::Endpoint::parse(&format!("http://{addr}")).unwrap();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Accept", "text/event-stream")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    if let Some(id) = last_event_id {
        headers.push(("Last-Event-ID", id));
    }
    let path = format!("/echo/stream?{query}");
    let reply = echorelay::http_client::request(
        &endpoint,
        "GET",
        &path,
        &headers,
        b"",
        Duration::from_secs(10),
    )
    .await
    .expect("the stream answers");
    let status = reply.status;
    if status != 200 {
        return (status, None);
    }
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let sse = Sse {
        reply,
        pending: String::new(),
    };
    (status, Some(sse))
}

impl Sse {
    /// The next event (comments skipped) within `wait`; `None` when none
    /// came or the stream ended.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        tokio::time::timeout(wait, self.read_event())
            .await
            .ok()
            .flatten()
    }

    async fn read_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block) {
                    return Some(event);
                }
            }
            let chunk = self.reply.chunk().await.ok()??;
            self.pending.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// One event block, or `None` for a block of comments and fields only.
fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (String::new(), String::from("message"), Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = value.to_string(),
            "event" => event = value.to_string(),
            "data" => data.push(value.to_string()),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = serde_json::from_str(&data.join("\n")).expect("stream data is JSON");
    Some(SseEvent { id, event, data })
}
