//! The packaging files: the Dockerfile (no Docker daemon here, so its
//! structure is checked: two stages, a non-root user, the /data volume, both
//! ports, a health check on /health, and every path it copies exists) and
//! the systemd unit (checked by `systemd-analyze verify` where systemd is
//! installed, with ExecStart pointed at the test binary).

mod common;

use std::path::Path;
use std::process::Command;

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
