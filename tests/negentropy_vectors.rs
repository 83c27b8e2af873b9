//! Our reconciler against traces recorded from the reference C++
//! implementation (tests/data/negentropy, copied from shared/): every message
//! of both roles byte for byte, frame-limited cases included, and the
//! initiator's final have/need sets.

mod common;

use common::vectors::load;
use echorelay::negentropy::{Diff, Item, Negentropy, StandaloneTree, VectorStorage};
use serde_json::Value;

fn items(v: &Value) -> Vec<Item> {
    v.as_array()
        .expect("items")
        .iter()
        .map(|pair| {
            let mut id = [0u8; 32];
            hex::decode_to_slice(pair[1].as_str().expect("id"), &mut id).expect("hex id");
            Item::new(pair[0].as_u64().expect("ts"), id)
        })
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|s| s.as_str().expect("id").to_string())
        .collect()
}

fn sorted_hex(list: &[[u8; 32]]) -> Vec<String> {
    let mut out: Vec<String> = list.iter().map(hex::encode).collect();
    out.sort();
    out.dedup();
    out
}

fn check(name: &str) {
    let v = load(name);
    let client_store = VectorStorage::new(items(&v["client_items"]));
    let server_store = VectorStorage::new(items(&v["server_items"]));
    let client_limit = v["client_frame_size_limit"].as_u64().unwrap_or(0) as usize;
    let server_limit = v["server_frame_size_limit"].as_u64().unwrap_or(0) as usize;
    let trace: Vec<(String, String)> = v["trace"]
        .as_array()
        .expect("trace")
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().to_string(),
                m["msg"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    // Initiator role.
    let mut client = Negentropy::new(&client_store, client_limit).unwrap();
    let first = client.initiate().unwrap();
    assert_eq!(hex::encode(&first), trace[0].1, "{name}: initial message");
    let mut diff = Diff::default();
    let mut i = 1;
    loop {
        assert_eq!(trace[i].0, "server", "{name}: trace order");
        let server_msg = hex::decode(&trace[i].1).unwrap();
        match client.reconcile_initiator(&server_msg, &mut diff).unwrap() {
            Some(next) => {
                assert_eq!(trace[i + 1].0, "client");
                assert_eq!(
                    hex::encode(&next),
                    trace[i + 1].1,
                    "{name}: client message {}",
                    i + 1
                );
                i += 2;
            }
            None => {
                assert_eq!(i + 1, trace.len(), "{name}: client finished early");
                break;
            }
        }
    }
    assert_eq!(sorted_hex(&diff.have), ids(&v["have"]), "{name}: have");
    assert_eq!(sorted_hex(&diff.need), ids(&v["need"]), "{name}: need");

    // Responder role.
    let mut server = Negentropy::new(&server_store, server_limit).unwrap();
    let mut rounds = 0;
    for pair in trace.chunks(2) {
        let reply = server.reconcile(&hex::decode(&pair[0].1).unwrap()).unwrap();
        assert_eq!(
            hex::encode(&reply),
            pair[1].1,
            "{name}: server reply {rounds}"
        );
        rounds += 1;
    }
    assert_eq!(rounds, v["rounds"].as_u64().unwrap());

    // The persistent LMDB tree answers byte for byte too, in both roles.
    let dir = tempfile::tempdir().unwrap();
    let tree = StandaloneTree::create(dir.path(), items(&v["server_items"])).unwrap();
    tree.with_reader(|reader| {
        let mut server = Negentropy::new(reader, server_limit).unwrap();
        for (round, pair) in trace.chunks(2).enumerate() {
            let reply = server.reconcile(&hex::decode(&pair[0].1).unwrap()).unwrap();
            assert_eq!(
                hex::encode(&reply),
                pair[1].1,
                "{name}: tree server reply {round}"
            );
        }
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tree = StandaloneTree::create(dir.path(), items(&v["client_items"])).unwrap();
    tree.with_reader(|reader| {
        let mut client = Negentropy::new(reader, client_limit).unwrap();
        let first = client.initiate().unwrap();
        assert_eq!(
            hex::encode(first),
            trace[0].1,
            "{name}: tree initial message"
        );
        let mut diff = Diff::default();
        let mut i = 1;
        while let Some(next) = client
            .reconcile_initiator(&hex::decode(&trace[i].1).unwrap(), &mut diff)
            .unwrap()
        {
            assert_eq!(
                hex::encode(&next),
                trace[i + 1].1,
                "{name}: tree client message {}",
                i + 1
            );
            i += 2;
        }
        assert_eq!(sorted_hex(&diff.have), ids(&v["have"]), "{name}: tree have");
        assert_eq!(sorted_hex(&diff.need), ids(&v["need"]), "{name}: tree need");
    })
    .unwrap();
}

#[test]
fn version_fallback() {
    let v = load("00-version-fallback.json.gz");
    let store = VectorStorage::new(items(&v["server_items"]));
    let mut server = Negentropy::new(&store, 0).unwrap();
    for exchange in v["exchanges"].as_array().unwrap() {
        let reply = server
            .reconcile(&hex::decode(exchange["client"].as_str().unwrap()).unwrap())
            .unwrap();
        assert_eq!(hex::encode(reply), exchange["server"].as_str().unwrap());
    }
}

#[test]
fn empty_both() {
    check("01-empty-both.json.gz");
}

#[test]
fn empty_client_three_on_server() {
    check("02-empty-client-3-server.json.gz");
}

#[test]
fn small_d10() {
    check("03-small-d10.json.gz");
}

#[test]
fn clustered_d50() {
    check("04-clustered-d50.json.gz");
}

#[test]
fn d500_frames_4096() {
    check("05-d500-frames-4096.json.gz");
}

#[test]
fn d1000_frames_4096_500k() {
    check("06-d1000-frames-4096-500k.json.gz");
}

#[test]
fn empty_client_8k_frames_4096() {
    check("07-empty-client-8k-frames-4096.json.gz");
}

#[test]
fn clustered_d400_frames_4096_60k() {
    check("08-clustered-d400-frames-4096-60k.json.gz");
}
