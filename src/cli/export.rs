//! `echorelay export [--filter JSON]`: stored events as JSON lines on stdout,
//! read straight from the data directory (a running relay is not needed).

use std::io::Write;

use anyhow::Context;
use clap::Args;

use super::NodeArgs;
use crate::filter::Filter;
use crate::store::Stop;

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Only events matching this NIP-01 filter (newest first); without it,
    /// every event in insertion order.
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<i32> {
    let config = args.node.load()?;
    let filter = args.filter.as_deref().map(Filter::from_json).transpose()?;
    let store = super::open_store(&config)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut write_error = None;
    // All events: the store's count is the total; a filter's is unknown.
    let total = match filter {
        None => Some(store.count()?),
        Some(_) => None,
    };
    let mut progress =
        super::progress::Progress::new(args.node.progress_mode(), "export", "events", total);
    let mut emit = |json: &str| -> Result<(), Stop> {
        progress.inc(1);
        if let Err(e) = out
            .write_all(json.as_bytes())
            .and_then(|_| out.write_all(b"\n"))
        {
            write_error = Some(e);
            return Err(Stop);
        }
        Ok(())
    };
    let txn = store.read_txn()?;
    let mut count = 0u64;
    match &filter {
        Some(filter) => {
            count = store.query(&txn, filter, u64::MAX, crate::event::now(), &mut |found| {
                emit(found.json).map(|_| true)
            })?;
        }
        None => store.scan_all(&txn, &mut |json| {
            count += 1;
            emit(json)
        })?,
    }
    drop(txn);
    progress.finish();
    if let Some(e) = write_error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(0);
        }
        return Err(e).context("cannot write to stdout");
    }
    out.flush().context("cannot write to stdout")?;
    eprintln!("exported {count} events");
    Ok(0)
}
