//! The Node side of the JS interop tests: the scripts in tests/js, the npm
//! packages they need (installed with `npm ci` when missing) and a runner
//! that feeds a script its standard input and parses the JSON it prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde_json::Value;

pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// The dependencies of tests/js/package.json not in tests/js/node_modules.
fn missing_node_modules() -> Vec<String> {
    let path = js_dir().join("package.json");
    let text = std::fs::read_to_string(&path).expect("tests/js/package.json");
    let package: Value = serde_json::from_str(&text).expect("package.json is JSON");
    let modules = js_dir().join("node_modules");
    package["dependencies"]
        .as_object()
        .expect("package.json lists dependencies")
        .keys()
        .filter(|name| !modules.join(name).join("package.json").exists())
        .cloned()
        .collect()
}

/// Runs `npm ci` in tests/js unless every dependency of its package.json
/// is installed, so a checkout whose node_modules predates a new package
/// installs again. One install at a time within a test binary.
pub fn ensure_node_modules() {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if missing_node_modules().is_empty() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(js_dir())
        .status()
        .expect("npm is needed for the JS interop tests");
    assert!(status.success(), "npm ci in tests/js failed");
    let missing = missing_node_modules();
    assert!(missing.is_empty(), "missing after npm ci: {missing:?}");
}

/// `node tests/js/<script> <args…>` with `stdin` on its standard input:
/// the JSON it prints. Panics with its stderr if it exits non-zero.
pub fn run_node_json(script: &str, args: &[String], stdin: &str) -> Value {
    let mut child = Command::new("node")
        .arg(js_dir().join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is needed for the JS interop tests");
    // Written from a thread so a large input cannot fill the pipe while the
    // script is blocked writing its own output.
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_string();
    let writer = std::thread::spawn(move || input.write_all(data.as_bytes()));
    let out = child.wait_with_output().expect("node ran");
    assert!(
        out.status.success(),
        "{script} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    writer.join().expect("stdin writer").expect("stdin written");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
