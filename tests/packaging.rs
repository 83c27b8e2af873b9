//! The packaging files: the Dockerfile (no Docker daemon here, so its
//! structure is checked: two stages, a non-root user, the /data volume, both
//! ports, a health check on /health, and every path it copies exists) and
//! the systemd unit (checked by `systemd-analyze verify` where systemd is
//! installed, with ExecStart pointed at the test binary) and the compose
//! example (its mesh script run outside Docker wires three live nodes).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_dockerfile_builds_a_small_non_root_image() {
    let file = read("packaging/Dockerfile");
    let instructions: Vec<&str> = file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let starting = |word: &str| -> Vec<&str> {
        instructions
            .iter()
            .copied()
            .filter(|l| l.starts_with(word))
            .collect()
    };
    assert_eq!(
        starting("FROM ").len(),
        2,
        "a build stage and a runtime stage"
    );
    let user = starting("USER ");
    assert_eq!(user.len(), 1);
    assert_ne!(user[0], "USER root");
    assert_eq!(starting("VOLUME "), ["VOLUME /data"]);
    assert_eq!(starting("EXPOSE "), ["EXPOSE 7777 7778"]);
    let health = file.split("HEALTHCHECK").nth(1).expect("a HEALTHCHECK");
    assert!(health.contains("/health"), "{health}");
    assert!(file.contains("--locked"), "the build uses Cargo.lock");
    // Every path the build stage copies from the context exists.
    for copy in starting("COPY ").iter().filter(|c| !c.contains("--from")) {
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
            assert!(path.exists(), "COPY {source}: no such path");
        }
    }
    // The listen address is reachable from outside the container.
    assert!(file.contains("\"--listen\", \"0.0.0.0:7777\""), "{file}");
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = read("packaging/echorelay.service");
    for key in [
        "User=echorelay",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=echorelay",
    ] {
        assert!(unit.contains(key), "missing {key}");
    }
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("systemd-analyze is not installed: only the keys were checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echorelay.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/echorelay", common::BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host may have broken ones).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("echorelay.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

/// A free port on 127.0.0.1 (bound, then released for the node to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the compose example's mesh-init.sh outside Docker, as its keys
/// service would, with the nodes at `urls` (a, b, c).
fn mesh_init(nodes: &Path, configs: &Path, urls: &[String; 3]) -> String {
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = common::run_ok(
        Command::new("sh")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/compose/mesh-init.sh"))
            .env("PATH", path)
            .env("NODES_DIR", nodes)
            .env("CONFIG_DIR", configs)
            .env("URL_a", &urls[0])
            .env("URL_b", &urls[1])
            .env("URL_c", &urls[2]),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_compose_file_runs_the_mesh_script_before_three_nodes() {
    let compose = read("packaging/compose/docker-compose.yml");
    assert!(compose.contains("/mesh-init.sh"), "{compose}");
    assert!(compose.contains("service_completed_successfully"));
    for node in ["a", "b", "c"] {
        assert!(compose.contains(&format!("/config/{node}.toml")), "{node}");
        assert!(compose.contains(&format!("{node}-data:/data")), "{node}");
    }
    assert!(compose.contains("dockerfile: packaging/Dockerfile"));
}

/// The compose example's wiring, for real: the script's keys and configs
/// make three nodes that trust each other, so an echo state pushed on `a`
/// (a mesh-only event kind) is served by `c`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_mesh_script_wires_three_nodes_that_replicate_mesh_state() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let (nodes, configs) = (dir.path().join("nodes"), dir.path().join("config"));
    let ports = [free_port(), free_port(), free_port()];
    let urls = ports.map(|p| format!("ws://127.0.0.1:{p}"));
    let printed = mesh_init(&nodes, &configs, &urls);
    let keys: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| std::fs::read_to_string(configs.join(format!("{n}.pub"))).unwrap())
        .map(|k| k.trim().to_string())
        .collect();
    for (node, key) in ["a", "b", "c"].iter().zip(&keys) {
        assert_eq!(key.len(), 64, "{node}: {key}");
        assert!(printed.contains(&format!("{node} {key}")), "{printed}");
        // Each config names the two others, by URL and key, and not itself.
        let config = std::fs::read_to_string(configs.join(format!("{node}.toml"))).unwrap();
        let others: Vec<usize> = (0..3).filter(|i| ["a", "b", "c"][*i] != *node).collect();
        for i in others {
            assert!(
                config.contains(&urls[i]) && config.contains(&keys[i]),
                "{config}"
            );
        }
        assert!(!config.contains(key.as_str()), "{node} lists itself");
    }
    // A second run keeps every identity.
    mesh_init(&nodes, &configs, &urls);
    let again = std::fs::read_to_string(configs.join("a.pub")).unwrap();
    assert_eq!(again.trim(), keys[0]);

    // One user on every node, to push on a and pull on c.
    let token = "compose-mesh-token";
    let tokens = format!(
        "\n[[auth.tokens]]\nuser = \"ops\"\nsha256 = \"{}\"\n",
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    let mut serves = Vec::new();
    for (i, node) in ["a", "b", "c"].iter().enumerate() {
        let config = configs.join(format!("{node}.toml"));
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&tokens);
        std::fs::write(&config, text).unwrap();
        let listen = format!("127.0.0.1:{}", ports[i]);
        let data = nodes.join(node);
        serves.push(common::spawn_serve_args(&[
            "--listen".as_ref(),
            listen.as_ref(),
            "--admin-listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--data".as_ref(),
            data.as_os_str(),
        ]));
    }
    let echo = |url: &str, args: &[&str]| {
        Command::new(common::BIN)
            .arg("echo-sync")
            .args(args)
            .args([
                "--api-url",
                &url.replace("ws://", "http://"),
                "--token",
                token,
            ])
            .output()
            .unwrap()
    };
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"node_id": "compose-1", "data": {"k": 1}, "metadata": {"version": "1", "resonance_level": 0.5}}"#,
    )
    .unwrap();
    let pushed = echo(
        &urls[0],
        &["--action", "push", "--input", state.to_str().unwrap()],
    );
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    common::eventually(
        "c serves the state pushed on a",
        Duration::from_secs(30),
        || {
            let out = echo(&urls[2], &["--json", "--node-id", "compose-1"]);
            let pulled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            async move { (pulled["changes"][0]["node_id"] == "compose-1").then_some(()) }
        },
    )
    .await;
    drop(serves);
}

