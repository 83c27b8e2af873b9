//! The `echorelay` command line: one subcommand per file. Errors reach the
//! user as one readable line on stderr and a non-zero exit code.

mod control;
mod echo_monitor;
mod echo_sync;
mod export;
mod graph;
mod import;
mod import_bulk;
mod negentropy;
mod node_key;
mod peers;
mod progress;
mod serve;
mod sessions;
mod status;
mod sync;
mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "echorelay",
    version,
    about = "A set-reconciliation Nostr relay node"
)]
pub struct Cli {
    /// Log level or filter (e.g. info, debug, echorelay=trace); RUST_LOG also works.
    #[arg(long, global = true, env = "ECHORELAY_LOG")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve(serve::ServeArgs),
    /// Import events (JSON lines) into the data directory.
    Import(import::ImportArgs),
    /// Export stored events as JSON lines on stdout.
    Export(export::ExportArgs),
    /// Manage NIP-77 fingerprint trees: add FILTER | list | build ID | remove ID.
    Negentropy(negentropy::NegentropyArgs),
    /// Reconcile with a remote relay and transfer the difference.
    Sync(sync::SyncArgs),
    /// Show the running node's sync status (control API).
    Status(status::StatusArgs),
    /// List, add, remove or sync the running node's peers (control API).
    Peers(peers::PeersArgs),
    /// List or close the running relay's NIP-77 sessions (control API).
    Sessions(sessions::SessionsArgs),
    /// Manage bearer tokens of the graph and echo HTTP APIs.
    Token(token::TokenArgs),
    /// Push, pull or watch Echo node states on a node (ECHO_API_URL, ECHO_TOKEN).
    EchoSync(echo_sync::EchoSyncArgs),
    /// List graphs and their home nodes, move a graph's home, list conflicts (control API).
    Graph(graph::GraphArgs),
    /// Print this node's public key (hex), creating <data>/node.key on first use.
    NodeKey(node_key::NodeKeyArgs),
}

/// Options shared by every subcommand that touches a node's local state.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// Configuration file (TOML); embedded defaults when absent.
    #[arg(long, value_name = "FILE", global = true, env = "ECHORELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides store.data_dir).
    #[arg(long, value_name = "DIR", global = true, env = "ECHORELAY_DATA")]
    data: Option<PathBuf>,
    /// No progress bar or progress lines (summaries and errors still print).
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// A secret from the file `--token-file` names (its first line, so it
/// stays off the command line and out of `ps`), else `--token` (or its
/// environment variable).
fn token_from(token: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let Some(path) = file else {
        return Ok(token.clone());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(Some(token))
}

/// Opens the configured store for a command that works on the data dir.
fn open_store(config: &Config) -> anyhow::Result<crate::store::Store> {
    use anyhow::Context;
    let store = &config.store;
    let options = crate::store::StoreOptions::from_config(config);
    let opened = crate::store::Store::open(&store.data_dir, &options)
        .with_context(|| format!("cannot open the store in {}", store.data_dir.display()))?;
    opened.ensure_default_tree()?;
    // Writes from the CLI check mesh authors like the relay does.
    let node_key = crate::secrets::node_key(&store.data_dir)?;
    let added = opened.added_peers()?;
    opened.mesh().admit(node_key.public_key(), config, &added);
    Ok(opened)
}

impl NodeArgs {
    /// How this command shows progress on stderr.
    fn progress_mode(&self) -> progress::Mode {
        progress::Mode::for_stderr(self.quiet)
    }

    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data {
            config.store.data_dir = dir.clone();
        }
        Ok(config)
    }
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Entry point used by `main.rs`; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Import(args) => import::run(args),
        Command::Export(args) => export::run(args),
        Command::Negentropy(args) => negentropy::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Status(args) => status::run(args),
        Command::Peers(args) => peers::run(args),
        Command::Sessions(args) => sessions::run(args),
        Command::Token(args) => token::run(args),
        Command::EchoSync(args) => echo_sync::run(args),
        Command::Graph(args) => graph::run(args),
        Command::NodeKey(args) => node_key::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("echorelay: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate ids, bad defaults, ...).
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
