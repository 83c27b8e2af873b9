//! `echorelay import` into an empty store takes the bulk path (indexes
//! from sorted runs): what it stores is what the writer's path stores —
//! duplicates, replaceable and addressable versions, deletions before and
//! after their targets, ephemeral and invalid lines included — and a load
//! killed with SIGKILL leaves a store of whole events that a re-run
//! completes.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use echorelay::event::{now, Event, Keys};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_echorelay");

/// A mixed input: notes (some repeated), a deletion before and one after
/// its target, replaceable and addressable versions out of order, an
/// ephemeral event, a bad signature and a line that is not JSON.
fn mixed_lines() -> Vec<String> {
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let at = |i: u64| now() - 50_000 + (i * 7_919) % 40_000;
    let mut events: Vec<Event> = Vec::new();
    for i in 0..240 {
        let keys = if i % 3 == 0 { &bob } else { &alice };
        let topic = format!("topic{}", i % 5);
        events.push(event_at(
            keys,
            1,
            at(i),
            vec![vec!["t", &topic]],
            &format!("note {i}"),
        ));
    }
    let doomed_early = events[10].clone();
    let doomed_late = events[20].clone();
    let delete =
        |target: &Event| event_at(&alice, 5, now() - 10, vec![vec!["e", &target.id_hex()]], "");
    let profile_new = event_at(&alice, 0, now() - 100, vec![], "{\"name\":\"new\"}");
    let profile_old = event_at(&alice, 0, now() - 200, vec![], "{\"name\":\"old\"}");
    let article = |t: u64, text: &str| event_at(&bob, 30023, t, vec![vec!["d", "post"]], text);
    let mut lines: Vec<String> = Vec::new();
    lines.push(delete(&doomed_early).to_json());
    lines.extend(events.iter().map(Event::to_json));
    lines.extend(events[..15].iter().map(Event::to_json));
    lines.push(delete(&doomed_late).to_json());
    lines.push(profile_new.to_json());
    lines.push(profile_old.to_json());
    lines.push(article(now() - 50, "second").to_json());
    lines.push(article(now() - 90, "first").to_json());
    lines.push(event_at(&alice, 20001, now(), vec![], "ephemeral").to_json());
    let mut forged: Value = serde_json::from_str(&events[30].to_json()).expect("json");
    forged["content"] = json!("changed after signing");
    lines.push(forged.to_string());
    lines.push("not json".into());
    lines
}

fn import(data: &Path, file: &Path, extra: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("import")
        .arg(file)
        .args(["--json", "--quiet", "--data"])
        .arg(data)
        .args(extra)
        .output()
        .expect("import");
    let summary = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(summary.trim()).unwrap_or_else(|_| panic!("{summary} {:?}", out))
}

