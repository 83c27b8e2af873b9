//! The single-writer rule, kept true: `write_txn(` may appear only in the
//! writer's apply path and the exceptions docs/ARCHITECTURE.md lists, each
//! for its reason. A new write path elsewhere fails this test.

use std::path::Path;

/// Files allowed to open LMDB write transactions, and why.
const ALLOWED: &[(&str, &str)] = &[
    (
        "src/store/write.rs",
        "the writer's batch: Store::apply_batch",
    ),
    (
        "src/store/mod.rs",
        "Store::open (schema, before the writer) and Store::write_retrying: the default trees \
         built at start before the writer exists, and commands run as their own process \
         (`echorelay token`, `negentropy add|build|remove`)",
    ),
    (
        "src/store/graphs.rs",
        "graph states recomputed by the writer thread at its start",
    ),
    (
        "src/store/graph_order.rs",
        "graph homes recomputed with the graph states, on the writer thread",
    ),
    ("src/store/graph_upgrade.rs", "its tests only"),
    (
        "src/negentropy/tree.rs",
        "the standalone tree's own environment (harness, benches)",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn lmdb_is_written_only_through_the_writer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 50, "src/ not found");
    let mut offenders = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.contains("write_txn(") {
            continue;
        }
        if !ALLOWED.iter().any(|(allowed, _)| *allowed == relative) {
            offenders.push(relative);
        }
    }
    assert!(
        offenders.is_empty(),
        "LMDB write transactions outside the writer: {offenders:?} (route them through \
         WriterHandle, e.g. a store::Bookkeeping item)"
    );
    // The direct bookkeeping writers are gone from the store's surface.
    let store = std::fs::read_to_string(root.join("src/store/mod.rs")).unwrap();
    for gone in [
        "fn remember_refused",
        "fn put_peer_record",
        "fn put_echo_stats",
    ] {
        assert!(!store.contains(gone), "{gone} writes outside the writer");
    }
}
