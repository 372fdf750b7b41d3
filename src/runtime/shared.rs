//! [`Shared`]: what outlives one runtime (ticket keys, challenge answers, metrics, the
//! certificate cache, the on-demand orders) and the certificates loaded so far, found by
//! their files, with the names cache's journal (`names_cache.rs`) and the trust a first
//! start gives it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{names_cache, on_every_core};
use crate::config::{CertFiles, Config, TlsMode};
use crate::tls::cache::KeyCache;
use crate::tls::dir;
use crate::tls::load::{self, Cert};

/// What lives longer than one runtime: the session ticket keys, so a reload keeps
/// resumption working, and the certificates already loaded, so a reload re-reads only the
/// files that changed and the old and new runtimes share every certificate that did not.
#[derive(Clone)]
pub struct Shared {
    /// The session ticket keys: this node's own, or the fleet's once `[cluster]` set them.
    pub tickets: Arc<crate::tls::tickets::Tickets>,
    /// ACME challenge answers, filled by the ACME tasks and read by the listeners.
    pub challenges: Arc<crate::acme::Challenges>,
    /// The process's metrics (counters survive reloads).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// On-demand TLS: the permission cache and the orders (they survive reloads).
    pub on_demand: Arc<crate::acme::on_demand::Orders>,
    /// Which certificates keep their chain and key in memory (`limits.certificate_cache`).
    pub keys: Arc<KeyCache>,
    loaded: Arc<Mutex<Cache>>,
    names: Arc<NamesState>,
}

/// Where the names cache (`names_cache.rs`) stands in this process.
#[derive(Default)]
struct NamesState {
    /// Read once, at the first build.
    read: std::sync::OnceLock<()>,
    journal: Mutex<Journal>,
    /// A write is under way.
    writing: std::sync::atomic::AtomicBool,
    /// Certificates parsed by this process (not reused from memory or the cache).
    parsed: std::sync::atomic::AtomicUsize,
    /// Builds take what the cache says without looking at the files (`trust_index`).
    trust: std::sync::atomic::AtomicBool,
}

/// What the names cache on disk lacks, and how much of it is appended lines.
#[derive(Default)]
struct Journal {
    /// Certificates parsed since the cache was last written.
    fresh: Vec<((FileStamp, FileStamp), Arc<Cert>)>,
    /// Lines appended since the file was last written whole (or read); None while the
    /// file is not known to be a cache of this format, so the next write is whole.
    appended: Option<usize>,
}

/// Certificates loaded so far, found by their files (compared by the paths' bytes, see
/// [`CertFiles`]; two spellings of one path, `a//b` and `a/b`, cost only a second load).
///
/// The entries are boxed: a table of a million has two million slots, and a slot then
/// costs a pointer beside its key, not the whole entry (about 60 MB less at a million).
#[derive(Default)]
struct Cache(HashMap<CertFiles, Box<Loaded>, foldhash::fast::RandomState>);

impl Cache {
    fn get(&self, files: &CertFiles) -> Option<&Loaded> {
        self.0.get(files).map(|l| &**l)
    }

    fn insert(&mut self, files: &CertFiles, loaded: Loaded) {
        self.0.insert(files.clone(), Box::new(loaded));
    }

    /// Keeps the entries for `named` files only.
    fn retain<'a>(&mut self, named: impl Iterator<Item = &'a CertFiles>) {
        let keep: std::collections::HashSet<&CertFiles, foldhash::fast::RandomState> =
            named.collect();
        self.0.retain(|f, _| keep.contains(f));
    }
}

/// A loaded certificate and the stamps of the files it came from.
struct Loaded {
    stamps: (FileStamp, FileStamp),
    cert: Arc<Cert>,
    /// Known from the names cache, its files not looked at since (see
    /// [`Shared::trust_index`]).
    unchecked: bool,
}

/// What identifies a file's content on disk: size, modification time, inode. A rewrite,
/// a rename over it or a symlink swap changes it.
pub type FileStamp = (u64, std::time::SystemTime, u64);

/// The stamp of `path` (following symlinks), or None if it cannot be read.
pub fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    stamp_of(&std::fs::metadata(path).ok()?)
}

/// The stamps of a certificate's chain and key files now, with one look at a file that
/// holds both.
pub fn stamps_now(files: &CertFiles) -> (Option<FileStamp>, Option<FileStamp>) {
    let cert = stamp(&files.cert);
    let key = if files.same_file() {
        cert
    } else {
        stamp(&files.key)
    };
    (cert, key)
}

fn stamp_of(m: &std::fs::Metadata) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

