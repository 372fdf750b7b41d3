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
    // Certificate checks run even when the file has errors: every problem is reported at once.
    let (config, mut report) = Config::load_partial_as(path, origin);
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
                rt.pool.certs().len(),
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
