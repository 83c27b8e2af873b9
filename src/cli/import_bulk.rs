//! `echorelay import` into a store that holds no events: lines are parsed
//! and verified on the pool as usual, regular events go to the store's
//! bulk load (`store/bulk.rs`: sorted runs, indexes appended in key order)
//! and every other event — replaceable, addressable, ephemeral, deletions,
//! mesh state — waits in `import-deferred.jsonl` in the data directory and
//! goes through the writer once the load is complete, so every
//! replacement and deletion rule applies as on the normal path.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;

use super::import::{report, TalliedWriter, Tally, GROUP};
use crate::config::Config;
use crate::event::Event;
use crate::refusal::Refusal;
use crate::store::{is_bulk_kind, BulkLoad, Store, DELETED_BY_AUTHOR};
use crate::verify::{verify_group, VerifyPool};

/// Verified groups waiting for the loader (bounded: the pool waits).
const LOADER_QUEUE: usize = 256;
const DEFERRED_FILE: &str = "import-deferred.jsonl";

/// One verified event with its stored JSON and input line.
type Verified = (Event, String, u64);

/// Imports `input` with a bulk load; returns the lines read. A load that
/// fails is taken back before the error is returned.
pub(super) fn run(
    store: &Arc<Store>,
    config: &Config,
    input: Box<dyn BufRead>,
    progress: super::progress::Progress,
    tally: &Arc<Tally>,
    announce: &dyn Fn(&str),
) -> anyhow::Result<u64> {
    let loaded = load(store, config, input, progress, tally, announce);
    if loaded.is_err() {
        store.roll_back_bulk_load()?;
    }
    loaded
}

fn load(
    store: &Arc<Store>,
    config: &Config,
    input: Box<dyn BufRead>,
    mut progress: super::progress::Progress,
    tally: &Arc<Tally>,
    announce: &dyn Fn(&str),
) -> anyhow::Result<u64> {
    let load = store.bulk_load()?;
    let deferred_path = config.store.data_dir.join(DEFERRED_FILE);
    let verify = VerifyPool::new(config.server.verify_threads);
    let (to_loader, verified) = sync_channel::<(u64, Vec<Verified>)>(LOADER_QUEUE);
    let mut submitted = 0u64;
    let (lines, loaded) = std::thread::scope(|scope| {
        let loader = scope.spawn(|| load_verified(load, verified, &deferred_path, tally));
        let lines = read_lines(input, &mut progress, tally, |group| {
            let (to_loader, tally) = (to_loader.clone(), tally.clone());
            let index = submitted;
            submitted += 1;
            verify.handle().run_blocking(move || {
                let (valid, line_nos) = verify_group(group, |line_no, e| {
                    report(&tally.invalid, line_no, &e.refusal().to_string())
                });
                let group = valid
                    .into_iter()
                    .zip(line_nos)
                    .map(|((event, json), line)| (event, json, line))
                    .collect();
                let _ = to_loader.send((index, group));
            });
        });
        progress.finish();
        verify.shutdown();
        drop(to_loader);
        let loaded = loader
            .join()
            .map_err(|_| anyhow::anyhow!("the bulk loader panicked"));
        (lines, loaded)
    });
    let lines = lines?;
    let (load, deferred) = loaded??;
    let outcome = load.finish(announce)?;
    tally
        .stored
        .fetch_add(outcome.stored, std::sync::atomic::Ordering::Relaxed);
    tally
        .duplicate
        .fetch_add(outcome.duplicates, std::sync::atomic::Ordering::Relaxed);
    if deferred > 0 {
        announce(&format!(
            "storing {deferred} replaceable, addressable and other events"
        ));
        store_deferred(store, config, &deferred_path, tally)?;
    }
    let _ = std::fs::remove_file(&deferred_path);
    Ok(lines)
}

