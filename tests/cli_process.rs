//! The `serve` process itself: SIGKILL loses no acknowledged event, SIGTERM
//! shuts down cleanly.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::*;
use echorelay::event::{now, Keys};

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
