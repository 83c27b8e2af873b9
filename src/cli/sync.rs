//! `echorelay sync <url> [--dir down|up|both] [--filter JSON]
//! [--frame-size-limit N] [--timeout S]`: one reconciliation with a remote
//! relay on the local data directory, then the transfer. A status line on a
//! terminal, plain lines otherwise, a summary at the end.
//!
//! Exit codes: 0 everything transferred; 3 completed but some events were
//! refused (listed); 1 the run failed (connection, timeout, no NIP-77).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::builder::TypedValueParser;
use clap::Args;

use super::progress::Progress as ProgressLine;
use super::NodeArgs;
use crate::filter::Filter;
use crate::metrics::Metrics;
use crate::sync::{sync_with_peer, Direction, Local, Progress, SyncOptions};
use crate::verify::VerifyPool;
use crate::writer::{Batching, Writer};

#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The peer relay (ws:// or wss://).
    url: String,
    /// down: fetch what we lack; up: send what the peer lacks; both.
    #[arg(
        long,
        default_value = "down",
        value_parser = clap::builder::PossibleValuesParser::new(["down", "up", "both"])
            .try_map(|s| s.parse::<Direction>())
    )]
    dir: Direction,
    /// Only events matching this NIP-01 filter.
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
    /// Our negentropy frame limit in bytes (0: none, else at least 4096).
    #[arg(long, default_value_t = 250_000)]
    frame_size_limit: usize,
    /// Seconds to wait for the connection and for each reply.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SyncArgs) -> anyhow::Result<i32> {
    let config = args.node.load()?;
    crate::tls::trust_extra_roots(&config.server.tls_roots)?;
    let filter = match &args.filter {
        Some(text) => Filter::from_json(text)?,
        None => Filter::default(),
    };
    let opts = SyncOptions {
        direction: args.dir,
        filter,
        frame_size_limit: args.frame_size_limit,
        timeout: Duration::from_secs(args.timeout.max(1)),
        ..SyncOptions::default()
    };
    let store = Arc::new(super::open_store(&config)?);
    // A peer configured (or added) with its node key is synced as a mesh
    // node once it proves that key.
    let opts = SyncOptions {
        peer_key: store.mesh().key_of_peer(&args.url),
        ..opts
    };
    let writer = Writer::spawn(
        store.clone(),
        Batching::new(&config.store),
        Arc::new(Metrics::default()),
        None,
    );
    let verify = VerifyPool::new(config.server.verify_threads);
    let policy = Some(Arc::new(crate::relay::policy::WritePolicy::new(
        &config.policy,
    )));
    let local = Local {
        store: store.clone(),
        writer: writer.handle(),
        verify: verify.handle(),
        policy,
        node_key: Some(Arc::new(crate::secrets::node_key(&config.store.data_dir)?)),
        deflate: config.server.permessage_deflate,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut progress = ProgressLine::new(args.node.progress_mode(), "sync", "events", None);
    let result = runtime.block_on(sync_with_peer(&args.url, &local, &opts, |p| {
        show(&mut progress, p)
    }));
    progress.finish();
    drop(local);
    verify.shutdown();
    writer.shutdown();
    store.sync();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("echorelay: sync with {} failed: {e}", args.url);
            return Ok(1);
        }
    };
    if args.json {
        let listed = |list: &[(String, String)]| -> Vec<serde_json::Value> {
            list.iter()
                .map(|(id, r)| serde_json::json!({"id": id, "reason": r}))
                .collect()
        };
        let (refused, fetch_refusals) = (listed(&report.refused), listed(&report.fetch_refusals));
        println!(
            "{}",
            serde_json::json!({"url": args.url, "rounds": report.rounds, "have": report.have, "need": report.need,
                "fetched": report.fetched, "fetch_refused": report.fetch_refused,
                "fetch_refusals": fetch_refusals, "skipped_refused": report.skipped_refused, "sent": report.sent, "refused": refused})
        );
    } else {
        for (id, reason) in &report.refused {
            eprintln!("refused by peer: {id}: {reason}");
        }
        for (id, reason) in &report.fetch_refusals {
            eprintln!("refused here: {id}: {reason}");
        }
        eprintln!(
            "synced with {}: {} rounds, have {}, need {}, fetched {} ({} refused locally), sent {} ({} refused by peer)",
            args.url,
            report.rounds,
            report.have,
            report.need,
            report.fetched,
            report.fetch_refused,
            report.sent,
            report.refused.len()
        );
    }
    Ok(if report.refused.is_empty() && report.fetch_refused == 0 {
        0
    } else {
        3
    })
}

/// A sync's progress: events moved (fetched + sent) of those reconciliation
/// found (have + need), with the round.
pub(super) fn show(progress: &mut ProgressLine, p: &Progress) {
    progress.set_total(p.have_count + p.need_count);
    progress.message(format!(
        "round {} · need {} · have {}",
        p.round, p.need_count, p.have_count
    ));
    progress.set(p.fetched_count + p.sent_count);
}
