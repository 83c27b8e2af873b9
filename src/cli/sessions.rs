//! `echorelay sessions list|close`: the running relay's NIP-77 sessions
//! (ListSessions, CloseSession).

use clap::{Args, Subcommand};
use serde_json::json;

use super::control::{ago, block_on, print_json, ControlArgs};

#[derive(Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    control: ControlArgs,
    #[command(subcommand)]
    action: SessionsAction,
}

#[derive(Subcommand)]
enum SessionsAction {
    /// List open sessions.
    List,
    /// Close a session (the client gets NEG-ERR "closed:").
    Close {
        /// The session's subscription id.
        subscription_id: String,
        /// Only on this connection (default: every connection using the id).
        #[arg(long)]
        connection: Option<String>,
    },
}

pub fn run(args: SessionsArgs) -> anyhow::Result<i32> {
    let client = args.control.client()?;
    match args.action {
        SessionsAction::List => {
            let reply = block_on(client.call("ListSessions", &json!({})))??;
            if args.control.json {
                print_json(&reply);
                return Ok(0);
            }
            let sessions = reply["sessions"].as_array().cloned().unwrap_or_default();
            println!("{} open session(s)", sessions.len());
            for s in &sessions {
                println!(
                    "{}  connection {}  rounds {}  opened {}  active {}",
                    s["subscription_id"].as_str().unwrap_or("?"),
                    s["connection_id"].as_str().unwrap_or("?"),
                    s["round_count"],
                    ago(s["created_at"].as_u64().unwrap_or(0)),
                    ago(s["last_activity"].as_u64().unwrap_or(0)),
                );
            }
        }
        SessionsAction::Close {
            subscription_id,
            connection,
        } => {
            let body = json!({
                "subscription_id": subscription_id,
                "connection_id": connection.unwrap_or_default(),
            });
            let reply = block_on(client.call("CloseSession", &body))??;
            if args.control.json {
                print_json(&reply);
            } else {
                println!("closed {} session(s)", reply["closed"]);
            }
        }
    }
    Ok(0)
}
