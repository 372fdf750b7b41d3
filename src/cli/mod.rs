//! The command line: one file per command. Commands return an exit code; errors that end a
//! command early are `anyhow` errors printed by `main`.

pub mod check;
mod cluster;
pub mod generate;
pub mod import;
mod inspect;
pub mod probe;
pub mod reload;
pub mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Origin;
use crate::inspect::{explain, Format, Page, Query};

/// `-c FILE`, the configuration file; `./portico.toml` when not given. Whether it was given
/// decides the fix when the file cannot be read.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The configuration file [default: portico.toml]
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The default configuration file, in the current directory.
const DEFAULT_CONFIG: &str = "portico.toml";

impl ConfigArg {
    /// The file to read.
    pub fn path(&self) -> &std::path::Path {
        self.config
            .as_deref()
            .unwrap_or(std::path::Path::new(DEFAULT_CONFIG))
    }

    pub fn origin(&self) -> Origin {
        match self.config {
            Some(_) => Origin::Given,
            None => Origin::Default,
        }
    }
}

/// How `bindings`, `certs` and `explain` answer.
#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print JSON (schema in docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Ask the running server (its control socket in state_dir) about what it serves now,
    /// instead of reading the file.
    #[arg(long)]
    live: bool,
}

/// Which rows `bindings` and `certs` print (docs/cli.md, "Pages").
#[derive(Debug, Clone, Args)]
pub struct Paging {
    /// Print at most N rows; 0 prints them all.
    #[arg(long, value_name = "N", default_value_t = crate::inspect::page::DEFAULT_LIMIT)]
    limit: usize,
    /// Start after the row with this key: the one printed after "next:" (JSON: "next").
    #[arg(long, value_name = "KEY", value_parser = cursor)]
    after: Option<String>,
}

impl Paging {
    fn page(self) -> Page {
        Page {
            limit: self.limit,
            after: self.after,
        }
    }
}

fn cursor(key: &str) -> Result<String, String> {
    crate::inspect::page::check_key(key).map(|()| key.to_string())
}

impl Output {
    fn format(self) -> Format {
        if self.json {
            Format::Json
        } else {
            Format::Text
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "portico",
    version = crate::VERSION,
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
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check the configuration and every certificate; print every problem; exit 1 on error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Ask the running server (control socket in state_dir) to reload; print every problem
    /// and exit 1 if the reload fails (the previous configuration keeps serving).
    Reload {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Replace the running server with the binary at its path now, handing over the
    /// listening sockets (no connection refused); the old process drains and exits.
    Upgrade {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show every listener x host name -> site and certificate, and how each was chosen, a
    /// page of rows at a time.
    Bindings {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show every certificate: its source (file, internal, acme), names, expiry, next
    /// renewal and, for ACME, the last error; a page of rows at a time.
    Certs {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        paging: Paging,
    },
    /// Explain, step by step, how a connection for HOST is resolved, with the server's code.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// The name the client asks for (SNI) and the request's Host.
        host: String,
        /// The local address the connection arrives at; default: the first https listener's.
        #[arg(long, value_name = "IP:PORT")]
        local: Option<std::net::SocketAddr>,
        /// The client sends no SNI.
        #[arg(long)]
        no_sni: bool,
        /// The client offers only RSA signature algorithms.
        #[arg(long)]
        rsa_only: bool,
        #[command(flatten)]
        output: Output,
    },
    /// The fleet this node belongs to ([cluster]): etcd members, nodes up, locks, keys.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Connect to a TLS server as a client; show the chain, protocol and ALPN, and whether the
    /// certificate covers the name and verifies. Exit 1 on a mismatch, failure or refusal.
    Probe(probe::Args),
    /// Translate an nginx, Apache or IIS configuration into Portico's: the configuration
    /// on stdout (or -o), and a report on stderr of what was translated, what was not, and
    /// what the old server serves wrongly today. Exit 0 no problems, 1 problems found, 2 the
    /// file could not be read.
    Import(import::Args),
    /// Write the man pages (portico.1 and one per command) into DIR, or a shell's
    /// completions to stdout, made from these definitions (scripts/deb packages them).
    /// Hidden: a packaging tool, not an operator's.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: generate::What,
        /// Where the man pages go (man only).
        #[arg(value_name = "DIR", required_if_eq("what", "man"))]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the etcd members, the Portico nodes up, who holds which lock, the ticket key
    /// generation, and whether this machine's cluster key is the fleet's.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON (schema in docs/cluster.md).
        #[arg(long)]
        json: bool,
    },
    /// Check FILE as the node of -c would run it (its own file's state_dir, [admin], [log],
    /// [cluster] and listener changes, merged with FILE) and store it as the fleet's next
    /// configuration version; nodes with [cluster] config = "etcd" load it. Exit 1, and
    /// nothing stored, when the check finds an error.
    Push {
        /// The fleet's configuration: everything but the node-local keys.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve::run(&config),
        Command::Check { config } => Ok(check::run(&config)),
        Command::Reload { config } => reload::run(&config, crate::control::Command::Reload),
        Command::Upgrade { config } => reload::run(&config, crate::control::Command::Upgrade),
        Command::Bindings {
            config,
            output,
            paging,
        } => {
            let query = Query::Bindings(paging.page());
            inspect::run(&config, query, output.format(), output.live)
        }
        Command::Certs {
            config,
            output,
            paging,
        } => {
            let query = Query::Certs(paging.page());
            inspect::run(&config, query, output.format(), output.live)
        }
        Command::Explain {
            config,
            host,
            local,
            no_sni,
            rsa_only,
            output,
        } => {
            let options = explain::Options {
                local,
                no_sni,
                rsa_only,
            };
            let query = Query::Explain { host, options };
            inspect::run(&config, query, output.format(), output.live)
        }
        Command::Cluster {
            command: ClusterCommand::Status { config, json },
        } => cluster::status(&config, json),
        Command::Cluster {
            command: ClusterCommand::Push { file, config },
        } => cluster::push(&config, &file),
        Command::Probe(args) => probe::run(args),
        Command::Import(args) => import::run(args),
        Command::Generate { what, dir } => generate::run(what, dir.as_deref()),
    }
}

/// Sets up logging to stderr in `format` (`[log] format`); `RUST_LOG` overrides the
/// default `info`.
pub fn init_logging(format: crate::config::LogFormat) {
    crate::logging::init(format);
}
