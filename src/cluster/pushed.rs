//! The fleet's configuration (docs/cluster.md): `portico cluster push` stores a checked
//! configuration at `PREFIX/config/current`, sealed, with its version, who pushed it, when,
//! and the SHA-256 of its text; `PREFIX/config/meta` repeats those four in clear for
//! `portico cluster status`. Both are written in one transaction that succeeds only if
//! `meta` is still what the pusher read, so two pushes never get the same version.
//!
//! Nodes whose `[cluster] config = "etcd"` read it at start ([`at_start`], or their sealed
//! local copy of the last one they ran while etcd is away), and [`follow`] it: each newer
//! version goes to the serve loop as a change request, which loads it with the node's own
//! file through the one reload path. What the node runs, and the newest version that
//! failed on it, are in its record (`members.rs`). A value that does not open, does not
//! parse, or whose text does not match its digest is logged and ignored: the node keeps
//! what it runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Backoff, ClusterError, Member};
use crate::config::{Cluster, Report};
use crate::store::{Change, ClusterKey, Etcd};

/// The folder, and the two keys in it.
pub const FOLDER: &str = "config";
const CURRENT: &str = "current";
const META: &str = "meta";
/// The local copy's name in `state_dir/cluster/`.
const LOCAL_COPY: &str = "config";
/// How long a start waits for etcd before it uses the local copy.
const START_DEADLINE: Duration = Duration::from_secs(3);
/// How many of a failed configuration's errors go into the node's record.
const ERRORS_KEPT: usize = 5;

/// What is public about a pushed configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// 1 for the first push, then one more each time.
    pub version: u64,
    /// Of the text, lowercase hex.
    pub sha256: String,
    /// `user@host` of the push.
    pub by: String,
    /// Unix seconds.
    pub at: i64,
}

/// A pushed configuration, as sealed in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pushed {
    pub meta: Meta,
    pub text: String,
}

/// The newest version that failed on a node, and its first errors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failed {
    pub version: u64,
    pub errors: Vec<String>,
}

/// Where a node stands with the fleet's configuration (for its record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The version it runs.
    pub running: Option<u64>,
    /// The newest version that failed on it, when newer than the one it runs.
    pub failed: Option<Failed>,
}

impl State {
    /// Records that `version` was loaded, with `report`'s errors if it failed.
    pub fn loaded(&mut self, version: u64, report: Option<&Report>) {
        match report {
            None => {
                self.running = Some(version);
                if self.failed.as_ref().is_some_and(|f| f.version <= version) {
                    self.failed = None;
                }
            }
            Some(report) => {
                self.failed = Some(Failed {
                    version,
                    errors: report
                        .errors()
                        .take(ERRORS_KEPT)
                        .map(|d| d.to_string())
                        .collect(),
                });
            }
        }
    }

    /// The newest version this node has tried.
    fn newest(&self) -> u64 {
        self.running
            .unwrap_or(0)
            .max(self.failed.as_ref().map_or(0, |f| f.version))
    }
}

/// The SHA-256 of a configuration text, lowercase hex (what `meta` and `status` show).
pub fn sha256(text: &str) -> String {
    crate::hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref(),
    )
}

/// The full etcd key of the sealed configuration (its associated data).
fn current(store: &Etcd) -> String {
    store.key(&format!("{FOLDER}/{CURRENT}"))
}

/// Opens a sealed value of `PREFIX/config/current` (`at`, its full etcd key).
fn open(key: &ClusterKey, at: &str, sealed: &[u8]) -> Result<Pushed, &'static str> {
    let plain = key
        .open(at, sealed)
        .map_err(|_| "it does not open with this node's cluster key")?;
    let pushed: Pushed = serde_json::from_slice(&plain).map_err(|_| "it does not parse")?;
    if sha256(&pushed.text) != pushed.meta.sha256 {
        return Err("its text does not match its SHA-256");
    }
    Ok(pushed)
}

