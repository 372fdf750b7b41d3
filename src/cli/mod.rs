//! The command line: one file per command. Commands return an exit code; errors that end a
//! command early are `anyhow` errors printed by `main`.

pub mod check;
pub mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "portico",
    version,
    about = "An HTTPS front door: many sites on one IP:port, each with its own certificate chosen by SNI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (SIGHUP reloads, SIGTERM and SIGINT drain and stop).
    Serve {
        /// The configuration file.
        #[arg(short, long, default_value = "portico.toml")]
        config: PathBuf,
    },
    /// Check the configuration and every certificate; print every problem; exit 1 on error.
    Check {
        #[arg(short, long, default_value = "portico.toml")]
        config: PathBuf,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve::run(&config),
        Command::Check { config } => Ok(check::run(&config)),
    }
}

/// Sets up logging to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
