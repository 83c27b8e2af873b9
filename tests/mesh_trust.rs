//! Mesh trust, attacked through the real wire: forged graph and echo events
//! (a stranger's key) reach a node as a client EVENT, from `echorelay sync`
//! against a plain relay that holds them, over a live link and through
//! `import`, and change nothing; a NIP-42 challenge relayed by a rogue
//! relay gives it no mesh access; an impostor at a peer's URL gets no
//! mesh-private event and cannot inject one.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use echorelay::event::{now, Event, Keys};
use echorelay::negentropy::{Item, Negentropy, VectorStorage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {ALICE}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let (status, _, body) = http_request(addr, method, path, &headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Runs the `echorelay` binary off the async executor.
async fn cli(args: &[&str], data: &std::path::Path) -> std::process::Output {
    let mut command = std::process::Command::new(BIN);
    command.args(args).arg("--data").arg(data);
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap()
}

/// A plain relay, as any public relay would be: it stores and serves every
/// event (mesh kinds included) to anyone, answers NIP-77 over its whole
/// set and REQ by ids, and accepts every EVENT. With `proof_key` it also
/// answers NODE-AUTH, signing with that key (an impostor's, or a mesh
/// node's that pushes forged events). It records every message it gets.
struct PlainRelay {
    url: String,
    received: Arc<parking_lot::Mutex<Vec<Value>>>,
}

impl PlainRelay {
    async fn start(events: Vec<Event>, proof_key: Option<Keys>) -> PlainRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let received: Arc<parking_lot::Mutex<Vec<Value>>> = Arc::default();
        let (events, proof_key) = (Arc::new(events), Arc::new(proof_key));
        let (log, served_url) = (received.clone(), url.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (events, key, log) = (events.clone(), proof_key.clone(), log.clone());
                let url = served_url.clone();
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    serve_plain(ws, &events, key.as_ref().as_ref(), &url, &log).await;
                });
            }
        });
        PlainRelay { url, received }
    }

    /// Messages of type `kind` it received.
    fn got(&self, kind: &str) -> Vec<Value> {
        self.received
            .lock()
            .iter()
            .filter(|m| m[0] == kind)
            .cloned()
            .collect()
    }
}

