//! Changes of the certificate pool applied to the runtime that serves, without building a
//! new one: the pairs of `[[certificate]] dir` directories that inotify reported changed.
//!
//! Only the named pairs are looked at (two stats, and a parse of what changed), so a pair
//! added to a directory of a million costs what one pair costs. The pool that results is a
//! persistent map sharing everything else with the old one (tls/pool.rs); the runtime's
//! pool hosts are judged against it as a build would, and it replaces the old pool in one
//! atomic store, or nothing changes.

use std::path::PathBuf;
use std::sync::Arc;

use super::{stamps_now, Runtime, Shared};
use crate::config::Report;
use crate::tls::dir;
use crate::tls::load::Cert;
use crate::tls::pool::Pool;

/// A pool change ready to install, and what it did.
pub struct Patched {
    pub pool: Pool,
    pub added: usize,
    pub replaced: usize,
    pub removed: usize,
    /// Pairs left as they were, as errors: a pair that does not load, or half a pair.
    /// Their certificates (if any) keep serving; the rest of the change applies.
    pub skipped: Report,
}

impl Patched {
    pub fn is_empty(&self) -> bool {
        self.added + self.replaced + self.removed == 0
    }
}

/// The pool `rt` would serve with the pairs `changed` (directory, name) as they are on disk
/// now. Pairs outside `rt`'s certificate directories (`[[certificate]] dir` and the admin
/// API's store) are ignored. Err when the change would leave a pool host of `rt` without a
/// valid certificate (a report as a build's); `rt` then keeps its pool.
pub fn patch_pool(
    rt: &Runtime,
    shared: &Shared,
    changed: &[(PathBuf, String)],
) -> Result<Patched, Report> {
    let pool = rt.pool();
    let store = dir::admin_store(&rt.config.state_dir);
    let (mut added, mut removed, mut skipped): (Vec<Arc<Cert>>, _, _) =
        (Vec::new(), Vec::new(), Report::default());
    let mut replaced = 0;
    let fix = Some(dir::HALF_PAIR_FIX.to_string());
    for (d, name) in changed {
        let at = match rt.config.certificate_dirs.iter().find(|c| &c.path == d) {
            Some(c) => c.at(),
            None if *d == store => "state_dir".to_string(),
            None => continue,
        };
        let files = dir::files(d, name);
        let old = pool.get(&files);
        match stamps_now(&files) {
            (Some(_), Some(_)) => match shared.load(&files) {
                Ok(cert) if old.is_some_and(|o| Arc::ptr_eq(o, &cert)) => {}
                Ok(cert) => {
                    replaced += usize::from(old.is_some());
                    added.push(cert);
                }
                Err(e) => skipped.error(
                    &at,
                    format!("certificate {name:?}: {e}"),
                    Some(e.fix().to_string()),
                ),
            },
            (None, None) => {
                if old.is_some() {
                    shared.forget(&files);
                    removed.push(files);
                }
            }
            (Some(_), None) => skipped.error(&at, dir::half_pair(d, name, true), fix.clone()),
            (None, Some(_)) => skipped.error(&at, dir::half_pair(d, name, false), fix.clone()),
        }
    }
    let mut touched = Vec::new();
    let next = pool.changed(&removed, &added, &mut touched);
    let mut problems = Report::default();
    rt.judge_pool(&next, &touched, &mut problems);
    if problems.has_errors() {
        problems.extend(skipped);
        return Err(problems);
    }
    Ok(Patched {
        pool: next,
        added: added.len() - replaced,
        replaced,
        removed: removed.len(),
        skipped,
    })
}
