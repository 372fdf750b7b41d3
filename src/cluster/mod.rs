//! A node of a fleet (docs/cluster.md): what `[cluster]` makes this process do with the
//! other nodes, through the store (`store/`).
//!
//! `Node::start` reads the cluster key (an unreadable or malformed key file stops the start
//! with a clear error) and starts the node's tasks; from then on nothing here stops serving.
//! An etcd that is gone, a key that is not the fleet's, a value that does not open: each is
//! logged, retried with backoff, and the node goes on with what it last had.
//!
//! The fleet shares its session ticket keys (`tickets.rs`): one node at a time (the
//! holder of the `tickets` lock) makes and rotates them, every node installs them, so a
//! ticket one node issued resumes on every other. And its ACME accounts, orders,
//! certificates and challenge answers (`acme.rs`): one order per site fleet-wide, every
//! node answering the CA and serving the result. And its local CA (`ca.rs`: one CA whose
//! leaves every node issues) and the admin API's certificates (`certificates.rs`: a PUT on
//! one node is served by all), which reach the node's runtime only as [`FleetChange`]s
//! applied by the serve loop.

pub mod acme;
pub mod ca;
pub mod certificates;
pub mod members;
pub mod pushed;
pub mod status;
pub mod tickets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Cluster;
use crate::runtime::Shared;
use crate::store::{ClusterKey, Etcd, KeyError, StoreError};

/// The key whose sealed value tells a node whether its cluster key is the fleet's.
const KEY_CHECK: &str = "key-check";
const KEY_CHECK_TEXT: &[u8] = b"portico cluster key check";

/// Whether `key` opens the fleet's check value `stored` (sealed at the etcd key `at`).
fn opens_check(key: &ClusterKey, at: &str, stored: &[u8]) -> bool {
    key.open(at, stored)
        .is_ok_and(|text| text == KEY_CHECK_TEXT)
}

/// Waits after a failure: 1 s, doubling up to 10 s. (The cap is how late a node may
/// catch up once etcd is back: its watches, its key check and its record wait this long at
/// most; a try costs a connection attempt.)
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_secs(1))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
    }

    fn reset(&mut self) {
        self.0 = Duration::from_secs(1);
    }
}

/// What the fleet asks the serve loop to apply, through its one change path (check, stage,
/// build, install); nothing of the fleet's reaches a runtime otherwise. (No `Debug`: it
/// carries private keys in clear.)
pub enum FleetChange {
    /// Bring `state_dir/certificates` to these pairs and removals (keys in clear), one
    /// rebuild for all of them.
    Certificates(Vec<certificates::Item>),
    /// Make this (PEM, checked) the node's local CA, and issue its leaves again.
    Ca { cert: Vec<u8>, key: Vec<u8> },
}

/// This process as a member of its fleet: the tasks run until it is dropped.
pub struct Node {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acme: Arc<acme::Fleet>,
    member: Arc<Member>,
    certificates: Arc<certificates::Certificates>,
    changes: Option<tokio::sync::mpsc::UnboundedReceiver<FleetChange>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the node's tasks share.
struct Member {
    store: Etcd,
    key: ClusterKey,
    name: String,
    /// `state_dir/cluster`: the sealed copies of what the node last saw, for a start while
    /// etcd is away.
    local: PathBuf,
    shared: Shared,
    /// The highest store revision the node's watches have seen (for its record).
    synced: std::sync::atomic::AtomicI64,
    /// True once the key check passed (`confirm_key`): nothing of the fleet's is used
    /// before.
    key_confirmed: tokio::sync::watch::Sender<bool>,
    /// The fleet's configuration version this node runs, and the newest that failed on it
    /// (`[cluster] config = "etcd"` only).
    config: std::sync::Mutex<pushed::State>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "this machine's cluster key is not the fleet's: the nodes could not open what it stores"
    )]
    NotTheFleetsKey,
    #[error("other pushes kept changing the fleet's configuration; try again")]
    Contended,
}

