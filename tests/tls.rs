//! Native TLS over the real wire, with certificates made in the test
//! (rcgen): wss:// with an independent client (tokio-tungstenite over
//! rustls) and NIP-42 bound to the wss:// URL, https:// for the HTTP APIs,
//! plain ws:// refused, a live mesh link and `echorelay sync` dialling a
//! wss:// peer that is trusted through `server.tls_roots`, a certificate
//! swapped on SIGHUP, and bad TLS settings refused at start.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use echorelay::config::Config;
use echorelay::event::Keys;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files.
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    pem: String,
}

fn make_cert(dir: &Path, name: &str) -> CertFiles {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let pem = made.cert.pem();
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    CertFiles { cert, key, pem }
}

/// One certificate for every relay of this test binary: the process trusts
/// one set of extra roots (`server.tls_roots`).
fn shared_cert() -> &'static CertFiles {
    static CERT: OnceLock<(tempfile::TempDir, CertFiles)> = OnceLock::new();
    &CERT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let files = make_cert(dir.path(), "relay");
            (dir, files)
        })
        .1
}

fn with_tls(c: &mut Config) {
    let cert = shared_cert();
    c.server.tls_cert = cert.cert.display().to_string();
    c.server.tls_key = cert.key.display().to_string();
    c.server.tls_roots = cert.cert.display().to_string();
}

