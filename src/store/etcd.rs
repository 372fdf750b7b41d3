//! The fleet's store in etcd (crate `etcd-client`): keys under the cluster's prefix, listed
//! and watched by folder, and locks that end with their holder (a lease with a TTL that the
//! holder keeps alive; a holder that dies stops renewing it and etcd drops the lock).
//!
//! Every call has a deadline: an etcd that is gone is an error naming the members tried,
//! never a wait without end. What the callers do about it (serve what they last saw, retry
//! with backoff) is theirs.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, LockOptions,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
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

    /// [`Etcd::put_all`] only if `guard` still holds `expected` (None: is absent), in one
    /// transaction: whether it wrote. (A retry after an answer was lost says false: the
    /// caller reads again.) A compare-and-swap for writers that count, like the pushed
    /// configuration's version.
    pub async fn put_all_if(
        &self,
        guard: &str,
        expected: Option<&[u8]>,
        items: &[(&str, &[u8])],
    ) -> Result<bool, StoreError> {
        let at = self.key(guard);
        let r = self
            .retrying(|| {
                let compare = match expected {
                    None => Compare::create_revision(at.clone(), CompareOp::Equal, 0),
                    Some(v) => Compare::value(at.clone(), CompareOp::Equal, v.to_vec()),
                };
                let ops = items
                    .iter()
                    .map(|(name, value)| TxnOp::put(self.key(name), value.to_vec(), None))
                    .collect::<Vec<_>>();
                let mut kv = self.client.kv_client();
                async move { kv.txn(Txn::new().when(vec![compare]).and_then(ops)).await }
            })
            .await?;
        Ok(r.succeeded())
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
        let period = Duration::from_secs(u64::try_from(ttl_s).unwrap_or(u64::MAX) / 3)
            .max(Duration::from_millis(500));
        let keep = move |store: Etcd| async move {
            store
                .retrying(|| {
                    let mut lease = store.client.lease_client();
                    async move { lease.keep_alive(id).await }
                })
                .await
        };
        let (mut keeper, mut answers) = keep(self.clone()).await?;
        let store = self.clone();
        let renew = tokio::spawn(async move {
            // When the member renewing it goes away, another one takes over, for as long
            // as the lease can still be alive (its TTL since the last renewal etcd
            // confirmed): one member down must not end a lock.
            let mut renewed = tokio::time::Instant::now();
            loop {
                let answer = match keeper.keep_alive().await {
                    Ok(()) => tokio::time::timeout(ATTEMPT_TIMEOUT * 2, answers.message()).await,
                    Err(e) => Ok(Err(e)),
                };
                match answer {
                    Ok(Ok(Some(a))) if a.ttl() > 0 => {
                        renewed = tokio::time::Instant::now();
                        tokio::time::sleep(period).await;
                        continue;
                    }
                    // The lease is gone, and with it what hangs on it.
                    Ok(Ok(Some(_))) => return,
                    // The stream ended or failed, or the member did not answer in time.
                    _ => {}
                }
                loop {
                    if renewed.elapsed() >= ttl {
                        return;
                    }
                    match keep(store.clone()).await {
                        Ok((k, a)) => {
                            (keeper, answers) = (k, a);
                            break;
                        }
                        Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
                    }
                }
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
        let key = self.key(&format!("locks/{name}"));
        // A request to a member that went away fails at once: the next try goes to another
        // one. Trying again on the same lease is safe: etcd keeps one waiter per lease.
        let start = tokio::time::Instant::now();
        let taken = loop {
            let left = wait.saturating_sub(start.elapsed());
            let mut locks = self.client.lock_client();
            let options = LockOptions::new().with_lease(lease.id);
            match tokio::time::timeout(left, locks.lock(key.clone(), Some(options))).await {
                Ok(Err(e)) if start.elapsed() + RETRY_PAUSE < wait && lease.is_alive() => {
                    tracing::debug!(error = %e, lock = name, "etcd: taking the lock failed; trying another member");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => break other,
            }
        };
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
        // Sent twice, the second says the lease is not found: ended either way.
        let id = self.id;
        self.store
            .retrying(|| {
                let mut lease = self.store.client.lease_client();
                async move {
                    match lease.revoke(id).await {
                        Err(etcd_client::Error::GRpcStatus(s))
                            if s.message().contains("lease not found") =>
                        {
                            Ok(())
                        }
                        r => r.map(|_| ()),
                    }
                }
            })
            .await
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
            let events = r.events();
            if events.is_empty() {
                // A progress notification says the watch has seen everything up to its
                // header's revision. The creation's header is the store's revision when
                // the watch was made, which a watch that starts further back has not seen
                // yet: it moves nothing.
                if let (false, Some(h)) = (r.created(), r.header()) {
                    self.revision = self.revision.max(h.revision());
                }
                continue;
            }
            let mut changes = Vec::with_capacity(events.len());
            for e in events {
                let Some(kv) = e.kv() else { continue };
                // The events' own revisions, not the header's: a watch catching up may be
                // sent a batch whose header is already past its last event.
                self.revision = self.revision.max(kv.mod_revision());
                let name = kv
                    .key()
                    .strip_prefix(self.folder.as_bytes())
                    .unwrap_or(kv.key());
                let name = String::from_utf8_lossy(name).into_owned();
                // A deletion leaves a key at version 0; a put, 1 and up. (Not
                // `Event::event_type`, which panics on a type it does not know.)
                changes.push(if kv.version() == 0 {
                    Change::Delete { name }
                } else {
                    Change::Put {
                        name,
                        value: kv.value().to_vec(),
                    }
                });
            }
            if !changes.is_empty() {
                return Ok(changes);
            }
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
        // Unlocking twice is harmless (the second finds no key).
        let unlocked = store
            .retrying(|| {
                let mut locks = store.client.lock_client();
                let key = self.key.clone();
                async move { locks.unlock(key).await }
            })
            .await;
        let revoked = self.lease.revoke().await;
        unlocked?;
        revoked
    }

    /// Writes `value` at `name` on this lock's lease: etcd removes it when the lock ends,
    /// whether it is released or its holder dies. The store's revision after the write.
    pub async fn put(&self, name: &str, value: &[u8]) -> Result<i64, StoreError> {
        self.lease.store.put_leased(name, value, &self.lease).await
    }

    /// Whether the lease is still being renewed (false once etcd said it is gone).
    pub fn is_renewed(&self) -> bool {
        self.lease.is_alive()
    }

    /// Writes every `(name, value)` in one transaction, only if this lock is still held:
    /// etcd compares the lock's key with this lease, so a holder whose lease ended (etcd
    /// away longer than the TTL, a long pause) and whose lock another node may hold now
    /// writes nothing. Whether it wrote (false: the lock is lost, nothing was written).
    pub async fn put_all_if_held(&self, items: &[(&str, &[u8])]) -> Result<bool, StoreError> {
        let store = &self.lease.store;
        let r = store
            .retrying(|| {
                let ops = items
                    .iter()
                    .map(|(name, value)| TxnOp::put(store.key(name), value.to_vec(), None))
                    .collect::<Vec<_>>();
                let held = Compare::lease(self.key.clone(), CompareOp::Equal, self.lease.id);
                let mut kv = store.client.kv_client();
                async move { kv.txn(Txn::new().when(vec![held]).and_then(ops)).await }
            })
            .await?;
        Ok(r.succeeded())
    }
}

/// Follows a folder: its listing, then its changes. After an error the watch resumes from
/// the last revision it saw, so nothing is missed or repeated; when etcd has compacted that
/// revision away (or at the start), the folder is listed again. The caller gets either a
/// whole listing (reconcile: what it has that is not listed is gone) or changes.
pub struct Follow {
    dir: String,
    /// The last revision seen; None: list first.
    revision: Option<i64>,
    watch: Option<Watch>,
}

/// What [`Follow::next`] found.
#[derive(Debug)]
pub enum Followed {
    /// The folder read whole (at the start, or after a compaction).
    Listing(Listing),
    /// What changed since the last answer.
    Changes(Vec<Change>),
}

impl Follow {
    pub fn new(dir: &str) -> Follow {
        Follow {
            dir: dir.to_string(),
            revision: None,
            watch: None,
        }
    }

    /// The last revision seen (0 before the first listing).
    pub fn revision(&self) -> i64 {
        match (&self.watch, self.revision) {
            (Some(w), _) => w.revision(),
            (None, r) => r.unwrap_or(0),
        }
    }

    /// The next listing or changes. An error when etcd does not answer: the caller waits
    /// (backoff) and calls again, which resumes where this one stopped.
    pub async fn next(&mut self, store: &Etcd) -> Result<Followed, StoreError> {
        loop {
            let Some(revision) = self.revision else {
                let listing = store.list(&self.dir).await?;
                self.revision = Some(listing.revision);
                return Ok(Followed::Listing(listing));
            };
            let watch = match &mut self.watch {
                Some(w) => w,
                None => self.watch.insert(store.watch(&self.dir, revision).await?),
            };
            match watch.next().await {
                Ok(changes) => {
                    self.revision = Some(watch.revision());
                    return Ok(Followed::Changes(changes));
                }
                Err(StoreError::Compacted { compacted }) => {
                    tracing::info!(
                        folder = %store.key(&self.dir),
                        revision = watch.revision(),
                        compacted,
                        "etcd compacted its history past this node's watch; reading the folder again"
                    );
                    self.watch = None;
                    self.revision = None;
                }
                Err(e) => {
                    self.revision = Some(watch.revision());
                    self.watch = None;
                    return Err(e);
                }
            }
        }
    }
}
