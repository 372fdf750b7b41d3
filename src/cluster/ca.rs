//! One local CA for the whole fleet (`tls = "internal"`): its certificate at
//! `PREFIX/ca/ca.pem` (public) and its key at `PREFIX/ca/ca.key` (sealed), written together
//! in one transaction.
//!
//! The fleet's CA wins: a node that finds one in etcd asks the serve loop to make it its own
//! (`FleetChange::Ca`: written into `state_dir/ca.pem` and `ca.key` by `tls/internal_ca.rs`,
//! then a rebuild, which issues the node's leaves again from it). A node that finds none
//! offers its own (made if it has none yet) with `put_if_absent`: the first node wins, the
//! others take its CA. Leaves stay per node, each issued by the one CA, so a client that
//! trusts the fleet's `ca.pem` verifies every node. While etcd is away the node's own files
//! serve. Nothing here replaces a CA file or touches a runtime (offering may make the
//! node's first CA, through `internal_ca.rs`, when it has none).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::acme::FleetError;
use super::{Backoff, FleetChange, Member};
use crate::tls::internal_ca;

/// The folder in the store.
const FOLDER: &str = "ca";
const CERT: &str = "ca.pem";
const KEY: &str = "ca.key";

fn at(file: &str) -> String {
    format!("{FOLDER}/{file}")
}

/// Every node: takes the fleet's CA, or offers its own when the fleet has none; then watches
/// for a change.
pub(super) async fn follow(
    member: Arc<Member>,
    state_dir: PathBuf,
    changes: UnboundedSender<FleetChange>,
) {
    let mut backoff = Backoff::new();
    member.wait_for_the_fleets_key().await;
    loop {
        if let Err(e) = follow_once(&member, &state_dir, &changes, &mut backoff).await {
            tracing::warn!(error = %e, "cluster: following the fleet's local CA stopped; retrying");
            backoff.wait().await;
        }
    }
}

async fn follow_once(
    member: &Member,
    state_dir: &std::path::Path,
    changes: &UnboundedSender<FleetChange>,
    backoff: &mut Backoff,
) -> Result<(), FleetError> {
    loop {
        let listing = member.store.list(FOLDER).await?;
        let value = |file: &str| {
            listing
                .items
                .iter()
                .find(|(n, _)| n == file)
                .map(|(_, v)| v.clone())
        };
        match (value(CERT), value(KEY)) {
            (Some(cert), Some(sealed)) => {
                let key_at = member.store.key(&at(KEY));
                match member.key.open(&key_at, &sealed) {
                    Ok(key) => match internal_ca::check_ca(&cert, &key) {
                        // The serve loop leaves an unchanged CA alone.
                        Ok(()) => {
                            let _ = changes.send(FleetChange::Ca { cert, key });
                        }
                        Err(e) => {
                            tracing::error!(key = %member.store.key(&at(CERT)), error = %e, "cluster: the fleet's local CA is not usable; this node keeps its own")
                        }
                    },
                    Err(e) => {
                        tracing::error!(key = %key_at, error = %e, "cluster: the fleet's local CA is not installed; this node keeps its own")
                    }
                }
            }
            (None, None) => {
                if offer(member, state_dir).await? {
                    // Read again: this node's CA, or the one another node stored first.
                    continue;
                }
            }
            _ => {
                tracing::error!(folder = %member.store.key(FOLDER), "cluster: the fleet's local CA in etcd is incomplete (a certificate without its key, or the reverse); this node keeps its own")
            }
        }
        member.saw(listing.revision);
        let mut watch = member.store.watch(FOLDER, listing.revision).await?;
        backoff.reset();
        // Any change: read the folder again.
        watch.next().await?;
    }
}

/// The fleet's CA (certificate and key, PEM), if etcd holds one that opens with `key` and
/// is a CA with its key ([`prepare`](super::prepare) before the first build).
pub(super) async fn stored(
    store: &crate::store::Etcd,
    key: &crate::store::ClusterKey,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, crate::store::StoreError> {
    let (Some(cert), Some(sealed)) = (store.get(&at(CERT)).await?, store.get(&at(KEY)).await?)
    else {
        return Ok(None);
    };
    let opened = key
        .open(&store.key(&at(KEY)), &sealed)
        .ok()
        .filter(|k| internal_ca::check_ca(&cert, k).is_ok());
    Ok(opened.map(|k| (cert, k)))
}

/// Offers this node's CA (made now if it has none) as the fleet's; whether the offer was
/// made (true also when another node's came first: the caller reads again).
async fn offer(member: &Member, state_dir: &std::path::Path) -> Result<bool, FleetError> {
    let dir = state_dir.to_path_buf();
    let own = tokio::task::spawn_blocking(move || {
        internal_ca::LocalCa::load_or_create(&dir)
            .map(|_| internal_ca::stored_ca(&dir))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let (cert, key) = match own {
        Ok(Some(pair)) => pair,
        Ok(None) => return Ok(false),
        Err(e) => {
            tracing::error!(error = %e, "cluster: this node has no local CA to offer the fleet");
            return Ok(false);
        }
    };
    let (cert_at, key_at) = (at(CERT), at(KEY));
    let sealed = member.key.seal(&member.store.key(&key_at), &key);
    if member
        .store
        .put_all_if_absent(&[(&key_at, &sealed), (&cert_at, &cert)])
        .await?
    {
        tracing::info!(node = %member.name, key = %member.store.key(&cert_at), "cluster: this node's local CA is the fleet's");
    }
    Ok(true)
}
