//! `echorelay node-key`: this node's public key (hex), the value other
//! nodes put in `auth.trusted_nodes` and in a `[[peers]]` entry's `pubkey`.
//! The key is created in the data dir on first use, as `serve` would, so a
//! mesh can be wired before any node has started.

use clap::Args;

use super::NodeArgs;

#[derive(Args)]
pub struct NodeKeyArgs {
    #[command(flatten)]
    node: NodeArgs,
}

pub fn run(args: NodeKeyArgs) -> anyhow::Result<i32> {
    let config = args.node.load()?;
    let keys = crate::secrets::node_key(&config.store.data_dir)?;
    println!("{}", hex::encode(keys.public_key()));
    Ok(0)
}