async fn serve_plain(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    events: &[Event],
    proof_key: Option<&Keys>,
    url: &str,
    log: &parking_lot::Mutex<Vec<Value>>,
) {
    let items: Vec<Item> = events
        .iter()
        .map(|e| Item::new(e.created_at, e.id))
        .collect();
    let storage = VectorStorage::new(items);
    while let Some(Ok(Message::Text(text))) = ws.next().await {
        let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        log.lock().push(msg.clone());
        let mut replies = Vec::new();
        match msg[0].as_str().unwrap_or("") {
            "NEG-OPEN" | "NEG-MSG" => {
                let hex_msg = msg[if msg[0] == "NEG-OPEN" { 3 } else { 2 }]
                    .as_str()
                    .unwrap_or("");
                let query = hex::decode(hex_msg).unwrap_or_default();
                let mut neg = Negentropy::new(&storage, 0).unwrap();
                let reply = neg.reconcile(&query).unwrap();
                replies.push(json!(["NEG-MSG", msg[1], hex::encode(reply)]));
            }
            "REQ" => {
                let ids: Option<Vec<String>> = msg[2]["ids"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                });
                for e in events {
                    if ids.as_ref().is_none_or(|ids| ids.contains(&e.id_hex())) {
                        let event: Value = serde_json::from_str(&e.to_json()).unwrap();
                        replies.push(json!(["EVENT", msg[1], event]));
                    }
                }
                replies.push(json!(["EOSE", msg[1]]));
            }
            "EVENT" => replies.push(json!(["OK", msg[1]["id"], true, ""])),
            "NODE-AUTH" => match proof_key {
                Some(key) => {
                    let nonce = msg[1].as_str().unwrap_or("");
                    let proof = echorelay::node_auth::proof(key, nonce, url);
                    let proof: Value = serde_json::from_str(&proof.to_json()).unwrap();
                    replies.push(json!(["NODE-AUTH", proof]));
                }
                None => replies.push(json!(["NOTICE", "unknown message type"])),
            },
            _ => {}
        }
        for reply in replies {
            if ws
                .send(Message::Text(reply.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Forged mesh state for `graph` and echo node `node-1`, signed by
/// `forger`: the graph deleted, renamed and given to a new owner, a tx in
/// its log, an echo state with a future `received`, an asset record
/// pointing at another blob.
fn forgeries(forger: &Keys, graph: &str) -> Vec<Event> {
    let later = now() + 5;
    let meta = |name: &str, owner: &str, deleted: bool| {
        json!({"graph-id": graph, "graph-name": name, "owner": owner, "members": [],
               "created-at": 1, "updated-at": u64::MAX / 2, "deleted": deleted})
        .to_string()
    };
    let d = vec!["d", graph];
    vec![
        event_at(
            forger,
            34071,
            later,
            vec![d.clone()],
            &meta("x", "alice", true),
        ),
        event_at(
            forger,
            34071,
            later + 1,
            vec![d.clone()],
            &meta("renamed", "mallory", false),
        ),
        event_at(
            forger,
            4071,
            later,
            vec![vec!["g", graph], vec!["t", "1"]],
            "[:db/add 1 :title \"forged\"]",
        ),
        event_at(
            forger,
            34072,
            later,
            vec![
                vec!["d", "node-1"],
                vec!["version", "99"],
                vec!["checksum", "00"],
                vec!["resonance", "1"],
                vec!["received", "99999999999999"],
            ],
            "{\"pinned\":true}",
        ),
        event_at(
            forger,
            34073,
            later,
            vec![vec!["d", &format!("{graph}/a.png")], vec!["g", graph]],
            &json!({"graph-id": graph, "name": "a.png", "sha256": "ab".repeat(32),
                    "size": 1, "updated-at": u64::MAX / 2})
            .to_string(),
        ),
    ]
}

/// What the graph API shows of `graph`: its listing and its log.
async fn graph_view(node: &TestRelay, graph: &str) -> (Value, Value) {
    let (status, list) = call(node.addr, "GET", "/graphs", "").await;
    assert_eq!(status, 200, "{list}");
    let (status, pulled) = call(node.addr, "GET", &format!("/sync/{graph}/pull"), "").await;
    assert_eq!(status, 200, "{pulled}");
    (list, pulled)
}

async fn metric(node: &TestRelay, name: &str) -> u64 {
    let (_, _, body) = http_get(node.addr, "/metrics", &[]).await;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the node counted `at_least` mesh-author refusals.
async fn await_refusals(node: &TestRelay, at_least: u64) {
    eventually(
        "the refusals to be counted",
        Duration::from_secs(20),
        || async move {
            (metric(node, "echorelay_mesh_author_refused_total").await >= at_least).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_mesh_events_change_nothing_on_any_path() {
    let node = TestRelay::start_with(with_alice).await;
    let (status, created) = call(
        node.addr,
        "POST",
        "/graphs",
        &json!({"graph-name": "g"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let graph = created["graph-id"].as_str().unwrap().to_string();
    let batch = json!({"t-before": 0, "txs": ["[base]"]}).to_string();
    let (status, _) = call(
        node.addr,
        "POST",
        &format!("/sync/{graph}/tx/batch"),
        &batch,
    )
    .await;
    assert_eq!(status, 200);
    let before = graph_view(&node, &graph).await;
    assert_eq!(
        before.0.to_string().matches(&graph).count(),
        1,
        "{}",
        before.0
    );
    let forger = Keys::generate();
    let forged = forgeries(&forger, &graph);

    // 1. As client EVENTs: from the forger itself, and from a connection
    //    authenticated as the node's own key (the author is still not).
    let mut stranger = node.client().await;
    stranger.auth(&forger).await;
    let mut as_node = node.client().await;
    as_node.auth(&node.node_key()).await;
    for event in &forged {
        let reply = stranger.publish(event).await;
        assert_eq!(reply[2], false, "{reply}");
        let reply = as_node.publish(event).await;
        assert_eq!(reply[2], false, "{reply}");
        assert!(
            reply[3].as_str().unwrap().starts_with("restricted:"),
            "{reply}"
        );
    }
    await_refusals(&node, forged.len() as u64).await;
    assert_eq!(graph_view(&node, &graph).await, before);

    // 2. `echorelay sync --dir down` from a plain relay holding them.
    let plain = PlainRelay::start(forged.clone(), None).await;
    let sync_down = || async {
        let args = [
            "sync",
            &plain.url,
            "--dir",
            "down",
            "--json",
            "--timeout",
            "10",
        ];
        cli(&args, node.dir.path()).await
    };
    let out = sync_down().await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = summary["fetch_refusals"].as_array().unwrap();
    assert_eq!(refused.len(), forged.len(), "{summary}");
    assert!(refused
        .iter()
        .all(|r| r["reason"].as_str().unwrap().starts_with("restricted:")));
    assert_eq!(graph_view(&node, &graph).await, before);
    // Remembered: the next run does not ask for them again.
    let again = sync_down().await;
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["skipped_refused"], forged.len(), "{summary}");

    // 3. A live link from a peer that proves a mesh key and pushes events
    //    the stranger signed: the author check still refuses them.
    let pusher = Keys::generate();
    let live = PlainRelay::start(forged.clone(), Some(pusher.clone())).await;
    let refused_before = metric(&node, "echorelay_mesh_author_refused_total").await;
    let peer = json!({"peer_url": live.url, "dir": "down", "live": true,
                      "interval_secs": 3600, "pubkey": hex::encode(pusher.public_key())});
    node.admin().call("AddPeer", &peer).await.unwrap();
    await_refusals(&node, refused_before + forged.len() as u64).await;
    assert!(!live.got("REQ").is_empty());
    assert_eq!(graph_view(&node, &graph).await, before);

    // 4. `import` of a file holding them.
    let file = node.dir.path().join("forged.jsonl");
    let lines: Vec<String> = forged.iter().map(Event::to_json).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = cli(
        &["import", file.to_str().unwrap(), "--json"],
        node.dir.path(),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("restricted:"));
    assert_eq!(graph_view(&node, &graph).await, before);

    // Echo state and the asset record: not there either.
    let mut inspect = node.client().await;
    inspect.auth(&node.node_key()).await;
    let authors: Vec<Value> = inspect
        .req("mesh", &[json!({"kinds": [4071, 34071, 34072, 34073]})])
        .await
        .iter()
        .map(|e| e["pubkey"].clone())
        .collect();
    let node_hex = hex::encode(node.node_key().public_key());
    assert!(authors.iter().all(|a| a == &json!(node_hex)), "{authors:?}");
    node.stop().await;
}

/// A frame-passing relay: each connection to it opens one to `target`
/// (sending `Host: <its own address>`, as a rogue relay may) and passes
/// text frames both ways, so the target's NIP-42 challenge reaches the
/// client and the client's AUTH reaches the target. After the client's
/// AUTH went through, it asks the target for graph events itself.
async fn forwarding_relay(target: SocketAddr) -> (String, tokio::sync::mpsc::Receiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = listener.local_addr().unwrap();
    let (seen_tx, seen) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let Ok(mut client) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                use tokio_tungstenite::tungstenite::client::IntoClientRequest;
                let mut request = format!("ws://{target}").into_client_request().unwrap();
                request
                    .headers_mut()
                    .insert("host", me.to_string().parse().unwrap());
                let Ok((mut upstream, _)) = tokio_tungstenite::connect_async(request).await else {
                    return;
                };
                let mut authed = false;
                loop {
                    tokio::select! {
                        Some(Ok(Message::Text(t))) = client.next() => {
                            authed |= t.as_str().starts_with("[\"AUTH\"");
                            if upstream.send(Message::Text(t)).await.is_err() { return; }
                        }
                        Some(Ok(Message::Text(t))) = upstream.next() => {
                            let msg: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                            if authed && msg[0] == "OK" {
                                let steal = json!(["REQ", "steal", {"kinds": [4071]}]);
                                let _ = upstream.send(Message::Text(steal.to_string().into())).await;
                            }
                            let answered_steal = msg[1] == "steal";
                            let _ = seen_tx.send(msg).await;
                            // The client may be gone already; the answer to
                            // our own REQ still counts.
                            let _ = client.send(Message::Text(t)).await;
                            if answered_steal { return; }
                        }
                        else => return,
                    }
                }
            });
        }
    });
    (format!("ws://{me}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_challenges_and_impostors_get_no_mesh_access() {
    // B is a mesh node that trusts A's key; it holds a graph tx.
    let a = TestRelay::start().await;
    let ka = a.node_key();
    let b =
        TestRelay::start_with(|c| c.auth.trusted_nodes = vec![hex::encode(ka.public_key())]).await;
    let mut on_b = b.client().await;
    on_b.auth(&b.node_key()).await;
    let (index, txs) = homed_graph(&b.node_key(), "g1", &["secret"]);
    for event in std::iter::once(&index).chain(&txs) {
        on_b.publish_ok(event).await;
    }

    // A wrong relay tag is refused outright.
    let mut wrong = b.client().await;
    wrong.url = "ws://evil.example".into();
    let reply = wrong.auth(&ka).await;
    assert_eq!(reply[2], false, "{reply}");
    assert!(reply[3].as_str().unwrap().contains("relay tag"), "{reply}");

    // A syncs with a rogue relay that relays B's challenge to A.
    let (rogue, mut seen) = forwarding_relay(b.addr).await;
    let out = cli(
        &["sync", &rogue, "--dir", "down", "--json", "--timeout", "5"],
        a.dir.path(),
    )
    .await;
    assert!(out.status.code().is_some());
    let mut saw_auth_reply = false;
    let mut steal_answer = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), seen.recv()).await {
        assert_ne!(msg[2]["content"], "secret", "a graph tx leaked: {msg}");
        if msg[0] == "OK" {
            saw_auth_reply = true;
        }
        if msg[1] == "steal" {
            steal_answer = Some(msg);
        }
    }
    assert!(saw_auth_reply, "A's AUTH reached B through the rogue relay");
    // The relayed proof is refused (Host spoofed to the rogue's URL, no
    // binding to B's key), so the rogue's own ask is refused too.
    let steal_answer = steal_answer.expect("B answered the rogue's REQ");
    assert_eq!(steal_answer[0], "CLOSED", "{steal_answer}");

    // An impostor at a peer's URL: A is configured with B's key for it.
    let impostor_key = Keys::generate();
    let planted = event_at(
        &ka,
        4071,
        now(),
        vec![vec!["g", "g1"]],
        "planted by impostor",
    );
    let impostor = PlainRelay::start(vec![planted.clone()], Some(impostor_key)).await;
    let mut on_a = a.client().await;
    on_a.auth(&ka).await;
    let (index, mut txs) = homed_graph(&ka, "g2", &["a's private tx"]);
    let mine = txs.remove(0);
    on_a.publish_ok(&index).await;
    on_a.publish_ok(&mine).await;
    let peer = json!({"peer_url": impostor.url, "dir": "both", "interval_secs": 3600,
                      "pubkey": hex::encode(b.node_key().public_key())});
    a.admin().call("AddPeer", &peer).await.unwrap();
    let out = cli(
        &[
            "sync",
            &impostor.url,
            "--dir",
            "both",
            "--json",
            "--timeout",
            "5",
        ],
        a.dir.path(),
    )
    .await;
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        summary["fetch_refusals"][0]["id"],
        planted.id_hex(),
        "{summary}"
    );
    assert!(!impostor.got("NODE-AUTH").is_empty(), "A asked for a proof");
    for event in impostor.got("EVENT") {
        let kind = event[1]["kind"].as_u64().unwrap();
        assert!(
            ![4071, 34071, 34072, 34073].contains(&kind),
            "leaked {event}"
        );
    }
    for open in impostor.got("NEG-OPEN") {
        assert!(open[2].get("kinds").is_none(), "mesh tree offered: {open}");
    }
    // What the impostor offered (a tx by A's own key, so a mesh author)
    // was not taken from a peer that did not prove itself.
    let ids = on_a.req_ids(&[json!({"kinds": [4071]})]).await;
    assert_eq!(ids, vec![mine.id_hex()]);
    for r in [a, b] {
        r.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgeries_stored_before_the_check_are_inert() {
    let node = TestRelay::start_with(with_alice).await;
    let body = json!({"graph-name": "g"}).to_string();
    let (status, created) = call(node.addr, "POST", "/graphs", &body).await;
    assert_eq!(status, 200, "{created}");
    let graph = created["graph-id"].as_str().unwrap().to_string();
    let before = graph_view(&node, &graph).await;
    let dir = node.stop().await;

    // Stored as a version without author checks would have: here by an
    // import that (wrongly) trusts the forger.
    let forger = Keys::generate();
    // (Its forged tx cannot be stored even so: the forger is not the
    // graph's home.) The deletion last.
    let all = forgeries(&forger, &graph);
    let forged = [&all[3], &all[4], &all[0]];
    let file = dir.path().join("forged.jsonl");
    let lines: Vec<String> = forged.iter().map(|e| e.to_json()).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let trusting = dir.path().join("trusting.toml");
    let forger_hex = hex::encode(forger.public_key());
    std::fs::write(
        &trusting,
        format!("[auth]\ntrusted_nodes = [\"{forger_hex}\"]\n"),
    )
    .unwrap();
    let config = trusting.to_str().unwrap();
    let out = cli(
        &["import", file.to_str().unwrap(), "--config", config],
        dir.path(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let filter = json!({"authors": [forger_hex], "kinds": [34071, 34072, 34073]}).to_string();
    let out = cli(&["export", "--filter", &filter], dir.path()).await;
    let stored = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(stored.lines().count(), 3, "the forgeries are in the store");
    assert!(stored.contains(r#"\"deleted\":true"#), "{stored}");

    // The node as configured (the forger outside its mesh): nothing acts.
    let node = TestRelay::start_in(dir, "127.0.0.1:0".parse().unwrap(), with_alice).await;
    let (list, pulled) = graph_view(&node, &graph).await;
    assert_eq!(list, before.0, "not deleted, renamed or given away");
    assert_eq!(pulled, before.1);
    let asset = format!("/assets/{graph}/a.png");
    assert_eq!(call(node.addr, "GET", &asset, "").await.0, 404);
    let (status, echo) = call(node.addr, "POST", "/echo/pull", "{}").await;
    assert_eq!((status, &echo["changes"]), (200, &json!([])), "{echo}");
    node.stop().await;
}
