//! ACME for a fleet: one order per site, fleet-wide, and every node serving its result.
//!
//! The site tasks of `acme/manager.rs` still run on every node (so any node can take over)
//! and still decide when a certificate is due; with `[cluster]` they ask [`Fleet`] before
//! ordering. The one holding the site's fleet lock (`locks/acme/<directory>/<site>`, on a
//! lease with a [`ORDER_LOCK_TTL`] TTL that its holder renews) orders; the others wait.
//! Under `PREFIX/acme/`:
//!
//! - `accounts/<directory>`: the account's credentials, sealed; made once, under the lock
//!   `acme-accounts/<directory>`;
//! - `certs/<directory>/<site>.pem` and `.key` (sealed), written in one transaction;
//! - `status/<directory>/<site>`: the holder's status of the site (public);
//! - `challenges/http/<token>` and `challenges/alpn/<host>`: the answers of the order in
//!   progress (the key authorization; the key authorization's digest, from which each node
//!   makes its own TLS-ALPN-01 certificate), sealed, written on the holder's lease so they
//!   end with it.
//!
//! Every node watches `PREFIX/acme/`: it answers the challenges the holder published (the
//! CA may connect to any node), and writes each new certificate into its own
//! `state_dir/acme/<directory>/` files and tells the serve loop, exactly as a local order
//! does. Those files serve while etcd is away. Nothing here is on the handshake path.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::Account;
use tokio::sync::mpsc::UnboundedSender;

use super::{Backoff, Member};
use crate::acme::status::Status;
use crate::acme::{AcmeError, Challenges};
use crate::config::{Acme, CertFiles};
use crate::store::{Change, Follow, Followed, Held, Listing, SealError, StoreError};

/// The folder of everything ACME in the store.
const FOLDER: &str = "acme";
/// How long a dead holder keeps a site's order lock.
pub const ORDER_LOCK_TTL: Duration = Duration::from_secs(15);
/// How long a task waits for the lock before it looks at its certificate again.
const ORDER_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long the holder waits at most for the other nodes to confirm that they see a
/// challenge answer (their records' synced revision, written every 5 s, reaching the
/// answer's) before it tells the CA to validate anyway: a node whose watch is still
/// catching up after etcd was away would fail the CA's connection to it.
const ANSWER_WAIT: Duration = Duration::from_secs(20);
/// How often the holder reads the records while it waits.
const ANSWER_POLL: Duration = Duration::from_millis(500);
/// How often the holder tries to store a new certificate in etcd before it gives up (the
/// certificate is in its own files either way).
const STORE_TRIES: u32 = 5;

/// Why a fleet step failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("this node's cluster key is not confirmed as the fleet's yet (etcd unreachable, or another key file)")]
    NotReady,
    #[error("{key} does not open with this node's cluster key: {source}")]
    Open { key: String, source: SealError },
    #[error("another node holds the fleet lock {name} (waited {} s)", ORDER_LOCK_WAIT.as_secs())]
    Busy { name: String },
    #[error("the fleet's ACME order lock of {site} ended before its certificate was stored (etcd away longer than the lock's {} s TTL?); nothing was written to etcd", ORDER_LOCK_TTL.as_secs())]
    LockLost { site: String },
    #[error("the value at {key} is not usable: {reason}")]
    Invalid { key: String, reason: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] crate::state::WriteError),
}

