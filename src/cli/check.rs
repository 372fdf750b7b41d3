//! `portico check`: everything `serve` would check, without serving or writing anything.

use std::path::Path;
use std::process::ExitCode;

use super::ConfigArg;
use crate::config::{Config, Origin, Report};
use crate::runtime::{self, Mode, Shared};

/// Checks the file and its certificates; the full report, and the runtime if it would serve.
pub fn check(path: &Path) -> (Option<runtime::Runtime>, Report) {
    check_as(path, Origin::Given)
}

/// [`check`] of a file named as `origin` says.
pub fn check_as(path: &Path, origin: Origin) -> (Option<runtime::Runtime>, Report) {
    if let Some(node) = Config::fleet_node(path) {
        return match fleet_text(&node) {
            Ok(pushed) => {
                eprintln!(
                    "{}: checked with the fleet's configuration version {} (pushed by {} on {})",
                    path.display(),
                    pushed.meta.version,
                    pushed.meta.by,
                    runtime::format_time(pushed.meta.at)
                );
                check_with(path, origin, Some(&pushed.text))
            }
            Err(why) => {
                let mut report = Report::default();
                report.error(
                    "cluster.config",
                    format!("[cluster] config = \"etcd\", but there is no fleet configuration to check with: {why}"),
                    Some("push one with `portico cluster push FILE`, or let etcd answer".to_string()),
                );
                (None, report)
            }
        };
    }
    check_with(path, origin, None)
}

/// The fleet's configuration a node would run now: etcd's current one, else its local
/// copy; why there is none.
fn fleet_text(node: &crate::config::NodeLocal) -> Result<crate::cluster::pushed::Pushed, String> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let found = tokio
        .block_on(crate::cluster::pushed::at_start(
            &node.cluster,
            &node.state_dir,
        ))
        .map_err(|e| e.to_string())?;
    found.fleet.or(found.local).ok_or_else(|| {
        found
            .fleet_missing
            .unwrap_or_else(|| "etcd holds none".to_string())
    })
}

/// [`check_as`] of `path` alone (None), or of a node's own file merged with the fleet's
/// `pushed` configuration text.
pub fn check_with(
    path: &Path,
    origin: Origin,
    pushed: Option<&str>,
) -> (Option<runtime::Runtime>, Report) {
    // Certificate checks run even when the file has errors: every problem is reported at once.
    let (config, mut report) = match pushed {
        Some(text) => Config::load_fleet_partial_as(path, origin, text),
        None => Config::load_partial_as(path, origin),
    };
    let Some(config) = config else {
        return (None, report);
    };
    let (rt, more) = runtime::build(config, Mode::Check, &Shared::new());
    report.extend(more);
    (rt.filter(|_| !report.has_errors()), report)
}

pub(super) fn run(config: &ConfigArg) -> ExitCode {
    let path = config.path();
    let (rt, report) = check_as(path, config.origin());
    print!("{report}");
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    match rt {
        Some(rt) if errors == 0 => {
            println!(
                "{}: ok — {} listeners, {} sites, {} pool certificates, {} warnings",
                path.display(),
                rt.listeners.len(),
                rt.sites.len(),
                rt.pool().len(),
                warnings
            );
            ExitCode::SUCCESS
        }
        _ => {
            println!("{}: {errors} errors, {warnings} warnings", path.display());
            ExitCode::from(1)
        }
    }
}
