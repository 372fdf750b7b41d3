//! A directory of certificates: each one a pair of files, `NAME.pem` (the chain, leaf first)
//! and `NAME.key` (its private key).
//!
//! The admin API's certificate store, `state_dir/certificates`, is such a directory, where
//! NAME is 1 to 64 of `a-z 0-9 . _ -`, not starting with a dot ([`check_name`]); so are the
//! directories `[[certificate]] dir` names, where any NAME but a hidden file's counts. [`list`] reads one (and
//! `runtime::build` loads what it lists); [`Staged`] changes one pair so that the change
//! can be undone exactly. Only the admin store is ever written, and only by the serve loop:
//! an operator's directory is read, never changed. Nothing here parses a certificate.

use std::io;
use std::path::{Path, PathBuf};

use super::load::CertFiles;

/// The admin API's certificate store in `state_dir`.
pub fn admin_store(state_dir: &Path) -> PathBuf {
    state_dir.join("certificates")
}

/// The longest certificate name.
pub const MAX_NAME: usize = 64;

/// Why a name cannot name a certificate in a directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a certificate name cannot be empty")]
    Empty,
    #[error("a certificate name has at most {MAX_NAME} characters (this one has {0})")]
    TooLong(usize),
    #[error("a certificate name cannot start with a dot")]
    LeadingDot,
    #[error("a certificate name is made of a-z, 0-9, '.', '_' and '-' only (found {0:?})")]
    Character(char),
}

/// Checks that `name` can name a pair of files in a certificate directory: no path
/// separator, no hidden file, no upper case (two names that differ only by case would be
/// one file on some file systems).
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_NAME {
        return Err(NameError::TooLong(len));
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    match name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        Some(c) => Err(NameError::Character(c)),
        None => Ok(()),
    }
}

/// The two files of certificate `name` in `dir`.
pub fn files(dir: &Path, name: &str) -> CertFiles {
    CertFiles::new(
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// What a directory holds: its complete pairs, and what is wrong with the rest.
#[derive(Debug, Default)]
pub struct Listing {
    /// Complete pairs, sorted by name.
    pub pairs: Vec<(String, CertFiles)>,
    /// A file whose other half is missing, or a directory that cannot be read; each names
    /// its path.
    pub problems: Vec<String>,
}

/// Lists the certificates in `dir`: every `NAME.pem` with its `NAME.key`. Files with other
/// names (a temporary file, a README, a hidden file) are not certificates and are skipped;
/// half a pair is a problem. A directory that does not exist holds no certificates.
pub fn list(dir: &Path) -> Listing {
    let mut out = Listing::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return out,
        Err(e) => {
            out.problems.push(format!(
                "cannot read the certificate directory {}: {}",
                dir.display(),
                crate::error_text::describe_io(&e)
            ));
            return out;
        }
    };
    let (mut pems, mut keys) = (Vec::new(), Vec::new());
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let (stem, is_pem) = match (file.strip_suffix(".pem"), file.strip_suffix(".key")) {
            (Some(stem), _) => (stem, true),
            (_, Some(stem)) => (stem, false),
            _ => continue,
        };
        // Any name but a hidden file's: an operator's directory is named as its owner
        // likes (`Example.COM.pem`); only the names the admin API creates are restricted.
        if !stem.is_empty() && !stem.starts_with('.') {
            let names = if is_pem { &mut pems } else { &mut keys };
            names.push(stem.to_string());
        }
    }
    pems.sort_unstable();
    keys.sort_unstable();
    // Both sorted: one walk pairs them (a million pairs, no search for each).
    let (mut pems, mut keys) = (pems.into_iter().peekable(), keys.into_iter().peekable());
    loop {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let order = match (pems.peek(), keys.peek()) {
            (None, None) => break,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some(p), Some(k)) => p.cmp(k),
        };
        match order {
            Equal => {
                let (Some(name), _) = (pems.next(), keys.next()) else {
                    break;
                };
                let f = files(dir, &name);
                out.pairs.push((name, f));
            }
            Less => {
                if let Some(name) = pems.next() {
                    out.problems.push(half_pair(dir, &name, true));
                }
            }
            Greater => {
                if let Some(name) = keys.next() {
                    out.problems.push(half_pair(dir, &name, false));
                }
            }
        }
    }
    out
}

