//! `echorelay graph list|move|conflicts`: who sequences each graph on the
//! running node, handing a graph to another node, and the txs a former home
//! sequenced after a forced move (control API `ListGraphs`, `MoveGraph`,
//! `GetGraphConflicts`).

use clap::{Args, Subcommand};
use serde_json::json;

use super::control::{block_on, print_json, ControlArgs};

#[derive(Args)]
pub struct GraphArgs {
    #[command(flatten)]
    control: ControlArgs,
    #[command(subcommand)]
    action: GraphAction,
}

#[derive(Subcommand)]
enum GraphAction {
    /// Every graph with its home node, term, log head t and reset epoch.
    List,
    /// Hand a graph to another mesh node (run on its home; --force on any
    /// mesh node when the home is lost).
    Move {
        #[arg(value_name = "GRAPH-ID")]
        graph_id: String,
        /// The new home's node key (hex).
        #[arg(long, value_name = "NODE-PUBKEY")]
        to: String,
        /// The home is lost: move it from here. Txs it sequences after this
        /// point are refused everywhere and listed by `graph conflicts`.
        #[arg(long)]
        force: bool,
    },
    /// Txs a former home sequenced after the graph moved (to replay).
    Conflicts {
        #[arg(value_name = "GRAPH-ID")]
        graph_id: String,
    },
}

pub fn run(args: GraphArgs) -> anyhow::Result<i32> {
    let client = args.control.client()?;
    let reply = match &args.action {
        GraphAction::List => block_on(client.call("ListGraphs", &json!({})))??,
        GraphAction::Move {
            graph_id,
            to,
            force,
        } => {
            let body = json!({"graph_id": graph_id, "to": to, "force": force});
            block_on(client.call("MoveGraph", &body))??
        }
        GraphAction::Conflicts { graph_id } => {
            let body = json!({ "graph_id": graph_id });
            block_on(client.call("GetGraphConflicts", &body))??
        }
    };
    if args.control.json {
        print_json(&reply);
        return Ok(0);
    }
    match &args.action {
        GraphAction::List => {
            for g in reply["graphs"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:?}  home {}  term {}  t {}  epoch {}{}",
                    g["graph-id"].as_str().unwrap_or("?"),
                    g["graph-name"].as_str().unwrap_or(""),
                    g["home"].as_str().unwrap_or("?"),
                    g["term"],
                    g["t"],
                    g["epoch"],
                    if g["deleted"] == json!(true) {
                        "  deleted"
                    } else {
                        ""
                    }
                );
            }
        }
        GraphAction::Move { .. } => println!(
            "{} now sequenced by {} from t {} (term {})",
            reply["graph-id"].as_str().unwrap_or("?"),
            reply["home"].as_str().unwrap_or("?"),
            reply["from-t"],
            reply["term"]
        ),
        GraphAction::Conflicts { .. } => {
            for c in reply["conflicts"].as_array().into_iter().flatten() {
                println!(
                    "t {}  term {}  author {}  {}",
                    c["t"],
                    c["term"],
                    c["author"].as_str().unwrap_or("?"),
                    c["tx"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(0)
}
