//! Certificate changes the serve loop applies: the admin API's PUT and DELETE (stored in
//! etcd first in a fleet) and the fleet's batches and local CA, each checked, staged and
//! installed, or undone; and the sites' own certificates ACME or the local CA issued. None
//! of them builds a runtime.

use super::*;

/// A change to the admin API's certificate store: one pair put or removed.
pub(super) type CertChange = crate::cluster::certificates::Item;

/// Who asked for a certificate change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asker {
    /// The admin API: one change, answered; in a fleet, stored in etcd before it is
    /// installed.
    Admin,
    /// The fleet (etcd's listing or watch): changes already in etcd, applied here. A pair
    /// that does not load, or is already here, is left out (logged); the others go on.
    Fleet,
    /// An on-demand order's pair (`acme::on_demand`): like the admin API's, stored in etcd
    /// first in a fleet.
    OnDemand,
}

/// Where a certificate change stands after its blocking half.
pub(super) enum Staging {
    NoSuchName,
    /// Nothing was written: the pair does not load, or the store cannot be written.
    Refused(Changed, Report),
    /// Nothing to do: the fleet's changes are here already.
    Nothing,
    /// The files are changed on disk, and this is the pool patched with them.
    /// With the indexes of the changes staged (a fleet's batch leaves out what is here).
    Patched(
        Vec<Staged>,
        Box<Result<runtime::Patched, Report>>,
        Vec<usize>,
    ),
}

/// Whether the store holds exactly this pair already.
pub(super) fn holds(store: &Path, name: &str, chain: &[u8], key: &[u8]) -> bool {
    let f = crate::tls::dir::files(store, name);
    let same = |path: &Path, bytes: &[u8]| std::fs::read(path).is_ok_and(|b| b == bytes);
    same(&f.cert, chain) && same(&f.key, key)
}

/// The blocking half of a certificate change: checks each new pair from its bytes (nothing
/// is written for one that does not load, is not valid now or whose key cannot sign),
/// stages the files, and patches the pool of the runtime serving with them, the path a
/// change in a certificate directory takes (no runtime is built).
pub(super) fn stage_and_patch(
    rt: &Runtime,
    shared: &Shared,
    changes: &[CertChange],
    asker: Asker,
) -> Staging {
    let store = crate::tls::dir::admin_store(&rt.config.state_dir);
    let mut report = Report::default();
    let mut staged = Vec::with_capacity(changes.len());
    // Each new pair's check, on every core (a fleet's first sync brings thousands): None
    // when the store holds it already (a fleet's change only).
    let checks = runtime::on_every_core(changes, |change| match change {
        CertChange::Put { name, chain, key } => {
            if asker == Asker::Fleet && holds(&store, name, chain, key) {
                return None;
            }
            let mut checked = Report::default();
            let files = crate::tls::dir::files(&store, name);
            let cert = runtime::checked_pair(chain, key, &files, &mut checked);
            Some((checked, cert.map(|c| (files, c))))
        }
        CertChange::Delete { .. } => Some((Report::default(), None)),
    });
    let mut applied = Vec::new();
    for (i, (change, checked)) in changes.iter().zip(checks).enumerate() {
        let Some((checked, cert)) = checked else {
            continue;
        };
        let step = match change {
            CertChange::Put { name, chain, key } => {
                if checked.has_errors() {
                    if asker != Asker::Fleet {
                        return Staging::Refused(Changed::Refused, checked);
                    }
                    for d in checked.errors() {
                        tracing::error!(certificate = %name, "cluster: the fleet's certificate is not installed; this node keeps what it has: {d}");
                    }
                    continue;
                }
                match asker {
                    Asker::Admin | Asker::OnDemand => Staged::put(&store, name, chain, key),
                    // Made durable together, below.
                    Asker::Fleet => Staged::put_unsynced(&store, name, chain, key),
                }
                .map(Some)
            }
            CertChange::Delete { name } => Staged::delete(&store, name),
        };
        match step {
            Ok(Some(s)) => {
                // Checked from these very bytes: the patch below need not parse them again.
                if let Some((files, cert)) = cert {
                    shared.adopt(&files, cert);
                }
                staged.push(s);
                applied.push(i);
            }
            Ok(None) if asker != Asker::Fleet => return Staging::NoSuchName,
            Ok(None) => {}
            Err(e) => {
                for s in staged {
                    let _ = s.undo();
                }
                report.error(
                    "state_dir",
                    format!(
                        "cannot change the certificate store {}: {e}",
                        store.display()
                    ),
                    Some("make state_dir writable by the user Portico runs as".to_string()),
                );
                return Staging::Refused(Changed::StoreFailed, report);
            }
        }
    }
    if staged.is_empty() {
        return Staging::Nothing;
    }
    if asker == Asker::Fleet {
        if let Err(e) = crate::tls::dir::sync(&store) {
            // The files are written; only a crash could lose them, and etcd still has them.
            tracing::warn!(store = %store.display(), error = %e, "cannot sync the certificate store to disk");
        }
    }
    let pairs: Vec<(PathBuf, String)> = applied
        .iter()
        .map(|&i| (store.clone(), changes[i].name().to_string()))
        .collect();
    Staging::Patched(
        staged,
        Box::new(runtime::patch_pool(rt, shared, &pairs)),
        applied,
    )
}

