//! The Grafana dashboard in docs/grafana/ against a live scrape: it parses,
//! and every series its queries name is in `/metrics` of a node with a
//! sync peer. And `server.metrics_on = "admin"` moves `/metrics` behind the
//! control API's token.

mod common;

use common::*;
use serde_json::{json, Value};

/// Every `echorelay_…` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("echorelay_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Whether the scrape holds a sample (not only a HELP line) of `name`.
fn has_sample(scrape: &str, name: &str) -> bool {
    scrape.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_of_the_dashboard_is_scraped() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/echorelay.json"),
    )
    .unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");

    let a = TestRelay::start().await;
    let b = TestRelay::start().await;
    let body = json!({"peer_url": a.url, "dir": "down", "interval_secs": 1});
    b.admin().call("AddPeer", &body).await.unwrap();
    let scrape = eventually("a peer's series in /metrics", WAIT, || async {
        let (status, _, scrape) = http_get(b.addr, "/metrics", &[]).await;
        (status == 200 && has_sample(&scrape, "echorelay_peer_up")).then_some(scrape)
    })
    .await;
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                has_sample(&scrape, &name),
                "{name} (in {expr}) is not scraped"
            );
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_live_on_the_control_listener_only() {
    let relay = TestRelay::start_with(|c| c.server.metrics_on = "admin".into()).await;
    let (status, _, _) = http_get(relay.addr, "/metrics", &[]).await;
    assert_eq!(status, 404, "not on the relay listener");
    let (status, _, _) = http_get(relay.admin_addr, "/metrics", &[]).await;
    assert_eq!(status, 401, "the control listener wants the token");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, scrape) =
        http_get(relay.admin_addr, "/metrics", &[("Authorization", &bearer)]).await;
    assert_eq!(status, 200);
    assert!(
        has_sample(&scrape, "echorelay_events_stored_total"),
        "{scrape}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_deliveries_count_one_per_matching_subscription() {
    let relay = TestRelay::start().await;
    let mut reader = relay.client().await;
    let keys = echorelay::event::Keys::generate();
    let author = hex::encode(keys.public_key());
    // Two subscriptions that match, one that does not.
    reader.req("all", &[json!({})]).await;
    reader.req("mine", &[json!({"authors": [author]})]).await;
    reader.req("other", &[json!({"kinds": [30000]})]).await;
    let before = metric(relay.addr, "echorelay_fanout_deliveries_total").await;
    let mut writer = relay.client().await;
    writer.publish_ok(&note(&keys, "fanned out")).await;
    for _ in 0..2 {
        let delivered = reader.recv().await;
        assert_eq!(delivered[0], "EVENT", "{delivered}");
    }
    let after = eventually("the deliveries counted", WAIT, || async {
        let now = metric(relay.addr, "echorelay_fanout_deliveries_total").await;
        (now >= before + 2).then_some(now)
    })
    .await;
    assert_eq!(after, before + 2, "one per matching subscription");
    relay.stop().await;
}
