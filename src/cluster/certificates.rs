//! The admin API's certificates in a fleet: what `PUT /api/v1/certificates/NAME` stores on
//! one node, every node serves.
//!
//! The fleet keeps each pair at `PREFIX/certificates/NAME.pem` (the chain, public) and
//! `PREFIX/certificates/NAME.key` (the private key, sealed), written or removed together in
//! one transaction. The serve loop writes there ([`Certificates::store`],
//! [`Certificates::remove`]) once the change has built on this node and before it installs
//! it, so a change etcd does not take changes nothing anywhere.
//!
//! Every node lists the folder at start and then watches it ([`follow`]), and turns what it
//! finds into [`FleetChange::Certificates`] for the serve loop, which applies them to its
//! own `state_dir/certificates` through the same check, stage, build and install as a local
//! PUT; those files serve while etcd is away. At the first sync of a `state_dir` with a
//! fleet, the pairs it holds that etcd lacks are offered (`put_if_absent`, in batches);
//! after that, a pair etcd lacks was removed by the fleet while the node was away, and is
//! removed here too. Once a runtime serves, nothing here writes a file of
//! `state_dir/certificates`; before the first build, [`write_before_start`] does (for
//! `cluster::prepare`: a cold node starts with the fleet's certificates).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::acme::FleetError;
use super::{Backoff, FleetChange, Member};
use crate::store::{Change, StoreError};
use crate::tls::dir;

/// The folder in the store.
const FOLDER: &str = "certificates";
/// Keys per listing page: a page stays well under gRPC's 4 MiB message even with long RSA
/// chains (about 8 KiB a pair).
const PAGE: i64 = 256;
/// Pairs per offering transaction: etcd allows 128 operations in one (`--max-txn-ops`).
const BATCH: usize = 64;
/// The local file that says this `state_dir` has synced its certificates with the fleet
/// (in `state_dir/cluster`): the etcd cluster's id and the prefix.
const SYNCED: &str = "certificates.synced";

/// What [`SYNCED`] says after a sync with this etcd cluster and prefix.
fn marker(cluster_id: u64, store: &crate::store::Etcd) -> Vec<u8> {
    format!("{cluster_id:016x} {}\n", store.key(FOLDER)).into_bytes()
}

/// The fleet's pairs as [`prepare`](super::prepare) read them before the first build.
pub(super) struct Stored {
    items: Vec<Item>,
    /// Every name in the store (also those whose key does not open).
    names: std::collections::BTreeSet<String>,
    /// The [`SYNCED`] marker of this listing.
    marker: Vec<u8>,
}

/// One change to a node's `state_dir/certificates`, the key in clear (which `Debug` never
/// shows).
#[derive(Clone, PartialEq, Eq)]
pub enum Item {
    Put {
        name: String,
        chain: Vec<u8>,
        key: Vec<u8>,
    },
    Delete {
        name: String,
    },
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Put { name, chain, .. } => f
                .debug_struct("Put")
                .field("name", name)
                .field("chain_bytes", &chain.len())
                .finish_non_exhaustive(),
            Item::Delete { name } => f.debug_struct("Delete").field("name", name).finish(),
        }
    }
}

impl Item {
    pub fn name(&self) -> &str {
        match self {
            Item::Put { name, .. } | Item::Delete { name } => name,
        }
    }
}

fn pem_name(name: &str) -> String {
    format!("{FOLDER}/{name}.pem")
}

fn key_name(name: &str) -> String {
    format!("{FOLDER}/{name}.key")
}

/// `NAME.pem` or `NAME.key` (a name in the folder): NAME and whether it is the key.
fn half_of(file: &str) -> Option<(&str, bool)> {
    let (name, is_key) = match (file.strip_suffix(".pem"), file.strip_suffix(".key")) {
        (Some(n), _) => (n, false),
        (_, Some(n)) => (n, true),
        _ => return None,
    };
    dir::check_name(name).is_ok().then_some((name, is_key))
}

/// A pair as found in the store (or in a watch event): the chain, the sealed key, and
/// whether a half was removed.
#[derive(Default)]
struct Found {
    pem: Option<Vec<u8>>,
    sealed: Option<Vec<u8>>,
    removed: bool,
}