/// Reads and parses the input, handing groups of parsed lines to `submit`;
/// returns the non-empty lines read.
pub(super) fn read_lines(
    input: Box<dyn BufRead>,
    progress: &mut super::progress::Progress,
    tally: &Tally,
    mut submit: impl FnMut(Vec<(Event, u64)>),
) -> anyhow::Result<u64> {
    let mut lines = 0u64;
    let mut group = Vec::with_capacity(GROUP);
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
            submit(std::mem::replace(&mut group, Vec::with_capacity(GROUP)));
        }
    }
    if !group.is_empty() {
        submit(group);
    }
    Ok(lines)
}

/// The loader thread: groups in input order (verify threads finish them
/// in any order), regular events into the load, the rest into the
/// deferred file (`line json` per line). After a failure it keeps
/// draining, so verify threads never wait on it for ever.
fn load_verified<'s>(
    load: BulkLoad<'s>,
    verified: Receiver<(u64, Vec<Verified>)>,
    deferred_path: &Path,
    tally: &Tally,
) -> anyhow::Result<(BulkLoad<'s>, u64)> {
    let file = std::fs::File::create(deferred_path)
        .with_context(|| format!("cannot create {}", deferred_path.display()))?;
    let mut loader = Loader {
        load,
        deferred_file: BufWriter::new(file),
        deferred: 0,
        deleted: HashSet::new(),
        tally,
    };
    let mut failed = None;
    let (mut waiting, mut next) = (BTreeMap::new(), 0u64);
    for (index, group) in verified {
        waiting.insert(index, group);
        while let Some(group) = waiting.remove(&next) {
            next += 1;
            if failed.is_none() {
                failed = loader.take(group).err();
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    loader.deferred_file.flush()?;
    Ok((loader.load, loader.deferred))
}

/// What the loader thread holds.
struct Loader<'s, 't> {
    load: BulkLoad<'s>,
    deferred_file: BufWriter<std::fs::File>,
    deferred: u64,
    /// (event id, its author) of every deletion seen so far.
    deleted: HashSet<([u8; 32], [u8; 32])>,
    tally: &'t Tally,
}

impl Loader<'_, '_> {
    /// One group, in order. An event whose author's deletion came before
    /// it is refused as the writer would refuse it (a deletion after it
    /// removes it when the deferred events are stored).
    fn take(&mut self, group: Vec<Verified>) -> anyhow::Result<()> {
        for (event, json, line) in group {
            if event.kind == 5 {
                let targets = event
                    .tag_values("e")
                    .filter_map(crate::event::decode_hex::<32>);
                self.deleted.extend(targets.map(|id| (id, event.pubkey)));
            }
            if !is_bulk_kind(&event) {
                self.deferred += 1;
                writeln!(self.deferred_file, "{line} {json}")?;
            } else if self.deleted.contains(&(event.id, event.pubkey)) {
                let why = Refusal::blocked(DELETED_BY_AUTHOR).to_string();
                report(&self.tally.refused, line, &why);
            } else {
                self.load.add(&event, &json)?;
            }
        }
        Ok(())
    }
}

/// The deferred events through the writer, in input order (verified
/// already), tallied like the normal path's.
fn store_deferred(
    store: &Arc<Store>,
    config: &Config,
    path: &Path,
    tally: &Arc<Tally>,
) -> anyhow::Result<()> {
    let writer = TalliedWriter::start(store, config, tally);
    let to = writer.submitter();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut group = Vec::with_capacity(GROUP);
    let mut line_nos = Vec::with_capacity(GROUP);
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let Some((line_no, json)) = line.split_once(' ') else {
            continue;
        };
        let event = Event::from_json(json).context("a deferred event does not parse")?;
        group.push((event, json.to_string()));
        line_nos.push(line_no.parse().unwrap_or(0));
        if group.len() >= GROUP {
            to.store(std::mem::take(&mut line_nos), std::mem::take(&mut group));
        }
    }
    to.store(line_nos, group);
    writer.finish();
    Ok(())
}
