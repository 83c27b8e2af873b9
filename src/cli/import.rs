//! `echorelay import [FILE]`: JSON lines (one event per line, stdin when no
//! file) into the data directory. Every signature is checked on the verify
//! pool and every event goes through the same writer as the relay's, so
//! replacement, deletion and indexing rules are identical. Works with or
//! without a running relay on the same directory (LMDB locks the files).

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::NodeArgs;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::refusal::Prefix;
use crate::store::WriteOutcome;
use crate::verify::{verify_group, VerifyPool};
use crate::writer::{Batching, GroupAnswer, Writer};

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// JSON-lines file; stdin when absent.
    file: Option<PathBuf>,
    /// Print one summary line as JSON.
    #[arg(long)]
    json: bool,
}

/// Counts reported at the end of an import.
#[derive(Default)]
struct Tally {
    stored: AtomicU64,
    duplicate: AtomicU64,
    refused: AtomicU64,
    invalid: AtomicU64,
}

/// Problems printed individually before the summary.
const MAX_REPORTED: u64 = 20;

pub fn run(args: ImportArgs) -> anyhow::Result<i32> {
    let config = args.node.load()?;
    let (input, size): (Box<dyn BufRead>, Option<u64>) = match &args.file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let size = file.metadata().ok().map(|m| m.len());
            (
                Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
                size,
            )
        }
        None => (
            Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin())),
            None,
        ),
    };
    // Progress in bytes of the file (its size is the total), events in
    // the message.
    let mut progress =
        super::progress::Progress::new(args.node.progress_mode(), "import", "bytes", size);
    let store = Arc::new(super::open_store(&config)?);
    let metrics = Arc::new(Metrics::default());
    let writer = Writer::spawn(store.clone(), Batching::new(&config.store), metrics, None);
    let verify = VerifyPool::new(config.server.verify_threads);
    let tally = Arc::new(Tally::default());
    let (pending, answers) = std::sync::mpsc::channel();
    let tallier = {
        let tally = tally.clone();
        std::thread::spawn(move || tally_answers(tally, answers))
    };
    let started = Instant::now();
    let mut lines = 0u64;
    let mut group: Vec<(Event, u64)> = Vec::with_capacity(GROUP);
    for (index, line) in input.lines().enumerate() {
        let line = line.context("cannot read the input")?;
        let line_no = index as u64 + 1;
        progress.inc(line.len() as u64 + 1);
        if line_no.is_multiple_of(1024) {
            progress.message(format!("{line_no} lines"));
        }
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        match Event::from_json(&line) {
            Ok(event) => group.push((event, line_no)),
            Err(e) => report(&tally.invalid, line_no, &e.refusal().to_string()),
        }
        if group.len() >= GROUP {
            let full = std::mem::replace(&mut group, Vec::with_capacity(GROUP));
            submit(&verify, &writer, &tally, &pending, full);
        }
    }
    submit(&verify, &writer, &tally, &pending, group);
    progress.finish();
    verify.shutdown();
    writer.shutdown();
    drop(pending);
    let _ = tallier.join();
    store.sync();
    let secs = started.elapsed().as_secs_f64();
    let stored = tally.stored.load(Relaxed);
    let duplicate = tally.duplicate.load(Relaxed);
    let refused = tally.refused.load(Relaxed);
    let invalid = tally.invalid.load(Relaxed);
    let rate = if secs > 0.0 { lines as f64 / secs } else { 0.0 };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"lines": lines, "stored": stored, "duplicate": duplicate,
                "refused": refused, "invalid": invalid, "seconds": secs, "events_per_second": rate})
        );
    } else {
        eprintln!(
            "read {lines} events: {stored} stored, {duplicate} duplicate, {refused} refused, {invalid} invalid \
             in {secs:.2} s ({rate:.0} events/s)"
        );
    }
    Ok(if refused + invalid > 0 { 1 } else { 0 })
}

/// Lines verified as one job and stored as one writer request (one queue
/// hop each per group, as the relay's ingest does).
const GROUP: usize = 16;

/// A group handed to the writer: its line numbers and the writer's answer.
type Pending = (Vec<u64>, GroupAnswer);

/// Verifies a group of parsed lines on the pool and hands the valid ones to
/// the writer; `pending` takes the answer, tallied after commit.
fn submit(
    verify: &VerifyPool,
    writer: &Writer,
    tally: &Arc<Tally>,
    pending: &std::sync::mpsc::Sender<Pending>,
    group: Vec<(Event, u64)>,
) {
    if group.is_empty() {
        return;
    }
    let (writer, tally, pending) = (writer.handle(), tally.clone(), pending.clone());
    verify.handle().run_blocking(move || {
        let (to_store, line_nos) = verify_group(group, |line_no, e| {
            report(&tally.invalid, line_no, &e.refusal().to_string())
        });
        if !to_store.is_empty() {
            let _ = pending.send((line_nos, writer.submit_group(to_store)));
        }
    });
}

/// Tallies the writer's answers as they come (on its own thread, so verify
/// threads never wait for a commit).
fn tally_answers(tally: Arc<Tally>, pending: std::sync::mpsc::Receiver<Pending>) {
    for (line_nos, answer) in pending {
        let outcomes = answer.blocking_recv().unwrap_or_default();
        for (line_no, outcome) in line_nos.into_iter().zip(&outcomes) {
            match outcome {
                WriteOutcome::Stored { .. } => {
                    tally.stored.fetch_add(1, Relaxed);
                }
                WriteOutcome::Duplicate => {
                    tally.duplicate.fetch_add(1, Relaxed);
                }
                WriteOutcome::Refused(reason) if reason.is(Prefix::Duplicate) => {
                    tally.duplicate.fetch_add(1, Relaxed);
                }
                WriteOutcome::Refused(reason) => {
                    report(&tally.refused, line_no, &reason.to_string())
                }
                WriteOutcome::HeadMoved
                | WriteOutcome::Purged { .. }
                | WriteOutcome::Graph(_)
                | WriteOutcome::Recorded => {}
            }
        }
    }
}

fn report(counter: &AtomicU64, line: u64, reason: &str) {
    let seen = counter.fetch_add(1, Relaxed);
    if seen < MAX_REPORTED {
        eprintln!("line {line}: {reason}");
    }
}
