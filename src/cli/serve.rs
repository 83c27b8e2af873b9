//! `echorelay serve`: run the relay until SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;

use super::NodeArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Listen address (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Control API address (overrides server.admin_listen): HOST:PORT,
    /// "auto" (relay port + 1) or "" (off).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let mut config = args.node.load()?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin_listen) = args.admin_listen {
        config.server.admin_listen = admin_listen;
    }
    config.server.admin_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        crate::node::serve(config, shutdown_signal()).await?;
        Ok(0)
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested");
}
