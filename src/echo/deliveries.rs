//! Who was told of a change and who acknowledged it (seed 000: the API
//! notifies Node B, Node B acknowledges, the API confirms to Node A).
//!
//! When a state change commits, the stream dispatcher (`stream.rs`) records
//! the subscribers it sent the change to: the *notified* set of that
//! change's `sync_id`. `POST /echo/ack` adds a subscriber to its
//! *acknowledged* set; `/echo/status` with the `sync_id` reports the ratio
//! as progress; a push with `options.timeout` waits until every notified
//! subscriber acknowledged, or the timeout.
//!
//! A subscriber is a (user, name) pair: a user can acknowledge only for the
//! streams it opened itself. Kept in memory, bounded in count and age: this
//! is a live conversation, not history.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::http::error;
use super::{time, Echo, EchoCaller};

/// Most changes remembered at once (the oldest are forgotten first).
const MAX_DELIVERIES: usize = 10_000;
/// Most notified subscribers remembered over all changes (each change's
/// set is at most the open streams; this bounds the product).
const MAX_NOTIFIED: usize = 100_000;
/// How long a change's deliveries are remembered (ms).
const KEEP_MS: u64 = 3600 * 1000;

/// A stream's subscriber: who opened it and the name it gave.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subscriber {
    pub user: String,
    pub name: String,
}

impl Subscriber {
    /// The name as `viewer` sees it: bare for the viewer's own subscribers,
    /// `user/name` for another user's, so a grantee cannot pass its
    /// subscriber off as one of the owner's.
    fn shown_to(&self, viewer: &str) -> String {
        match self.user == viewer {
            true => self.name.clone(),
            false => format!("{}/{}", self.user, self.name),
        }
    }
}

fn shown(set: &BTreeSet<Subscriber>, viewer: &str) -> Vec<String> {
    set.iter().map(|s| s.shown_to(viewer)).collect()
}

/// One change's notified and acknowledged subscribers.
#[derive(Debug)]
struct Delivery {
    node_id: String,
    notified_ms: u64,
    notified: BTreeSet<Subscriber>,
    acknowledged: BTreeSet<Subscriber>,
}

impl Delivery {
    fn progress(&self) -> f64 {
        match self.notified.len() {
            0 => 100.0,
            n => (self.acknowledged.len() as f64 * 100.0 / n as f64).min(100.0),
        }
    }
}

/// Why an acknowledgement was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no change {0} of node {1} was notified here")]
    UnknownChange(String, String),
    #[error("subscriber {0} of this user was not notified of {1}")]
    NotNotified(String, String),
}

/// The deliveries of recent changes, by sync id.
pub struct Deliveries {
    inner: Mutex<Inner>,
    /// Bumped on every record and acknowledgement, so waiters re-check.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    by_sync: HashMap<String, Delivery>,
    /// Sync ids, oldest first, for the count and age bounds.
    order: VecDeque<String>,
    /// Notified subscribers over all remembered changes.
    notified: usize,
}

