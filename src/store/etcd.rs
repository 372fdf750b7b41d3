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
/// For one request, its retries included (not for waiting on a lock, or on a watch).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// For one try of a request: a try routed to a member that just died can hang until the
/// connection is given up, while the other members answer in milliseconds.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Between two tries of a request.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

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
    /// This node's name, written where it holds a lock.
    node: String,
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
            node: cluster.node.clone(),
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

    /// Runs `call` until it succeeds, each try for at most [`ATTEMPT_TIMEOUT`] and all of
    /// them for at most [`REQUEST_TIMEOUT`], then answers the last error. A member that just died fails the request routed to it (a broken
    /// pipe), and the next attempt goes to a member that answers: one member down must
    /// change nothing. Only for requests that may be sent twice.
    async fn retrying<T, F>(&self, mut call: impl FnMut() -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let start = tokio::time::Instant::now();
        let mut last = None;
        loop {
            let left = REQUEST_TIMEOUT.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), call()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => last = Some(e),
                // An attempt stuck on a member that went away: the next may go elsewhere.
                Err(_) => {}
            }
            tokio::time::sleep(RETRY_PAUSE.min(REQUEST_TIMEOUT.saturating_sub(start.elapsed())))
                .await;
        }
        Err(match last {
            Some(e) => self.unavailable(e),
            None => StoreError::TimedOut {
                endpoints: self.endpoints.clone(),
            },
        })
    }

    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(name);
        let r = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Writes `value` at `name`; the store's revision after the write.
    pub async fn put(&self, name: &str, value: &[u8]) -> Result<i64, StoreError> {
        let key = self.key(name);
        let r = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let (key, value) = (key.clone(), value.to_vec());
                async move { kv.put(key, value, None).await }
            })
            .await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Writes `value` at `name` unless something is there already (in one transaction, so
    /// of several nodes trying at once exactly one writes); whether this call wrote it. (A
    /// retry after an answer was lost says false: the caller reads what is there.)
    pub async fn put_if_absent(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let key = self.key(name);
        let r = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(key.clone(), value.to_vec(), None)]);
                async move { kv.txn(txn).await }
            })
            .await?;
        Ok(r.succeeded())
    }

    /// Writes every `(name, value)` in one transaction: a watcher sees them all in one
    /// revision, never some without the others (a certificate without its key).
    pub async fn put_all(&self, items: &[(&str, &[u8])]) -> Result<i64, StoreError> {
        let r = self
            .retrying(|| {
                let ops = items
                    .iter()
                    .map(|(name, value)| TxnOp::put(self.key(name), value.to_vec(), None))
                    .collect::<Vec<_>>();
                let mut kv = self.client.kv_client();
                async move { kv.txn(Txn::new().and_then(ops)).await }
            })
            .await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Writes every `(name, value)` in one transaction if none of the names exists yet;
    /// whether this call wrote them (false: at least one was there, and nothing was
    /// written). As with [`Etcd::put_if_absent`], a retry after a lost answer says false.
    pub async fn put_all_if_absent(&self, items: &[(&str, &[u8])]) -> Result<bool, StoreError> {
        let r = self
            .retrying(|| {
                let when = items
                    .iter()
                    .map(|(name, _)| Compare::create_revision(self.key(name), CompareOp::Equal, 0))
                    .collect::<Vec<_>>();
                let ops = items
                    .iter()
                    .map(|(name, value)| TxnOp::put(self.key(name), value.to_vec(), None))
                    .collect::<Vec<_>>();
                let mut kv = self.client.kv_client();
                async move { kv.txn(Txn::new().when(when).and_then(ops)).await }
            })
            .await?;
        Ok(r.succeeded())
    }

    /// Removes every name in one transaction (a watcher sees them go in one revision); the
    /// store's revision after it.
    pub async fn delete_all(&self, names: &[&str]) -> Result<i64, StoreError> {
        let r = self
            .retrying(|| {
                let ops = names
                    .iter()
                    .map(|name| TxnOp::delete(self.key(name), None))
                    .collect::<Vec<_>>();
                let mut kv = self.client.kv_client();
                async move { kv.txn(Txn::new().and_then(ops)).await }
            })
            .await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Removes `name`; whether it was there.
    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let key = self.key(name);
        let r = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let key = key.clone();
                async move { kv.delete(key, None).await }
            })
            .await?;
        Ok(r.deleted() > 0)
    }

    /// Every key in the folder `dir` (and below it), at one revision.
    pub async fn list(&self, dir: &str) -> Result<Listing, StoreError> {
        let folder = self.key(&format!("{dir}/"));
        let r = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let folder = folder.clone();
                async move { kv.get(folder, Some(GetOptions::new().with_prefix())).await }
            })
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

    /// [`Etcd::list`] in pages of `page` keys, all read at the revision of the first, so
    /// that a folder larger than one gRPC message (4 MiB) is read whole and consistent.
    /// Also the etcd cluster's id, which tells one etcd cluster from another (a new one
    /// made under the same prefix, say).
    pub async fn list_paged(&self, dir: &str, page: i64) -> Result<(Listing, u64), StoreError> {
        let folder = self.key(&format!("{dir}/"));
        // The end of the folder's range: the prefix with its last byte incremented ('/'
        // becomes '0').
        let mut end = folder.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut items = Vec::new();
        let (mut revision, mut cluster_id) = (0, 0);
        let mut from = folder.clone().into_bytes();
        loop {
            let r = self
                .retrying(|| {
                    let mut kv = self.client.kv_client();
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_limit(page)
                        .with_revision(revision);
                    let from = from.clone();
                    async move { kv.get(from, Some(options)).await }
                })
                .await?;
            if let Some(h) = r.header() {
                if revision == 0 {
                    revision = h.revision();
                }
                cluster_id = h.cluster_id();
            }
            for kv in r.kvs() {
                let name = kv.key().strip_prefix(folder.as_bytes()).unwrap_or(kv.key());
                items.push((
                    String::from_utf8_lossy(name).into_owned(),
                    kv.value().to_vec(),
                ));
            }
            match r.kvs().last() {
                Some(last) if r.more() => {
                    // The next key after the last one read.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok((Listing { items, revision }, cluster_id))
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

    /// A lease of `ttl` that this process renews (at a third of the TTL) until it is
    /// dropped or revoked: what is written with it, and the locks taken on it, end `ttl`
    /// after this process stops renewing it (it died, or lost etcd).
    pub async fn lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let ttl_s = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        // A grant sent twice leaves an unused lease, which ends with its TTL.
        let id = self
            .retrying(|| {
                let mut lease = self.client.lease_client();
                async move { lease.grant(ttl_s, None).await }
            })
            .await?
            .id();
        let (mut keeper, mut answers) = self
            .retrying(|| {
                let mut lease = self.client.lease_client();
                async move { lease.keep_alive(id).await }
            })
            .await?;
        let period = Duration::from_secs(u64::try_from(ttl_s).unwrap_or(u64::MAX) / 3)
            .max(Duration::from_millis(500));
        let renew = tokio::spawn(async move {
            loop {
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                match answers.message().await {
                    Ok(Some(a)) if a.ttl() > 0 => {}
                    // The lease is gone, and with it what hangs on it.
                    _ => return,
                }
                tokio::time::sleep(period).await;
            }
        });
        Ok(Lease {
            id,
            renew,
            store: self.clone(),
        })
    }

    /// Writes `value` at `name` for as long as `lease` lives.
    pub async fn put_leased(
        &self,
        name: &str,
        value: &[u8],
        lease: &Lease,
    ) -> Result<i64, StoreError> {
        let key = self.key(name);
        let r = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let (key, value) = (key.clone(), value.to_vec());
                let options = PutOptions::new().with_lease(lease.id);
                async move { kv.put(key, value, Some(options)).await }
            })
            .await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Takes the fleet-wide lock `name`, waiting up to `wait` for it. The lock is held
    /// until [`Held::release`], or until this process stops renewing it: `ttl` after it
    /// dies (or loses etcd), another node gets it. None when `wait` passed first. While it
    /// is held, `PREFIX/holders/NAME` names this node (for `portico cluster status`).
    pub async fn lock(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Held>, StoreError> {
        let lease = self.lease(ttl).await?;
        let mut locks = self.client.lock_client();
        let key = self.key(&format!("locks/{name}"));
        let taken = tokio::time::timeout(
            wait,
            locks.lock(key, Some(LockOptions::new().with_lease(lease.id))),
        )
        .await;
        match taken {
            Ok(Ok(r)) => {
                let holder = format!("holders/{name}");
                // Only for people: the lock is held whether or not this is written.
                if let Err(e) = self.put_leased(&holder, self.node.as_bytes(), &lease).await {
                    tracing::debug!(error = %e, lock = name, "cannot record the lock's holder");
                }
                Ok(Some(Held {
                    key: r.key().to_vec(),
                    holder,
                    lease,
                }))
            }
            Ok(Err(e)) => {
                let _ = lease.revoke().await;
                Err(self.unavailable(e))
            }
            Err(_) => {
                let _ = lease.revoke().await;
                Ok(None)
            }
        }
    }

    /// The etcd cluster's members: name and client URLs, as etcd lists them.
    pub async fn members(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let r = self
            .retrying(|| {
                let mut client = self.client.cluster_client();
                async move { client.member_list().await }
            })
            .await?;
        Ok(r.members()
            .iter()
            .map(|m| (m.name().to_string(), m.client_urls().to_vec()))
            .collect())
    }
}

/// A lease this process renews; see [`Etcd::lease`].
pub struct Lease {
    id: i64,
    renew: tokio::task::JoinHandle<()>,
    store: Etcd,
}

impl Lease {
    /// Whether it is still renewed (false once etcd said it is gone, or could not be told).
    pub fn is_alive(&self) -> bool {
        !self.renew.is_finished()
    }

    /// Ends it now, and with it what hangs on it.
    pub async fn revoke(self) -> Result<(), StoreError> {
        self.renew.abort();
        let mut lease = self.store.client.lease_client();
        self.store.deadline(lease.revoke(self.id)).await.map(|_| ())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Not revoked: stop renewing, and etcd ends it when its TTL runs out.
        self.renew.abort();
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
    /// Where this node is named as the holder.
    holder: String,
    lease: Lease,
}

impl Held {
    /// Lets go of the lock now (a holder that dies lets go when its lease ends).
    pub async fn release(self) -> Result<(), StoreError> {
        let store = self.lease.store.clone();
        let _ = store.delete(&self.holder).await;
        let mut locks = store.client.lock_client();
        let unlocked = store.deadline(locks.unlock(self.key.clone())).await;
        let revoked = self.lease.revoke().await;
        unlocked?;
        revoked
    }

    /// Writes `value` at `name` on this lock's lease: etcd removes it when the lock ends,
    /// whether it is released or its holder dies.
    pub async fn put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lease
            .store
            .put_leased(name, value, &self.lease)
            .await
            .map(|_| ())
    }

    /// Whether the lease is still being renewed (false once etcd said it is gone).
    pub fn is_renewed(&self) -> bool {
        self.lease.is_alive()
    }
}
