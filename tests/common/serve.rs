//! `echorelay serve` as a child process (the binary itself, its own file
//! descriptors), configured by a TOML file in the test's directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_echorelay");

/// A `serve` child process, killed if a test panics before it is done.
pub struct Serve {
    child: Child,
    /// `http://` address of its control API.
    pub admin: String,
    /// Its stderr lines so far.
    log: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Serve {
    /// Awaits a log line containing `text` (at most `within`).
    pub async fn logged(&self, text: &str, within: std::time::Duration) {
        let log = self.log.clone();
        super::eventually(&format!("a log line with {text:?}"), within, || {
            let found = log.lock().iter().any(|line| line.contains(text));
            async move { found.then_some(()) }
        })
        .await
    }
}

impl std::ops::Deref for Serve {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Serve {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `echorelay serve` and waits for its "listening" log line.
pub fn spawn_serve(dir: &std::path::Path) -> (Serve, String) {
    spawn_serve_with(dir, "", "")
}

/// `server_keys` are added to the `[server]` table, `extra_tables` after it.
pub fn spawn_serve_with(
    dir: &std::path::Path,
    server_keys: &str,
    extra_tables: &str,
) -> (Serve, String) {
    let config = dir.join("test.toml");
    let text = format!(
        "[server]\nadmin_listen = \"127.0.0.1:0\"\n{server_keys}\n\
         [limits]\nevents_per_second = 0\nreqs_per_second = 0\n{extra_tables}"
    );
    std::fs::write(&config, text).unwrap();
    let data = dir.join("db");
    spawn_serve_args(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
}

/// Starts `echorelay serve ARGS` and waits until its relay listens.
pub fn spawn_serve_args(args: &[&std::ffi::OsStr]) -> (Serve, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let logged_addr = |line: &str| {
        let pos = line.find("addr=Some(")?;
        let rest = &line[pos + "addr=Some(".len()..];
        Some(rest[..rest.find(')')?].to_string())
    };
    let mut admin = String::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        match logged_addr(&line) {
            Some(addr) if line.contains("control API listening") => admin = addr,
            Some(addr) if line.contains("relay listening") => break addr,
            _ => {}
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let log = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().push(line);
        }
    });
    (
        Serve {
            child,
            admin: format!("http://{admin}"),
            log,
        },
        format!("ws://{addr}"),
    )
}

/// Runs `command`, asserts it succeeded (showing its stderr otherwise) and
/// returns its output.
pub fn run_ok(command: &mut Command) -> std::process::Output {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
