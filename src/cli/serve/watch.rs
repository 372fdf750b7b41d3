//! What the certificate watcher looks at: every certificate and key file of a
//! configuration, and the client CA and CRL files of its `client_auth` tables, with their
//! stamps, and how often.

use super::*;

/// The `[[certificate]] dir` directories of `config`.
pub(super) fn cert_dirs(config: &Config) -> Vec<PathBuf> {
    config
        .certificate_dirs
        .iter()
        .map(|d| d.path.clone())
        .collect()
}

/// How often to look at `n` files: every second for a few thousand, less often for more,
/// so watching 100,000 certificates does not cost a core.
pub(super) fn watch_period(n: usize) -> Duration {
    (WATCH_INTERVAL * u32::try_from(n / 5000).unwrap_or(u32::MAX).max(1))
        .min(Duration::from_secs(60))
}

/// The certificate and key files a runtime was built from, with what identifies their
/// content on disk (size, modification time, inode: a rename or a symlink swap changes it).
pub(super) fn cert_files(config: &Config) -> Watched {
    watched(config, runtime::stamps_now)
}

/// Each certificate file with its stamp (None when it cannot be read); a file that holds
/// both chain and key is there once.
pub(super) type Watched = Vec<(Arc<Path>, Option<FileStamp>)>;

/// The files the configuration names; the `[[certificate]] dir` directories are not
/// looked at here, but followed by inotify ([`DirChanges`]), pair by pair.
pub(super) fn watched(
    config: &Config,
    stamps: impl Fn(&CertFiles) -> (Option<FileStamp>, Option<FileStamp>),
) -> Watched {
    let mut out = Vec::new();
    for f in config.cert_files() {
        let (cert, key) = stamps(f);
        out.push((f.cert.clone(), cert));
        if !f.same_file() {
            out.push((f.key.clone(), key));
        }
    }
    // The client CAs and CRLs: a few files, looked at now (build read them moments ago).
    for path in config.client_auth_files() {
        out.push((Arc::from(path), runtime::stamp(path)));
    }
    out
}

/// Like [`cert_files`], but with the stamps taken when the certificates were loaded
/// (looking only at files whose load did not record one): the watcher's starting point
/// costs no second pass over 100,000 files, and a file changed since it was read is seen
/// as changed.
pub(super) fn loaded_cert_files(config: &Config, shared: &Shared) -> Watched {
    watched(config, |f| match shared.stamps(f) {
        Some((c, k)) => (Some(c), Some(k)),
        None => runtime::stamps_now(f),
    })
}

/// The pairs of the certificate directories that inotify reported changed, until they
/// settle: a pair is applied once its two files have kept their stamps for [`SETTLE`], so
/// a writer that replaces the chain and then the key is seen once, done.
#[derive(Default)]
pub(super) struct DirChanges {
    /// Each pair seen changed, with its files' stamps at the last look (None before one).
    pending: std::collections::BTreeMap<(PathBuf, String), Option<Stamps>>,
    rescan: bool,
    due: Option<tokio::time::Instant>,
}

type Stamps = (Option<FileStamp>, Option<FileStamp>);

/// What is ready to apply.
pub(super) enum DirReady {
    /// These pairs, settled.
    Pairs(Vec<(PathBuf, String)>),
    /// Events were lost (or too many came): list the directories again, a full rebuild.
    Rescan,
}

impl DirChanges {
    /// Takes what the watcher saw; the pairs are looked at after [`SETTLE`].
    pub(super) fn note(&mut self, changes: crate::tls::dir::Changes) {
        self.rescan |= changes.rescan;
        for pair in changes.pairs {
            self.pending.insert(pair, None);
        }
        if self.due.is_none() && (self.rescan || !self.pending.is_empty()) {
            self.due = Some(tokio::time::Instant::now() + SETTLE);
        }
    }

    /// Resolves when pending pairs are due for a look; never without any.
    pub(super) async fn due(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Looks at the pending pairs (two stats each, off the loop): those whose stamps did
    /// not move since the last look are ready; the others wait another [`SETTLE`].
    pub(super) async fn ready(&mut self) -> Option<DirReady> {
        self.due = None;
        if std::mem::take(&mut self.rescan) {
            self.pending.clear();
            return Some(DirReady::Rescan);
        }
        let mut pending = std::mem::take(&mut self.pending);
        let (pending, ready) = off_loop(move || {
            let mut ready = Vec::new();
            for (pair, before) in &mut pending {
                let now = runtime::stamps_now(&crate::tls::dir::files(&pair.0, &pair.1));
                if *before == Some(now) {
                    ready.push(pair.clone());
                } else {
                    *before = Some(now);
                }
            }
            for pair in &ready {
                pending.remove(pair);
            }
            (pending, ready)
        })
        .await;
        // Pairs noted while the look ran are newer than what it saw.
        let newer = std::mem::replace(&mut self.pending, pending);
        self.pending.extend(newer);
        if !self.pending.is_empty() {
            self.due = Some(tokio::time::Instant::now() + SETTLE);
        }
        (!ready.is_empty()).then_some(DirReady::Pairs(ready))
    }
}
