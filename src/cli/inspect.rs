//! `portico bindings`, `certs` and `explain`: print what `inspect/` says about the runtime
//! `check` builds from the file, or, with `--live`, ask the running server (its control
//! socket) about the runtime it serves now. Both print the same text or JSON; only the
//! runtime differs.

use std::process::ExitCode;

use super::ConfigArg;
use crate::control::Command;
use crate::inspect::{self, Format, Query};
use crate::runtime::unix_now;

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
    let answer = inspect::answer(&rt, &report, &query, format, unix_now())?;
    print!("{answer}");
    Ok(ExitCode::SUCCESS)
}

/// `--live`: the server's answer, printed as it came. Only state_dir is read from the file
/// (it names the socket); the file may have changed since the server loaded it.
fn ask(config: &ConfigArg, query: Query, format: Format) -> anyhow::Result<ExitCode> {
    let Some(answer) = super::reload::ask(config, Command::Inspect(query, format))? else {
        return Ok(ExitCode::from(1));
    };
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
