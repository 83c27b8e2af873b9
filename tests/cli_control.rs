//! The client subcommands against a running node: `status`, `peers`,
//! `sessions`, `token` and `echo-sync`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use echorelay::event::{now, Keys};
use serde_json::json;

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
    // The token from a file (first line), not the command line.
    let token_file = a_path.join("token.txt");
    let admin_token = std::fs::read_to_string(a_path.join("db").join("admin.token")).unwrap();
    std::fs::write(&token_file, format!("{}\nignored\n", admin_token.trim())).unwrap();
    let out = Command::new(BIN)
        .args(["status", "--url", &a.admin, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let empty = a_path.join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    let out = Command::new(BIN)
        .args(["status", "--url", &a.admin, "--token-file"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is empty"), "{}", text(&out));
    // The values of --dir are listed in the help, and others refused.
    let help = Command::new(BIN).args(["sync", "--help"]).output().unwrap();
    assert!(
        text(&help).contains("[possible values: down, up, both]"),
        "{}",
        text(&help)
    );
    let bad = Command::new(BIN)
        .args(["sync", "ws://127.0.0.1:1", "--dir", "sideways"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
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
    let as_json: serde_json::Value =
        serde_json::from_slice(&token_cmd(&["list", "--json"]).stdout).unwrap();
    let users: Vec<&str> = as_json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["user"].as_str().unwrap())
        .collect();
    assert!(
        users.contains(&"dave") && users.contains(&"erin"),
        "{as_json}"
    );
    assert!(
        !as_json.to_string().contains(&token),
        "tokens are never shown again"
    );
    assert!(
        listed.contains("dave") && listed.contains("never expires"),
        "{listed}"
    );
    assert!(!listed.contains(&token), "tokens are never shown again");
    // Refused once its second has passed (its start may already be past
    // when the list above returns, so only the refusal is awaited).
    let short_auth = format!("Bearer {short}");
    let short_auth = &short_auth;
    eventually("the short token to expire", WAIT, || async move {
        let (status, _, _) = http_get(addr, "/graphs", &[("Authorization", short_auth)]).await;
        (status == 401).then_some(())
    })
    .await;

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
    // --json: the results on stdout; --token-file: the secret off the
    // command line (and preferred to ECHO_TOKEN).
    let token_file = dir.path().join("echo.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let only_url = [("ECHO_API_URL", api.as_str()), ("ECHO_TOKEN", "wrong")];
    let args = [
        "--node-id",
        "other-3",
        "--json",
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    let out = run(&args, &only_url);
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["changes"][0]["node_id"], "other-3", "{printed}");

    // Monitor prints the node's status, then follows its change stream,
    // acknowledging each change as subscriber node-1: a push that waits
    // for confirmation is confirmed by it.
    let seen = dir.path().join("seen.json");
    let mut monitor = Command::new(BIN)
        .args(["echo-sync", "--monitor", "--node-id", "node-1", "--export"])
        .arg(&seen)
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(monitor.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("node-1: idle"), "{first}");
    let addr: std::net::SocketAddr = api.trim_start_matches("http://").parse().unwrap();
    let push = |version: &str| {
        let data = json!({"k": version});
        let checksum = {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(data.to_string().as_bytes()))
        };
        json!({"node_id": "node-1", "force": true, "options": {"timeout": 20},
               "state": {"timestamp": "2026-12-02T10:00:00Z", "data": data,
                         "metadata": {"version": version, "checksum": checksum, "resonance_level": 0.5}}})
        .to_string()
    };
    // The stream may not be open yet when the first push commits: push
    // until one is confirmed (each push returns once confirmed or at once
    // when nobody listened).
    let mut version = 10;
    let confirmed = eventually("a push confirmed by the monitor", WAIT, || {
        version += 1;
        let body = push(&version.to_string());
        async move {
            let (status, reply) = call(addr, "POST", "/echo/push", Some(token), &body).await;
            assert_eq!(status, 200, "{reply}");
            (reply["confirmed_by"] == json!(["node-1"])).then_some(reply)
        }
    })
    .await;
    let printed = loop {
        let line = lines.next().unwrap().unwrap();
        if line.contains(confirmed["sync_id"].as_str().unwrap()) {
            break line;
        }
    };
    assert!(printed.starts_with("node-1  version "), "{printed}");
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    let sync_ids: Vec<&str> = exported["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["sync_id"].as_str())
        .collect();
    assert!(
        sync_ids.contains(&confirmed["sync_id"].as_str().unwrap()),
        "{exported}"
    );
    monitor.kill().unwrap();
    let _ = monitor.wait();
}