impl Shared {
    /// Fresh state for a process: its own ticket keys, no certificate loaded yet.
    pub fn new() -> Shared {
        Shared {
            tickets: crate::tls::tickets::Tickets::local(),
            challenges: Arc::default(),
            metrics: Arc::default(),
            on_demand: Arc::default(),
            keys: Arc::default(),
            loaded: Arc::default(),
            names: Arc::default(),
        }
    }

    /// Loads a certificate, or reuses the one loaded before if neither file changed since.
    pub fn load(&self, files: &CertFiles) -> Result<Arc<Cert>, load::LoadError> {
        // A reload finds most certificates loaded already: one look at the files says
        // whether they changed. A first load takes the stamps from the files it reads.
        let trust = self.names.trust.load(std::sync::atomic::Ordering::Relaxed);
        let known = {
            // Build-time only (never on the handshake path), so a mutex is fine here.
            let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            loaded
                .get(files)
                .map(|l| (l.stamps, l.cert.clone(), l.unchecked))
        };
        if let Some((before, cert, unchecked)) = known {
            if unchecked && trust {
                return Ok(cert);
            }
            let (cert_now, key_now) = stamps_now(files);
            if cert_now.zip(key_now) == Some(before) {
                if unchecked {
                    let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(l) = loaded.0.get_mut(files) {
                        l.unchecked = false;
                    }
                }
                return Ok(cert);
            }
        }
        let (cert, [cert_meta, key_meta]) = load::load_shared(files)?;
        let cert = Arc::new(cert);
        self.keys.adopt(&cert);
        self.names
            .parsed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(stamps) = stamp_of(&cert_meta).zip(stamp_of(&key_meta)) {
            self.journal().fresh.push((stamps, cert.clone()));
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            loaded.insert(
                files,
                Loaded {
                    stamps,
                    cert: cert.clone(),
                    unchecked: false,
                },
            );
        }
        Ok(cert)
    }

    /// Takes `cert`, just checked from the bytes now written to `files`, as loaded from
    /// them: the next build reuses it while the files keep their stamps, as if it had
    /// parsed them itself (a fleet's node writing 100,000 pairs before its first build
    /// parses each once, not twice). Without the files' stamps it is left out, and the
    /// build parses them.
    pub fn adopt(&self, files: &CertFiles, cert: Arc<Cert>) {
        let (Some(c), Some(k)) = stamps_now(files) else {
            return;
        };
        self.keys.adopt(&cert);
        self.names
            .parsed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.journal().fresh.push(((c, k), cert.clone()));
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.insert(
            files,
            Loaded {
                stamps: (c, k),
                cert,
                unchecked: false,
            },
        );
    }

    /// The stamps (cert, key) of `files` when they were last loaded, if they could be read.
    pub fn stamps(&self, files: &CertFiles) -> Option<(FileStamp, FileStamp)> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.get(files).map(|l| l.stamps)
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.names.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what `state_dir/names.cache` says about certificates loaded by an earlier run,
    /// once per process: each is reused, unparsed, while its files keep their stamps.
    pub(super) fn read_names(&self, state_dir: &std::path::Path) {
        self.names.read.get_or_init(|| {
            let entries = names_cache::read(&names_cache::path(state_dir));
            let lines = entries.len();
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            let mut issuers: std::collections::HashSet<Arc<str>> = Default::default();
            for e in entries {
                let issuer = match issuers.get(e.issuer.as_str()) {
                    Some(known) => known.clone(),
                    None => {
                        let new: Arc<str> = e.issuer.into();
                        issuers.insert(new.clone());
                        new
                    }
                };
                let cert = Cert::from_index(
                    &e.files,
                    e.names,
                    e.subject,
                    issuer,
                    e.not_before,
                    e.not_after,
                    e.key_type,
                    e.signs,
                    e.sha256,
                );
                loaded.insert(
                    &e.files,
                    Loaded {
                        stamps: e.stamps,
                        cert: Arc::new(cert),
                        unchecked: true,
                    },
                );
            }
            if lines > 0 {
                // Lines that later ones replaced count as appended: they are what a
                // rewrite would save.
                self.journal().appended = Some(lines.saturating_sub(loaded.0.len()));
            }
        });
    }