/// How to mend half a pair.
pub const HALF_PAIR_FIX: &str = "give each NAME.pem its NAME.key, or remove the file";

/// What is wrong with half a pair: `NAME.pem` without its key (`has_pem`), or the reverse.
pub fn half_pair(dir: &Path, name: &str, has_pem: bool) -> String {
    if has_pem {
        format!(
            "{} has no key file next to it ({name}.key)",
            dir.join(format!("{name}.pem")).display()
        )
    } else {
        format!(
            "{} has no certificate file next to it ({name}.pem)",
            dir.join(format!("{name}.key")).display()
        )
    }
}

/// Makes what [`Staged::put_unsynced`] wrote in `dir` durable: one sync of its file system.
pub fn sync(dir: &Path) -> io::Result<()> {
    crate::state::sync_filesystem(dir)
}

/// One pair's files changed on disk, not yet kept: [`Staged::keep`] makes the change final,
/// [`Staged::undo`] puts back exactly what was there (the same files, by rename).
///
/// The previous version of a file waits as `FILE.prev` (a hard link, so the file itself is
/// replaced by one rename and is never missing); [`list`] skips those names.
#[must_use = "a staged change is kept or undone"]
pub struct Staged {
    steps: Vec<Step>,
}

struct Step {
    path: PathBuf,
    /// Where the previous file waits, if there was one.
    backup: Option<PathBuf>,
    /// Whether a new file was written at `path`.
    wrote: bool,
}

fn backup_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".prev");
    PathBuf::from(s)
}

