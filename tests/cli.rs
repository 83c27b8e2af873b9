//! The binary itself: serve (with SIGTERM and SIGKILL), import and export.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use echorelay::event::{now, Keys};
use serde_json::json;

fn export(dir: &std::path::Path, filter: Option<&str>) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(BIN);
    cmd.args(["export", "--data"]).arg(dir.join("db"));
    if let Some(f) = filter {
        cmd.args(["--filter", f]);
    }
    let out = cmd.output().expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_serve(dir.path());
    let keys = Keys::generate();
    let mut c = Raw::connect(&url).await;
    let events: Vec<_> = (0..3000)
        .map(|i| keys.sign(now(), 1, vec![], format!("crash {i}")))
        .collect();
    let mut acked = HashSet::new();
    let mut sent = 0;
    // Pipeline: keep 200 EVENTs in flight, kill once 1000 were acknowledged.
    while acked.len() < 1000 {
        while sent < events.len() && sent - acked.len() < 200 {
            c.send_text(format!("[\"EVENT\",{}]", events[sent].to_json()))
                .await;
            sent += 1;
        }
        let ok = c.recv().await;
        assert_eq!(ok[0], "OK");
        assert_eq!(ok[2], true, "{ok}");
        acked.insert(ok[1].as_str().unwrap().to_string());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Drain OKs that were already on the wire before the kill.
    while let Some(ok) = c.try_recv(std::time::Duration::from_millis(500)).await {
        if ok[0] == "OK" && ok[2] == true {
            acked.insert(ok[1].as_str().unwrap().to_string());
        }
    }
    let stored: HashSet<String> = export(dir.path(), None)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost after SIGKILL",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_serve(dir.path());
    let keys = Keys::generate();
    let mut c = Raw::connect(&url).await;
    let ev = note(&keys, "before shutdown");
    c.publish_ok(&ev).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // The relay says goodbye with a close frame (1001 going away).
    assert_eq!(c.close_code().await, Some(1001));
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
    assert_eq!(export(dir.path(), None).len(), 1);
}

