//! The HTTP client of the CLI (`status`, `peers sync`, `echo-sync`) against
//! servers that are not ours: replies in chunked transfer encoding (split
//! mid-line and mid-JSON), servers that never answer and servers that stop
//! in the middle of a body. Each call must either read the reply whole or
//! fail within its `--timeout` with an error that says so.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::BIN;

/// How the fake server answers every request.
#[derive(Clone, Copy)]
enum Answer {
    /// `200` with the body in chunks of `piece` bytes, flushed one by one.
    Chunked(&'static str, usize),
    /// Reads the request and sends nothing.
    Silent,
    /// Sends the head and part of the promised body, then nothing.
    StopsMidBody(&'static str),
}

/// A server on 127.0.0.1 answering each connection on its own thread;
/// returns its base URL.
fn fake_server(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_one(stream, answer));
        }
    });
    url
}

fn serve_one(mut stream: TcpStream, answer: Answer) {
    read_request(&mut stream);
    match answer {
        Answer::Chunked(body, piece) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            for part in body.as_bytes().chunks(piece) {
                let _ = stream.write_all(format!("{:x}\r\n", part.len()).as_bytes());
                let _ = stream.write_all(part);
                let _ = stream.write_all(b"\r\n");
                let _ = stream.flush();
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        }
        Answer::Silent => std::thread::sleep(Duration::from_secs(60)),
        Answer::StopsMidBody(part) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                part.len() + 1000
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(part.as_bytes());
            let _ = stream.flush();
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

/// Reads the request head and its Content-Length body.
fn read_request(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body);
}

/// Runs the binary with `args` (a control subcommand gets a data dir of
/// its own); its output and how long it took.
fn run(args: &[&str]) -> (Output, Duration) {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command.args(args);
    if args[0] != "echo-sync" {
        command.arg("--data").arg(data.path());
    }
    let started = Instant::now();
    let output = command.output().unwrap();
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const STATUS: &str =
    r#"{"node_pubkey":"ab12","active":true,"peer_count":0,"last_sync":0,"peer_states":[]}"#;

#[test]
fn control_calls_read_chunked_replies() {
    let url = fake_server(Answer::Chunked(STATUS, 7));
    let (output, _) = run(&["status", "--url", &url, "--token", "t"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("node key: ab12"), "{stdout}");
    assert!(
        stdout.contains("background sync: running; 0 peer(s)"),
        "{stdout}"
    );
}

#[test]
fn a_streamed_reply_split_mid_line_is_read_line_by_line() {
    let records = concat!(
        r#"{"phase":"reconcile","have_count":0,"need_count":2}"#,
        "\n",
        r#"{"complete":true,"have_count":0,"need_count":2,"fetched_count":2,"sent_count":0}"#,
        "\n"
    );
    let url = fake_server(Answer::Chunked(records, 5));
    let (output, _) = run(&[
        "peers",
        "sync",
        "ws://127.0.0.1:9",
        "--json",
        "--url",
        &url,
        "--token",
        "t",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[1]["fetched_count"], 2);
}

#[test]
fn a_silent_control_api_fails_within_the_timeout() {
    let url = fake_server(Answer::Silent);
    let (output, took) = run(&["status", "--url", &url, "--token", "t", "--timeout", "1"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("did not answer within 1s"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_control_reply_that_stops_mid_body_fails_within_the_timeout() {
    let url = fake_server(Answer::StopsMidBody(&STATUS[..20]));
    let (output, took) = run(&["status", "--url", &url, "--token", "t", "--timeout", "1"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("did not answer within 1s"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

const PULL: &str = r#"{"status":"success","sync_id":"s1","has_more":false,"changes":[{"node_id":"n1","version":3,"state":{"status":"active"}}]}"#;

#[test]
fn echo_sync_reads_a_chunked_pull() {
    let url = fake_server(Answer::Chunked(PULL, 9));
    let (output, _) = run(&["echo-sync", "--api-url", &url, "--token", "t", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["changes"][0]["node_id"], "n1");
    assert_eq!(result["sync_ids"][0], "s1");
}

#[test]
fn echo_sync_against_a_silent_or_stalled_api_fails_within_the_timeout() {
    for answer in [Answer::Silent, Answer::StopsMidBody(&PULL[..30])] {
        let url = fake_server(answer);
        let (output, took) = run(&[
            "echo-sync",
            "--api-url",
            &url,
            "--token",
            "t",
            "--timeout",
            "1",
        ]);
        assert!(!output.status.success());
        let err = stderr(&output);
        assert!(err.contains("did not answer within 1s"), "{err}");
        assert!(took < Duration::from_secs(20), "took {took:?}");
    }
}

#[test]
fn an_unreachable_api_is_named_in_the_error() {
    // A port nothing listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (output, _) = run(&["status", "--url", &url, "--token", "t"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("cannot connect to"), "{err}");
    assert!(err.contains(&port.to_string()), "{err}");
}
