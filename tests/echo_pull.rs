//! A pull of every node pages through the store's change index: each node
//! the caller may read comes once, in change order, across pages that other
//! users' nodes do not stall; a node pushed again moves to the end; a
//! restart keeps the order.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};

/// Every node id a pull as `token` lists, page by page (`batch` a page),
/// and the number of pages.
async fn pull_all(addr: SocketAddr, token: &str, batch: u64) -> (Vec<String>, usize) {
    let mut nodes = Vec::new();
    let mut body = json!({"options": {"batch_size": batch}});
    for pages in 1..1000 {
        let (status, page) = call(addr, "POST", "/echo/pull", Some(token), &body.to_string()).await;
        assert_eq!(status, 200, "{page}");
        let changes = page["changes"].as_array().expect("changes");
        assert!(changes.len() as u64 <= batch, "{page}");
        nodes.extend(
            changes
                .iter()
                .map(|c| c["node_id"].as_str().expect("id").to_string()),
        );
        if page["has_more"] == false {
            assert_eq!(page["cursor"], Value::Null);
            return (nodes, pages);
        }
        body["cursor"] = page["cursor"].clone();
    }
    panic!("the pages never end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_every_node_pages_in_change_order() {
    let relay = TestRelay::start_with(with_users).await;
    let addr = relay.addr;
    for i in 0..12 {
        echo_push(addr, BOB, &format!("b-{i:02}"), "1").await;
    }
    let mut alices: Vec<String> = Vec::new();
    for i in 0..7 {
        let node = format!("a-{i:02}");
        echo_push(addr, ALICE, &node, "1").await;
        alices.push(node);
        // Bob's nodes between alice's: pages must step over them.
        echo_push(addr, BOB, &format!("b-late-{i}"), "1").await;
    }
    let (nodes, pages) = pull_all(addr, ALICE, 3).await;
    assert_eq!(nodes, alices);
    assert_eq!(pages, 3, "3 + 3 + 1");
    let (bobs, _) = pull_all(addr, BOB, 5).await;
    assert_eq!(bobs.len(), 19);
    assert!(bobs.iter().all(|n| n.starts_with("b-")), "{bobs:?}");

    // A node that changes again is listed after the others.
    let mut body = echo_push_body("a-02", "2", json!({"v": 2}));
    body["force"] = json!(true);
    let (status, reply) = call(addr, "POST", "/echo/push", Some(ALICE), &body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    alices.retain(|n| n != "a-02");
    alices.push("a-02".into());
    assert_eq!(pull_all(addr, ALICE, 3).await.0, alices);
    assert_eq!(pull_all(addr, ALICE, 1000).await, (alices.clone(), 1));

    // The index is in the store: a restart serves the same order.
    let dir = relay.stop().await;
    let relay = TestRelay::start_in(dir, "127.0.0.1:0".parse().expect("addr"), with_users).await;
    assert_eq!(pull_all(relay.addr, ALICE, 2).await.0, alices);
    relay.stop().await;
}
