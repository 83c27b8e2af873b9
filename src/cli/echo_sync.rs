//! `echorelay echo-sync`: the client of seed 001 for the Echo API of any
//! node (ECHO_API_URL, ECHO_TOKEN). Pull (default) pages through every
//! change; push sends one state (`--input FILE` or stdin); batch pushes a
//! directory of JSON files or a JSON-lines file, `--batch-size` at a time,
//! reporting broken lines by number and pushing the rest; `--monitor`
//! follows the change stream and acknowledges each change
//! (`echo_monitor.rs`); `--export FILE` writes the results as JSON. Exit code 0 only when everything succeeded.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use crate::echo::states;
use crate::http_client::{self, Endpoint};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Action {
    Pull,
    Push,
    Batch,
}

#[derive(Args)]
pub struct EchoSyncArgs {
    /// The node to sync (pull: only its state; push: the state's node).
    #[arg(long)]
    pub(super) node_id: Option<String>,
    #[arg(long, value_enum, default_value = "pull")]
    action: Action,
    /// Push despite a version conflict.
    #[arg(long)]
    force: bool,
    /// Print every change and every push result.
    #[arg(long)]
    pub(super) verbose: bool,
    /// States pushed per group (batch), changes per page (pull).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Follow the change stream (of --node-id, or every node you may read,
    /// narrowed by --filter), print and acknowledge each change until
    /// interrupted.
    #[arg(long)]
    monitor: bool,
    /// --monitor: the subscriber name acknowledgements are sent as
    /// (default: --node-id, else "echo-sync").
    #[arg(long, value_name = "NAME")]
    pub(super) subscriber: Option<String>,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(super) export: Option<PathBuf>,
    /// Print the results as JSON on stdout instead of text lines (with
    /// --monitor: each change, one JSON object per line).
    #[arg(long)]
    pub(super) json: bool,
    /// Priority 0-10 (push: the state's; pull: the minimum).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=10))]
    priority: Option<u8>,
    /// Only nodes whose id matches this glob (`*`, `?`).
    #[arg(long, value_name = "PATTERN")]
    pub(super) filter: Option<String>,
    /// Push / batch input: a JSON file, a JSON-lines file or a directory of
    /// JSON files (push reads stdin without it).
    #[arg(long, value_name = "PATH")]
    input: Option<PathBuf>,
    /// The Echo API (else ECHO_API_URL), e.g. http://127.0.0.1:7777.
    #[arg(long, env = "ECHO_API_URL", hide_env_values = true)]
    api_url: Option<String>,
    /// Bearer token (else ECHO_TOKEN).
    #[arg(long, env = "ECHO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the bearer token from this file instead (first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Seconds the API has to answer each call.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

#[derive(Clone)]
pub(super) struct Api {
    pub(super) endpoint: Endpoint,
    pub(super) auth: String,
    pub(super) timeout: Duration,
}

impl Api {
    pub(super) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let headers = [
            ("Authorization", self.auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        let reply = http_client::request(
            &self.endpoint,
            "POST",
            path,
            &headers,
            body.to_string().as_bytes(),
            self.timeout,
        )
        .await
        .with_context(|| format!("cannot reach the Echo API at {}", self.endpoint.url("")))?;
        let status = reply.status;
        if status == 401 {
            bail!("the Echo API refused ECHO_TOKEN (401): check the token");
        }
        let bytes = reply.bytes(64 * 1024 * 1024).await?;
        let value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{path} answered {status} without JSON"))?;
        Ok((status, value))
    }
}

pub fn run(args: EchoSyncArgs) -> anyhow::Result<i32> {
    let url = args
        .api_url
        .clone()
        .filter(|u| !u.is_empty())
        .context("ECHO_API_URL is not set (or pass --api-url), e.g. http://127.0.0.1:7777")?;
    let token = super::token_from(&args.token, &args.token_file)?
        .filter(|t| !t.is_empty())
        .context(
            "ECHO_TOKEN is not set (or pass --token): create one with `echorelay token add USER`",
        )?;
    let endpoint =
        Endpoint::parse(&url).with_context(|| format!("ECHO_API_URL {url:?} is not a URL"))?;
    let api = Api {
        endpoint,
        auth: format!("Bearer {token}"),
        timeout: Duration::from_secs(args.timeout),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        if args.monitor {
            return super::echo_monitor::run(&api, &args).await;
        }
        let (code, results) = match args.action {
            Action::Pull => pull(&api, &args).await?,
            Action::Push => push_one(&api, &args).await?,
            Action::Batch => batch(&api, &args).await?,
        };
        if let Some(path) = &args.export {
            let text = serde_json::to_string_pretty(&results)?;
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if args.json {
            println!("{results}");
        }
        Ok(code)
    })
}

/// One pulled change as text (and every conflict it carries: never silent).
fn print_change(change: &Value, verbose: bool) {
    let id = change["node_id"].as_str().unwrap_or("");
    if verbose {
        println!("{change}");
    } else {
        println!(
            "{id}  version {}",
            change["metadata"]["version"].as_str().unwrap_or("?")
        );
    }
    for conflict in change["conflicts"].as_array().into_iter().flatten() {
        let fields: Vec<&str> = conflict["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["field"].as_str())
            .collect();
        println!(
            "{id}  conflict: version {} from node {} (kept: {} from {}); differs in {}",
            conflict["version"].as_str().unwrap_or("?"),
            conflict["origin"].as_str().unwrap_or("?"),
            conflict["winner_version"].as_str().unwrap_or("?"),
            conflict["winner_origin"].as_str().unwrap_or("?"),
            fields.join(", ")
        );
    }
}

/// The `--filter` glob over node ids (`*`, `?`, `[…]`, with globset).
fn node_glob(pattern: &str) -> anyhow::Result<globset::GlobMatcher> {
    globset::Glob::new(pattern)
        .map(|glob| glob.compile_matcher())
        .with_context(|| format!("--filter {pattern:?} is not a glob"))
}

async fn pull(api: &Api, args: &EchoSyncArgs) -> anyhow::Result<(i32, Value)> {
    let wanted = args.filter.as_deref().map(node_glob).transpose()?;
    let mut changes = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sync_ids = Vec::new();
    loop {
        let mut body = json!({"options": {"batch_size": args.batch_size.clamp(1, 1000)}});
        if let Some(node) = &args.node_id {
            body["node_id"] = json!(node);
        }
        if let Some(priority) = args.priority {
            body["options"]["filter"] = json!({"priority": priority});
        }
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (status, reply) = api.post("/echo/pull", &body).await?;
        if status != 200 || reply["status"] != "success" {
            eprintln!(
                "echorelay: pull failed ({status}): {}",
                reply["message"].as_str().unwrap_or("?")
            );
            return Ok((1, reply));
        }
        sync_ids.push(reply["sync_id"].clone());
        for change in reply["changes"].as_array().into_iter().flatten() {
            let id = change["node_id"].as_str().unwrap_or("");
            if wanted.as_ref().is_none_or(|glob| glob.is_match(id)) {
                if !args.json {
                    print_change(change, args.verbose);
                }
                changes.push(change.clone());
            }
        }
        cursor = reply["cursor"].as_str().map(str::to_string);
        if reply["has_more"] != true || cursor.is_none() {
            break;
        }
    }
    eprintln!("pulled {} change(s)", changes.len());
    Ok((
        0,
        json!({"action": "pull", "sync_ids": sync_ids, "changes": changes}),
    ))
}

/// A push request for one state given as seed 000's EchoNodeState (or a
/// `{node_id, state}` push body); the checksum is computed when absent.
fn push_request(input: &Value, args: &EchoSyncArgs) -> Result<Value, String> {
    let object = input.as_object().ok_or("not a JSON object")?;
    let (node, state) = match object.get("state") {
        Some(state) => (object.get("node_id").and_then(Value::as_str), state.clone()),
        None => (object.get("node_id").and_then(Value::as_str), input.clone()),
    };
    let node = args
        .node_id
        .as_deref()
        .or(node)
        .ok_or("no node_id (give --node-id or put it in the state)")?;
    let mut state = state.as_object().cloned().ok_or("state is not an object")?;
    state.remove("node_id");
    let data: Map<String, Value> = state
        .get("data")
        .and_then(Value::as_object)
        .cloned()
        .ok_or("state.data must be an object")?;
    let meta = state
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or("state.metadata must be an object")?;
    if !meta.contains_key("checksum") {
        meta.insert("checksum".into(), json!(states::checksum(&data)));
    }
    if !state.contains_key("timestamp") {
        state.insert(
            "timestamp".into(),
            json!(crate::echo::time::format(crate::event::now_ms())),
        );
    }
    let mut body = json!({"node_id": node, "state": state, "force": args.force});
    if let Some(priority) = args.priority {
        body["options"] = json!({"priority": priority});
    }
    Ok(body)
}

async fn push_state(
    api: &Api,
    args: &EchoSyncArgs,
    input: &Value,
    label: &str,
) -> anyhow::Result<(bool, Value)> {
    let body = match push_request(input, args) {
        Ok(body) => body,
        Err(reason) => {
            eprintln!("{label}: {reason}");
            return Ok((
                false,
                json!({"input": label, "status": "error", "message": reason}),
            ));
        }
    };
    let (status, reply) = api.post("/echo/push", &body).await?;
    let ok = status == 200 && reply["status"] == "success";
    let node = body["node_id"].as_str().unwrap_or("?");
    if !ok || args.verbose {
        eprintln!(
            "{label}: {node}: {} {}",
            reply["status"].as_str().unwrap_or("error"),
            reply["message"].as_str().unwrap_or("")
        );
        if args.verbose {
            for conflict in reply["conflicts"].as_array().into_iter().flatten() {
                eprintln!("  conflict {conflict}");
            }
        }
    }
    Ok((ok, reply))
}

async fn push_one(api: &Api, args: &EchoSyncArgs) -> anyhow::Result<(i32, Value)> {
    let text = match &args.input {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
    };
    let input: Value = serde_json::from_str(&text).context("the state is not valid JSON")?;
    let (ok, reply) = push_state(api, args, &input, "state").await?;
    if ok && !args.verbose {
        eprintln!("pushed: {}", reply["message"].as_str().unwrap_or(""));
    }
    Ok((
        i32::from(!ok),
        json!({"action": "push", "results": [reply]}),
    ))
}

/// The states of a batch input with their labels (file name or line).
fn batch_inputs(path: &PathBuf) -> anyhow::Result<Vec<(String, Result<Value, String>)>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        return Ok(files
            .into_iter()
            .map(|f| {
                let parsed = std::fs::read_to_string(&f)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        serde_json::from_str(&t).map_err(|e| format!("invalid JSON: {e}"))
                    });
                (f.display().to_string(), parsed)
            })
            .collect());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let parsed = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"));
            (format!("line {}", i + 1), parsed)
        })
        .collect())
}

