//! `echorelay import [FILE]`: JSON lines (one event per line, stdin when no
//! file) into the data directory. Every signature is checked on the verify
//! pool and every event goes through the same writer as the relay's, so
//! replacement, deletion and indexing rules are identical. Works with or
//! without a running relay on the same directory (LMDB locks the files).
//! Into a store that holds no events it bulk loads instead
//! (`import_bulk.rs`).

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
use crate::store::{Store, WriteOutcome};
use crate::verify::{verify_group, VerifyPool};
use crate::writer::{Batching, GroupAnswer, Writer, WriterHandle};

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// JSON-lines file; stdin when absent.
    file: Option<PathBuf>,
    /// Print one summary line as JSON.
    #[arg(long)]
    json: bool,
    /// Store every event through the writer even into an empty store
    /// (by default an empty store is bulk loaded: indexes built from
    /// sorted runs).
    #[arg(long)]
    no_bulk: bool,
}

/// Counts reported at the end of an import.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) stored: AtomicU64,
    pub(super) duplicate: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) invalid: AtomicU64,
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
    let mode = args.node.progress_mode();
    let progress = super::progress::Progress::new(mode, "import", "bytes", size);
    let store = Arc::new(super::open_store(&config)?);
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let lines = if !args.no_bulk && store.can_bulk_load()? {
        let announce = |phase: &str| {
            if mode != super::progress::Mode::Quiet {
                eprintln!("bulk load: {phase}");
            }
        };
        super::import_bulk::run(&store, &config, input, progress, &tally, &announce)?
    } else {
        through_writer(&store, &config, input, progress, &tally)?
    };
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

/// The normal path: every event through the writer, as the relay stores
/// them; returns the lines read.
fn through_writer(
    store: &Arc<Store>,
    config: &crate::config::Config,
    input: Box<dyn BufRead>,
    mut progress: super::progress::Progress,
    tally: &Arc<Tally>,
) -> anyhow::Result<u64> {
    let writer = TalliedWriter::start(store, config, tally);
    let verify = VerifyPool::new(config.server.verify_threads);
    let lines = super::import_bulk::read_lines(input, &mut progress, tally, |group| {
        submit(&verify, writer.submitter(), tally, group)
    });
    progress.finish();
    verify.shutdown();
    writer.finish();
    lines
}

/// An import's writer and the thread that tallies its answers as they
/// come (so verify threads never wait for a commit).
pub(super) struct TalliedWriter {
    writer: Writer,
    submitter: Submitter,
    tallier: std::thread::JoinHandle<()>,
}

/// Hands verified groups to a [`TalliedWriter`] from any thread.
#[derive(Clone)]
pub(super) struct Submitter {
    writer: WriterHandle,
    pending: std::sync::mpsc::Sender<Pending>,
}

impl Submitter {
    /// Stores `group` (the lines `line_nos`); tallied after its commit.
    pub(super) fn store(&self, line_nos: Vec<u64>, group: Vec<(Event, String)>) {
        if !group.is_empty() {
            let _ = self
                .pending
                .send((line_nos, self.writer.submit_group(group)));
        }
    }
}

impl TalliedWriter {
    pub(super) fn start(
        store: &Arc<Store>,
        config: &crate::config::Config,
        tally: &Arc<Tally>,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let writer = Writer::spawn(store.clone(), Batching::new(&config.store), metrics, None);
        let (pending, answers) = std::sync::mpsc::channel();
        let tally = tally.clone();
        TalliedWriter {
            submitter: Submitter {
                writer: writer.handle(),
                pending,
            },
            writer,
            tallier: std::thread::spawn(move || tally_answers(tally, answers)),
        }
    }

    pub(super) fn submitter(&self) -> &Submitter {
        &self.submitter
    }

    /// Waits until every group is committed and tallied.
    pub(super) fn finish(self) {
        self.writer.shutdown();
        drop(self.submitter);
        let _ = self.tallier.join();
    }
}

/// Lines verified as one job and stored as one writer request (one queue
/// hop each per group, as the relay's ingest does).
pub(super) const GROUP: usize = 16;

/// A group handed to the writer: its line numbers and the writer's answer.
type Pending = (Vec<u64>, GroupAnswer);

/// Verifies a group of parsed lines on the pool and hands the valid ones to
/// the writer; `pending` takes the answer, tallied after commit.
fn submit(verify: &VerifyPool, to: &Submitter, tally: &Arc<Tally>, group: Vec<(Event, u64)>) {
    if group.is_empty() {
        return;
    }
    let (to, tally) = (to.clone(), tally.clone());
    verify.handle().run_blocking(move || {
        let (to_store, line_nos) = verify_group(group, |line_no, e| {
            report(&tally.invalid, line_no, &e.refusal().to_string())
        });
        to.store(line_nos, to_store);
    });
}

/// Tallies the writer's answers as they come (the tallier thread).
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

pub(super) fn report(counter: &AtomicU64, line: u64, reason: &str) {
    let seen = counter.fetch_add(1, Relaxed);
    if seen < MAX_REPORTED {
        eprintln!("line {line}: {reason}");
    }
}
