//! `echorelay negentropy add FILTER | list | build ID | remove ID`: manage
//! the fingerprint trees that serve NIP-77 without per-session copies. Works
//! on the data directory while the relay runs (its write batches maintain a
//! tree from the moment it is added; `build` fills in the past in chunks).

use clap::{Args, Subcommand};

use super::NodeArgs;
use crate::filter::Filter;
use crate::store::ScopeStatus;

#[derive(Args)]
pub struct NegentropyArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    action: Action,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Action {
    /// Add a tree for a filter (no since/until/limit) and build it.
    Add { filter: String },
    /// List the trees with their status and size.
    List,
    /// Rebuild a tree from the stored events.
    Build { id: u32 },
    /// Remove a tree (the {} tree cannot be removed).
    Remove { id: u32 },
}

pub fn run(args: NegentropyArgs) -> anyhow::Result<i32> {
    let config = args.node.load()?;
    let store = super::open_store(&config)?;
    match args.action {
        Action::Add { filter } => {
            let filter = Filter::from_json(&filter)?;
            let id = store.add_scope(&filter)?;
            let added = build(&store, id, args.node.progress_mode())?;
            if args.json {
                println!("{}", serde_json::json!({"id": id, "events": added}));
            } else {
                println!("tree {id} built with {added} events");
            }
        }
        Action::List => {
            let txn = store.read_txn()?;
            let mut rows = Vec::new();
            for scope in store.scopes(&txn)? {
                let size = crate::negentropy::Storage::size(&store.tree_reader(&txn, scope.id)?)?;
                let status = if scope.status == ScopeStatus::Ready {
                    "ready"
                } else {
                    "building"
                };
                rows.push(serde_json::json!({"id": scope.id, "status": status,
                    "filter": scope.filter.to_value(), "events": size}));
            }
            if args.json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for row in rows {
                    println!(
                        "{}\t{}\t{}\t{}",
                        row["id"],
                        row["status"].as_str().unwrap_or(""),
                        row["events"],
                        row["filter"]
                    );
                }
            }
        }
        Action::Build { id } => {
            let added = build(&store, id, args.node.progress_mode())?;
            println!("tree {id} rebuilt with {added} events");
        }
        Action::Remove { id } => {
            store.remove_scope(id)?;
            println!("tree {id} removed");
        }
    }
    store.sync();
    Ok(0)
}

/// Builds tree `id`, showing how far through the store's sequence numbers
/// the build has read.
fn build(store: &crate::store::Store, id: u32, mode: super::progress::Mode) -> anyhow::Result<u64> {
    let last = {
        let txn = store.read_txn()?;
        store.last_seq(&txn)?
    };
    let label = format!("build tree {id}");
    let mut progress = super::progress::Progress::new(mode, &label, "seqs", Some(last));
    let added = store.build_scope_with(id, |seq| progress.set(seq))?;
    progress.finish();
    Ok(added)
}
