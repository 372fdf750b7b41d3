//! `portico bindings`, `certs` and `explain`: print what `inspect/` says about the runtime
//! `check` builds from the file, or, with `--live`, ask the running server (its control
//! socket) about the runtime it serves now. Both print the same text or JSON; only the
//! runtime differs.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::ConfigArg;
use crate::config::Config;
use crate::control::{self, Command};
use crate::inspect::{self, Format, Query};
use crate::runtime::unix_now;

/// A document for 100,000 sites takes seconds to compute on a busy server; give it room.
const TIMEOUT: Duration = Duration::from_secs(300);

pub(super) fn run(
    config: &ConfigArg,
    query: Query,
    format: Format,
    live: bool,
) -> anyhow::Result<ExitCode> {
    if live {
        return ask(config, query, format);
    }
    let path = config.path();
    let (rt, report) = super::check::check_as(path, config.origin());
    let rt = match rt {
        Some(rt) if !report.has_errors() => rt,
        _ => {
            eprint!("{report}");
            eprintln!(
                "{}: {} errors, {} warnings",
                path.display(),
                report.errors().count(),
                report.warnings().count()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let answer = inspect::answer(&rt, &report, &query, format, unix_now());
    print!("{answer}");
    Ok(ExitCode::SUCCESS)
}

/// `--live`: the server's answer, printed as it came.
fn ask(config: &ConfigArg, query: Query, format: Format) -> anyhow::Result<ExitCode> {
    // Only state_dir is read from the file (it names the socket); the file may have changed
    // since the server loaded it, and may even have errors now.
    let (loaded, report) = Config::load_partial_as(config.path(), config.origin());
    let Some(loaded) = loaded else {
        eprint!("{report}");
        return Ok(ExitCode::from(1));
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let command = Command::Inspect(query, format);
    let answer = tokio.block_on(control::send(&loaded.state_dir, command, TIMEOUT))?;
    match answer.split_once('\n') {
        Some(("OK", document)) => {
            print!("{document}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprint!("{answer}");
            Ok(ExitCode::from(1))
        }
    }
}