/// The directory's name in the store: its folder's name in `state_dir/acme`.
fn dir_id(home: &Path) -> String {
    home.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn pem_name(dir: &str, stem: &str) -> String {
    format!("{FOLDER}/certs/{dir}/{stem}.pem")
}

fn key_name(dir: &str, stem: &str) -> String {
    format!("{FOLDER}/certs/{dir}/{stem}.key")
}

fn status_name(dir: &str, stem: &str) -> String {
    format!("{FOLDER}/status/{dir}/{stem}")
}

/// `certs/<directory>/<site>.pem` or `.key` (a name in the folder): the directory and site.
fn cert_of(name: &str) -> Option<(String, String)> {
    let (dir, file) = name.strip_prefix("certs/")?.split_once('/')?;
    let stem = file
        .strip_suffix(".pem")
        .or_else(|| file.strip_suffix(".key"))?;
    (!dir.is_empty() && !stem.is_empty() && !stem.contains('/'))
        .then(|| (dir.to_string(), stem.to_string()))
}

/// This node's side of the fleet's ACME (see the module comment).
pub struct Fleet {
    member: Arc<Member>,
    state_dir: PathBuf,
    challenges: Arc<Challenges>,
    issued: UnboundedSender<String>,
    /// One writer of a site's local files at a time (the watch, or a task after its lock).
    installing: tokio::sync::Mutex<()>,
    /// The sites (file names) whose certificate was installed from the fleet, so the site's
    /// task, asleep until its renewal time, wakes and plans for the new one.
    installed: tokio::sync::broadcast::Sender<String>,
}

impl Fleet {
    pub(super) fn new(
        member: Arc<Member>,
        state_dir: &Path,
        issued: UnboundedSender<String>,
    ) -> Fleet {
        Fleet {
            challenges: member.shared.challenges.clone(),
            member,
            state_dir: state_dir.to_path_buf(),
            issued,
            installing: tokio::sync::Mutex::new(()),
            installed: tokio::sync::broadcast::Sender::new(64),
        }
    }

    /// Waits until the fleet's certificate for `site` is installed; returns early (a
    /// spurious wake, harmless) when more were installed than could be kept track of.
    /// Installs from the moment of `subscribe` count.
    pub async fn wait_installed(
        mut installed: tokio::sync::broadcast::Receiver<String>,
        site: &str,
    ) {
        let stem = crate::acme::file_stem(site);
        loop {
            match installed.recv().await {
                Ok(s) if s == stem => return,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                // The fleet is gone: nothing more will come.
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    }

    /// Subscribes to the installs [`Fleet::wait_installed`] waits for.
    pub fn installed(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.installed.subscribe()
    }

    /// This node's name in the fleet.
    pub fn node(&self) -> &str {
        &self.member.name
    }

    fn check_ready(&self) -> Result<(), FleetError> {
        if *self.member.key_confirmed.borrow() {
            Ok(())
        } else {
            Err(FleetError::NotReady)
        }
    }

    /// Waits a while for the key check (a task that starts with the node would otherwise
    /// find it not done yet).
    async fn wait_ready(&self) -> Result<(), FleetError> {
        let confirmed = self.member.wait_for_the_fleets_key();
        if tokio::time::timeout(ORDER_LOCK_WAIT, confirmed)
            .await
            .is_ok()
        {
            Ok(())
        } else {
            Err(FleetError::NotReady)
        }
    }

    fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        self.member.key.seal(&self.member.store.key(name), plain)
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, FleetError> {
        let key = self.member.store.key(name);
        self.member
            .key
            .open(&key, sealed)
            .map_err(|source| FleetError::Open { key, source })
    }

    /// Takes the site's fleet-wide order lock; None when another node held it all the
    /// time this waited.
    pub async fn lock(&self, home: &Path, site: &str) -> Result<Option<OrderLock>, FleetError> {
        self.wait_ready().await?;
        let name = format!("{FOLDER}/{}/{}", dir_id(home), crate::acme::file_stem(site));
        tracing::info!(%site, node = %self.member.name, "cluster: waiting for the fleet's ACME order lock");
        let held = self
            .member
            .store
            .lock(&name, ORDER_LOCK_TTL, ORDER_LOCK_WAIT)
            .await?;
        if held.is_some() {
            tracing::info!(%site, node = %self.member.name, "cluster: this node holds the fleet's ACME order lock");
        }
        Ok(held.map(|held| OrderLock {
            held,
            member: self.member.clone(),
            published: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Brings this node's files of the site's certificate up to what etcd holds (when
    /// etcd's pair is newer) and tells the serve loop; whether it changed anything.
    pub async fn install_stored(&self, home: &Path, site: &str) -> Result<bool, FleetError> {
        self.check_ready()?;
        self.install(&dir_id(home), &crate::acme::file_stem(site))
            .await
    }

    async fn install(&self, dir: &str, stem: &str) -> Result<bool, FleetError> {
        let (pem_at, key_at) = (pem_name(dir, stem), key_name(dir, stem));
        let store = &self.member.store;
        let (Some(pem), Some(sealed)) = (store.get(&pem_at).await?, store.get(&key_at).await?)
        else {
            return Ok(false);
        };
        let key = self.open(&key_at, &sealed)?;
        let _one = self.installing.lock().await;
        let home = self.state_dir.join("acme").join(dir);
        let files = crate::acme::cert_files(&home, stem);
        let stored =
            crate::tls::load::from_pem(&pem, &key, &files).map_err(|e| FleetError::Invalid {
                key: store.key(&pem_at),
                reason: e.to_string(),
            })?;
        let same = |path: &Path, bytes: &[u8]| std::fs::read(path).is_ok_and(|b| b == bytes);
        if same(&files.cert, &pem) && same(&files.key, &key) {
            return Ok(false);
        }
        // Never an older certificate over a newer one (one this node ordered while etcd
        // did not take it, say).
        if let Ok(local) = crate::tls::load::load(&files.cert, &files.key) {
            if local.not_after > stored.not_after {
                tracing::debug!(
                    site = stem,
                    "cluster: this node's ACME certificate is newer than the fleet's; kept"
                );
                return Ok(false);
            }
        }
        crate::state::write_private(&files.key, &key)?;
        crate::state::write_private(&files.cert, &pem)?;
        tracing::info!(site = stem, node = %self.member.name, cert = %files.cert.display(), "cluster: ACME certificate installed from the fleet");
        // The serve loop ended: nobody to tell.
        let _ = self.issued.send(stem.to_string());
        // No task listening is fine.
        let _ = self.installed.send(stem.to_string());
        Ok(true)
    }

    /// [`Fleet::install`], with its failure logged (the watch's use: it goes on).
    async fn install_logged(&self, dir: &str, stem: &str) {
        if let Err(e) = self.install(dir, stem).await {
            tracing::error!(site = stem, error = %e, "cluster: the fleet's ACME certificate cannot be installed; this node keeps what it has");
        }
    }

    /// Stores the pair an order just wrote to `files` in etcd (the key sealed, both in one
    /// transaction), retried a few times while the lock is held. The transaction writes only
    /// while etcd still has this node's lock ([`FleetError::LockLost`] otherwise): a holder
    /// whose lease ended, and whose lock another node may hold now, never overwrites what
    /// that node stores. Its certificate stays in its own files; the site's task tries again
    /// under a new lock, after installing the fleet's if it is newer.
    pub async fn store_issued(
        &self,
        lock: &OrderLock,
        home: &Path,
        site: &str,
        files: &CertFiles,
    ) -> Result<(), FleetError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| FleetError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let (pem, key) = (read(&files.cert)?, read(&files.key)?);
        let (dir, stem) = (dir_id(home), crate::acme::file_stem(site));
        let (pem_at, key_at) = (pem_name(&dir, &stem), key_name(&dir, &stem));
        let sealed = self.seal(&key_at, &key);
        let mut backoff = Backoff::new();
        let mut tries = 1;
        loop {
            match lock
                .held
                .put_all_if_held(&[(&key_at, &sealed), (&pem_at, &pem)])
                .await
            {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    return Err(FleetError::LockLost {
                        site: site.to_string(),
                    })
                }
                Err(e) if tries < STORE_TRIES && lock.is_held() => {
                    tracing::warn!(site, error = %e, "cluster: cannot store the new ACME certificate in etcd yet; retrying");
                    tries += 1;
                    backoff.wait().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes the site's status where every node can read it (`portico certs` on a node
    /// that did not order shows who did). A failure is logged: the status is for people.
    pub async fn share_status(&self, home: &Path, status: &Status) {
        let name = status_name(&dir_id(home), &crate::acme::file_stem(&status.site));
        let json = serde_json::to_vec(status).unwrap_or_default();
        if let Err(e) = self.member.store.put(&name, &json).await {
            tracing::warn!(site = %status.site, error = %e, "cluster: cannot write the ACME status to etcd");
        }
    }

    /// [`Fleet::share_status`], written only while `lock` is held (after an order: a holder
    /// that lost its lock does not overwrite the status of the node that holds it now).
    pub async fn share_status_held(&self, lock: &OrderLock, home: &Path, status: &Status) {
        let name = status_name(&dir_id(home), &crate::acme::file_stem(&status.site));
        let json = serde_json::to_vec(status).unwrap_or_default();
        match lock.held.put_all_if_held(&[(&name, &json)]).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(site = %status.site, "cluster: the ACME order lock ended before the status was written to etcd; not written")
            }
            Err(e) => {
                tracing::warn!(site = %status.site, error = %e, "cluster: cannot write the ACME status to etcd")
            }
        }
    }

    /// The status the last holder of the site's lock shared, if etcd answers with one.
    pub async fn shared_status(&self, home: &Path, site: &str) -> Option<Status> {
        self.check_ready().ok()?;
        let name = status_name(&dir_id(home), &crate::acme::file_stem(site));
        let bytes = self.member.store.get(&name).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// The fleet's account for this directory: the stored one, or (once, under a lock)
    /// this node's own `account.json` if it has one from before the fleet, or a new one.
    pub async fn account(&self, acme: &Acme, home: &Path) -> Result<Account, AcmeError> {
        self.wait_ready().await?;
        let dir = dir_id(home);
        let name = format!("{FOLDER}/accounts/{dir}");
        if let Some(account) = self.stored_account(acme, &name).await? {
            return Ok(account);
        }
        let lock = format!("acme-accounts/{dir}");
        let held = self
            .member
            .store
            .lock(&lock, ORDER_LOCK_TTL, ORDER_LOCK_WAIT)
            .await
            .map_err(FleetError::from)?
            .ok_or(FleetError::Busy { name: lock })?;
        let made = self.make_account(acme, home, &name).await;
        if let Err(e) = held.release().await {
            tracing::debug!(error = %e, "cluster: the account lock ends with its lease");
        }
        made
    }

    async fn make_account(
        &self,
        acme: &Acme,
        home: &Path,
        name: &str,
    ) -> Result<Account, AcmeError> {
        // Another node may have made it while this one waited for the lock.
        if let Some(account) = self.stored_account(acme, name).await? {
            return Ok(account);
        }
        let path = crate::acme::account_path(home);
        let (account, json, how) = match std::fs::read(&path) {
            Ok(json) => (
                crate::acme::account_from(acme, &json, &path).await?,
                json,
                "ACME account of this node shared with the fleet",
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (account, json) = crate::acme::create_account(acme).await?;
                (account, json, "ACME account created")
            }
            Err(source) => {
                return Err(AcmeError::Io {
                    what: "cannot read",
                    path,
                    source,
                })
            }
        };
        self.member
            .store
            .put(name, &self.seal(name, &json))
            .await
            .map_err(FleetError::from)?;
        // This node's copy, as without a fleet.
        if let Err(e) = crate::state::write_private(&path, &json) {
            tracing::warn!(error = %e, "cluster: cannot keep a local copy of the ACME account");
        }
        tracing::info!(account = account.id(), key = %self.member.store.key(name), node = %self.member.name, "{how}");
        Ok(account)
    }

    async fn stored_account(&self, acme: &Acme, name: &str) -> Result<Option<Account>, AcmeError> {
        let Some(sealed) = self
            .member
            .store
            .get(name)
            .await
            .map_err(FleetError::from)?
        else {
            return Ok(None);
        };
        let json = self.open(name, &sealed)?;
        let at = PathBuf::from(self.member.store.key(name));
        Ok(Some(crate::acme::account_from(acme, &json, &at).await?))
    }

    /// Publishes (or, with None, withdraws) a challenge answer found in the store at
    /// `name` (in the folder) into this node's [`Challenges`].
    fn answer(&self, name: &str, value: Option<&[u8]>) {
        let (http, alpn) = (
            name.strip_prefix("challenges/http/"),
            name.strip_prefix("challenges/alpn/"),
        );
        let kind = match (http, alpn) {
            (Some(_), _) => "HTTP-01",
            (_, Some(_)) => "TLS-ALPN-01",
            _ => return,
        };
        let at = format!("{FOLDER}/{name}");
        let plain = match value.map(|v| self.open(&at, v)).transpose() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cluster: an ACME {kind} answer in etcd is not served");
                return;
            }
        };
        let published = plain.is_some();
        let installed = match (http, alpn) {
            (Some(token), _) => plain
                .map(String::from_utf8)
                .transpose()
                .map(|k| self.challenges.set_http(token, k))
                .map_err(|_| "it is not text".to_string()),
            (_, Some(host)) => plain
                .map(|digest| crate::acme::tls_alpn_certificate(host, &digest))
                .transpose()
                .map(|cert| self.challenges.set_tls_alpn(host, cert))
                .map_err(|e| e.to_string()),
            _ => return,
        };
        match installed {
            Ok(()) => {
                tracing::info!(key = %at, published, "cluster: ACME {kind} answer from the fleet")
            }
            Err(e) => {
                tracing::error!(key = %at, error = %e, "cluster: an ACME {kind} answer in etcd is not served")
            }
        }
    }
}

/// A site's fleet-wide order lock, held; the challenge answers published under it end with
/// it.
pub struct OrderLock {
    held: Held,
    member: Arc<Member>,
    /// Names of the answers published, withdrawn after the order.
    published: std::sync::Mutex<Vec<String>>,
}

impl OrderLock {
    /// Publishes an HTTP-01 answer to the fleet.
    pub async fn publish_http(
        &self,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), FleetError> {
        self.publish(
            format!("{FOLDER}/challenges/http/{token}"),
            key_authorization.as_bytes(),
        )
        .await
    }

    /// Publishes a TLS-ALPN-01 answer to the fleet: the key authorization's digest, from
    /// which every node makes the challenge certificate.
    pub async fn publish_tls_alpn(&self, host: &str, digest: &[u8]) -> Result<(), FleetError> {
        self.publish(format!("{FOLDER}/challenges/alpn/{host}"), digest)
            .await
    }

    async fn publish(&self, name: String, plain: &[u8]) -> Result<(), FleetError> {
        let sealed = self.member.key.seal(&self.member.store.key(&name), plain);
        let revision = self.held.put(&name, &sealed).await?;
        if let Ok(mut p) = self.published.lock() {
            p.push(name);
        }
        self.wait_seen(revision).await;
        Ok(())
    }

    /// Waits until every other node up (`PREFIX/nodes/`) says it has synced to `revision`,
    /// for [`ANSWER_WAIT`] at most; then the CA may connect to any of them.
    async fn wait_seen(&self, revision: i64) {
        let start = tokio::time::Instant::now();
        loop {
            let behind = match self.member.store.list(super::members::FOLDER).await {
                Ok(listing) => listing
                    .items
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_slice::<super::members::Record>(v).ok())
                    .filter(|r| r.node != self.member.name && r.synced_revision < revision)
                    .map(|r| r.node)
                    .collect::<Vec<_>>(),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: cannot read which nodes see the ACME answer");
                    vec!["?".to_string()]
                }
            };
            if behind.is_empty() {
                return;
            }
            if start.elapsed() >= ANSWER_WAIT {
                tracing::warn!(
                    nodes = %behind.join(", "),
                    revision,
                    "cluster: these nodes did not confirm within {} s that they see the ACME answer; asking the CA to validate anyway (it fails if it reaches one that does not)",
                    ANSWER_WAIT.as_secs()
                );
                return;
            }
            tokio::time::sleep(ANSWER_POLL).await;
        }
    }

    /// Whether the lock is still held (its lease renewed).
    pub fn is_held(&self) -> bool {
        self.held.is_renewed()
    }

    /// Withdraws the answers and lets go of the lock. What fails here ends with the lease.
    pub async fn release(self) {
        let names = self
            .published
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for name in names {
            if let Err(e) = self.member.store.delete(&name).await {
                tracing::debug!(error = %e, "cluster: a challenge answer ends with the lock's lease instead");
            }
        }
        if let Err(e) = self.held.release().await {
            tracing::warn!(error = %e, "cluster: the ACME order lock ends with its lease instead ({} s)", ORDER_LOCK_TTL.as_secs());
        }
    }
}

/// Every node: answers the fleet's challenges and installs the fleet's certificates, from a
/// listing of `PREFIX/acme/` and then its watch. After etcd was away the watch resumes from
/// the last revision seen; when etcd compacted that revision away the folder is read again
/// and reconciled (`store::Follow`).
///
/// A certificate's keys deleted in etcd (by an operator) remove nothing here: the node's
/// own files keep serving, as they do while etcd is away, and the site's task renews them
/// when they are due. Challenge answers deleted are withdrawn at once.
pub(super) async fn follow(fleet: Arc<Fleet>) {
    let mut backoff = Backoff::new();
    fleet.member.wait_for_the_fleets_key().await;
    let mut follow = Follow::new(FOLDER);
    // The answers this node serves because etcd has them.
    let mut answers = HashSet::new();
    loop {
        match follow.next(&fleet.member.store).await {
            Ok(Followed::Listing(listing)) => {
                backoff.reset();
                apply_listing(&fleet, listing, &mut answers).await;
            }
            Ok(Followed::Changes(changes)) => {
                backoff.reset();
                apply_changes(&fleet, changes, &mut answers).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster: watching the fleet's ACME state stopped; retrying");
                backoff.wait().await;
            }
        }
        fleet.member.saw(follow.revision());
    }
}

/// The whole folder: every answer listed is served, every other one withdrawn, every pair
/// installed (when newer than this node's).
async fn apply_listing(fleet: &Fleet, listing: Listing, answers: &mut HashSet<String>) {
    let listed: HashSet<&str> = listing
        .items
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("challenges/"))
        .collect();
    // Answers withdrawn while the watch was down.
    for gone in answers.iter().filter(|a| !listed.contains(a.as_str())) {
        fleet.answer(gone, None);
    }
    answers.clear();
    let mut sites = BTreeSet::new();
    for (name, value) in &listing.items {
        if name.starts_with("challenges/") {
            fleet.answer(name, Some(value));
            answers.insert(name.clone());
        } else if let Some(site) = cert_of(name) {
            sites.insert(site);
        }
    }
    for (dir, stem) in &sites {
        fleet.install_logged(dir, stem).await;
    }
}

async fn apply_changes(fleet: &Fleet, changes: Vec<Change>, answers: &mut HashSet<String>) {
    let mut sites = BTreeSet::new();
    for change in changes {
        match change {
            Change::Put { name, value } => {
                if name.starts_with("challenges/") {
                    fleet.answer(&name, Some(&value));
                    answers.insert(name);
                } else if let Some(site) = cert_of(&name) {
                    sites.insert(site);
                }
            }
            Change::Delete { name } => {
                if answers.remove(&name) {
                    fleet.answer(&name, None);
                }
            }
        }
    }
    // A pair comes in one transaction: one install for both of its keys.
    for (dir, stem) in &sites {
        fleet.install_logged(dir, stem).await;
    }
}

#[cfg(test)]
mod tests {
    use super::cert_of;

    #[test]
    fn certificate_keys_name_their_directory_and_site() {
        let pair = Some(("pebble_dir".to_string(), "shop".to_string()));
        assert_eq!(cert_of("certs/pebble_dir/shop.pem"), pair);
        assert_eq!(cert_of("certs/pebble_dir/shop.key"), pair);
        assert_eq!(cert_of("certs/pebble_dir/shop.status"), None);
        assert_eq!(cert_of("certs/shop.pem"), None);
        assert_eq!(cert_of("certs/a/b/shop.pem"), None);
        assert_eq!(cert_of("challenges/http/x.pem"), None);
        assert_eq!(cert_of("certs//.pem"), None);
    }
}
