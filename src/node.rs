//! Wiring a running node: open the store, start the writer, verify pool and
//! fan-out threads, serve until asked to stop, then shut down in the order
//! that loses nothing (stop accepting → close sockets → finish verifying →
//! commit everything queued → close the store).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::address::ADMIN_URL_FILE;
use crate::admin::Admin;
use crate::budget::IngestBudget;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::relay::policy::ReadPolicy;
use crate::relay::subscriptions::{spawn_fanout, Registry};
use crate::relay::{Relay, RelayParts};
use crate::store::{Store, StoreError, StoreOptions};
use crate::verify::VerifyPool;
use crate::writer::{Batching, Writer};

/// Why a node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "cannot listen on {0} for the control API (set server.admin_listen or \
         serve --admin-listen): {1}"
    )]
    AdminListen(SocketAddr, std::io::Error),
    #[error("cannot listen on {0} (server.listen, serve --listen): {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot write {ADMIN_URL_FILE} in the data directory: {0}")]
    AdminUrl(std::io::Error),
    #[error("TLS (server.tls_cert, server.tls_key, server.tls_roots): {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// How long shutdown waits for connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `echorelay serve`: the node's files first (node key, admin token), then
/// the control API's listener (its address written to `admin.url`), then the
/// relay's, so whoever waits for the relay port finds everything in place.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let (admin, published) = prepare(&config).await?;
    let dir = config.store.data_dir.clone();
    let listen = config.server.listen;
    let result = match TcpListener::bind(listen).await {
        Ok(listener) => run_with_admin(config, listener, admin, shutdown).await,
        Err(e) => Err(NodeError::Listen(listen, e)),
    };
    withdraw(&dir, published);
    result
}

/// Runs a node on `listener` (and the control API on
/// `server.admin_listen`) until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let (admin, published) = prepare(&config).await?;
    let dir = config.store.data_dir.clone();
    let result = run_with_admin(config, listener, admin, shutdown).await;
    withdraw(&dir, published);
    result
}

/// Creates the node's secrets and binds the control API, publishing its
/// URL in `admin.url` (returned, to withdraw when the node stops).
async fn prepare(config: &Config) -> Result<(Option<TcpListener>, Option<String>), NodeError> {
    let dir = &config.store.data_dir;
    crate::secrets::node_key(dir)?;
    let Some(addr) = config.server.admin_addr()? else {
        crate::admin::address::publish(dir, None).map_err(NodeError::AdminUrl)?;
        return Ok((None, None));
    };
    crate::secrets::admin_token(&config.server.admin_token, dir)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::AdminListen(addr, e))?;
    let url = crate::admin::address::publish(dir, Some(listener.local_addr()?))
        .map_err(NodeError::AdminUrl)?;
    Ok((Some(listener), url))
}

/// A stopped node's control API address is no longer published.
fn withdraw(dir: &std::path::Path, published: Option<String>) {
    if let Some(url) = published {
        crate::admin::address::withdraw(dir, &url);
    }
}