/// What a relay serving `dir` holds, seen through several indexes.
async fn views(dir: tempfile::TempDir) -> (Vec<Vec<String>>, u64, tempfile::TempDir) {
    let relay = TestRelay::start_in(dir, "127.0.0.1:0".parse().expect("addr"), |_| {}).await;
    let mut c = relay.client().await;
    let mut seen = Vec::new();
    for filter in [
        json!({"limit": 500}),
        json!({"kinds": [1], "limit": 500}),
        json!({"#t": ["topic3"], "limit": 500}),
        json!({"kinds": [0, 30023, 5, 20001]}),
    ] {
        let mut ids = c.req_ids(&[filter]).await;
        ids.sort();
        seen.push(ids);
    }
    let counted = c.ask(json!(["COUNT", "n", {}])).await[2]["count"]
        .as_u64()
        .expect("count");
    (seen, counted, relay.stop().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_stores_what_the_writers_path_stores() {
    let files = tempfile::tempdir().expect("dir");
    let file = files.path().join("mixed.jsonl");
    std::fs::write(&file, mixed_lines().join("\n") + "\n").expect("write");
    let (bulk_dir, plain_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let bulk = import(bulk_dir.path(), &file, &[]);
    let plain = import(plain_dir.path(), &file, &["--no-bulk"]);
    // The bulk load takes lines in file order: the note deleted before it
    // arrives is refused twice (it and its repeat), 14 other repeats and
    // the older profile and article are duplicates.
    let counts = |v: &Value| {
        ["stored", "duplicate", "refused", "invalid"].map(|f| v[f].as_u64().unwrap_or(0))
    };
    assert_eq!(counts(&bulk), [244, 16, 2, 2], "{bulk}");
    // The writer's path verifies on two threads that may finish groups out
    // of file order (a deletion then lands after its target: stored, then
    // deleted), so only the sum is fixed there; what is served is the same.
    assert_eq!(bulk["lines"], plain["lines"]);
    assert_eq!(
        counts(&bulk).iter().sum::<u64>(),
        counts(&plain).iter().sum::<u64>(),
        "{plain}"
    );
    assert_eq!(plain["invalid"], 2);
    assert!(!bulk_dir.path().join("bulk-runs").exists());
    assert!(!bulk_dir.path().join("import-deferred.jsonl").exists());

    let (bulk_views, bulk_count, _kept) = views(bulk_dir).await;
    let (plain_views, plain_count, _) = views(plain_dir).await;
    assert_eq!(bulk_views, plain_views);
    assert_eq!(bulk_count, plain_count);
    // 240 notes less the two deleted, two deletions, one profile, one
    // article and the ephemeral event (import stores what it is given).
    assert_eq!(bulk_views[0].len(), 238 + 5, "{bulk}");
    assert_eq!(bulk_views[3].len(), 5);
}

/// Signed notes, one per line, on both cores.
fn many_lines(n: usize) -> String {
    let per = n / 2;
    let halves: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|h| {
                s.spawn(move || {
                    let keys = Keys::generate();
                    (0..per)
                        .map(|i| {
                            let at = now() - ((i * 7_919) % 100_000) as u64;
                            keys.sign(at, 1, vec![], format!("n {h} {i}")).to_json() + "\n"
                        })
                        .collect::<String>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signer"))
            .collect()
    });
    halves.concat()
}

/// COUNT {} and the REQ {"limit":500} length of a relay serving `data`.
async fn stored(data: tempfile::TempDir) -> (u64, usize, tempfile::TempDir) {
    let relay = TestRelay::start_in(data, "127.0.0.1:0".parse().expect("addr"), |_| {}).await;
    let mut c = relay.client().await;
    let counted = c.ask(json!(["COUNT", "n", {}])).await[2]["count"]
        .as_u64()
        .expect("count");
    let listed = c.req_ids(&[json!({"limit": 500})]).await.len();
    (counted, listed, relay.stop().await)
}

const N: usize = 60_000;

/// `echorelay import` of N signed notes into `data`, its stderr read line
/// by line.
struct ImportRun {
    child: std::process::Child,
    stderr: std::io::Lines<BufReader<std::process::ChildStderr>>,
    file: std::path::PathBuf,
    _files: tempfile::TempDir,
}

impl ImportRun {
    fn start(data: &Path) -> ImportRun {
        let files = tempfile::tempdir().expect("dir");
        let file = files.path().join("many.jsonl");
        std::fs::write(&file, many_lines(N)).expect("write");
        let mut child = Command::new(BIN)
            .arg("import")
            .arg(&file)
            .arg("--data")
            .arg(data)
            .stderr(Stdio::piped())
            .spawn()
            .expect("import");
        let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        ImportRun {
            child,
            stderr,
            file,
            _files: files,
        }
    }

    /// The lines read up to and with the first that `stop` accepts (all of
    /// them if none does).
    fn said_until(&mut self, stop: impl Fn(&str) -> bool) -> Vec<String> {
        let mut said = Vec::new();
        for line in self.stderr.by_ref().map_while(Result::ok) {
            let done = stop(&line);
            said.push(line);
            if done {
                break;
            }
        }
        said
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_bulk_import_leaves_whole_events_and_a_rerun_completes_it() {
    let data = tempfile::tempdir().expect("data");
    let mut import_run = ImportRun::start(data.path());
    let said = import_run.said_until(|line| line.contains("bulk load: indexing"));
    let (mut child, file) = (import_run.child, import_run.file);
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(9), "killed while indexing: {said:?}");

    // The store opens and holds no half-loaded event: the interrupted load
    // is taken back whole.
    let (counted, listed, data) = stored(data).await;
    assert_eq!((counted, listed), (0, 0));
    assert!(!data.path().join("bulk-runs").exists());

    let again = import(data.path(), &file, &[]);
    assert_eq!(again["stored"], N as u64, "{again}");
    let (counted, listed, _) = stored(data).await;
    assert_eq!((counted, listed), (N as u64, 500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_a_running_relay_ends_the_load_and_is_kept() {
    let relay = TestRelay::start().await;
    let mut import_run = ImportRun::start(relay.dir.path());
    let mut said = import_run.said_until(|line| line.starts_with("import: "));
    let keys = Keys::generate();
    let own = note(&keys, "written by the relay during the load");
    relay.client().await.publish_ok(&own).await;
    said.extend(import_run.said_until(|_| false));
    let status = import_run.child.wait().expect("wait");
    assert_eq!(status.code(), Some(1), "{said:?}");
    assert!(
        said.iter()
            .any(|l| l.contains("another process wrote to the store during the load")),
        "{said:?}"
    );
    let mut c = relay.client().await;
    assert_eq!(c.req_ids(&[json!({"limit": 10})]).await, vec![own.id_hex()]);
    assert_eq!(c.ask(json!(["COUNT", "n", {}])).await[2]["count"], 1);
    relay.stop().await;
}