/// This node's side of the fleet's certificate store (see the module comment).
pub struct Certificates {
    member: Arc<Member>,
    state_dir: PathBuf,
    changes: UnboundedSender<FleetChange>,
}

impl Certificates {
    pub(super) fn new(
        member: Arc<Member>,
        state_dir: &std::path::Path,
        changes: UnboundedSender<FleetChange>,
    ) -> Certificates {
        Certificates {
            member,
            state_dir: state_dir.to_path_buf(),
            changes,
        }
    }

    fn check_ready(&self) -> Result<(), FleetError> {
        if *self.member.key_confirmed.borrow() {
            Ok(())
        } else {
            Err(FleetError::NotReady)
        }
    }

    /// Stores certificate `name` in the fleet: the chain, and the key sealed, in one
    /// transaction. An error when etcd does not take it (or this node's key is not
    /// confirmed as the fleet's): then nothing was written.
    pub async fn store(&self, name: &str, chain: &[u8], key: &[u8]) -> Result<(), FleetError> {
        self.check_ready()?;
        let (pem_at, key_at) = (pem_name(name), key_name(name));
        let sealed = self.member.key.seal(&self.member.store.key(&key_at), key);
        self.member
            .store
            .put_all(&[(&key_at, &sealed), (&pem_at, chain)])
            .await?;
        tracing::info!(certificate = name, key = %self.member.store.key(&pem_at), "cluster: certificate stored in the fleet");
        Ok(())
    }

    /// Removes certificate `name` from the fleet, both halves in one transaction.
    pub async fn remove(&self, name: &str) -> Result<(), FleetError> {
        self.check_ready()?;
        let (pem_at, key_at) = (pem_name(name), key_name(name));
        self.member.store.delete_all(&[&pem_at, &key_at]).await?;
        tracing::info!(certificate = name, key = %self.member.store.key(&pem_at), "cluster: certificate removed from the fleet");
        Ok(())
    }

    /// The pair in clear, or None (logged with its etcd key) when the key does not open.
    fn open(&self, name: &str, pem: Vec<u8>, sealed: &[u8]) -> Option<Item> {
        let at = self.member.store.key(&key_name(name));
        match self.member.key.open(&at, sealed) {
            Ok(key) => Some(Item::Put {
                name: name.to_string(),
                chain: pem,
                key,
            }),
            Err(e) => {
                tracing::error!(key = %at, error = %e, "cluster: the fleet's certificate is not installed; this node keeps what it has");
                None
            }
        }
    }

    fn send(&self, items: Vec<Item>) {
        if !items.is_empty() {
            // The serve loop ended: nothing to apply them to.
            let _ = self.changes.send(FleetChange::Certificates(items));
        }
    }

    /// What this node's marker says it synced with, and what it would say now.
    fn synced_with(&self, cluster_id: u64) -> (Option<Vec<u8>>, Vec<u8>) {
        let now = marker(cluster_id, &self.member.store);
        (self.member.local_copy(SYNCED), now)
    }

    /// Offers this node's pairs that etcd lacks, `BATCH` to a transaction; a batch that
    /// finds one of its names taken (another node offered it meanwhile) is offered pair by
    /// pair. A pair another node stored first is that node's: the watch brings it here.
    async fn offer(&self, pairs: Vec<(String, Vec<u8>, Vec<u8>)>) -> Result<(), StoreError> {
        let mut offered = 0;
        for batch in pairs.chunks(BATCH) {
            let values: Vec<(String, String, Vec<u8>, &[u8])> = batch
                .iter()
                .map(|(name, chain, key)| {
                    let key_at = key_name(name);
                    let sealed = self.member.key.seal(&self.member.store.key(&key_at), key);
                    (pem_name(name), key_at, sealed, chain.as_slice())
                })
                .collect();
            let items: Vec<(&str, &[u8])> = values
                .iter()
                .flat_map(|(pem_at, key_at, sealed, chain)| {
                    [
                        (key_at.as_str(), sealed.as_slice()),
                        (pem_at.as_str(), *chain),
                    ]
                })
                .collect();
            if self.member.store.put_all_if_absent(&items).await? {
                offered += batch.len();
                continue;
            }
            for pair in items.chunks(2) {
                if self.member.store.put_all_if_absent(pair).await? {
                    offered += 1;
                }
            }
        }
        if offered > 0 {
            tracing::info!(
                certificates = offered,
                node = %self.member.name,
                "cluster: this node's admin certificates offered to the fleet"
            );
        }
        Ok(())
    }
}