/// [`run`] with the control API on an already bound listener (or none).
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    crate::tls::trust_extra_roots(&config.server.tls_roots)?;
    let tls = match config.server.tls_files() {
        Some((cert, key)) => Some(Arc::new(crate::tls::ServerTls::load(cert, key)?)),
        None => None,
    };
    let store = Arc::new(Store::open(
        &config.store.data_dir,
        &StoreOptions::from_config(&config),
    )?);
    store.ensure_default_tree()?;
    let node_key = Arc::new(crate::secrets::node_key(&config.store.data_dir)?);
    let metrics = Arc::new(Metrics::default());
    let registry = Arc::new(Registry::default());
    let mesh = store.mesh().clone();
    mesh.admit(node_key.public_key(), &config, &store.added_peers()?);
    let read_policy = Arc::new(ReadPolicy::new(&config.auth, mesh.clone()));
    let fanout = spawn_fanout(registry.clone(), read_policy.clone())?;
    let ingest_budget = IngestBudget::new(config.limits.max_ingest_bytes);
    let (acks, ack_sender) = crate::relay::Acks::start(metrics.clone())?;
    let writer = Writer::spawn(
        store.clone(),
        Batching {
            budget: Some(ingest_budget.clone()),
            acks: Some(ack_sender),
            ..Batching::new(&config.store)
        },
        metrics.clone(),
        Some(fanout.clone()),
    );
    // Before serving: graph logs from before homes take the home's order.
    match writer.handle().upgrade_graph_logs(node_key.clone()).await {
        crate::store::WriteOutcome::Purged { .. } => {}
        other => tracing::error!(outcome = ?other, "graph logs not upgraded"),
    }
    let verify = VerifyPool::new(config.server.verify_threads);
    let (stop_tx, stop_rx) = watch::channel(false);
    let purge_every = Duration::from_secs(config.store.purge_interval_secs.max(1));
    let relay = Arc::new(Relay::new(
        config,
        RelayParts {
            store: store.clone(),
            ingest_budget,
            writer: writer.handle(),
            acks,
            tls: tls.clone(),
            verify: verify.handle(),
            metrics: metrics.clone(),
            shutdown: stop_rx,
            registry,
            read_policy,
            fanout,
            node_key: node_key.clone(),
        },
    ));
    let maintenance = tokio::spawn(maintenance(relay.clone(), purge_every));
    let reloads = tokio::spawn(reload_on_hangup(tls));
    let local = crate::sync::Local {
        store: store.clone(),
        writer: writer.handle(),
        verify: verify.handle(),
        policy: Some(Arc::new(crate::relay::policy::WritePolicy::new(
            &relay.config.policy,
        ))),
        node_key: Some(node_key.clone()),
        deflate: relay.config.server.permessage_deflate,
    };
    let sync = crate::sync::SyncService::start(
        local,
        &relay.config.peers,
        stop_tx.subscribe(),
        Some(relay.registry.stored_feed()),
        Some(mesh.clone()),
    );
    let admin = match admin_listener {
        Some(admin_listener) => {
            let token = crate::secrets::admin_token(
                &relay.config.server.admin_token,
                &relay.config.store.data_dir,
            )?;
            let admin = Arc::new(Admin::new(
                sync.clone(),
                relay.clone(),
                hex::encode(node_key.public_key()),
                &token,
            ));
            let admin_addr = admin_listener.local_addr().ok();
            tracing::info!(addr = ?admin_addr, "control API listening");
            let mut stop = stop_tx.subscribe();
            Some(tokio::spawn(crate::admin::serve(
                admin,
                admin_listener,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "relay listening");

    let hub = Arc::new(crate::graph::Hub::default());
    hub.spawn_feed_listener(store.clone(), relay.registry.stored_feed().subscribe());
    // One set of credentials (and one NIP-98 replay cache) for both APIs.
    let tokens = crate::auth::TokenUsers::new(&relay.config, Some((mesh, node_key.public_key())));
    let graphs = Arc::new(crate::graph::Graphs {
        store: store.clone(),
        writer: writer.handle(),
        node_key: node_key.clone(),
        tokens: tokens.clone(),
        hub,
        max_tx_size: relay.config.policy.max_event_size,
        store_dir: relay.config.store.data_dir.clone(),
        sync: sync.clone(),
        home_calls: crate::graph::home_calls(),
        public_origin: crate::http_client::Endpoint::of_relay(relay.config.server.relay_url.trim())
            .map(crate::http_client::Endpoint::host_root),
        shutdown: stop_tx.subscribe(),
    });
    let echo = Arc::new(crate::echo::Echo::new(
        store.clone(),
        writer.handle(),
        node_key.clone(),
        tokens,
        &relay.config.auth.echo_grants,
        relay.config.policy.max_event_size,
        relay.metrics.clone(),
    ));
    echo.start_streams(
        relay.registry.stored_feed().subscribe(),
        stop_tx.subscribe(),
    );
    crate::graph::spawn_gap_watcher(graphs.clone(), relay.registry.stored_feed().subscribe());
    let mut apis = crate::graph::routes(graphs).merge(crate::echo::routes(echo));
    if relay.config.server.metrics_on == "relay" {
        apis = apis.merge(crate::scrape::routes(crate::scrape::Scrape {
            relay: relay.clone(),
            sync: sync.clone(),
        }));
    }
    let signal_tx = stop_tx.clone();
    let served = crate::relay::serve(relay.clone(), listener, apis, async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    })
    .await;
    let _ = stop_tx.send(true);

    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while metrics.connections_open.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    maintenance.abort();
    reloads.abort();
    if let Some(admin) = admin {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, admin).await;
    }
    drop(sync);
    drop(relay);
    // Tasks that hold the store (feed listeners, sockets told to stop) end
    // on their own wake-up; the LMDB environment closes only when the last
    // holder is gone, so a node restarted in the same process (tests, an
    // embedding) must not find it still open.
    tokio::task::spawn_blocking(move || {
        verify.shutdown();
        writer.shutdown();
    })
    .await
    .map_err(std::io::Error::other)?;
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if Arc::strong_count(&store) > 1 {
        tracing::warn!("tasks still hold the store after shutdown");
    }
    tokio::task::spawn_blocking(move || store.sync())
        .await
        .map_err(std::io::Error::other)?;
    tracing::info!("relay stopped; every acknowledged event is committed");
    served.map_err(NodeError::from)
}

/// Periodic work: purge expired events, forget idle rate-limit keys.
/// SIGHUP: the listeners' certificate and key are read again (a renewed
/// certificate takes effect for new connections; a bad pair is logged and
/// the one in use stays). Without TLS there is nothing to reload, and the
/// signal does not stop the node either.
async fn reload_on_hangup(tls: Option<Arc<crate::tls::ServerTls>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: the TLS certificate is not reloadable");
        return;
    };
    while hangups.recv().await.is_some() {
        match tls.as_ref().map(|tls| tls.reload()) {
            None => tracing::info!("SIGHUP: no TLS certificate to reload"),
            Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
            Some(Err(e)) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the old one stays")
            }
        }
    }
}

async fn maintenance(relay: Arc<Relay>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        relay.writer.purge_expired();
        relay.shrink_rate_limiters();
    }
}
