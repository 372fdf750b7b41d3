//! The fleet's store in etcd (crate `etcd-client`): keys under the cluster's prefix, listed
//! and watched by folder, and locks that end with their holder (a lease with a TTL that the
//! holder keeps alive; a holder that dies stops renewing it and etcd drops the lock).
//!
//! Every call has a deadline: an etcd that is gone is an error naming the members tried,
//! never a wait without end. What the callers do about it (serve what they last saw, retry
//! with backoff) is theirs.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    LockOptions, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};

use crate::config::Cluster;

/// For a connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// For one request (not for waiting on a lock, or on a watch).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd ({endpoints}) did not answer: {source}")]
    Unavailable {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("etcd ({endpoints}) did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    TimedOut { endpoints: String },
    #[error("cannot read the etcd TLS file {}: {source}", path.display())]
    TlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A watch asked to resume from a revision etcd has compacted away: the caller lists
    /// the folder again and watches from the listing's revision.
    #[error(
        "etcd has compacted the history up to revision {compacted}; the folder must be read again"
    )]
    Compacted { compacted: i64 },
    #[error("etcd ended the watch: {reason}")]
    WatchEnded { reason: String },
}

/// A folder's keys and values at one revision.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Each key's name inside the folder (`a.pem` for `PREFIX/certs/a.pem`), in key order.
    pub items: Vec<(String, Vec<u8>)>,
    /// The store's revision when it was read: watch from `revision + 1` to miss nothing.
    pub revision: i64,
}

/// One change in a watched folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put { name: String, value: Vec<u8> },
    Delete { name: String },
}

/// The fleet's store in etcd.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    prefix: String,
    endpoints: String,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Etcd {
    /// A client for the cluster's members. Connecting is lazy: a member that is down now
    /// is an error of the first call, and the client uses any member that answers.
    pub async fn connect(cluster: &Cluster) -> Result<Etcd, StoreError> {
        let endpoints = cluster.etcd.join(", ");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some(tls) = &cluster.tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|source| StoreError::TlsFile {
                    path: path.to_path_buf(),
                    source,
                })
            };
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
            if let Some(client) = &tls.client {
                t = t.identity(Identity::from_pem(read(&client.cert)?, read(&client.key)?));
            }
            options = options.with_tls(t);
        }
        let client = Client::connect(&cluster.etcd, Some(options))
            .await
            .map_err(|source| StoreError::Unavailable {
                endpoints: endpoints.clone(),
                source,
            })?;
        Ok(Etcd {
            client,
            prefix: cluster.prefix.clone(),
            endpoints,
        })
    }

    /// The full etcd key of `name` (a path under the prefix: `certs/a.pem`).
    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    fn unavailable(&self, source: etcd_client::Error) -> StoreError {
        StoreError::Unavailable {
            endpoints: self.endpoints.clone(),
            source,
        }
    }

    async fn deadline<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| self.unavailable(e)),
            Err(_) => Err(StoreError::TimedOut {
                endpoints: self.endpoints.clone(),
            }),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut kv = self.client.kv_client();
        let r = self.deadline(kv.get(self.key(name), None)).await?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Writes `value` at `name`; the store's revision after the write.
    pub async fn put(&self, name: &str, value: &[u8]) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let r = self
            .deadline(kv.put(self.key(name), value.to_vec(), None))
            .await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Writes `value` at `name` unless something is there already (in one transaction, so
    /// of several nodes trying at once exactly one writes); whether this call wrote it.
    pub async fn put_if_absent(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let key = self.key(name);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key, value.to_vec(), None)]);
        let mut kv = self.client.kv_client();
        Ok(self.deadline(kv.txn(txn)).await?.succeeded())
    }

    /// Writes every `(name, value)` in one transaction: a watcher sees them all in one
    /// revision, never some without the others (a certificate without its key).
    pub async fn put_all(&self, items: &[(&str, &[u8])]) -> Result<i64, StoreError> {
        let ops = items
            .iter()
            .map(|(name, value)| TxnOp::put(self.key(name), value.to_vec(), None))
            .collect::<Vec<_>>();
        let mut kv = self.client.kv_client();
        let r = self.deadline(kv.txn(Txn::new().and_then(ops))).await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Removes `name`; whether it was there.
    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let mut kv = self.client.kv_client();
        let r = self.deadline(kv.delete(self.key(name), None)).await?;
        Ok(r.deleted() > 0)
    }

    /// Every key in the folder `dir` (and below it), at one revision.
    pub async fn list(&self, dir: &str) -> Result<Listing, StoreError> {
        let folder = self.key(&format!("{dir}/"));
        let mut kv = self.client.kv_client();
        let r = self
            .deadline(kv.get(folder.clone(), Some(GetOptions::new().with_prefix())))
            .await?;
        let items = r
            .kvs()
            .iter()
            .map(|kv| {
                let name = kv.key().strip_prefix(folder.as_bytes()).unwrap_or(kv.key());
                (
                    String::from_utf8_lossy(name).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        Ok(Listing {
            items,
            revision: r.header().map_or(0, |h| h.revision()),
        })
    }

    /// Watches the folder `dir` for changes after `revision` (a listing's), so that a
    /// listing and then a watch miss nothing and repeat nothing.
    pub async fn watch(&self, dir: &str, revision: i64) -> Result<Watch, StoreError> {
        let folder = self.key(&format!("{dir}/"));
        let mut client = self.client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_progress_notify();
        let stream = self
            .deadline(client.watch(folder.clone(), Some(options)))
            .await?;
        Ok(Watch {
            stream,
            folder,
            revision,
            store: self.clone(),
        })
    }

    /// Takes the fleet-wide lock `name`, waiting up to `wait` for it. The lock is held
    /// until [`Held::release`], or until this process stops renewing it: `ttl` after it
    /// dies (or loses etcd), another node gets it. None when `wait` passed first.
    pub async fn lock(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Held>, StoreError> {
        let ttl_s = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        let mut lease = self.client.lease_client();
        let granted = self.deadline(lease.grant(ttl_s, None)).await?;
        let id = granted.id();
        let (mut keeper, mut answers) = self.deadline(lease.keep_alive(id)).await?;
        // Renew at a third of the TTL, so two renewals may be lost before the lock ends.
        let period = Duration::from_secs(u64::try_from(ttl_s).unwrap_or(u64::MAX) / 3)
            .max(Duration::from_millis(500));
        let renew = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                match answers.message().await {
                    Ok(Some(a)) if a.ttl() > 0 => {}
                    // The lease is gone: so is the lock.
                    _ => return,
                }
                tokio::time::sleep(period).await;
            }
        });
        let mut locks = self.client.lock_client();
        let key = self.key(&format!("locks/{name}"));
        let taken = tokio::time::timeout(
            wait,
            locks.lock(key, Some(LockOptions::new().with_lease(id))),
        )
        .await;
        let held = match taken {
            Ok(Ok(r)) => Some(Held {
                key: r.key().to_vec(),
                lease: id,
                renew,
                store: self.clone(),
            }),
            Ok(Err(e)) => {
                renew.abort();
                let _ = lease.revoke(id).await;
                return Err(self.unavailable(e));
            }
            Err(_) => {
                renew.abort();
                let _ = self.deadline(lease.revoke(id)).await;
                None
            }
        };
        Ok(held)
    }
}