async fn batch(api: &Api, args: &EchoSyncArgs) -> anyhow::Result<(i32, Value)> {
    let path = args
        .input
        .as_ref()
        .context("--action batch needs --input DIR or FILE")?;
    let inputs = batch_inputs(path)?;
    let mut results = Vec::new();
    let (mut pushed, mut failed) = (0, 0);
    for group in inputs.chunks(args.batch_size.max(1)) {
        for (label, parsed) in group {
            let outcome = match parsed {
                Ok(input) => push_state(api, args, input, label).await?,
                Err(reason) => {
                    eprintln!("{label}: {reason}");
                    (
                        false,
                        json!({"input": label, "status": "error", "message": reason}),
                    )
                }
            };
            if outcome.0 {
                pushed += 1;
            } else {
                failed += 1;
            }
            results.push(outcome.1);
        }
    }
    eprintln!("batch: {pushed} pushed, {failed} failed");
    Ok((
        i32::from(failed > 0),
        json!({"action": "batch", "pushed": pushed, "failed": failed, "results": results}),
    ))
}

#[cfg(test)]
mod tests {
    use super::node_glob;

    #[test]
    fn globs() {
        let glob = |p: &str, t: &str| node_glob(p).unwrap().is_match(t);
        assert!(glob("node-*", "node-abc"));
        assert!(glob("n?de-*", "node-"));
        assert!(!glob("node-*", "other"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(glob("sensor-[ab]", "sensor-b"));
        assert!(node_glob("[unclosed").is_err());
    }
}
