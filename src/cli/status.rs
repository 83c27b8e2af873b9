//! `echorelay status`: the running node's sync status (GetSyncStatus).

use clap::Args;
use serde_json::{json, Value};

use super::control::{ago, block_on, print_json, ControlArgs};

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    control: ControlArgs,
}

pub fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let client = args.control.client()?;
    let status = block_on(client.call("GetSyncStatus", &json!({})))??;
    if args.control.json {
        print_json(&status);
        return Ok(0);
    }
    let field = |v: &Value, name: &str| v.get(name).cloned().unwrap_or(Value::Null);
    println!(
        "node key: {}",
        status["node_pubkey"].as_str().unwrap_or("?")
    );
    println!(
        "background sync: {}; {} peer(s); last sync {}",
        if status["active"] == json!(true) {
            "running"
        } else {
            "stopped"
        },
        field(&status, "peer_count"),
        ago(status["last_sync"].as_u64().unwrap_or(0)),
    );
    for state in status["peer_states"].as_array().into_iter().flatten() {
        let error = state["last_error"].as_str().unwrap_or("");
        println!(
            "{}  {}  last sync {}  events {}  failures {}{}",
            state["peer_url"].as_str().unwrap_or("?"),
            state["status"].as_str().unwrap_or("?"),
            ago(state["last_sync"].as_u64().unwrap_or(0)),
            field(state, "events_synced"),
            field(state, "consecutive_failures"),
            if error.is_empty() {
                String::new()
            } else {
                format!("  ({error})")
            },
        );
    }
    Ok(0)
}