/// What a certificate change is called in the log and the history.
pub(super) fn reason(asker: Asker, changes: &[&CertChange]) -> String {
    let who = match asker {
        Asker::Admin => "admin",
        Asker::Fleet => "fleet",
        Asker::OnDemand => "on-demand",
    };
    match changes {
        [CertChange::Put { name, .. }] => format!("{who} PUT certificates/{name}"),
        [CertChange::Delete { name }] => format!("{who} DELETE certificates/{name}"),
        many => format!("{who}: {} certificate changes", many.len()),
    }
}

/// Applies certificate changes, one reload: the outcome goes to the history and the reload
/// counter like any other. On success the new files are kept; on any failure they are put
/// back exactly as they were, and nothing changed. A change from the admin API in a fleet
/// is stored in etcd once it has built here and before it is installed: if etcd does not
/// take it, nothing changed here or anywhere. The changes come back with the reply.
pub(super) async fn change_certificates(
    server: &mut Server,
    shared: &Shared,
    history: &History,
    fleet: Option<&crate::cluster::certificates::Certificates>,
    changes: Vec<CertChange>,
    asker: Asker,
) -> (Reply, Vec<CertChange>) {
    let mut why = reason(asker, &changes.iter().collect::<Vec<_>>());
    let put = matches!(changes.as_slice(), [CertChange::Put { .. }]);
    let rt = server.runtime();
    let (staging, changes) = {
        let shared = shared.clone();
        off_loop(move || {
            let staging = stage_and_patch(&rt, &shared, &changes, asker);
            (staging, changes)
        })
        .await
    };
    let (staged, built) = match staging {
        Staging::NoSuchName => return (Reply::Certificate(Changed::NoSuchName, None), changes),
        Staging::Nothing => return (Reply::Certificate(Changed::Replaced, None), changes),
        Staging::Refused(changed, report) => {
            let outcome = install(server, &shared.metrics, history, Err(report), &why);
            return (Reply::Certificate(changed, Some(outcome)), changes);
        }
        Staging::Patched(staged, built, applied) => {
            why = reason(
                asker,
                &applied.iter().map(|&i| &changes[i]).collect::<Vec<_>>(),
            );
            (staged, built)
        }
    };
    let replaced = staged.iter().any(Staged::replaced);
    // In a fleet, etcd takes an admin change first, or nothing changes.
    let stored = match (asker, fleet, &*built, changes.as_slice()) {
        (
            Asker::Admin | Asker::OnDemand,
            Some(fleet),
            Ok(_),
            [CertChange::Put { name, chain, key }],
        ) => fleet.store(name, chain, key).await,
        (Asker::Admin, Some(fleet), Ok(_), [CertChange::Delete { name }]) => {
            fleet.remove(name).await
        }
        _ => Ok(()),
    };
    let (outcome, fleet_failed) = match stored {
        Ok(()) => (
            install_patch(server, &shared.metrics, history, *built, &why),
            false,
        ),
        Err(e) => {
            let mut report = Report::default();
            report.error(
                "cluster",
                format!("the fleet did not take the change, so nothing changed on this node or any other: {e}"),
                Some("send it again once etcd answers (portico cluster status shows it)".to_string()),
            );
            (
                install(server, &shared.metrics, history, Err(report), &why),
                true,
            )
        }
    };
    let ok = outcome.ok;
    let settled = off_loop(move || {
        let mut result = Ok(());
        for s in staged {
            let r = if ok { s.keep() } else { s.undo() };
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
    .await;
    if let Err(e) = settled {
        if ok {
            tracing::warn!(reason = %why, error = %e, "a previous certificate file could not be removed (a .prev file is left)");
        } else {
            tracing::error!(reason = %why, error = %e, "the previous certificate files could not be put back; a reload reads what is on disk");
        }
    }
    let changed = match (ok, put, replaced) {
        _ if fleet_failed => Changed::FleetUnavailable,
        (false, _, _) => Changed::Refused,
        (true, false, _) => Changed::Deleted,
        (true, true, true) => Changed::Replaced,
        (true, true, false) => Changed::Created,
    };
    (Reply::Certificate(changed, Some(outcome)), changes)
}

/// Applies the fleet's certificate changes: all in one rebuild; when that rebuild fails
/// (a removal would leave one of this node's hosts without a certificate, say), in halves,
/// so the changes this node can take are taken and each one it cannot is logged and left.
pub(super) async fn apply_fleet_certificates(
    server: &mut Server,
    shared: &Shared,
    history: &History,
    changes: Vec<CertChange>,
) {
    let mut todo = vec![changes];
    while let Some(batch) = todo.pop() {
        let n = batch.len();
        let (reply, mut batch) =
            change_certificates(server, shared, history, None, batch, Asker::Fleet).await;
        if let Reply::Certificate(Changed::Refused, _) = reply {
            if n > 1 {
                let second = batch.split_off(n / 2);
                todo.push(second);
                todo.push(batch);
            } else if let Some(change) = batch.first() {
                tracing::error!(certificate = %change.name(), "cluster: the fleet's certificate change does not build on this node (see the reload's errors); this node keeps what it has");
            }
        }
    }
}

/// Installs what ACME or the local CA holds now for `sites` (indexes into the serving
/// runtime's sites) as their own certificates, in place (`runtime::patch_site_certs`): a
/// renewal at 100,000 sites costs what one site's costs. Recorded in the history like a
/// reload; a site whose certificate cannot be taken keeps its own, and the log says why.
pub(super) async fn apply_site_certs(
    server: &Server,
    shared: &Shared,
    history: &History,
    sites: Vec<usize>,
    why: &str,
) {
    let rt = server.runtime();
    let (changed, report) = {
        let (rt, shared) = (rt.clone(), shared.clone());
        off_loop(move || runtime::patch_site_certs(&rt, &shared, &sites)).await
    };
    for d in report.errors() {
        tracing::error!(reason = why, "certificate change not applied: {d}");
    }
    if changed.is_empty() && !report.has_errors() {
        return;
    }
    let ok = !changed.is_empty();
    for (si, cert) in &changed {
        tracing::info!(reason = why, site = %rt.sites[*si].name, subject = %cert.subject, not_after = %format_time(cert.not_after), "site certificate installed");
        rt.install_site_cert(*si, cert.clone());
    }
    shared.metrics.reload(if ok {
        crate::metrics::Outcome::Ok
    } else {
        crate::metrics::Outcome::Failed
    });
    let summary = format!("site certificates: {} installed", changed.len());
    record(history, ok, report, summary, why);
}

/// The indexes of the sites of `rt` whose certificate the local CA issues.
pub(super) fn internal_sites(rt: &Runtime) -> Vec<usize> {
    (rt.config.sites.iter().enumerate())
        .filter(|(_, s)| s.tls == TlsMode::Internal)
        .map(|(i, _)| i)
        .collect()
}

/// Makes the fleet's CA this node's, and issues the internal leaves again from it.
pub(super) async fn apply_fleet_ca(
    server: &Server,
    shared: &Shared,
    history: &History,
    cert: Vec<u8>,
    key: Vec<u8>,
) {
    let state_dir = server.runtime().config.state_dir.clone();
    let written =
        off_loop(move || crate::tls::internal_ca::install_ca(&state_dir, &cert, &key)).await;
    match written {
        Ok(false) => {}
        Ok(true) => {
            tracing::info!("cluster: the fleet's local CA installed");
            let sites = internal_sites(&server.runtime());
            apply_site_certs(server, shared, history, sites, "the fleet's local CA").await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cluster: the fleet's local CA cannot be written; this node keeps its own")
        }
    }
}

/// The fleet's next change; never without a fleet.
pub(super) async fn next_fleet_change(
    changes: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::cluster::FleetChange>>,
) -> Option<crate::cluster::FleetChange> {
    match changes {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// Applies settled pairs of the `[[certificate]] dir` directories to the pool of the
/// runtime serving, without a new runtime (`runtime::patch_pool`). A pair that does not
/// load is left as it was (its certificate, if any, keeps serving) and logged; a change
/// that would leave a pool host without a valid certificate is refused as a whole.
pub(super) async fn apply_dir_pairs(
    server: &Server,
    shared: &Shared,
    history: &History,
    pairs: Vec<(PathBuf, String)>,
) {
    let rt = server.runtime();
    let patched = {
        let shared = shared.clone();
        off_loop(move || runtime::patch_pool(&rt, &shared, &pairs)).await
    };
    if matches!(&patched, Ok(p) if p.is_empty() && !p.skipped.has_errors()) {
        return;
    }
    install_patch(
        server,
        &shared.metrics,
        history,
        patched,
        "certificate directory changed",
    );
}
