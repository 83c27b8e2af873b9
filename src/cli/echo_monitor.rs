//! `echorelay echo-sync --monitor`: follows the node's change stream
//! (`GET /echo/stream`, Server-Sent Events), prints each change as it
//! arrives and acknowledges it (`POST /echo/ack`) as its subscriber
//! (`--subscriber`, else `--node-id`, else `echo-sync`). A lost stream is
//! resumed from the last cursor (`Last-Event-ID`), so nothing is missed or
//! repeated across reconnects; a stream silent for three heartbeats counts
//! as lost. `--export FILE` keeps every change seen so far, rewritten after
//! each one. Ctrl-C ends it (exit 0).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::echo_sync::{Api, EchoSyncArgs};
use crate::echo::sse::SseParser;
use crate::http_client::{self, HttpError};

/// Silence after which a stream is taken for lost (the node sends a
/// heartbeat every 15 s).
const SILENCE: Duration = Duration::from_secs(45);
/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Largest event the monitor buffers (a state is at most a relay event).
const MAX_EVENT: usize = 4 * 1024 * 1024;

/// What the monitor keeps across reconnects.
struct Seen {
    cursor: Option<String>,
    /// Every change seen, only with `--export`.
    changes: Vec<Value>,
    /// Acknowledgements in flight at once (sent beside the reading, so a
    /// busy stream is not slowed to one round trip per change).
    acks: Arc<tokio::sync::Semaphore>,
}

/// Most acknowledgements in flight.
const ACKS_IN_FLIGHT: usize = 16;

