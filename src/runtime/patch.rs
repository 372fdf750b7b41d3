//! Certificate changes applied to the runtime that serves, without building a new one: the
//! pairs of `[[certificate]] dir` directories that inotify reported changed (and the admin
//! API's and the fleet's, which are such pairs too), and the sites' own certificates that
//! ACME or the local CA issued again (`patch_site_certs`).
//!
//! Only the named pairs are looked at (two stats, and a parse of what changed), so a pair
//! added to a directory of a million costs what one pair costs. The pool that results is a
//! persistent map sharing everything else with the old one (tls/pool.rs); the runtime's
//! pool hosts are judged against it as a build would, and it replaces the old pool in one
//! atomic store, or nothing changes.

use std::path::PathBuf;
use std::sync::Arc;

use super::{acme_cert, stamps_now, terminates_tls, unix_now, Runtime, Shared};
use crate::config::{Report, TlsMode};
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

/// The sites' own certificates that are new: what ACME or the local CA holds now for each
/// of `sites` (indexes into `rt`'s sites; pinned and pool sites are left out, as sites not
/// on an https listener), where it is not the certificate the site serves. Each is taken
/// as a build would take it: an ACME certificate that loads, is valid now and covers every
/// host of its site; the local CA's leaf for exactly the site's hosts, issued again when
/// due (or when the CA changed). A site whose certificate cannot be taken keeps the one it
/// has, and the report says why. Install them with [`Runtime::install_site_cert`].
pub fn patch_site_certs(
    rt: &Runtime,
    shared: &Shared,
    sites: &[usize],
) -> (Vec<(usize, Arc<Cert>)>, Report) {
    let (config, now) = (&rt.config, unix_now());
    let mut report = Report::default();
    let mut changed = Vec::new();
    let acme_home = crate::acme::home(config);
    // Opened once, at the first internal site.
    let mut ca: Option<Result<crate::tls::internal_ca::LocalCa, String>> = None;
    for &si in sites {
        let Some(site) = config.sites.get(si) else {
            continue;
        };
        if !terminates_tls(config, site) {
            continue;
        }
        let at = format!("site[{}].tls", site.index);
        let next = match (&site.tls, &acme_home) {
            (TlsMode::Acme, Some(home)) => {
                let files = crate::acme::cert_files(home, &site.name);
                match acme_cert(&files, site, shared, now) {
                    Some(cert) => cert,
                    None if rt.site_cert(si).is_none() => continue,
                    None => {
                        report.error(
                            at,
                            format!("the ACME certificate {} does not load, is not valid now or does not cover every host of site {}; the site keeps serving the certificate it has", files.cert.display(), site.name),
                            Some("let the ACME task order it again (see `portico certs` for its last error)".to_string()),
                        );
                        continue;
                    }
                }
            }
            (TlsMode::Internal, _) => {
                let ca = ca.get_or_insert_with(|| {
                    crate::tls::internal_ca::LocalCa::load_or_create(&config.state_dir)
                        .map_err(|e| e.to_string())
                });
                let issued = match ca {
                    Ok(ca) => ca.leaf(&site.name, &site.hosts).map_err(|e| e.to_string()),
                    Err(e) => Err(e.clone()),
                };
                match issued {
                    Ok(cert) => Arc::new(cert),
                    Err(e) => {
                        report.error(
                            at,
                            format!(
                                "local CA: {e}; site {} keeps serving the certificate it has",
                                site.name
                            ),
                            Some("make state_dir writable by the user Portico runs as".to_string()),
                        );
                        continue;
                    }
                }
            }
            _ => continue,
        };
        if rt.site_cert(si).is_none_or(|old| old.sha256 != next.sha256) {
            changed.push((si, next));
        }
    }
    (changed, report)
}
