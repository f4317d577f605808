//! `audit-tool`: the audit log's offline companion.
//!
//! - `audit-tool verify <export.jsonl> --key <verifier key>`: checks an export (the
//!   checkpoint's signature, every entry's leaf and inclusion proof, no gaps) with no
//!   database; exits 0 when it verifies, 1 when it does not, 2 on bad usage.
//! - `audit-tool keygen <origin>`: a new checkpoint signing key (for
//!   `PMCORE_AUDIT_LOG_SIGNING_KEY`) and its verifier key.
//! - `audit-tool openapi`: the audit API's OpenAPI document.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pmcore_audit_log::log::{bundle, note::CheckpointSigner};

#[derive(Debug, Parser)]
#[command(
    name = "audit-tool",
    about = "Verify audit log exports offline; make checkpoint keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check an export file against the log's verifier key.
    Verify {
        /// The export (JSON Lines, from `POST /v1/audit/exports`).
        file: std::path::PathBuf,
        /// The verifier key (`GET /v1/audit/checkpoint/key`), `<name>+<id>+<base64>`.
        #[arg(long)]
        key: String,
    },
    /// Make a checkpoint signing key; prints the signer key, then the verifier key.
    Keygen {
        /// The log's origin line, e.g. `audit.example-utility.com/pmcore`.
        origin: String,
    },
    /// Print the audit API's OpenAPI document (JSON).
    Openapi,
}

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify { file, key } => {
            // Read line by line: an export of millions of entries is gigabytes.
            let opened = match std::fs::File::open(&file) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("audit-tool: reading {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let mut read_error = None;
            let lines = std::io::BufRead::lines(std::io::BufReader::new(opened))
                .map_while(|line| line.map_err(|e| read_error = Some(e)).ok());
            let report = bundle::check_lines(lines, &key);
            if let Some(e) = read_error {
                eprintln!("audit-tool: reading {}: {e}", file.display());
                return ExitCode::from(2);
            }
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("audit-tool: {e}"),
            }
            if report.ok {
                eprintln!(
                    "verified: {} entries against the signed checkpoint",
                    report.entries_checked
                );
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "NOT verified: first bad position {}",
                    report
                        .first_bad_index
                        .map_or("-".to_owned(), |i| i.to_string())
                );
                ExitCode::FAILURE
            }
        }
        Command::Keygen { origin } => match CheckpointSigner::generate(&origin) {
            Ok((skey, signer)) => {
                println!("{skey}");
                println!("{}", signer.verifier_key());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("audit-tool: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Openapi => {
            match serde_json::to_string_pretty(&pmcore_audit_log::http::openapi::document()) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("audit-tool: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