    /// While set, a build takes a certificate the names cache knows as the cache says,
    /// without looking at its files: the first build of `serve`, so that a million
    /// certificates serve after one read of the cache and a listing of their directories,
    /// not two million stats. [`Shared::changed_since_index`] then looks at them, in the
    /// background, and the pairs it finds changed are patched in as a directory change
    /// is. Meanwhile a certificate whose files changed while Portico was stopped is still
    /// never presented in another's place: its chain and key are read from the files at its
    /// first handshake and refused if the leaf is not the one the cache names
    /// (`LoadError::Changed`). `check`, `bindings` and reloads never trust the cache.
    pub fn trust_index(&self, on: bool) {
        self.names
            .trust
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Looks at the files of every certificate taken from the names cache unlooked-at
    /// (blocking; on every core) and returns the pairs (directory, name) whose files are
    /// no longer what the cache says, for `patch_pool`, with how many it looked at.
    pub fn changed_since_index(&self) -> (usize, Vec<(std::path::PathBuf, String)>) {
        let unchecked: Vec<(CertFiles, (FileStamp, FileStamp))> = {
            let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            loaded
                .0
                .iter()
                .filter(|(_, l)| l.unchecked)
                .map(|(f, l)| (f.clone(), l.stamps))
                .collect()
        };
        let same = on_every_core(&unchecked, |(files, before)| {
            let (c, k) = stamps_now(files);
            c.zip(k) == Some(*before)
        });
        let mut changed = Vec::new();
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        for ((files, _), same) in unchecked.iter().zip(same) {
            if same {
                if let Some(l) = loaded.0.get_mut(files) {
                    l.unchecked = false;
                }
            } else if let Some(pair) = dir::pair_of(&files.cert) {
                changed.push(pair);
            }
        }
        (unchecked.len(), changed)
    }

    /// Certificates parsed by this process so far (not reused from memory or the cache).
    pub(super) fn parsed(&self) -> usize {
        self.names.parsed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a certificate was parsed since the names cache was last written.
    pub fn names_dirty(&self) -> bool {
        !self.journal().fresh.is_empty()
    }

    /// Brings `state_dir/names.cache` up to date when a certificate was parsed since the
    /// last write (blocking: the serve loop runs it on the blocking pool, after a start or a
    /// change). What was parsed is appended, a line each, so adding a pair to a million
    /// costs one line; the file is written whole when it is new, or once the appended lines
    /// reach a quarter of the entries (replaced and removed pairs leave lines behind).
    /// Returns how many entries it wrote, None when there was nothing to write or a write
    /// is under way.
    pub fn write_names(&self, state_dir: &std::path::Path) -> Option<std::io::Result<usize>> {
        use std::sync::atomic::Ordering;
        if self.names.writing.swap(true, Ordering::AcqRel) {
            return None;
        }
        let (fresh, appended) = {
            let mut j = self.journal();
            (std::mem::take(&mut j.fresh), j.appended)
        };
        if fresh.is_empty() {
            self.names.writing.store(false, Ordering::Release);
            return None;
        }
        let file = names_cache::path(state_dir);
        let total = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .len();
        let written = match appended {
            Some(a) if a + fresh.len() <= (total / 4).max(1024) => {
                names_cache::append(&file, fresh.iter().map(|(s, c)| (s, &**c))).map(|n| (n, a + n))
            }
            _ => {
                let entries: Vec<((FileStamp, FileStamp), Arc<Cert>)> = {
                    let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
                    loaded
                        .0
                        .values()
                        .map(|l| (l.stamps, l.cert.clone()))
                        .collect()
                };
                names_cache::write(&file, entries.iter().map(|(s, c)| (s, &**c))).map(|n| (n, 0))
            }
        };
        let mut j = self.journal();
        let written = match written {
            Ok((n, appended)) => {
                j.appended = Some(appended);
                Ok(n)
            }
            Err(e) => {
                // Written whole next time, with what this write would have added.
                j.appended = None;
                let newer = std::mem::replace(&mut j.fresh, fresh);
                j.fresh.extend(newer);
                Err(e)
            }
        };
        drop(j);
        self.names.writing.store(false, Ordering::Release);
        Some(written)
    }

    /// Forgets the certificate loaded from `files` (its pair was removed).
    pub fn forget(&self, files: &CertFiles) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.0.remove(files);
    }

    /// Forgets certificates no longer named by `config` or listed in a certificate
    /// directory (`listed`), so removed ones are freed once the runtimes holding them are
    /// gone.
    pub(super) fn retain(&self, config: &Config, listed: &[(String, dir::Listing)]) {
        let home = crate::acme::home(config);
        let acme: Vec<CertFiles> = config
            .sites
            .iter()
            .filter(|s| s.tls == TlsMode::Acme)
            .filter_map(|s| Some(crate::acme::cert_files(home.as_deref()?, &s.name)))
            .collect();
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let admin = config.admin.as_ref().and_then(|a| a.tls.as_ref());
        let kept = config.cert_files().chain(&acme).chain(admin);
        let in_dirs = listed
            .iter()
            .flat_map(|(_, l)| l.pairs.iter().map(|(_, f)| f));
        loaded.retain(kept.chain(in_dirs));
    }
}
