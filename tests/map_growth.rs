//! The single writer under map growth: a node whose LMDB map starts at
//! 1 MiB first sees `echorelay import` write 2 MB into its data dir from
//! another process (which opens the map at 1 GiB: this node's next
//! transaction gets MDB_MAP_RESIZED and must adopt that size), then ingests
//! from two sockets while it syncs a peer (peer records and refused ids are
//! bookkeeping through the writer) and `echorelay token add` writes from
//! other processes. Nothing fails, nothing acknowledged is lost.

mod common;

use common::*;
use echorelay::event::{now, Keys};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Runs `echorelay ARGS` (another process) and insists it succeeded.
fn cli_ok(args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publishes `events` on one socket, pipelined; returns how many got OK true.
async fn publish_all(url: &str, events: Vec<echorelay::event::Event>) -> usize {
    let c = Raw::connect(url).await;
    let (mut sink, mut stream) = c.ws.split();
    let count = events.len();
    let writer = tokio::spawn(async move {
        for e in events {
            sink.feed(Message::Text(format!("[\"EVENT\",{}]", e.to_json()).into()))
                .await
                .unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    let mut accepted = 0;
    let mut answered = 0;
    while answered < count {
        let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(WAIT, stream.next()).await
        else {
            panic!("no OK after {answered}");
        };
        let reply: Value = serde_json::from_str(&text).unwrap();
        if reply[0] == "OK" {
            answered += 1;
            assert_eq!(reply[2], true, "{reply}");
            accepted += 1;
        }
    }
    let _sink = writer.await.unwrap();
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_grows_and_is_adopted_while_every_writer_runs() {
    let peer = TestRelay::start().await;
    let keys = Keys::generate();
    let base = now() - 50_000;
    let mut p = peer.client().await;
    let from_peer: Vec<_> = (0..600)
        .map(|i| event_at(&keys, 1, base + i, vec![], &"p".repeat(900)))
        .collect();
    for e in &from_peer {
        p.publish_ok(e).await;
    }
    let node = TestRelay::start_with(|c| {
        c.store.map_size_mb = 1;
        c.store.max_map_size_mb = 1024;
    })
    .await;
    let data = node.dir.path().to_path_buf();
    let imported: Vec<String> = (0..2000)
        .map(|i| event_at(&keys, 1, base + 10_000 + i, vec![], &"i".repeat(900)).to_json())
        .collect();
    let file = node.dir.path().join("import.jsonl");
    std::fs::write(&file, imported.join("\n")).unwrap();
    cli_ok(&[
        "import".as_ref(),
        file.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    let published: Vec<_> = (0..2400)
        .map(|i| event_at(&keys, 1, base + 1000 + i, vec![], &"n".repeat(900)))
        .collect();
    let (first, second) = published.split_at(1200);

    let ingest_a = publish_all(&node.url, first.to_vec());
    let ingest_b = publish_all(&node.url, second.to_vec());
    let admin = node.admin();
    let sync = async {
        admin
            .call("AddPeer", &json!({"peer_url": peer.url, "dir": "down"}))
            .await
            .unwrap();
    };
    let tokens = tokio::task::spawn_blocking(move || {
        (0..3)
            .map(|i| {
                let user = format!("user{i}");
                cli_ok(&[
                    "token".as_ref(),
                    "add".as_ref(),
                    user.as_ref(),
                    "--data".as_ref(),
                    data.as_os_str(),
                ]);
            })
            .count()
    });
    let (a, b, (), made) = tokio::join!(ingest_a, ingest_b, sync, tokens);
    assert_eq!((a, b, made.unwrap()), (1200, 1200, 3));

    // The peer's events arrive too (the sync's bookkeeping went through
    // the same writer).
    let url = node.url.clone();
    eventually("5 000 events on the node", WAIT, || {
        let url = url.clone();
        async move {
            let mut c = Raw::connect(&url).await;
            let count = c.ask(json!(["COUNT", "n", {"kinds": [1]}])).await;
            (count[2]["count"] == 5000).then_some(())
        }
    })
    .await;
    let state = admin
        .call("GetPeerSyncState", &json!({"peer_url": peer.url}))
        .await
        .unwrap();
    assert_eq!(state["found"], true, "{state}");
    // The map grew from 1 MiB: ~3 MB of events.
    let size = std::fs::metadata(node.dir.path().join("data.mdb"))
        .unwrap()
        .len();
    assert!(size > 2 * 1024 * 1024, "data.mdb is {size} bytes");
    let dir = node.stop().await;
    // Everything acknowledged survived the restart.
    let again = TestRelay::start_in(dir, "127.0.0.1:0".parse().unwrap(), |_| {}).await;
    let mut c = again.client().await;
    let count = c.ask(json!(["COUNT", "n", {"kinds": [1]}])).await;
    assert_eq!(count[2]["count"], 5000);
    again.stop().await;
    peer.stop().await;
}