/// A listing's values by certificate name: each name's chain and sealed key (either may
/// be missing).
fn by_name(items: Vec<(String, Vec<u8>)>) -> BTreeMap<String, Found> {
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for (file, value) in items {
        if let Some((name, is_key)) = half_of(&file) {
            let f = found.entry(name.to_string()).or_default();
            if is_key {
                f.sealed = Some(value);
            } else {
                f.pem = Some(value);
            }
        }
    }
    found
}

/// The fleet's pairs whose keys open with `key` (the others are left to [`follow`], which
/// logs them), for [`prepare`](super::prepare) before the first build.
pub(super) async fn stored(
    store: &crate::store::Etcd,
    key: &crate::store::ClusterKey,
) -> Result<Stored, StoreError> {
    let (listing, cluster_id) = store.list_paged(FOLDER, PAGE).await?;
    let found = by_name(listing.items);
    let names = found.keys().cloned().collect();
    let items = found
        .into_iter()
        .filter_map(|(name, f)| {
            let (pem, sealed) = (f.pem?, f.sealed?);
            let key = key.open(&store.key(&key_name(&name)), &sealed).ok()?;
            Some(Item::Put {
                name,
                chain: pem,
                key,
            })
        })
        .collect();
    Ok(Stored {
        items,
        names,
        marker: marker(cluster_id, store),
    })
}

/// Writes the fleet's pairs into `state_dir/certificates` before the first build (there is
/// no runtime yet to change): each pair that differs from the node's and loads, valid now,
/// checked on every core; synced to disk once. How many were written. A pair that does not
/// load is left out here (the first build would refuse it, and with it the start), and
/// [`follow`] logs it. Each pair written is handed to `shared` as checked (parsed once, not
/// again by the build). When the node holds no pair the fleet lacks, its `state_dir` is in
/// sync with the fleet from now on ([`SYNCED`]): a pair the fleet removes before [`follow`]
/// reads the folder again is then removed here too, not offered back.
pub(super) fn write_before_start(
    state_dir: &std::path::Path,
    stored: Stored,
    shared: &crate::runtime::Shared,
) -> usize {
    let store = dir::admin_store(state_dir);
    let local = dir::list(&store);
    if local.pairs.iter().all(|(n, _)| stored.names.contains(n)) {
        let cluster = state_dir.join("cluster");
        let marked = crate::state::private_dir(&cluster)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::state::write_private(&cluster.join(SYNCED), &stored.marker)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = marked {
            tracing::warn!(error = %e, "cluster: cannot keep a local copy");
        }
    }
    let items = stored.items;
    let usable = crate::runtime::on_every_core(&items, |item| match item {
        Item::Put { name, chain, key } => {
            let f = dir::files(&store, name);
            let same = |path: &std::path::Path, bytes: &[u8]| {
                std::fs::read(path).is_ok_and(|b| b == bytes)
            };
            if same(&f.cert, chain) && same(&f.key, key) {
                return None;
            }
            let mut report = crate::config::Report::default();
            crate::runtime::checked_pair(chain, key, &f, &mut report).map(|c| (f, c))
        }
        Item::Delete { .. } => None,
    });
    let mut written = 0;
    for (item, usable) in items.iter().zip(usable) {
        let Item::Put { name, chain, key } = item else {
            continue;
        };
        let Some((files, cert)) = usable else {
            continue;
        };
        match dir::Staged::put_unsynced(&store, name, chain, key).and_then(dir::Staged::keep) {
            Ok(()) => {
                shared.adopt(&files, cert);
                written += 1;
            }
            Err(e) => {
                tracing::warn!(certificate = %name, error = %e, "cluster: cannot write the fleet's certificate before the start")
            }
        }
    }
    if written > 0 {
        if let Err(e) = dir::sync(&store) {
            tracing::warn!(store = %store.display(), error = %e, "cannot sync the certificate store to disk");
        }
    }
    written
}

/// Every node: brings its `state_dir/certificates` to the fleet's, from a listing of
/// `PREFIX/certificates/` and then its watch.
pub(super) async fn follow(certs: Arc<Certificates>) {
    let mut backoff = Backoff::new();
    certs.member.wait_for_the_fleets_key().await;
    loop {
        if let Err(e) = follow_once(&certs, &mut backoff).await {
            tracing::warn!(error = %e, "cluster: watching the fleet's certificates stopped; retrying");
            backoff.wait().await;
        }
    }
}