/// The Docker build's toolchain is the crate's `rust-version`, and that is
/// at least every locked dependency's (a dependency update that needs a
/// newer compiler fails here, not in an operator's `docker build`).
#[test]
fn the_docker_toolchain_builds_every_dependency() {
    let manifest = read("Cargo.toml");
    let ours = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("Cargo.toml names a rust-version");
    let dockerfile = read("packaging/Dockerfile");
    assert!(
        dockerfile.contains(&format!("FROM rust:{ours}-")),
        "the Dockerfile builds with rust {ours}"
    );
    let out = common::run_ok(
        Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |v: &str| -> [u32; 3] {
        let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
        [(); 3].map(|_| parts.next().unwrap_or(0))
    };
    // Only what the binary links (normal dependencies), not dev-dependencies.
    let normal = normal_dependencies(&metadata);
    for package in metadata["packages"].as_array().unwrap() {
        let (Some(needs), Some(id)) = (package["rust_version"].as_str(), package["id"].as_str())
        else {
            continue;
        };
        if normal.contains(id) {
            assert!(
                version(needs) <= version(&ours),
                "{} {} needs rust {needs}, Cargo.toml says {ours}",
                package["name"],
                package["version"]
            );
        }
    }
}

/// The package ids the echorelay library and binary depend on, directly
/// or not, through normal (not dev or build) dependency edges.
fn normal_dependencies(metadata: &serde_json::Value) -> std::collections::HashSet<String> {
    let nodes = metadata["resolve"]["nodes"].as_array().unwrap();
    let by_id: std::collections::HashMap<&str, &serde_json::Value> = nodes
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = metadata["resolve"]["root"].as_str().unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id.to_string()) {
            continue;
        }
        for dep in by_id[id]["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if normal {
                todo.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen
}