/// Removes a file, and is content when it is not there.
fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Staged {
    /// Writes certificate `name` in `dir` (0600, write-then-rename, the directory made 0700
    /// if missing), keeping what was there to undo. On an error, what was done is undone.
    pub fn put(dir: &Path, name: &str, chain: &[u8], key: &[u8]) -> io::Result<Staged> {
        Staged::put_as(dir, name, chain, key, true)
    }

    /// [`Staged::put`] without waiting for the disk, for one of many pairs staged at once:
    /// [`sync`] the directory once they all are.
    pub fn put_unsynced(dir: &Path, name: &str, chain: &[u8], key: &[u8]) -> io::Result<Staged> {
        Staged::put_as(dir, name, chain, key, false)
    }

    fn put_as(
        dir: &Path,
        name: &str,
        chain: &[u8],
        key: &[u8],
        durable: bool,
    ) -> io::Result<Staged> {
        crate::state::private_dir(dir)?;
        let f = files(dir, name);
        let mut staged = Staged { steps: Vec::new() };
        for (path, data) in [(&f.cert, chain), (&f.key, key)] {
            if let Err(e) = staged.write(path, data, durable) {
                let _ = staged.undo();
                return Err(e);
            }
        }
        Ok(staged)
    }

    fn write(&mut self, path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
        let backup = backup_of(path);
        // One left by a process that stopped between staging and keeping.
        remove(&backup)?;
        let backup = match std::fs::hard_link(path, &backup) {
            Ok(()) => Some(backup),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        self.steps.push(Step {
            path: path.to_path_buf(),
            backup,
            wrote: false,
        });
        let written = if durable {
            crate::state::write_private(path, data)
        } else {
            crate::state::write_private_unsynced(path, data)
        };
        written.map_err(|e| io::Error::new(e.source.kind(), e))?;
        if let Some(step) = self.steps.last_mut() {
            step.wrote = true;
        }
        Ok(())
    }

    /// Moves certificate `name` in `dir` aside; None when neither of its files exists.
    pub fn delete(dir: &Path, name: &str) -> io::Result<Option<Staged>> {
        let f = files(dir, name);
        let mut staged = Staged { steps: Vec::new() };
        for path in [&f.cert, &f.key] {
            let backup = backup_of(path);
            let moved = remove(&backup).and_then(|()| std::fs::rename(path, &backup));
            match moved {
                Ok(()) => staged.steps.push(Step {
                    path: path.to_path_buf(),
                    backup: Some(backup),
                    wrote: false,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    let _ = staged.undo();
                    return Err(e);
                }
            }
        }
        Ok((!staged.steps.is_empty()).then_some(staged))
    }

    /// Whether the pair existed before (a replacement, not a creation).
    pub fn replaced(&self) -> bool {
        self.steps.iter().any(|s| s.backup.is_some())
    }

    /// Makes the change final: the previous files are removed.
    pub fn keep(self) -> io::Result<()> {
        for step in &self.steps {
            if let Some(backup) = &step.backup {
                remove(backup)?;
            }
        }
        Ok(())
    }

    /// Puts back what was there before: each previous file renamed back into place, each
    /// new file without a predecessor removed.
    pub fn undo(self) -> io::Result<()> {
        let mut result = Ok(());
        for step in self.steps.iter().rev() {
            let r = match &step.backup {
                Some(backup) => std::fs::rename(backup, &step.path),
                None if step.wrote => remove(&step.path),
                None => Ok(()),
            };
            if r.is_err() && result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// The pair a file of a certificate directory belongs to: `DIR/NAME.pem` or `DIR/NAME.key`
/// gives `DIR` and `NAME`; any other file (a temporary `.NAME.pem.tmp`, a README) None.
pub fn pair_of(path: &Path) -> Option<(PathBuf, String)> {
    let file = path.file_name()?.to_str()?;
    let stem = file
        .strip_suffix(".pem")
        .or_else(|| file.strip_suffix(".key"))?;
    if stem.is_empty() || stem.starts_with('.') {
        return None;
    }
    Some((path.parent()?.to_path_buf(), stem.to_string()))
}

/// More pairs changed at once than this, and the serve loop lists the directories again
/// instead (a full rebuild): a bulk copy must not grow the set without bound.
pub const MAX_CHANGED: usize = 100_000;

/// What changed in the watched directories since the loop last asked.
#[derive(Debug, Default)]
pub struct Changes {
    /// The pairs (directory, name) whose files were written, renamed or removed.
    pub pairs: std::collections::BTreeSet<(PathBuf, String)>,
    /// inotify lost events (its queue overflowed), or too many pairs changed: every
    /// directory must be listed again.
    pub rescan: bool,
}

/// Tells the serve loop which pairs changed in the `[[certificate]] dir` directories
/// (inotify, through the `notify` crate), so it applies just those: nothing the loop does
/// for a change is proportional to the size of a directory.
pub struct Watcher {
    inner: Option<::notify::RecommendedWatcher>,
    watching: Vec<PathBuf>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    changes: std::sync::Arc<std::sync::Mutex<Changes>>,
}

impl Default for Watcher {
    fn default() -> Self {
        Watcher::new()
    }
}

impl Watcher {
    pub fn new() -> Watcher {
        Watcher {
            inner: None,
            watching: Vec::new(),
            wake: std::sync::Arc::default(),
            changes: std::sync::Arc::default(),
        }
    }

    /// Watches exactly `dirs` from now on. A directory that cannot be watched (inotify's
    /// limit reached, or it is gone) is logged; its changes are then seen at the next
    /// reload.
    pub fn follow(&mut self, dirs: &[PathBuf]) {
        use ::notify::Watcher as _;
        if self.watching == dirs {
            return;
        }
        self.watching = dirs.to_vec();
        self.inner = None;
        if dirs.is_empty() {
            return;
        }
        let (wake, changes) = (self.wake.clone(), self.changes.clone());
        let made =
            ::notify::recommended_watcher(move |event: ::notify::Result<::notify::Event>| {
                let mut changes = changes.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    // Reads (open, access) change nothing.
                    Ok(e) if matches!(e.kind, ::notify::EventKind::Access(_)) => return,
                    Ok(e) if e.need_rescan() => changes.rescan = true,
                    Ok(e) => {
                        for path in &e.paths {
                            if let Some(pair) = pair_of(path) {
                                changes.pairs.insert(pair);
                            }
                        }
                        if changes.pairs.len() > MAX_CHANGED {
                            changes.rescan = true;
                            changes.pairs.clear();
                        }
                    }
                    Err(_) => changes.rescan = true,
                }
                drop(changes);
                wake.notify_one();
            });
        let mut inner = match made {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the certificate directories; their changes are seen at the next reload");
                return;
            }
        };
        for d in dirs {
            if let Err(e) = inner.watch(d, ::notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot watch a certificate directory; its changes are seen at the next reload");
            }
        }
        self.inner = Some(inner);
    }

    /// Waits until something changed in a watched directory since the last call.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// What changed since the last call.
    pub fn take(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names() {
        for good in [
            "a",
            "site1.example.test",
            "wild_card-2",
            "0",
            &"x".repeat(64),
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(&"x".repeat(65)), Err(NameError::TooLong(65)));
        assert_eq!(check_name(".hidden"), Err(NameError::LeadingDot));
        assert_eq!(check_name("."), Err(NameError::LeadingDot));
        assert_eq!(check_name(".."), Err(NameError::LeadingDot));
        assert_eq!(check_name("a/b"), Err(NameError::Character('/')));
        assert_eq!(check_name("Site"), Err(NameError::Character('S')));
        assert_eq!(check_name("a b"), Err(NameError::Character(' ')));
        assert_eq!(check_name("a%2fb"), Err(NameError::Character('%')));
        assert_eq!(check_name("é"), Err(NameError::Character('é')));
        assert_eq!(check_name("a\0"), Err(NameError::Character('\0')));
    }

    #[test]
    fn listing_pairs_and_halves() {
        let dir = tempfile::tempdir().expect("in a test");
        let d = dir.path();
        for f in [
            "b.pem",
            "b.key",
            "a.pem",
            "a.key",
            "lonely.pem",
            "orphan.key",
            "Example.COM.pem",
            "Example.COM.key",
        ] {
            std::fs::write(d.join(f), "x").expect("in a test");
        }
        for skipped in ["a.pem.prev", "a.tmp", "README", ".h.pem", ".h.key"] {
            std::fs::write(d.join(skipped), "x").expect("in a test");
        }
        let l = list(d);
        let names: Vec<&str> = l.pairs.iter().map(|(n, _)| n.as_str()).collect();
        // An operator's names are theirs (the admin API's are checked where it takes them).
        assert_eq!(names, ["Example.COM", "a", "b"]);
        assert_eq!(&*l.pairs[1].1.cert, d.join("a.pem"));
        assert_eq!(&*l.pairs[1].1.key, d.join("a.key"));
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(l.problems[0].contains("lonely.pem"), "{:?}", l.problems);
        assert!(l.problems[1].contains("orphan.key"), "{:?}", l.problems);
        assert!(list(&d.join("missing")).pairs.is_empty());
        assert!(list(&d.join("missing")).problems.is_empty());
    }

    fn read(d: &Path, f: &str) -> Option<String> {
        std::fs::read_to_string(d.join(f)).ok()
    }

    #[test]
    fn staged_changes_are_kept_or_undone_exactly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("in a test");
        let d = &dir.path().join("certificates");
        // A creation undone leaves nothing.
        let s = Staged::put(d, "a", b"chain1", b"key1").expect("in a test");
        assert!(!s.replaced());
        assert_eq!(read(d, "a.pem").as_deref(), Some("chain1"));
        s.undo().expect("in a test");
        assert_eq!(read(d, "a.pem"), None);
        assert_eq!(read(d, "a.key"), None);
        // Kept: the files are private, and no backup stays.
        Staged::put(d, "a", b"chain1", b"key1")
            .expect("in a test")
            .keep()
            .expect("in a test");
        let mode = std::fs::metadata(d.join("a.key"))
            .expect("in a test")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(d)
            .expect("in a test")
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        // A replacement undone puts the very same files back.
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(d.join("a.pem")).expect("in a test").ino();
        let s = Staged::put(d, "a", b"chain2", b"key2").expect("in a test");
        assert!(s.replaced());
        assert_eq!(read(d, "a.key").as_deref(), Some("key2"));
        s.undo().expect("in a test");
        assert_eq!(read(d, "a.pem").as_deref(), Some("chain1"));
        assert_eq!(read(d, "a.key").as_deref(), Some("key1"));
        assert_eq!(
            std::fs::metadata(d.join("a.pem")).expect("in a test").ino(),
            ino
        );
        assert_eq!(read(d, "a.pem.prev"), None);
        // A deletion undone, then kept.
        assert!(Staged::delete(d, "nothing").expect("in a test").is_none());
        let s = Staged::delete(d, "a")
            .expect("in a test")
            .expect("in a test");
        assert!(list(d).pairs.is_empty());
        s.undo().expect("in a test");
        assert_eq!(read(d, "a.key").as_deref(), Some("key1"));
        Staged::delete(d, "a")
            .expect("in a test")
            .expect("in a test")
            .keep()
            .expect("in a test");
        let left: Vec<_> = std::fs::read_dir(d).expect("in a test").collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