impl Inner {
    /// Forgets the oldest changes until `room` more notified subscribers
    /// and one more change fit, and nothing older than [`KEEP_MS`] stays.
    fn make_room(&mut self, room: usize, now: u64) {
        loop {
            let too_old = self.order.front().is_some_and(|oldest| {
                self.by_sync
                    .get(oldest)
                    .is_none_or(|d| d.notified_ms + KEEP_MS < now)
            });
            let full = self.order.len() >= MAX_DELIVERIES || self.notified + room > MAX_NOTIFIED;
            if !(too_old || full) {
                return;
            }
            let Some(oldest) = self.order.pop_front() else {
                return;
            };
            if let Some(gone) = self.by_sync.remove(&oldest) {
                self.notified -= gone.notified.len();
            }
        }
    }
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            inner: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Deliveries {
    /// Records that the change `sync_id` of `node_id` was sent to
    /// `notified` (called once per committed change, even with nobody to
    /// notify, so a waiting push knows it may return).
    pub fn record(&self, sync_id: &str, node_id: &str, notified: BTreeSet<Subscriber>) {
        let now = crate::event::now_ms();
        let mut inner = self.inner.lock();
        inner.make_room(notified.len(), now);
        inner.notified += notified.len();
        let delivery = Delivery {
            node_id: node_id.to_string(),
            notified_ms: now,
            notified,
            acknowledged: BTreeSet::new(),
        };
        match inner.by_sync.insert(sync_id.to_string(), delivery) {
            // The same change again (a replay): its old record goes.
            Some(old) => inner.notified -= old.notified.len(),
            None => inner.order.push_back(sync_id.to_string()),
        }
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    /// `subscriber` acknowledges the change `sync_id` of `node_id`; the
    /// change's progress after it.
    pub fn acknowledge(
        &self,
        sync_id: &str,
        node_id: &str,
        subscriber: Subscriber,
    ) -> Result<f64, AckError> {
        let mut inner = self.inner.lock();
        let delivery = inner
            .by_sync
            .get_mut(sync_id)
            .filter(|d| d.node_id == node_id)
            .ok_or_else(|| AckError::UnknownChange(sync_id.into(), node_id.into()))?;
        if !delivery.notified.contains(&subscriber) {
            return Err(AckError::NotNotified(subscriber.name, sync_id.into()));
        }
        delivery.acknowledged.insert(subscriber);
        let progress = delivery.progress();
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
        Ok(progress)
    }

    /// Waits until the change `sync_id` was recorded and every subscriber
    /// it was sent to acknowledged it, or `deadline`; those that
    /// acknowledged by then, as `viewer` (the pusher) sees them.
    pub async fn confirmation(
        &self,
        sync_id: &str,
        viewer: &str,
        deadline: Instant,
    ) -> Vec<String> {
        let mut changed = self.changed.subscribe();
        loop {
            if let Some((true, names)) = self.confirmed(sync_id, viewer) {
                return names;
            }
            let wait = tokio::time::timeout_at(deadline, changed.changed()).await;
            if !matches!(wait, Ok(Ok(()))) {
                let confirmed = self.confirmed(sync_id, viewer);
                return confirmed.map(|(_, names)| names).unwrap_or_default();
            }
        }
    }

    /// Whether every notified subscriber acknowledged, and who did.
    fn confirmed(&self, sync_id: &str, viewer: &str) -> Option<(bool, Vec<String>)> {
        let inner = self.inner.lock();
        let delivery = inner.by_sync.get(sync_id)?;
        let done = delivery.acknowledged.len() >= delivery.notified.len();
        Some((done, shown(&delivery.acknowledged, viewer)))
    }

    /// `/echo/status`'s `current_operation` for the change `sync_id` of
    /// `node_id`, if it was notified here, as `viewer` sees it.
    pub fn operation(&self, sync_id: &str, node_id: &str, viewer: &str) -> Option<Value> {
        let inner = self.inner.lock();
        let delivery = inner
            .by_sync
            .get(sync_id)
            .filter(|d| d.node_id == node_id)?;
        Some(json!({
            "type": "notify",
            "sync_id": sync_id,
            "start_time": time::format(delivery.notified_ms),
            "progress": delivery.progress(),
            "notified": shown(&delivery.notified, viewer),
            "acknowledged_by": shown(&delivery.acknowledged, viewer),
        }))
    }
}

/// `POST /echo/ack {"sync_id", "node_id", "subscriber"}`: a subscriber of
/// the caller's acknowledges a change it was sent.
pub async fn ack(
    State(echo): State<Arc<Echo>>,
    EchoCaller(user): EchoCaller,
    body: Body,
) -> Response {
    let (body, node_id) = match super::http::body_with_node(body).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .map(str::to_string)
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("{name} must be a non-empty string"),
                )
            })
    };
    let (sync_id, name) = match (text("sync_id"), text("subscriber")) {
        (Ok(sync_id), Ok(name)) => (sync_id, name),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    if let Err(e) = super::http::readable(&echo, &user, &node_id).await {
        return e.into_response();
    }
    let subscriber = Subscriber {
        user: user.id.clone(),
        name,
    };
    match echo.deliveries.acknowledge(&sync_id, &node_id, subscriber) {
        Ok(progress) => Json(json!({
            "status": "success",
            "sync_id": sync_id,
            "node_id": node_id,
            "progress": progress,
            "timestamp": time::format(crate::event::now_ms()),
        }))
        .into_response(),
        Err(e @ AckError::UnknownChange(..)) => {
            error(StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        Err(e @ AckError::NotNotified(..)) => {
            error(StatusCode::CONFLICT, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(user: &str, name: &str) -> Subscriber {
        Subscriber {
            user: user.into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn progress_follows_acknowledgements_of_notified_subscribers_only() {
        let deliveries = Deliveries::default();
        let notified = [sub("alice", "b"), sub("alice", "c")].into_iter().collect();
        deliveries.record("s1", "n1", notified);
        // Another user's subscriber is shown with its user.
        deliveries.record("s2", "n1", [sub("bob", "b")].into_iter().collect());
        assert_eq!(
            deliveries.acknowledge("s2", "n1", sub("bob", "b")),
            Ok(100.0)
        );
        let far = Instant::now() + std::time::Duration::from_secs(5);
        assert_eq!(deliveries.confirmation("s2", "alice", far).await, ["bob/b"]);
        assert_eq!(deliveries.confirmation("s2", "bob", far).await, ["b"]);
        let progress =
            |d: &Deliveries| d.operation("s1", "n1", "alice").unwrap()["progress"].clone();
        assert_eq!(progress(&deliveries), json!(0.0));
        // Another user cannot acknowledge for alice's subscriber.
        assert!(matches!(
            deliveries.acknowledge("s1", "n1", sub("mallory", "b")),
            Err(AckError::NotNotified(..))
        ));
        assert!(matches!(
            deliveries.acknowledge("s1", "n2", sub("alice", "b")),
            Err(AckError::UnknownChange(..))
        ));
        assert_eq!(
            deliveries.acknowledge("s1", "n1", sub("alice", "b")),
            Ok(50.0)
        );
        assert_eq!(
            deliveries.acknowledge("s1", "n1", sub("alice", "b")),
            Ok(50.0)
        );
        let soon = Instant::now() + std::time::Duration::from_millis(50);
        assert_eq!(deliveries.confirmation("s1", "alice", soon).await, ["b"]);
        assert_eq!(
            deliveries.acknowledge("s1", "n1", sub("alice", "c")),
            Ok(100.0)
        );
        let later = Instant::now() + std::time::Duration::from_secs(5);
        assert_eq!(
            deliveries.confirmation("s1", "alice", later).await,
            ["b", "c"]
        );
        assert!(deliveries.operation("s1", "other", "alice").is_none());
    }

    #[tokio::test]
    async fn nobody_to_notify_confirms_at_once_and_memory_is_bounded() {
        let deliveries = Deliveries::default();
        deliveries.record("s0", "n1", BTreeSet::new());
        let far = Instant::now() + std::time::Duration::from_secs(60);
        assert!(deliveries.confirmation("s0", "alice", far).await.is_empty());
        for i in 0..MAX_DELIVERIES + 10 {
            deliveries.record(&format!("x{i}"), "n1", BTreeSet::new());
        }
        assert!(deliveries.inner.lock().by_sync.len() <= MAX_DELIVERIES);
        assert!(
            deliveries.operation("s0", "n1", "alice").is_none(),
            "the oldest went first"
        );
        // Many subscribers per change: the total stays bounded too.
        let many: BTreeSet<Subscriber> = (0..1000).map(|i| sub("u", &i.to_string())).collect();
        for i in 0..200 {
            deliveries.record(&format!("m{i}"), "n1", many.clone());
        }
        let inner = deliveries.inner.lock();
        assert!(inner.notified <= MAX_NOTIFIED);
        let counted: usize = inner.by_sync.values().map(|d| d.notified.len()).sum();
        assert_eq!(counted, inner.notified);
    }
}
