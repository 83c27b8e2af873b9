//! The binary's data commands: import and export, `negentropy` tree
//! management next to a running node, and `sync` (exit codes, summary, and
//! into a running serve's subscribers).

mod common;

use std::collections::HashSet;
use std::io::Write;
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

/// `ECHORELAY_DATA` and `ECHORELAY_CONFIG` stand in for `--data` and
/// `--config` (a container or unit sets them once).
#[test]
fn environment_names_the_data_dir_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate();
    let line = keys.sign(now(), 1, vec![], "from the env".into()).to_json();
    let mut import = Command::new(BIN)
        .arg("import")
        .env("ECHORELAY_DATA", dir.path().join("db"))
        .output_with_input(&line);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert_eq!(
        export(dir.path(), None).len(),
        1,
        "stored where the env said"
    );
    // A config file named only by the environment is read (a bad one fails).
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "no_such_key = 1\n").unwrap();
    import = Command::new(BIN)
        .arg("export")
        .env("ECHORELAY_DATA", dir.path().join("db"))
        .env("ECHORELAY_CONFIG", &config)
        .output_with_input("");
    assert_eq!(import.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&import.stderr).contains("no_such_key"));
}

/// Runs a command with `input` on its stdin.
trait WithInput {
    fn output_with_input(&mut self, input: &str) -> std::process::Output;
}

impl WithInput for Command {
    fn output_with_input(&mut self, input: &str) -> std::process::Output {
        let mut child = self
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

/// `import` shows its progress: plain lines (each tenth of the file) when
/// stderr is not a terminal, a bar with the rate and ETA on a terminal (a
/// pty made by `script`, where installed), nothing with `--quiet`; the
/// summary line every time.
#[test]
fn import_progress_on_a_terminal_and_in_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate();
    let lines: String = (0..2000)
        .map(|i| keys.sign(now(), 1, vec![], format!("note {i}")).to_json() + "\n")
        .collect();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines).unwrap();
    let import = |data: &str, quiet: bool| {
        let mut cmd = Command::new(BIN);
        cmd.arg("import")
            .arg(&file)
            .arg("--data")
            .arg(dir.path().join(data));
        if quiet {
            cmd.arg("--quiet");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let logged = import("plain", false);
    let progress_lines = logged.lines().filter(|l| l.starts_with("import: ")).count();
    assert!(progress_lines >= 5, "{logged}");
    assert!(logged.contains("2000 stored"), "{logged}");
    let quiet = import("quiet", true);
    assert!(!quiet.contains("import: "), "{quiet}");
    assert!(quiet.contains("2000 stored"), "{quiet}");

    let Ok(script) = Command::new("script").arg("--version").output() else {
        eprintln!("no `script` here: the terminal bar is checked by the unit test only");
        return;
    };
    assert!(script.status.success());
    let command = format!(
        "{BIN} import {} --data {}",
        file.display(),
        dir.path().join("tty").display()
    );
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("2000 stored"), "{screen}");
    assert!(
        !screen.contains("import: "),
        "no plain lines on a terminal: {screen}"
    );
}

#[test]
fn node_key_prints_one_identity_and_keeps_it_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let run = || {
        let out = run_ok(Command::new(BIN).args(["node-key", "--data"]).arg(&data));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let first = run();
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(run(), first, "the key is made once");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The public key is the one of the stored secret.
    let secret = std::fs::read_to_string(data.join("node.key")).unwrap();
    let secret = echorelay::event::decode_hex::<32>(secret.trim()).unwrap();
    let keys = echorelay::event::Keys::from_secret(&secret).unwrap();
    assert_eq!(hex::encode(keys.public_key()), first);
}
