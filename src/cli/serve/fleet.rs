//! A fleet node whose configuration is the fleet's (`[cluster] config = "etcd"`): its start
//! from the pushed version or its sealed copy, and the versions the node's watch brings.

use super::*;

/// The next fleet configuration version the node's watch sends; never without a watch.
pub(super) async fn next_push(
    pushes: &mut Option<tokio::sync::watch::Receiver<Option<Arc<Pushed>>>>,
) -> Arc<Pushed> {
    if let Some(rx) = pushes {
        // An error: the watch task ended with the node; nothing more will come.
        while rx.changed().await.is_ok() {
            if let Some(p) = rx.borrow_and_update().clone() {
                return p;
            }
        }
    }
    std::future::pending().await
}

/// The start of a node whose configuration is the fleet's (`[cluster] config = "etcd"`):
/// the fleet's current version with the node's own file, or else (etcd away, or that
/// version fails here) the sealed copy of the last one this node ran. The configuration
/// it runs, the newest it knows (what a reload loads again), the one it runs, and what it
/// tried.
pub(super) async fn start_from_fleet(
    path: &Path,
    origin: Origin,
    node: &crate::config::NodeLocal,
    shared: &Shared,
) -> anyhow::Result<Result<(Runtime, Arc<Pushed>, Pushed, State), ExitCode>> {
    let found = crate::cluster::pushed::at_start(&node.cluster, &node.state_dir)
        .await
        .context("cannot read the fleet's configuration")?;
    if let Some(why) = &found.fleet_missing {
        tracing::warn!(
            "cluster: {why}; trying this node's copy of the last fleet configuration it ran"
        );
    }
    let newest = found
        .fleet
        .clone()
        .or_else(|| found.local.clone())
        .map(Arc::new);
    let mut candidates: Vec<Pushed> = found.fleet.into_iter().collect();
    if let Some(local) = found.local {
        if candidates
            .iter()
            .all(|c| c.meta.version != local.meta.version)
        {
            candidates.push(local);
        }
    }
    let mut state = State::default();
    let Some(newest) = newest else {
        eprintln!(
            "{}: [cluster] config = \"etcd\", but there is no fleet configuration to run: {}, and {} holds no copy of one",
            path.display(),
            found.fleet_missing.as_deref().unwrap_or("etcd holds none"),
            node.state_dir.join("cluster").display()
        );
        return Ok(Err(ExitCode::from(1)));
    };
    for c in candidates {
        let version = c.meta.version;
        match load_with(path, origin, Some(&c.text), shared) {
            Ok((rt, _warnings)) => {
                state.loaded(version, None);
                tracing::info!(version, by = %c.meta.by, "cluster: serving the fleet's configuration");
                return Ok(Ok((rt, newest, c, state)));
            }
            Err(report) => {
                eprint!("{report}");
                eprintln!(
                    "{} with the fleet's configuration version {version}: {} errors",
                    path.display(),
                    report.errors().count()
                );
                state.loaded(version, Some(&report));
            }
        }
    }
    eprintln!(
        "{}: no fleet configuration runs on this node; not serving",
        path.display()
    );
    Ok(Err(ExitCode::from(1)))
}
