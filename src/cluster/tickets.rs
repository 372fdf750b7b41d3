//! The fleet's session ticket keys. One node at a time holds the `tickets` lock and makes
//! them: a new key when the newest is [`ROTATION`] old, the previous two kept. It writes the
//! set sealed to `PREFIX/tickets/set`; every node (the holder too) watches that key and installs
//! what it finds, and keeps a sealed copy in `state_dir/cluster/tickets` so a restart while
//! etcd is away still resumes the fleet's tickets. When the holder dies its lock ends with
//! its lease, and another node goes on from the stored set.

use std::sync::Arc;
use std::time::Duration;

use super::{Backoff, Member};
use crate::store::{Change, Follow, Followed, Held};
use crate::tls::tickets::{next_set, TicketKey, ROTATION};

/// The folder of the sealed set in the store, the rotation lock's name and the local
/// copy's file name.
pub(super) const NAME: &str = "tickets";
/// The sealed set's key in the folder.
pub(super) const SET: &str = "set";
/// The rotation lock's TTL: how long the fleet goes without a rotator after the holder died.
const LOCK_TTL: Duration = Duration::from_secs(10);

/// The set as stored (sealed): JSON, newest first.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    keys: Vec<StoredKey>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredKey {
    id: u32,
    /// Hex.
    secret: String,
    created: i64,
}

fn set_key() -> String {
    format!("{NAME}/{SET}")
}

fn encode(set: &[TicketKey]) -> Vec<u8> {
    let stored = Stored {
        keys: set
            .iter()
            .map(|k| StoredKey {
                id: k.id,
                secret: crate::hex::encode(&k.secret),
                created: k.created,
            })
            .collect(),
    };
    // Serializing plain structs to a Vec cannot fail.
    serde_json::to_vec(&stored).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Option<Vec<TicketKey>> {
    let stored: Stored = serde_json::from_slice(bytes).ok()?;
    stored
        .keys
        .into_iter()
        .map(|k| {
            Some(TicketKey {
                id: k.id,
                secret: crate::hex::decode_32(&k.secret)?,
                created: k.created,
            })
        })
        .collect()
}

/// The set in a sealed value, or None (logged) when it does not open or parse.
fn open(member: &Member, sealed: &[u8]) -> Option<Vec<TicketKey>> {
    let set = open_with(&member.key, &member.store.key(&set_key()), sealed);
    if set.is_none() {
        tracing::error!("cluster: the stored ticket keys do not open with this node's key, or do not parse; keeping the current ones");
    }
    set
}

/// The set sealed at the etcd key `at`, if `key` opens it and it parses.
pub(super) fn open_with(
    key: &crate::store::ClusterKey,
    at: &str,
    sealed: &[u8],
) -> Option<Vec<TicketKey>> {
    key.open(at, sealed)
        .ok()
        .and_then(|plain| decode(&plain))
        .filter(|set| !set.is_empty())
}

fn install(member: &Member, set: Vec<TicketKey>) {
    let generation = set.first().map_or(0, |k| k.id);
    if member.shared.tickets.set() == set {
        return;
    }
    member.shared.tickets.install(set);
    tracing::info!(generation, "cluster: session ticket keys installed");
}

/// Installs the local copy, if there is one that opens.
pub(super) fn install_local_copy(member: &Member) {
    if let Some(set) = member.local_copy(NAME).and_then(|s| open(member, &s)) {
        install(member, set);
    }
}

/// Every node: reads the set and installs it, then installs every change. After etcd was
/// away the watch resumes from the last revision seen, or reads the set again when etcd
/// compacted that revision away (`store::Follow`).
pub(super) async fn follow(member: Arc<Member>) {
    let mut backoff = Backoff::new();
    member.wait_for_the_fleets_key().await;
    let mut follow = Follow::new(NAME);
    loop {
        let changes = match follow.next(&member.store).await {
            Ok(Followed::Listing(listing)) => listing
                .items
                .into_iter()
                .map(|(name, value)| Change::Put { name, value })
                .collect(),
            Ok(Followed::Changes(changes)) => changes,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: watching the ticket keys stopped; retrying");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        member.saw(follow.revision());
        for change in changes {
            match change {
                Change::Put { name, value } if name == SET => apply(&member, &value),
                _ => {}
            }
        }
    }
}

fn apply(member: &Member, sealed: &[u8]) {
    if let Some(set) = open(member, sealed) {
        install(member, set);
        member.keep_local_copy(NAME, sealed);
    }
}

/// Every node campaigns; the one holding the lock rotates.
pub(super) async fn rotate(member: Arc<Member>) {
    let mut backoff = Backoff::new();
    member.wait_for_the_fleets_key().await;
    loop {
        match member
            .store
            .lock(NAME, LOCK_TTL, Duration::from_secs(30))
            .await
        {
            Ok(Some(held)) => {
                tracing::info!(node = %member.name, "cluster: this node rotates the session ticket keys");
                backoff.reset();
                while held.is_renewed() {
                    match rotate_if_due(&member, &held).await {
                        Ok(wait) => tokio::time::sleep(wait.min(Duration::from_secs(5))).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster: rotating the ticket keys failed; retrying");
                            backoff.wait().await;
                        }
                    }
                }
                tracing::warn!(node = %member.name, "cluster: the ticket-key lock was lost (etcd unreachable?); campaigning again");
            }
            // Another node holds it; ask again.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot campaign for the ticket-key lock; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Rotates the stored set if its newest key is due (or there is none); how long until
/// the next rotation is due.
async fn rotate_if_due(member: &Member, held: &Held) -> Result<Duration, crate::store::StoreError> {
    let now = crate::runtime::unix_now();
    let stored = member.store.get(&set_key()).await?;
    let current = match &stored {
        Some(sealed) => match open(member, sealed) {
            Some(set) => set,
            // Not ours to repair: a value that does not open stays until an operator looks.
            None => return Ok(Duration::from_secs(30)),
        },
        None => Vec::new(),
    };
    let age = current
        .first()
        .map_or(i64::MAX, |k| now.saturating_sub(k.created));
    let rotation = i64::try_from(ROTATION.as_secs()).unwrap_or(i64::MAX);
    if age < rotation {
        return Ok(Duration::from_secs(
            u64::try_from(rotation - age).unwrap_or(0),
        ));
    }
    let next = next_set(&current, now);
    let generation = next.first().map_or(0, |k| k.id);
    let at = member.store.key(&set_key());
    let sealed = member.key.seal(&at, &encode(&next));
    // Only while the lock is this node's: one that lost it (etcd away longer than the
    // lock's TTL) must not overwrite the set of the node that holds it now.
    if !held.put_all_if_held(&[(&set_key(), &sealed)]).await? {
        tracing::warn!(node = %member.name, "cluster: the ticket-key lock was lost before the new key was stored; the node that holds it rotates");
        return Ok(Duration::from_secs(5));
    }
    tracing::info!(
        generation,
        "cluster: new session ticket key made for the fleet"
    );
    Ok(ROTATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_reads_back_as_written_and_garbage_does_not_read() {
        let set = next_set(&next_set(&[], 5), 10);
        assert_eq!(decode(&encode(&set)), Some(set));
        assert_eq!(decode(b"{}"), None);
        assert_eq!(
            decode(br#"{"keys":[{"id":1,"secret":"00","created":0}]}"#),
            None
        );
        assert_eq!(decode(b"not json"), None);
    }
}
