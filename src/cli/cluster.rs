//! `portico cluster status`: the fleet as the store sees it (`cluster::status`), printed as
//! text or JSON. Reads the file only for `[cluster]`.

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