async fn follow_once(certs: &Certificates, backoff: &mut Backoff) -> Result<(), StoreError> {
    let store = &certs.member.store;
    let (listing, cluster_id) = store.list_paged(FOLDER, PAGE).await?;
    let found = by_name(listing.items);
    // What this node holds: read off the async threads (10,000 pairs are 20,000 files).
    let state_dir = certs.state_dir.clone();
    let local = tokio::task::spawn_blocking(move || dir::list(&dir::admin_store(&state_dir)))
        .await
        .unwrap_or_default();
    let (marker, now) = certs.synced_with(cluster_id);
    let first_sync = marker.as_deref() != Some(now.as_slice());
    let mut items = Vec::new();
    let mut offers = Vec::new();
    for (name, files) in &local.pairs {
        if found.contains_key(name) {
            continue;
        }
        if !first_sync {
            // Synced before, and etcd has it no more: the fleet removed it meanwhile.
            items.push(Item::Delete { name: name.clone() });
            continue;
        }
        match (std::fs::read(&files.cert), std::fs::read(&files.key)) {
            (Ok(chain), Ok(key)) => offers.push((name.clone(), chain, key)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(certificate = %name, error = %e, "cluster: cannot read this node's certificate to offer it")
            }
        }
    }
    certs.offer(offers).await?;
    for (name, f) in found {
        match (f.pem, f.sealed) {
            (Some(pem), Some(sealed)) => items.extend(certs.open(&name, pem, &sealed)),
            _ => {
                tracing::warn!(certificate = %name, "cluster: half a certificate in etcd (a .pem without its .key, or the reverse) is not installed")
            }
        }
    }
    let listed = items.len();
    certs.send(items);
    if first_sync {
        certs.member.keep_local_copy(SYNCED, &now);
    }
    certs.member.saw(listing.revision);
    tracing::info!(
        certificates = listed,
        revision = listing.revision,
        "cluster: the fleet's certificates read"
    );
    let mut watch = store.watch(FOLDER, listing.revision).await?;
    backoff.reset();
    loop {
        let changes = watch.next().await?;
        certs.member.saw(watch.revision());
        let mut touched: BTreeMap<String, Found> = BTreeMap::new();
        for change in changes {
            let (file, value) = match change {
                Change::Put { name, value } => (name, Some(value)),
                Change::Delete { name } => (name, None),
            };
            let Some((name, is_key)) = half_of(&file) else {
                continue;
            };
            let t = touched.entry(name.to_string()).or_default();
            match (value, is_key) {
                (Some(v), true) => t.sealed = Some(v),
                (Some(v), false) => t.pem = Some(v),
                (None, _) => t.removed = true,
            }
        }
        let mut items = Vec::new();
        for (name, t) in touched {
            let (pem, sealed) = match t {
                // A pair written in one transaction: both halves are in the event.
                Found {
                    pem: Some(pem),
                    sealed: Some(sealed),
                    removed: false,
                } => (Some(pem), Some(sealed)),
                // A removal, or half a change: what etcd holds now decides.
                _ => (
                    store.get(&pem_name(&name)).await?,
                    store.get(&key_name(&name)).await?,
                ),
            };
            match (pem, sealed) {
                (Some(pem), Some(sealed)) => items.extend(certs.open(&name, pem, &sealed)),
                (None, None) => items.push(Item::Delete { name }),
                _ => {
                    tracing::warn!(certificate = %name, "cluster: half a certificate in etcd is not installed")
                }
            }
        }
        certs.send(items);
    }
}

#[cfg(test)]
mod tests {
    use super::half_of;

    #[test]
    fn store_names_are_certificate_names() {
        assert_eq!(half_of("app.pem"), Some(("app", false)));
        assert_eq!(half_of("app.key"), Some(("app", true)));
        assert_eq!(half_of("a.b.c.key"), Some(("a.b.c", true)));
        assert_eq!(half_of("app.status"), None);
        assert_eq!(half_of("../x.pem"), None);
        assert_eq!(half_of("A.pem"), None);
        assert_eq!(half_of(".pem"), None);
    }
}
