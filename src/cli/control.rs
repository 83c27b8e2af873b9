//! What the client subcommands (`status`, `peers`, `sessions`) share: where
//! the running node's control API is and which token to send. By default
//! both come from the same config and data dir `serve` uses, so on the
//! node's own machine no flag is needed.

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::NodeArgs;
use crate::admin::client::AdminClient;

#[derive(Args)]
pub struct ControlArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Control API address, e.g. http://127.0.0.1:7778 (default: the one
    /// the node wrote to <data>/admin.url, else server.admin_listen).
    #[arg(long, env = "ECHORELAY_ADMIN_URL", global = true)]
    url: Option<String>,
    /// Admin token (default: server.admin_token, else <data>/admin.token).
    #[arg(
        long,
        env = "ECHORELAY_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Read the admin token from this file instead (first line).
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// Print the API's JSON reply instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds the API has to answer a call (a streamed reply: to start).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

impl ControlArgs {
    /// How a streaming command (`peers sync`) shows progress.
    pub fn progress_mode(&self) -> super::progress::Mode {
        self.node.progress_mode()
    }

    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let config = self.node.load()?;
        crate::tls::trust_extra_roots(&config.server.tls_roots)?;
        let url = match &self.url {
            Some(url) => url.clone(),
            None => local_admin_url(&config)?,
        };
        let token = match super::token_from(&self.token, &self.token_file)? {
            Some(token) => token,
            None => crate::secrets::existing_admin_token(
                &config.server.admin_token,
                &config.store.data_dir,
            )
            .context("no admin token: pass --token or run on the node's data dir")?,
        };
        let timeout = std::time::Duration::from_secs(self.timeout);
        Ok(AdminClient::new(&url, &token, timeout)?)
    }
}

/// The control API of the node on this machine using `config`'s data dir:
/// the address it published at start (it follows its `--listen`), else the
/// configured one.
fn local_admin_url(config: &crate::config::Config) -> anyhow::Result<String> {
    let configured = config
        .server
        .admin_addr()?
        .context("the control API is off (server.admin_listen is empty)")?;
    let auto = config.server.admin_listen == crate::config::ADMIN_LISTEN_AUTO;
    Ok(auto
        .then(|| crate::admin::address::published(&config.store.data_dir))
        .flatten()
        .unwrap_or_else(|| crate::admin::address::local_url(configured)))
}

/// Runs `call` on a small runtime and returns its result.
pub fn block_on<T>(call: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(call))
}

/// Prints a reply as JSON (for `--json`).
pub fn print_json(value: &Value) {
    println!("{value}");
}

/// A unix time as "N s ago" (or "never" for 0).
pub fn ago(unix: u64) -> String {
    if unix == 0 {
        return "never".into();
    }
    format!("{} s ago", crate::event::now().saturating_sub(unix))
}