pub async fn run(api: &Api, args: &EchoSyncArgs) -> anyhow::Result<i32> {
    let subscriber = args
        .subscriber
        .clone()
        .or_else(|| args.node_id.clone())
        .unwrap_or_else(|| "echo-sync".to_string());
    if let Some(node) = &args.node_id {
        print_status(api, node, args.json).await?;
    }
    let mut seen = Seen {
        cursor: None,
        changes: Vec::new(),
        acks: Arc::new(tokio::sync::Semaphore::new(ACKS_IN_FLIGHT)),
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let followed = tokio::select! {
            result = follow(api, args, &subscriber, &mut seen) => result,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        match followed {
            // Refused (401, 403, 400): retrying cannot help.
            Err(Lost::Refused(status, message)) => {
                eprintln!("echorelay: the stream was refused ({status}): {message}");
                return Ok(1);
            }
            Err(Lost::Fatal(e)) => return Err(e),
            Err(Lost::Broken(why)) => {
                eprintln!("echorelay: stream lost ({why}); reconnecting in {backoff:?}");
            }
            Ok(()) => backoff = Duration::from_secs(1),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How a stream ended.
enum Lost {
    Refused(u16, String),
    Broken(String),
    Fatal(anyhow::Error),
}

impl From<HttpError> for Lost {
    fn from(e: HttpError) -> Lost {
        Lost::Broken(e.to_string())
    }
}

/// Reads one connection of the stream until it ends.
async fn follow(
    api: &Api,
    args: &EchoSyncArgs,
    subscriber: &str,
    seen: &mut Seen,
) -> Result<(), Lost> {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("subscriber", subscriber);
    if let Some(node) = &args.node_id {
        query.append_pair("node_id", node);
    }
    if let Some(filter) = &args.filter {
        query.append_pair("filter", filter);
    }
    let path = format!("/echo/stream?{}", query.finish());
    let mut headers = vec![
        ("Authorization", api.auth.as_str()),
        ("Accept", "text/event-stream"),
    ];
    if let Some(cursor) = &seen.cursor {
        headers.push(("Last-Event-ID", cursor.as_str()));
    }
    let mut reply =
        http_client::request(&api.endpoint, "GET", &path, &headers, b"", api.timeout).await?;
    if reply.status != 200 {
        let status = reply.status;
        let body = reply.bytes(64 * 1024).await.unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return match status {
            400..=499 if status != 408 && status != 429 => Err(Lost::Refused(status, message)),
            _ => Err(Lost::Broken(format!("HTTP {status}: {message}"))),
        };
    }
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(SILENCE, reply.chunk()).await {
            Err(_) => return Err(Lost::Broken(format!("silent for {SILENCE:?}"))),
            Ok(chunk) => chunk?,
        };
        let Some(chunk) = chunk else {
            return Err(Lost::Broken("the node closed the stream".into()));
        };
        let mut events = Vec::new();
        parser.feed(&chunk, |event| events.push(event));
        if parser.pending_len() > MAX_EVENT {
            return Err(Lost::Broken("an event larger than 4 MiB".into()));
        }
        for event in events {
            if event.event != "change" {
                continue;
            }
            let Ok(change) = serde_json::from_str::<Value>(&event.data) else {
                return Err(Lost::Broken("an event that is not JSON".into()));
            };
            // Kept (and exported) before it is acknowledged: an
            // acknowledged change is one this subscriber holds.
            show(&change, args);
            seen.cursor = event.id.or(seen.cursor.take());
            let replayed = change["replayed"] == json!(true);
            if let Some(path) = &args.export {
                seen.changes.push(change.clone());
                export(path, &seen.changes).map_err(Lost::Fatal)?;
            }
            // A change replayed from the store on a resume was not notified
            // to this subscriber: there is nothing to acknowledge.
            if !replayed {
                acknowledge(api, change, subscriber, &seen.acks).await;
            }
        }
    }
}

fn show(change: &Value, args: &EchoSyncArgs) {
    if args.json {
        println!("{change}");
        return;
    }
    let state = &change["state"];
    let origin = change["origin"].as_str().unwrap_or("");
    println!(
        "{}  version {}  sync {}  from {}",
        change["node_id"].as_str().unwrap_or("?"),
        state["metadata"]["version"].as_str().unwrap_or("?"),
        change["sync_id"].as_str().unwrap_or("?"),
        origin.get(..16).unwrap_or(origin),
    );
    if args.verbose {
        println!("{state}");
    }
}

/// Acknowledges a change on its own task (waiting only when
/// [`ACKS_IN_FLIGHT`] are already out); a failure is reported, not fatal
/// (the change was still seen).
async fn acknowledge(
    api: &Api,
    change: Value,
    subscriber: &str,
    acks: &Arc<tokio::sync::Semaphore>,
) {
    let Ok(turn) = acks.clone().acquire_owned().await else {
        return;
    };
    let body = json!({"sync_id": change["sync_id"], "node_id": change["node_id"], "subscriber": subscriber});
    let api = api.clone();
    tokio::spawn(async move {
        let _turn = turn;
        match api.post("/echo/ack", &body).await {
            Ok((200, _)) => {}
            Ok((status, reply)) => eprintln!(
                "echorelay: acknowledgement refused ({status}): {}",
                reply["message"].as_str().unwrap_or("?")
            ),
            Err(e) => eprintln!("echorelay: acknowledgement failed: {e:#}"),
        }
    });
}

fn export(path: &Path, changes: &[Value]) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&json!({"action": "monitor", "changes": changes}))?;
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The node's status, once, before its changes.
async fn print_status(api: &Api, node: &str, json_out: bool) -> anyhow::Result<()> {
    let (status, reply) = api.post("/echo/status", &json!({"node_id": node})).await?;
    if status == 404 {
        eprintln!("{node}: no state yet; waiting for its first change");
        return Ok(());
    }
    if status != 200 {
        anyhow::bail!(
            "status failed ({status}): {}",
            reply["message"].as_str().unwrap_or("?")
        );
    }
    if json_out {
        eprintln!("{reply}");
        return Ok(());
    }
    let metrics = &reply["metrics"];
    println!(
        "{node}: {}  syncs 24h {}  avg {} ms  errors {:.0} %  last success {}",
        reply["status"].as_str().unwrap_or("?"),
        metrics["sync_count_24h"],
        metrics["average_duration_ms"],
        metrics["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
        metrics["last_successful_sync"].as_str().unwrap_or("never"),
    );
    Ok(())
}
