//! `portico cluster status`: the fleet as the store sees it (`cluster::status`), printed as
//! text or JSON. Reads the file only for `[cluster]`. `portico cluster push`: checks a
//! configuration as the node named by `-c` would run it, and stores it as the fleet's.

use std::process::ExitCode;

use anyhow::Context;

use super::ConfigArg;
use crate::cluster::status;
use crate::config::Config;

pub(super) fn status(config: &ConfigArg, as_json: bool) -> anyhow::Result<ExitCode> {
    let (loaded, report) = Config::load_partial_as(config.path(), config.origin());
    let Some(cluster) = loaded.and_then(|c| c.cluster) else {
        eprint!("{report}");
        eprintln!(
            "{}: no [cluster] table; this Portico is not a node of a fleet",
            config.path().display()
        );
        return Ok(ExitCode::from(1));
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let st = match tokio.block_on(status::gather(&cluster)) {
        Ok(st) => st,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let now = crate::runtime::unix_now();
    if as_json {
        print!("{}", status::json(&st, now).pretty());
    } else {
        print!("{}", status::text(&st, now));
    }
    Ok(ExitCode::SUCCESS)
}

/// `portico cluster push FILE`: checks FILE merged with the node-local part of `-c` (the
/// check `portico check` makes: nothing is stored when it finds an error), then stores it
/// as the fleet's next configuration version.
pub(super) fn push(config: &ConfigArg, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (local, report) = Config::node_local(config.path(), config.origin());
    let Some(local) = local else {
        eprint!("{report}");
        eprintln!(
            "{}: no usable [cluster] table; it names the fleet to push to",
            config.path().display()
        );
        return Ok(ExitCode::from(1));
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "cannot read {}: {}",
                file.display(),
                crate::error_text::describe_io(&e)
            );
            return Ok(ExitCode::from(1));
        }
    };
    let (rt, report) = super::check::check_with(config.path(), config.origin(), Some(&text));
    print!("{report}");
    let errors = report.errors().count();
    if rt.is_none() || errors > 0 {
        println!(
            "{} (with {}): {errors} errors; nothing pushed",
            file.display(),
            config.path().display()
        );
        return Ok(ExitCode::from(1));
    }
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match tokio.block_on(crate::cluster::pushed::push(
        &local.cluster,
        &text,
        &pusher(),
    )) {
        Ok(meta) => {
            println!(
                "pushed {} as the fleet's configuration version {} (sha256 {}, by {})",
                file.display(),
                meta.version,
                meta.sha256,
                meta.by
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}; nothing pushed");
            Ok(ExitCode::from(1))
        }
    }
}

/// Who pushes: `user@host`.
fn pusher() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            use std::os::unix::fs::MetadataExt;
            // The process's own entry belongs to its user.
            std::fs::metadata("/proc/self")
                .map_or_else(|_| "someone".to_string(), |m| format!("uid {}", m.uid()))
        });
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!("{user}@{host}")
}
