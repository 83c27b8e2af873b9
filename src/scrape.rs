//! `GET /metrics` as served: the relay's counters (`metrics.rs`), open
//! subscriptions and NIP-77 sessions, and one set of series per sync peer.
//! `server.metrics_on` puts it on the relay listener (no credentials, as
//! Prometheus scrapes it) or only on the control listener (behind the
//! admin token).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::relay::Relay;
use crate::sync::SyncService;

/// What a scrape reads.
#[derive(Clone)]
pub struct Scrape {
    pub relay: Arc<Relay>,
    pub sync: Arc<SyncService>,
}

/// The `/metrics` route for the relay listener.
pub fn routes(scrape: Scrape) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state(scrape)
}

async fn serve(State(scrape): State<Scrape>) -> Response {
    reply(render(&scrape).await)
}

/// The Prometheus text response.
pub fn reply(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Every series, rendered.
pub async fn render(scrape: &Scrape) -> String {
    let store = scrape.relay.store.clone();
    let stored = tokio::task::spawn_blocking(move || store.count().unwrap_or(0))
        .await
        .unwrap_or(0);
    let relay = &scrape.relay;
    let mut body = relay.metrics.render(stored);
    let mut gauge = |name: &str, help: &str, value: usize| {
        let _ = writeln!(
            body,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "echorelay_subscriptions",
        "Open REQ subscriptions.",
        relay.registry.len(),
    );
    gauge(
        "echorelay_negentropy_sessions",
        "Open NIP-77 sessions.",
        relay.neg_directory.list().len(),
    );
    let _ = writeln!(
        body,
        "# HELP echorelay_fanout_deliveries_total Events offered to matching live subscriptions.\n\
         # TYPE echorelay_fanout_deliveries_total counter\n\
         echorelay_fanout_deliveries_total {}",
        relay.registry.delivered()
    );
    peer_series(&mut body, &scrape.sync);
    body
}

/// Per-peer sync series, labelled by the peer's URL.
fn peer_series(body: &mut String, sync: &SyncService) {
    let states = sync.states();
    let series: [(&str, &str, &str); 4] = [
        (
            "echorelay_peer_last_sync_timestamp_seconds",
            "gauge",
            "Unix time of the peer's last successful sync (0: never).",
        ),
        (
            "echorelay_peer_events_synced_total",
            "counter",
            "Events fetched from and sent to the peer, over all runs.",
        ),
        (
            "echorelay_peer_consecutive_failures",
            "gauge",
            "Failed sync runs with the peer since the last success.",
        ),
        (
            "echorelay_peer_up",
            "gauge",
            "1 when the peer's last run succeeded (or none failed yet), else 0.",
        ),
    ];
    for (i, (name, kind, help)) in series.iter().enumerate() {
        let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for state in &states {
            let value = match i {
                0 => state.last_sync,
                1 => state.events_synced,
                2 => u64::from(state.consecutive_failures),
                _ => u64::from(state.status != "error"),
            };
            let peer = state.peer_url.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(body, "{name}{{peer=\"{peer}\"}} {value}");
        }
    }
}