/// A watch on one folder.
pub struct Watch {
    stream: etcd_client::WatchStream,
    folder: String,
    /// The last revision seen: where a new watch resumes after an error.
    revision: i64,
    store: Etcd,
}

impl Watch {
    /// The next changes (one etcd revision's, possibly several keys); an error when etcd
    /// went away or compacted past this watch's revision.
    pub async fn next(&mut self) -> Result<Vec<Change>, StoreError> {
        loop {
            let message = self.stream.message().await;
            let r = match message {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return Err(StoreError::WatchEnded {
                        reason: "the stream closed".to_string(),
                    })
                }
                Err(e) => return Err(self.store.unavailable(e)),
            };
            if r.compact_revision() > 0 {
                return Err(StoreError::Compacted {
                    compacted: r.compact_revision(),
                });
            }
            if r.canceled() {
                return Err(StoreError::WatchEnded {
                    reason: r.cancel_reason().to_string(),
                });
            }
            if let Some(h) = r.header() {
                self.revision = self.revision.max(h.revision());
            }
            let changes: Vec<Change> = r
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let name = kv
                        .key()
                        .strip_prefix(self.folder.as_bytes())
                        .unwrap_or(kv.key());
                    let name = String::from_utf8_lossy(name).into_owned();
                    Some(match e.event_type() {
                        EventType::Put => Change::Put {
                            name,
                            value: kv.value().to_vec(),
                        },
                        EventType::Delete => Change::Delete { name },
                    })
                })
                .collect();
            if !changes.is_empty() {
                return Ok(changes);
            }
            // A progress notification or the watch's creation: nothing changed.
        }
    }

    /// The last revision this watch has seen.
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

/// A fleet-wide lock, held while its lease is renewed.
pub struct Held {
    key: Vec<u8>,
    lease: i64,
    renew: tokio::task::JoinHandle<()>,
    store: Etcd,
}

impl Held {
    /// Lets go of the lock now (a holder that dies lets go when its lease ends).
    pub async fn release(self) -> Result<(), StoreError> {
        self.renew.abort();
        let mut locks = self.store.client.lock_client();
        let unlocked = self.store.deadline(locks.unlock(self.key.clone())).await;
        let mut lease = self.store.client.lease_client();
        let revoked = self.store.deadline(lease.revoke(self.lease)).await;
        unlocked?;
        revoked.map(|_| ())
    }

    /// Writes `value` at `name` on this lock's lease: etcd removes it when the lock ends,
    /// whether it is released or its holder dies.
    pub async fn put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut kv = self.store.client.kv_client();
        let options = PutOptions::new().with_lease(self.lease);
        self.store
            .deadline(kv.put(self.store.key(name), value.to_vec(), Some(options)))
            .await
            .map(|_| ())
    }

    /// Whether the lease is still being renewed (false once etcd said it is gone).
    pub fn is_renewed(&self) -> bool {
        !self.renew.is_finished()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Dropped without release: stop renewing; etcd ends the lock when the TTL runs out.
        self.renew.abort();
    }
}