/// A rustls client trusting only `pem`.
fn client_config(pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn wss(url: &str, pem: &str) -> Result<Wss, tokio_tungstenite::tungstenite::Error> {
    let connector = tokio_tungstenite::Connector::Rustls(client_config(pem));
    tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
        .await
        .map(|(socket, _)| socket)
}

async fn next_json(socket: &mut Wss) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Sends `event` and returns its OK.
async fn publish(socket: &mut Wss, event: &echorelay::event::Event) -> Value {
    let raw: Value = serde_json::from_str(&event.to_json()).unwrap();
    socket
        .send(Message::text(json!(["EVENT", raw]).to_string()))
        .await
        .unwrap();
    loop {
        let reply = next_json(socket).await;
        if reply[0] == "OK" {
            return reply;
        }
    }
}

fn wss_url(relay: &TestRelay) -> String {
    format!("wss://127.0.0.1:{}", relay.addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_with_the_configured_certificate() {
    let relay = TestRelay::start_with(with_tls).await;
    let url = wss_url(&relay);
    let pem = &shared_cert().pem;
    let mut socket = wss(&url, pem).await.expect("a wss:// connection");
    // The challenge comes first; AUTH must name the wss:// URL.
    let challenge = next_json(&mut socket).await;
    assert_eq!(challenge[0], "AUTH");
    let keys = Keys::generate();
    let tags = vec![
        vec!["relay".to_string(), url.clone()],
        vec![
            "challenge".to_string(),
            challenge[1].as_str().unwrap().to_string(),
        ],
    ];
    let auth = keys.sign(echorelay::event::now(), 22242, tags, String::new());
    let raw: Value = serde_json::from_str(&auth.to_json()).unwrap();
    socket
        .send(Message::text(json!(["AUTH", raw]).to_string()))
        .await
        .unwrap();
    let ok = next_json(&mut socket).await;
    assert_eq!(ok[2], true, "AUTH bound to the wss:// URL: {ok}");
    let event = note(&keys, "over TLS");
    assert_eq!(publish(&mut socket, &event).await[2], true);

    // A client that does not trust the certificate is refused by its own
    // TLS check; a plain ws:// client gets no upgrade.
    let stranger = make_cert(tempfile::tempdir().unwrap().path(), "other");
    assert!(wss(&url, &stranger.pem).await.is_err());
    let plain = format!("ws://127.0.0.1:{}", relay.addr.port());
    assert!(tokio_tungstenite::connect_async(&plain).await.is_err());

    // https:// for the HTTP side, with the shared client (server.tls_roots).
    let endpoint = echorelay::http_client::Endpoint::parse(&format!(
        "https://127.0.0.1:{}",
        relay.addr.port()
    ))
    .unwrap();
    let reply = echorelay::http_client::request(
        &endpoint,
        "GET",
        "/health",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_links_and_the_sync_command_dial_wss_peers() {
    let (a, b) = trusting_pair_with(|c| {
        with_alice(c);
        with_tls(c);
    })
    .await;
    // b follows a live over wss://, trusting a's certificate by tls_roots.
    let body = json!({"peer_url": wss_url(&a), "pubkey": hex::encode(a.node_key().public_key()),
                      "dir": "both", "interval_secs": 1, "live": true});
    b.admin().call("AddPeer", &body).await.unwrap();
    let keys = Keys::generate();
    let event = note(&keys, "to travel over TLS");
    let mut socket = wss(&wss_url(&a), &shared_cert().pem).await.unwrap();
    assert_eq!(publish(&mut socket, &event).await[2], true);
    let mut reader = wss(&wss_url(&b), &shared_cert().pem).await.unwrap();
    let id = event.id_hex();
    let reader = &tokio::sync::Mutex::new(&mut reader);
    eventually("the event to reach b over wss://", WAIT, || async {
        let mut reader = reader.lock().await;
        let sub = json!(["REQ", "q", {"ids": [id.clone()]}]).to_string();
        reader.send(Message::text(sub)).await.ok()?;
        loop {
            let reply = next_json(&mut reader).await;
            match reply[0].as_str() {
                Some("EVENT") => return Some(()),
                Some("EOSE") => return None,
                _ => {}
            }
        }
    })
    .await;

    // `echorelay sync` into an empty data dir, trusting the certificate
    // through the config's tls_roots.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.toml");
    let roots = shared_cert().cert.display().to_string();
    std::fs::write(&config, format!("[server]\ntls_roots = {roots:?}\n")).unwrap();
    let mut command = std::process::Command::new(BIN);
    command
        .args(["sync", &wss_url(&a), "--dir", "down", "--json", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("db"));
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("\"fetched\":1"), "{report}");
    // Without the root, the certificate is refused and the run fails.
    let mut untrusted = std::process::Command::new(BIN);
    untrusted
        .args(["sync", &wss_url(&a), "--dir", "down", "--data"])
        .arg(dir.path().join("db2"));
    let out = tokio::task::spawn_blocking(move || untrusted.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path(), "first");
    let keys = format!(
        "tls_cert = {:?}\ntls_key = {:?}\n",
        first.cert.display().to_string(),
        first.key.display().to_string()
    );
    let (mut serve, url) = spawn_serve_with(dir.path(), &keys, "");
    let url = url.replace("ws://", "wss://");
    assert!(wss(&url, &first.pem).await.is_ok());
    // Renewed in place, then SIGHUP: new connections get the new one.
    let second = make_cert(dir.path(), "second");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    let pid = serve.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    let (url, pem) = (&url, &second.pem);
    eventually("the renewed certificate", WAIT, || async move {
        wss(url, pem).await.ok().map(|_| ())
    })
    .await;
    // A bad pair on the next SIGHUP: the node keeps serving the last good one.
    std::fs::write(&first.cert, "not a certificate").unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    serve.logged("TLS certificate not reloaded", WAIT).await;
    assert!(serve.try_wait().unwrap().is_none(), "still running");
    assert!(wss(url, pem).await.is_ok(), "the good certificate stays");
    drop(serve);

    // At start: a key without a certificate, an unreadable certificate.
    for (server_keys, expected) in [
        ("tls_key = \"x.key\"\n".to_string(), "set together"),
        (
            format!(
                "tls_cert = {:?}\ntls_key = {:?}\n",
                first.cert.display().to_string(),
                first.key.display().to_string()
            ),
            "no certificate",
        ),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, format!("[server]\n{server_keys}")).unwrap();
        let out = std::process::Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "",
                "--config",
            ])
            .arg(&config)
            .arg("--data")
            .arg(dir.path().join("bad-db"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}
