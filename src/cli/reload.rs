//! `portico reload` and `portico upgrade`: ask the running server (through its control
//! socket) to reload its configuration or to replace itself with the binary now at its path,
//! and print the outcome: every problem on failure, exit 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::control::{self, Command};

/// Building a runtime for 100,000 certificates takes seconds, and so does a `--live`
/// document about them on a busy server; give it room.
const TIMEOUT: Duration = Duration::from_secs(300);

pub(super) fn run(config: &super::ConfigArg, command: Command) -> anyhow::Result<ExitCode> {
    let Some(answer) = ask(config, command)? else {
        return Ok(ExitCode::from(1));
    };
    print!("{answer}");
    let ok = answer.lines().last().is_some_and(|l| l.starts_with("OK"));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Sends `command` to the server that `config`'s state_dir names and returns its answer;
/// None when the file cannot even name the state_dir (its report is printed to stderr).
pub(super) fn ask(config: &super::ConfigArg, command: Command) -> anyhow::Result<Option<String>> {
    // The file names the state_dir, and so the socket. It may have errors (that is often
    // why one reloads): only state_dir is needed here, and the server reports the rest.
    let (loaded, report) = Config::load_partial_as(config.path(), config.origin());
    let Some(loaded) = loaded else {
        eprint!("{report}");
        return Ok(None);
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(Some(tokio.block_on(control::send(
        &loaded.state_dir,
        command,
        TIMEOUT,
    ))?))
}