impl Node {
    /// Joins the fleet `cluster` describes. Needs a tokio runtime. A site whose ACME
    /// certificate came from the fleet is sent on `issued`, as after a local order.
    pub async fn start(
        cluster: &Cluster,
        state_dir: &Path,
        shared: &Shared,
        issued: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Node, ClusterError> {
        let key = ClusterKey::load(&cluster.key_file)?;
        let store = Etcd::connect(cluster).await?;
        tracing::info!(
            node = %cluster.node,
            etcd = %cluster.etcd.join(", "),
            prefix = %cluster.prefix,
            key = key.id(),
            "cluster: joining the fleet"
        );
        let member = Arc::new(Member {
            store,
            key,
            name: cluster.node.clone(),
            local: state_dir.join("cluster"),
            shared: shared.clone(),
            synced: std::sync::atomic::AtomicI64::new(0),
            key_confirmed: tokio::sync::watch::Sender::new(false),
            config: std::sync::Mutex::new(pushed::State::default()),
        });
        // The last ticket keys this node saw, before etcd answers (or while it does not).
        tickets::install_local_copy(&member);
        let acme = Arc::new(acme::Fleet::new(member.clone(), state_dir, issued));
        let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
        let certificates = Arc::new(certificates::Certificates::new(
            member.clone(),
            state_dir,
            changes_tx.clone(),
        ));
        let tasks = vec![
            tokio::spawn(certificates::follow(certificates.clone())),
            tokio::spawn(ca::follow(
                member.clone(),
                state_dir.to_path_buf(),
                changes_tx,
            )),
            tokio::spawn(confirm_key(member.clone())),
            tokio::spawn(members::register(member.clone())),
            tokio::spawn(tickets::follow(member.clone())),
            tokio::spawn(tickets::rotate(member.clone())),
            tokio::spawn(acme::follow(acme.clone())),
        ];
        Ok(Node {
            tasks,
            acme,
            member,
            certificates,
            changes: Some(changes),
        })
    }

    /// The fleet's side of the admin API's certificates, for the serve loop's PUT and
    /// DELETE.
    pub fn certificates(&self) -> Arc<certificates::Certificates> {
        self.certificates.clone()
    }

    /// What the fleet asks the serve loop to apply (once: the loop takes it).
    pub fn take_changes(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<FleetChange>> {
        self.changes.take()
    }

    /// Follows the fleet's configuration (`[cluster] config = "etcd"`), from `state` (what
    /// the start ran and what failed): each newer version comes out of the receiver.
    pub fn follow_config(
        &mut self,
        state: pushed::State,
    ) -> tokio::sync::watch::Receiver<Option<Arc<pushed::Pushed>>> {
        if let Ok(mut s) = self.member.config.lock() {
            *s = state;
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        self.tasks
            .push(tokio::spawn(pushed::follow(self.member.clone(), tx)));
        rx
    }

    /// Records what loading `pushed` came to (None: it runs; else the report of why not).
    pub fn config_loaded(&self, pushed: &pushed::Pushed, failed: Option<&crate::config::Report>) {
        self.member.loaded(pushed, failed);
    }

    /// The fleet's side of ACME, for the site tasks (`acme::Manager`).
    pub fn acme(&self) -> Arc<acme::Fleet> {
        self.acme.clone()
    }
}

/// How long a starting node waits for etcd to answer before its first build ([`prepare`]).
const PREPARE_DEADLINE: Duration = Duration::from_secs(3);

/// Before the first build: brings `state_dir` to what the fleet holds — its local CA and the
/// admin API's certificates — so that a node started with an empty `state_dir` serves them
/// (and its hosts that only they cover) from its first runtime on. Only adds and replaces,
/// only pairs that load, and only with this node's key confirmed as the fleet's; waits
/// [`PREPARE_DEADLINE`] at most for etcd's first answer (the key check), and never stops
/// the start: without etcd the node's own files serve, and the node's tasks catch up once
/// it answers. Once etcd has answered, the reading goes on to the end (each request with
/// the store's own deadline): at 100,000 pairs it takes longer than the first answer, and
/// a node that gave up halfway could not serve the hosts only they cover.
pub async fn prepare(cluster: &Cluster, state_dir: &Path, shared: &crate::runtime::Shared) {
    // An unreadable key is the build's error to report.
    let Ok(key) = ClusterKey::load(&cluster.key_file) else {
        return;
    };
    let answered = async {
        let store = Etcd::connect(cluster).await?;
        let at = store.key(KEY_CHECK);
        match store.get(KEY_CHECK).await? {
            Some(check) if opens_check(&key, &at, &check) => Ok(Some(store)),
            // No fleet yet, or another key: nothing of the fleet's to use.
            _ => Ok::<_, StoreError>(None),
        }
    };
    let read = |store: Etcd| {
        let key = &key;
        async move {
            let ca = ca::stored(&store, key).await?;
            let certs = certificates::stored(&store, key).await?;
            Ok::<_, StoreError>((ca, certs))
        }
    };
    let found = match tokio::time::timeout(PREPARE_DEADLINE, answered).await {
        Ok(Ok(Some(store))) => read(store).await,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err(e),
        Err(_) => {
            tracing::warn!(
                etcd = %cluster.etcd.join(", "),
                "cluster: etcd did not answer within {} s; starting with this node's own CA and certificates",
                PREPARE_DEADLINE.as_secs()
            );
            return;
        }
    };
    let (ca, certs) = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: starting with this node's own CA and certificates");
            return;
        }
    };
    let (dir, shared) = (state_dir.to_path_buf(), shared.clone());
    let written = tokio::task::spawn_blocking(move || {
        if let Some((cert, key)) = ca {
            match crate::tls::internal_ca::install_ca(&dir, &cert, &key) {
                Ok(true) => tracing::info!("cluster: the fleet's local CA installed"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cluster: the fleet's local CA cannot be written; this node keeps its own"),
            }
        }
        certificates::write_before_start(&dir, certs, &shared)
    })
    .await;
    if let Ok(n) = written {
        if n > 0 {
            tracing::info!(
                certificates = n,
                "cluster: the fleet's certificates written before the first build"
            );
        }
    }
}

/// Runs the key check until it passes, once for the whole node; a key that is not the
/// fleet's is logged at each check (every 10 s at most, with the backoff): nothing sealed
/// by the fleet can be opened meanwhile.
async fn confirm_key(member: Arc<Member>) {
    let mut backoff = Backoff::new();
    loop {
        match member.key_is_the_fleets().await {
            Ok(true) => {
                member.key_confirmed.send_replace(true);
                return;
            }
            Ok(false) => tracing::error!(
                node = %member.name,
                key = member.key.id(),
                "cluster: this node's cluster key is not the fleet's (other nodes sealed with another key); it uses nothing of the fleet's until it has the same key file"
            ),
            Err(e) => tracing::warn!(error = %e, "cluster: etcd did not answer; retrying"),
        }
        backoff.wait().await;
    }
}

impl Member {
    /// Records that the node has synced to `revision`.
    fn saw(&self, revision: i64) {
        self.synced
            .fetch_max(revision, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this node's cluster key is the fleet's: the first node to ask writes the
    /// sealed check value, every other opens it. An error when etcd does not answer.
    async fn key_is_the_fleets(&self) -> Result<bool, StoreError> {
        let at = self.store.key(KEY_CHECK);
        let sealed = self.key.seal(&at, KEY_CHECK_TEXT);
        if self.store.put_if_absent(KEY_CHECK, &sealed).await? {
            return Ok(true);
        }
        let stored = self.store.get(KEY_CHECK).await?.unwrap_or_default();
        Ok(opens_check(&self.key, &at, &stored))
    }

    /// Waits until [`confirm_key`] has found this node's key to be the fleet's.
    async fn wait_for_the_fleets_key(&self) {
        let mut confirmed = self.key_confirmed.subscribe();
        // The sender lives in `self`, so the wait ends only with a confirmation.
        let _ = confirmed.wait_for(|c| *c).await;
    }

    /// Writes a sealed copy of `sealed` (the store's value of `name`) in `state_dir/cluster`.
    fn keep_local_copy(&self, name: &str, sealed: &[u8]) {
        let path = self.local.join(name);
        let written = crate::state::private_dir(&self.local)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::state::write_private(&path, sealed).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cluster: cannot keep a local copy");
        }
    }

    fn local_copy(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.local.join(name)).ok()
    }
}
