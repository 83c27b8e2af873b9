//! `echorelay peers list|add|remove|sync`: the running node's sync peers
//! (GetPeers, AddPeer, RemovePeer, and SyncWithPeer or TriggerSync).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::control::{block_on, print_json, ControlArgs};
use crate::sync::Progress;

#[derive(Args)]
pub struct PeersArgs {
    #[command(flatten)]
    control: ControlArgs,
    #[command(subcommand)]
    action: PeersAction,
}

#[derive(Subcommand)]
enum PeersAction {
    /// List the peers and how each is synced.
    List,
    /// Add a peer (kept across restarts).
    Add {
        /// ws:// or wss:// URL of the peer relay.
        #[arg(value_name = "URL")]
        peer_url: String,
        /// Which way events flow.
        #[arg(long, default_value = "both", value_parser = ["down", "up", "both"])]
        dir: String,
        /// NIP-01 filter (JSON) limiting what is synced.
        #[arg(long)]
        filter: Option<String>,
        /// Seconds between reconciliations.
        #[arg(long)]
        interval: Option<u64>,
        /// Keep a standing subscription both ways.
        #[arg(long)]
        live: bool,
        /// The peer's node key (hex): makes it part of the mesh.
        #[arg(long)]
        pubkey: Option<String>,
    },
    /// Remove a peer; a sync in progress with it is cancelled.
    Remove {
        #[arg(value_name = "URL")]
        peer_url: String,
    },
    /// Sync with URL now and show progress; without URL (or with
    /// --background) only ask the node to sync its peers soon.
    Sync {
        #[arg(value_name = "URL")]
        peer_url: Option<String>,
        /// NIP-01 filter (JSON) for this run.
        #[arg(long)]
        filter: Option<String>,
        /// Only events created at or after this unix time.
        #[arg(long)]
        since: Option<u64>,
        /// Do not wait: trigger the background run and return.
        #[arg(long)]
        background: bool,
    },
}

pub fn run(args: PeersArgs) -> anyhow::Result<i32> {
    let client = args.control.client()?;
    let json_out = args.control.json;
    let filter = |text: &Option<String>| -> anyhow::Result<Value> {
        match text {
            Some(text) => Ok(serde_json::from_str(text)
                .map_err(|e| anyhow::anyhow!("--filter is not JSON: {e}"))?),
            None => Ok(Value::Null),
        }
    };
    let reply = match &args.action {
        PeersAction::List => {
            let reply = block_on(client.call("GetPeers", &json!({})))??;
            if !json_out {
                for peer in reply["peer_configs"].as_array().into_iter().flatten() {
                    println!(
                        "{}  dir {}  every {} s  filter {}{}",
                        peer["url"].as_str().unwrap_or("?"),
                        peer["dir"].as_str().unwrap_or("?"),
                        peer["interval_secs"],
                        peer["filter"].as_str().unwrap_or("{}"),
                        if peer["live"] == json!(true) {
                            "  live"
                        } else {
                            ""
                        }
                    );
                }
                return Ok(0);
            }
            reply
        }
        PeersAction::Add {
            peer_url: url,
            dir,
            filter: f,
            interval,
            live,
            pubkey,
        } => {
            let body = json!({"peer_url": url, "dir": dir, "filter": filter(f)?,
                "interval_secs": interval, "live": live, "pubkey": pubkey});
            block_on(client.call("AddPeer", &body))??
        }
        PeersAction::Remove { peer_url: url } => {
            block_on(client.call("RemovePeer", &json!({ "peer_url": url })))??
        }
        PeersAction::Sync {
            peer_url: url,
            filter: f,
            since,
            background,
        } => {
            let body = json!({"peer_url": url.clone().unwrap_or_default(), "filter": filter(f)?,
                "since": since});
            if *background || url.is_none() {
                block_on(client.call("TriggerSync", &body))??
            } else {
                return stream_sync(&client, &body, json_out, args.control.progress_mode());
            }
        }
    };
    if json_out {
        print_json(&reply);
    }
    Ok(0)
}

/// Follows SyncWithPeer's progress; exit 0 only if it completed.
fn stream_sync(
    client: &crate::admin::client::AdminClient,
    body: &Value,
    json_out: bool,
    mode: super::progress::Mode,
) -> anyhow::Result<i32> {
    let mut progress = super::progress::Progress::new(mode, "sync", "events", None);
    let mut last = Value::Null;
    block_on(client.stream("SyncWithPeer", body, |record| {
        if json_out {
            print_json(record);
        } else if let Ok(step) = serde_json::from_value::<Progress>(record.clone()) {
            super::sync::show(&mut progress, &step);
        }
        last = record.clone();
    }))??;
    progress.finish();
    if let Some(error) = last["error"].as_str() {
        eprintln!("echorelay: sync failed: {error}");
        return Ok(1);
    }
    if last["complete"] != json!(true) {
        eprintln!("echorelay: the node closed the progress stream before the sync completed");
        return Ok(1);
    }
    if !json_out {
        eprintln!(
            "synced: have {}, need {}, fetched {}, sent {}",
            last["have_count"], last["need_count"], last["fetched_count"], last["sent_count"]
        );
    }
    Ok(0)
}
