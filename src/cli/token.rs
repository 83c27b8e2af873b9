//! `echorelay token add USER | list | remove USER`: bearer tokens of the
//! graph and echo HTTP APIs, kept in the data directory as sha256 hashes.
//! Works whether or not `serve` runs (the relay reads them per request).

use clap::{Args, Subcommand};

use super::NodeArgs;
use crate::auth::{hash_token, new_token};

#[derive(Args)]
pub struct TokenArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    action: TokenAction,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token for USER and print it (it is shown only this once).
    Add {
        user: String,
        /// Seconds the token stays valid (default: no expiry).
        #[arg(long, value_name = "SECONDS")]
        expires_in: Option<u64>,
    },
    /// List users with tokens (hash prefixes only).
    List {
        /// One JSON array: user, sha256 prefix, expires_at (0: never).
        #[arg(long)]
        json: bool,
    },
    /// Remove every token of USER.
    Remove { user: String },
}

pub fn run(args: TokenArgs) -> anyhow::Result<i32> {
    let config = args.node.load()?;
    let store = super::open_store(&config)?;
    match args.action {
        TokenAction::Add { user, expires_in } => {
            if user.trim().is_empty() || user.len() > 256 {
                anyhow::bail!("the user id must be 1 to 256 characters");
            }
            let token = new_token();
            let expires_at = expires_in.map_or(0, |s| crate::event::now().saturating_add(s.max(1)));
            store.put_token(&hash_token(&token), &user, expires_at)?;
            println!("{token}");
            eprintln!(
                "token for {user} created; it is not stored in clear and will not be shown again"
            );
        }
        TokenAction::List { json } => {
            let now = crate::event::now();
            let tokens = store.token_users()?;
            if json {
                let listed: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|(hash, user, expires_at)| {
                        serde_json::json!({"user": user, "sha256_prefix": &hex::encode(hash)[..16],
                            "expires_at": expires_at, "expired": *expires_at != 0 && *expires_at <= now})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(listed));
                return Ok(0);
            }
            for (hash, user, expires_at) in tokens {
                let expiry = match expires_at {
                    0 => "never expires".to_string(),
                    at if at <= now => "expired".to_string(),
                    at => format!("expires in {} s", at - now),
                };
                println!("{user}  sha256 {}…  {expiry}", &hex::encode(hash)[..16]);
            }
        }
        TokenAction::Remove { user } => {
            let removed = store.remove_tokens_of(&user)?;
            if removed == 0 {
                eprintln!("echorelay: {user} has no tokens");
                return Ok(1);
            }
            eprintln!("removed {removed} token(s) of {user}");
        }
    }
    Ok(0)
}