/// Stores `text` (checked by the caller) as the fleet's next configuration version.
pub async fn push(cluster: &Cluster, text: &str, by: &str) -> Result<Meta, ClusterError> {
    let key = ClusterKey::load(&cluster.key_file)?;
    let store = Etcd::connect(cluster).await?;
    // A machine whose key is not the fleet's would push what no node can open.
    let check_at = store.key(super::KEY_CHECK);
    if !store
        .put_if_absent(
            super::KEY_CHECK,
            &key.seal(&check_at, super::KEY_CHECK_TEXT),
        )
        .await?
    {
        let stored = store.get(super::KEY_CHECK).await?.unwrap_or_default();
        if !super::opens_check(&key, &check_at, &stored) {
            return Err(ClusterError::NotTheFleetsKey);
        }
    }
    let meta_key = format!("{FOLDER}/{META}");
    let current_key = format!("{FOLDER}/{CURRENT}");
    // Another push between the read and the write makes this one read again.
    for _ in 0..20 {
        let before = store.get(&meta_key).await?;
        let previous = before
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Meta>(b).ok())
            .map_or(0, |m| m.version);
        let meta = Meta {
            version: previous + 1,
            sha256: sha256(text),
            by: by.to_string(),
            at: crate::runtime::unix_now(),
        };
        let pushed = Pushed {
            meta: meta.clone(),
            text: text.to_string(),
        };
        // Serializing plain structs to a Vec cannot fail.
        let plain = serde_json::to_vec(&pushed).unwrap_or_default();
        let sealed = key.seal(&store.key(&current_key), &plain);
        let public = serde_json::to_vec(&meta).unwrap_or_default();
        let items: [(&str, &[u8]); 2] = [(&current_key, &sealed), (&meta_key, &public)];
        if store
            .put_all_if(&meta_key, before.as_deref(), &items)
            .await?
        {
            return Ok(meta);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ClusterError::Contended)
}

/// What a starting node can run: the fleet's current configuration, if etcd answered in
/// time with one that opens, and the node's sealed copy of the last one it ran.
#[derive(Debug, Default)]
pub struct Candidates {
    pub fleet: Option<Pushed>,
    pub local: Option<Pushed>,
    /// Why etcd gave none: it did not answer, or holds none (or none that opens).
    pub fleet_missing: Option<String>,
}

/// Reads what a starting node can run, waiting for etcd [`START_DEADLINE`] at most.
pub async fn at_start(cluster: &Cluster, state_dir: &Path) -> Result<Candidates, ClusterError> {
    let key = ClusterKey::load(&cluster.key_file)?;
    let store = Etcd::connect(cluster).await?;
    let at = current(&store);
    let mut found = Candidates::default();
    match tokio::time::timeout(START_DEADLINE, store.get(&format!("{FOLDER}/{CURRENT}"))).await {
        Ok(Ok(Some(sealed))) => match open(&key, &at, &sealed) {
            Ok(p) => found.fleet = Some(p),
            Err(why) => {
                tracing::error!(key = %at, "cluster: the fleet's configuration is unusable: {why}");
                found.fleet_missing = Some(format!(
                    "the fleet's configuration at {at} is unusable: {why}"
                ));
            }
        },
        Ok(Ok(None)) => {
            found.fleet_missing = Some(format!(
                "etcd holds no fleet configuration at {at} (push one with `portico cluster push`)"
            ))
        }
        Ok(Err(e)) => found.fleet_missing = Some(e.to_string()),
        Err(_) => {
            found.fleet_missing = Some(format!(
                "etcd ({}) did not answer within {} s",
                cluster.etcd.join(", "),
                START_DEADLINE.as_secs()
            ))
        }
    }
    let copy = state_dir.join("cluster").join(LOCAL_COPY);
    if let Ok(sealed) = std::fs::read(&copy) {
        match open(&key, &at, &sealed) {
            Ok(p) => found.local = Some(p),
            Err(why) => {
                tracing::error!(path = %copy.display(), "cluster: the local copy of the fleet's configuration is unusable: {why}")
            }
        }
    }
    Ok(found)
}

impl Member {
    /// Records what loading `pushed` came to; keeps a sealed local copy of one that runs.
    pub(super) fn loaded(&self, pushed: &Pushed, report: Option<&Report>) {
        let version = pushed.meta.version;
        if let Ok(mut state) = self.config.lock() {
            state.loaded(version, report);
        }
        match report {
            None => {
                let plain = serde_json::to_vec(pushed).unwrap_or_default();
                let sealed = self.key.seal(&current(&self.store), &plain);
                self.keep_local_copy(LOCAL_COPY, &sealed);
            }
            Some(report) => tracing::error!(
                version,
                errors = report.errors().count(),
                "cluster: the fleet's configuration failed on this node; it keeps the one it runs"
            ),
        }
    }
}