#[test]
fn import_then_export() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate();
    let mut lines = String::new();
    for i in 0..50 {
        lines.push_str(
            &event_at(
                &keys,
                1,
                1_700_000_000 + i,
                vec![vec!["t", "imp"]],
                &format!("e{i}"),
            )
            .to_json(),
        );
        lines.push('\n');
    }
    let dup_line = lines.lines().next().unwrap().to_string();
    lines.push_str(&dup_line);
    lines.push('\n');
    lines.push_str("{not json}\n");
    let mut tampered = event_at(&keys, 1, 1_700_000_000, vec![], "t");
    tampered.content = "changed".into();
    lines.push_str(&tampered.to_json());
    lines.push('\n');
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, &lines).unwrap();

    let out = Command::new(BIN)
        .args(["import", "--json", "--data"])
        .arg(dir.path().join("db"))
        .arg(&file)
        .output()
        .unwrap();
    // Two bad lines: the exit code says so, the summary counts them.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["stored"], 50);
    assert_eq!(summary["duplicate"], 1);
    assert_eq!(summary["invalid"], 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 52:"), "{stderr}");
    assert!(stderr.contains("line 53:"), "{stderr}");

    assert_eq!(export(dir.path(), None).len(), 50);
    let filtered = export(
        dir.path(),
        Some(&json!({"since": 1_700_000_040}).to_string()),
    );
    assert_eq!(filtered.len(), 10);
    assert_eq!(filtered[0]["created_at"], 1_700_000_049);

    // Re-import from stdin: all duplicates, exit 0.
    let mut child = Command::new(BIN)
        .args(["import", "--data"])
        .arg(dir.path().join("db"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let good: String = lines.lines().take(50).map(|l| format!("{l}\n")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(good.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 stored, 50 duplicate"));

    let bad = Command::new(BIN)
        .args(["export", "--filter", "{\"kinds\":\"x\"}", "--data"])
        .arg(dir.path().join("db"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid filter: kinds"));
}

fn negentropy_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("negentropy")
        .args(args)
        .arg("--data")
        .arg(dir.join("db"))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negentropy_trees_managed_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_serve_with(dir.path(), "", "[negentropy]\nmax_sync_events = 2\n");
    let keys = Keys::generate();
    let mut c = Raw::connect(&url).await;
    for i in 0..4 {
        c.publish_ok(&note(&keys, &format!("n{i}"))).await;
    }
    c.publish_ok(&event_at(&keys, 7, now(), vec![], "+")).await;
    // No tree for kinds [1] yet: the query-built set is over its cap of 2.
    let reply = c
        .ask(json!(["NEG-OPEN", "a", {"kinds": [1]}, "6100000200"]))
        .await;
    assert_eq!(reply[2], "blocked: too many query results", "{reply}");

    let out = negentropy_cli(dir.path(), &["add", "{\"kinds\":[1]}", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["events"], 4);
    let id = added["id"].as_u64().unwrap();

    // The running relay maintains the new tree and serves NEG-OPEN from it.
    let fifth = note(&keys, "after add");
    c.publish_ok(&fifth).await;
    let reply = c
        .ask(json!(["NEG-OPEN", "b", {"kinds": [1]}, "6100000200"]))
        .await;
    assert_eq!(reply[0], "NEG-MSG", "{reply}");
    let msg = reply[2].as_str().unwrap();
    assert!(msg.starts_with("6100000205"), "5 ids expected: {msg}");
    assert!(msg.contains(&fifth.id_hex()));

    let out = negentropy_cli(dir.path(), &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // {}, the mesh index tree, and ours.
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    assert_eq!(list[0]["filter"], json!({}));
    assert_eq!(list[0]["events"], 6);
    assert_eq!(list[1]["filter"], json!({"kinds": [34071, 34072, 34073]}));
    assert_eq!(list[2]["events"], 5);
    assert_eq!(list[2]["status"], "ready");

    assert!(negentropy_cli(dir.path(), &["build", &id.to_string()])
        .status
        .success());
    let out = negentropy_cli(dir.path(), &["remove", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("always exists"));
    assert!(negentropy_cli(dir.path(), &["remove", &id.to_string()])
        .status
        .success());
    let out = negentropy_cli(dir.path(), &["add", "{\"kinds\":[1],\"since\":5}"]);
    assert_eq!(out.status.code(), Some(1));
    let reply = c
        .ask(json!(["NEG-OPEN", "c", {"kinds": [1]}, "6100000200"]))
        .await;
    assert_eq!(reply[2], "blocked: too many query results", "{reply}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_command_exit_codes_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_serve(dir.path());
    let keys = Keys::generate();
    let mut c = Raw::connect(&url).await;
    let events: Vec<_> = (0..40)
        .map(|i| event_at(&keys, 1, now() - 100 + i, vec![], &format!("c{i}")))
        .collect();
    for e in &events[..25] {
        c.publish_ok(e).await;
    }
    // The local node holds 15..40 (imported), the relay 0..25.
    let local = tempfile::tempdir().unwrap();
    let file = local.path().join("in.jsonl");
    let lines: String = events[15..]
        .iter()
        .map(|e| format!("{}\n", e.to_json()))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let status = Command::new(BIN)
        .args(["import", "--data"])
        .arg(local.path().join("db"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(status.status.success());

    let (sync_url, local_db) = (url.clone(), local.path().join("db"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "sync",
                &sync_url,
                "--dir",
                "both",
                "--json",
                "--timeout",
                "5",
                "--data",
            ])
            .arg(local_db)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["need"], 15);
    assert_eq!(summary["have"], 15);
    assert_eq!(summary["fetched"], 15);
    assert_eq!(summary["sent"], 15);
    assert_eq!(c.req_ids(&[json!({"limit": 100})]).await.len(), 40);
    assert_eq!(export(local.path(), None).len(), 40);

    // Nothing listening: exit 1 with one readable line.
    let local_path = local.path().join("db");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["sync", "ws://127.0.0.1:1", "--timeout", "2", "--data"])
            .arg(local_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    child.kill().unwrap();
}

/// `echorelay sync` into the data dir of a running `serve`: the events it
/// fetched reach the live subscribers of that serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_into_a_running_serve_reaches_its_subscribers() {
    let (source_dir, target_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut source, source_url) = spawn_serve(source_dir.path());
    let (mut target, target_url) = spawn_serve(target_dir.path());
    let keys = Keys::generate();
    let mut publisher = Raw::connect(&source_url).await;
    let events: Vec<_> = (0..30)
        .map(|i| event_at(&keys, 1, now() - 100 + i, vec![], &format!("s{i}")))
        .collect();
    for e in &events {
        publisher.publish_ok(e).await;
    }
    let mut subscriber = Raw::connect(&target_url).await;
    subscriber
        .send(json!(["REQ", "live", {"authors": [hex::encode(keys.public_key())]}]))
        .await;
    assert_eq!(subscriber.recv().await, json!(["EOSE", "live"]));

    let data = target_dir.path().join("db");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["sync", &source_url, "--dir", "down", "--json", "--data"])
            .arg(data)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut delivered = HashSet::new();
    while delivered.len() < events.len() {
        let msg = subscriber.recv().await;
        assert_eq!(msg[0], "EVENT", "{msg}");
        delivered.insert(msg[2]["id"].as_str().unwrap().to_string());
    }
    let expected: HashSet<String> = events.iter().map(id_of).collect();
    assert_eq!(delivered, expected);
    source.kill().unwrap();
    target.kill().unwrap();
}

/// Runs a control-API subcommand against `serve`'s admin address, reading
/// the generated token from its data dir as an operator on the node would.
fn control(serve: &Serve, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .args(["--url", &serve.admin, "--data"])
        .arg(dir.join("db"))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_peers_and_sessions_commands() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, a_url) = spawn_serve(a_dir.path());
    let (_b, b_url) = spawn_serve(b_dir.path());
    let keys = Keys::generate();
    let mut cb = Raw::connect(&b_url).await;
    for i in 0..12 {
        cb.publish_ok(&event_at(
            &keys,
            1,
            now() - 50 + i,
            vec![],
            &format!("p{i}"),
        ))
        .await;
    }
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let (a_path, a_ref) = (a_dir.path().to_path_buf(), &a);

    let out = control(a_ref, &a_path, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("background sync: running; 0 peer(s)"),
        "{}",
        text(&out)
    );

    let out = control(
        a_ref,
        &a_path,
        &[
            "peers",
            "add",
            &b_url,
            "--dir",
            "down",
            "--interval",
            "3600",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = control(a_ref, &a_path, &["peers", "add", &b_url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("already configured"), "{}", text(&out));
    let out = control(a_ref, &a_path, &["peers", "list"]);
    assert!(
        text(&out).contains(&format!("{b_url}  dir down")),
        "{}",
        text(&out)
    );

    // A foreground sync streams progress and exits 0 with the counts.
    let out = control(a_ref, &a_path, &["peers", "sync", &b_url, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["complete"], true);
    let mut ca = Raw::connect(&a_url).await;
    assert_eq!(ca.req_ids(&[json!({"limit": 100})]).await.len(), 12);
    let out = control(a_ref, &a_path, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["peer_count"], 1);

    let out = control(a_ref, &a_path, &["peers", "sync", "ws://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("sync failed"), "{}", text(&out));

    let reply = ca
        .ask(json!(["NEG-OPEN", "cli-neg", {}, "6100000200"]))
        .await;
    assert_eq!(reply[0], "NEG-MSG");
    let out = control(a_ref, &a_path, &["sessions", "list"]);
    assert!(text(&out).contains("1 open session(s)"), "{}", text(&out));
    assert!(text(&out).contains("cli-neg"), "{}", text(&out));
    let out = control(a_ref, &a_path, &["sessions", "close", "cli-neg"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(ca.recv().await[0], "NEG-ERR");
    let out = control(a_ref, &a_path, &["sessions", "close", "cli-neg"]);
    assert_eq!(out.status.code(), Some(1));

    let out = control(a_ref, &a_path, &["peers", "remove", &b_url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = control(a_ref, &a_path, &["peers", "remove", &b_url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("unknown peer"), "{}", text(&out));

    let out = Command::new(BIN)
        .args(["status", "--url", &a.admin, "--token", "wrong"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("401"), "{}", text(&out));
}

/// `echorelay token add|list|remove` on the data dir of a running relay:
/// the printed token works at once, an expired one and a removed one do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_commands_against_a_running_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (_serve, url) = spawn_serve(dir.path());
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").parse().unwrap();
    let token_cmd = |args: &[&str]| {
        Command::new(BIN)
            .arg("token")
            .args(args)
            .arg("--data")
            .arg(dir.path().join("db"))
            .output()
            .unwrap()
    };
    let out = token_cmd(&["add", "dave"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.len(), 64);
    let auth = format!("Bearer {token}");
    let (status, _, body) = http_get(addr, "/graphs", &[("Authorization", &auth)]).await;
    assert_eq!((status, body.as_str()), (200, r#"{"graphs":[]}"#));

    let out = token_cmd(&["add", "erin", "--expires-in", "1"]);
    let short = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let listed = String::from_utf8(token_cmd(&["list"]).stdout).unwrap();
    assert!(
        listed.contains("dave") && listed.contains("never expires"),
        "{listed}"
    );
    assert!(!listed.contains(&token), "tokens are never shown again");
    // Past its expiry the token is refused (waiting on the clock is the point).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let short_auth = format!("Bearer {short}");
    let (status, _, _) = http_get(addr, "/graphs", &[("Authorization", &short_auth)]).await;
    assert_eq!(status, 401);

    assert!(token_cmd(&["remove", "dave"]).status.success());
    let (status, _, _) = http_get(addr, "/graphs", &[("Authorization", &auth)]).await;
    assert_eq!(status, 401);
    assert_eq!(token_cmd(&["remove", "dave"]).status.code(), Some(1));
}

/// `echorelay echo-sync` against a running relay: every action, exit
/// codes, export files, and clear errors for missing or wrong settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_sync_command() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let token = "cli-echo-token";
    let extra = format!(
        "[[auth.tokens]]\nuser = \"cli\"\nsha256 = \"{}\"\n",
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    let (_serve, url) = spawn_serve_with(dir.path(), "", &extra);
    let api = url.replace("ws://", "http://");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("echo-sync")
            .args(args)
            .env_remove("ECHO_API_URL")
            .env_remove("ECHO_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let env = [("ECHO_API_URL", api.as_str()), ("ECHO_TOKEN", token)];
    let err = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).to_string();

    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("ECHO_API_URL is not set"),
        "{}",
        err(&out)
    );
    let out = run(&[], &[("ECHO_API_URL", api.as_str())]);
    assert!(err(&out).contains("ECHO_TOKEN is not set"), "{}", err(&out));
    let out = run(
        &[],
        &[("ECHO_API_URL", api.as_str()), ("ECHO_TOKEN", "wrong")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("refused ECHO_TOKEN"), "{}", err(&out));
    let out = run(&["--priority", "11"], &env);
    assert_eq!(out.status.code(), Some(2), "clap refuses priority 11");

    // Push one state (checksum computed by the client), then a conflict,
    // then force.
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"node_id": "node-1", "timestamp": "2026-11-22T10:00:00Z", "data": {"k": 1}, "metadata": {"version": "1", "resonance_level": 0.5}}"#,
    )
    .unwrap();
    let path = state.to_str().unwrap();
    let out = run(&["--action", "push", "--input", path], &env);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let out = run(&["--action", "push", "--input", path, "--verbose"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("conflict"), "{}", err(&out));
    let out = run(&["--action", "push", "--input", path, "--force"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));

    // Batch: a JSON-lines file with one broken line.
    let lines = dir.path().join("states.jsonl");
    std::fs::write(
        &lines,
        concat!(
            r#"{"node_id": "node-2", "data": {"a": 1}, "metadata": {"version": "1", "resonance_level": 0.1}}"#, "\n",
            "{broken\n",
            r#"{"node_id": "other-3", "data": {"b": 2}, "metadata": {"version": "1", "resonance_level": 0.9}}"#, "\n",
        ),
    )
    .unwrap();
    let export = dir.path().join("batch.json");
    let out = run(
        &[
            "--action",
            "batch",
            "--input",
            lines.to_str().unwrap(),
            "--batch-size",
            "2",
            "--export",
            export.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("line 2"), "{}", err(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(
        (report["pushed"].clone(), report["failed"].clone()),
        (json!(2), json!(1))
    );

    // Pull with a node-id glob, exported.
    let export = dir.path().join("pull.json");
    let out = run(
        &["--filter", "node-*", "--export", export.to_str().unwrap()],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let pulled: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let mut ids: Vec<&str> = pulled["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["node_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["node-1", "node-2"]);
    let out = run(&["--node-id", "other-3"], &env);
    assert!(String::from_utf8_lossy(&out.stdout).contains("other-3  version 1"));

    // Monitor prints a status line per second until stopped.
    let mut monitor = Command::new(BIN)
        .args(["echo-sync", "--monitor", "--node-id", "node-1"])
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(monitor.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("node-1: idle"), "{first}");
    monitor.kill().unwrap();
    let _ = monitor.wait();
}
