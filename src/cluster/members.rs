//! Who is in the fleet: every node keeps `PREFIX/nodes/NODE` up to date on a lease of its
//! own, so a node that dies drops out of the list within [`TTL`]. The value says what
//! `portico cluster status` shows of the node: its version and process, when it started,
//! its cluster key's id, the ticket key generation it uses, and the store revision it has
//! synced to.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Backoff, Member};

/// How long a node that stopped renewing stays listed.
pub const TTL: Duration = Duration::from_secs(15);
/// How often the record is written again (its figures change).
const REFRESH: Duration = Duration::from_secs(5);

/// The folder of the records.
pub const FOLDER: &str = "nodes";

/// A node's record, as stored (JSON; nothing secret in it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub node: String,
    pub version: String,
    pub pid: u32,
    /// Unix seconds.
    pub started: i64,
    pub key_id: String,
    pub tickets_generation: u32,
    /// The highest store revision this node's watches have seen.
    pub synced_revision: i64,
    /// Unix seconds.
    pub updated: i64,
    /// The fleet configuration version it runs (`[cluster] config = "etcd"`).
    #[serde(default)]
    pub config_version: Option<u64>,
    /// The newest fleet configuration version that failed on it, with its first errors.
    #[serde(default)]
    pub config_failed: Option<super::pushed::Failed>,
}

fn record(member: &Member, started: i64) -> Record {
    let config = member.config.lock().map(|s| s.clone()).unwrap_or_default();
    Record {
        node: member.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        started,
        key_id: member.key.id().to_string(),
        tickets_generation: member.shared.tickets.generation(),
        synced_revision: member.synced.load(Ordering::Relaxed),
        updated: crate::runtime::unix_now(),
        config_version: config.running,
        config_failed: config.failed,
    }
}

/// Keeps this node's record in the store while the process lives.
pub(super) async fn register(member: Arc<Member>) {
    let started = crate::runtime::unix_now();
    let name = format!("{FOLDER}/{}", member.name);
    let mut backoff = Backoff::new();
    loop {
        let lease = match member.store.lease(TTL).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot register this node; retrying");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        while lease.is_alive() {
            let value = serde_json::to_vec(&record(&member, started)).unwrap_or_default();
            if let Err(e) = member.store.put_leased(&name, &value, &lease).await {
                tracing::warn!(error = %e, "cluster: cannot update this node's record");
                break;
            }
            tokio::time::sleep(REFRESH).await;
        }
        backoff.wait().await;
    }
}