/// Sends each newer configuration version the store holds to `tx` (the serve loop).
pub(super) async fn follow(
    member: Arc<Member>,
    tx: tokio::sync::watch::Sender<Option<Arc<Pushed>>>,
) {
    let mut backoff = Backoff::new();
    member.wait_for_the_fleets_key().await;
    loop {
        if let Err(e) = follow_once(&member, &tx, &mut backoff).await {
            tracing::warn!(error = %e, "cluster: watching the fleet's configuration stopped; retrying");
            backoff.wait().await;
        }
    }
}

async fn follow_once(
    member: &Member,
    tx: &tokio::sync::watch::Sender<Option<Arc<Pushed>>>,
    backoff: &mut Backoff,
) -> Result<(), crate::store::StoreError> {
    let listing = member.store.list(FOLDER).await?;
    for (name, sealed) in &listing.items {
        if name == CURRENT {
            offer(member, tx, sealed);
        }
    }
    member.saw(listing.revision);
    let mut watch = member.store.watch(FOLDER, listing.revision).await?;
    backoff.reset();
    loop {
        let changes = watch.next().await?;
        member.saw(watch.revision());
        for change in changes {
            if let Change::Put { name, value } = change {
                if name == CURRENT {
                    offer(member, tx, &value);
                }
            }
        }
    }
}

/// Sends the configuration sealed in `sealed` if it is newer than any this node tried.
fn offer(member: &Member, tx: &tokio::sync::watch::Sender<Option<Arc<Pushed>>>, sealed: &[u8]) {
    let at = current(&member.store);
    let pushed = match open(&member.key, &at, sealed) {
        Ok(p) => p,
        Err(why) => {
            tracing::error!(key = %at, "cluster: the fleet's configuration is unusable: {why}; keeping the one this node runs");
            return;
        }
    };
    let tried = member.config.lock().map_or(0, |s| s.newest());
    let sent = tx.borrow().as_ref().map_or(0, |p| p.meta.version);
    if pushed.meta.version > tried.max(sent) {
        tracing::info!(version = pushed.meta.version, by = %pushed.meta.by, "cluster: a new fleet configuration");
        tx.send_replace(Some(Arc::new(pushed)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_file_bytes(&[byte; 32]).expect("a key")
    }

    fn sealed(key: &ClusterKey, at: &str, pushed: &Pushed) -> Vec<u8> {
        key.seal(at, &serde_json::to_vec(pushed).expect("json"))
    }

    #[test]
    fn only_a_value_that_opens_parses_and_matches_its_digest_is_a_configuration() {
        let at = "/portico/config/current";
        let text = "[[site]]\n".to_string();
        let good = Pushed {
            meta: Meta {
                version: 3,
                sha256: sha256(&text),
                by: "ops@admin".to_string(),
                at: 0,
            },
            text,
        };
        assert_eq!(
            open(&key(1), at, &sealed(&key(1), at, &good)),
            Ok(good.clone())
        );
        // Another key, another etcd key, garbage, JSON that is no configuration, a text
        // that is not the one its digest names.
        assert!(open(&key(2), at, &sealed(&key(1), at, &good)).is_err());
        assert!(open(
            &key(1),
            "/other/config/current",
            &sealed(&key(1), at, &good)
        )
        .is_err());
        assert!(open(&key(1), at, b"garbage").is_err());
        assert!(open(&key(1), at, &key(1).seal(at, b"{}")).is_err());
        let mut changed = good;
        changed.text.push('#');
        assert_eq!(
            open(&key(1), at, &sealed(&key(1), at, &changed)),
            Err("its text does not match its SHA-256")
        );
    }

    #[test]
    fn a_failed_version_is_kept_until_one_as_new_runs() {
        let mut report = Report::default();
        report.error("site[0].root", "cannot open", None);
        let mut state = State::default();
        state.loaded(1, None);
        state.loaded(2, Some(&report));
        assert_eq!(state.running, Some(1));
        assert_eq!(state.failed.as_ref().map(|f| f.version), Some(2));
        assert_eq!(state.newest(), 2);
        assert!(state
            .failed
            .as_ref()
            .is_some_and(|f| f.errors[0].contains("site[0].root")));
        // A reload of the older version keeps the failure of the newer one on record.
        state.loaded(1, None);
        assert_eq!(state.failed.as_ref().map(|f| f.version), Some(2));
        state.loaded(2, None);
        assert_eq!((state.running, state.failed), (Some(2), None));
    }
}
