//! `messaging-tool`: the messaging service's offline companion.
//!
//! - `messaging-tool keygen`: a key for `PMCORE_MESSAGING_SECRETS_KEY`.
//! - `messaging-tool sign --secret whsec_… --id msg_… --timestamp N < body`: the
//!   `webhook-signature` pmcore would send, to check a receiver's verification.
//! - `messaging-tool openapi`: the messaging API's OpenAPI document.

#![allow(clippy::print_stdout)]

use std::{io::Read, process::ExitCode};

use base64::Engine;
use clap::{Parser, Subcommand};
use pmcore_messaging::signature;

#[derive(Debug, Parser)]
#[command(
    name = "messaging-tool",
    about = "Make keys, sign webhook bodies, print the messaging API's document"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new key that seals webhook secrets at rest (32 random bytes, base64).
    Keygen,
    /// Sign the body read from stdin as a webhook attempt would.
    Sign {
        /// The endpoint's secret, `whsec_…`.
        #[arg(long)]
        secret: String,
        /// The `webhook-id`.
        #[arg(long)]
        id: String,
        /// The `webhook-timestamp` (Unix seconds).
        #[arg(long)]
        timestamp: i64,
    },
    /// Print the messaging API's OpenAPI document (JSON).
    Openapi,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Keygen => {
            let key: [u8; 32] = rand::random();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Sign {
            secret,
            id,
            timestamp,
        } => {
            let Ok(key) = signature::key_bytes(&secret) else {
                eprintln!("messaging-tool: the secret is not `whsec_` and base64");
                return ExitCode::from(2);
            };
            let mut body = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut body) {
                eprintln!("messaging-tool: reading the body: {e}");
                return ExitCode::from(2);
            }
            println!("{}", signature::sign(&key, &id, timestamp, &body));
            ExitCode::SUCCESS
        }
        Command::Openapi => {
            match serde_json::to_string_pretty(&pmcore_messaging::http::openapi::document()) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("messaging-tool: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
