//! The state directory and what Portico writes under it: private to the user Portico runs
//! as. (The `store/` of the fleet work grows here.)
//!
//! [`write_private`] is the one way a private file is written: mode 0600, to a temporary
//! file, then renamed over the old one, so a reader never sees half a file.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Creates `dir` and its missing parents with mode 0700 (existing ones are left as they are).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Why [`write_private`] failed: which step, on which file.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct WriteError {
    /// "cannot create the directory for", "cannot write", "cannot rename into".
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes `data` to `path` with mode 0600, through a temporary file (`path` with the
/// extension `tmp`) and a rename; a missing parent is made with [`private_dir`].
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), WriteError> {
    write_private_as(path, data, true)
}

/// [`write_private`] without waiting for the disk, for many files written at once: one
/// [`sync_filesystem`] afterwards makes them all durable (20,000 files synced one by one
/// take tens of seconds on a disk).
pub fn write_private_unsynced(path: &Path, data: &[u8]) -> Result<(), WriteError> {
    write_private_as(path, data, false)
}

/// Waits until everything written on the file system holding `dir` is on the disk.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let d = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&d).map_err(io::Error::from)
}

fn write_private_as(path: &Path, data: &[u8], sync: bool) -> Result<(), WriteError> {
    let fail = |what, source| WriteError {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        private_dir(parent).map_err(|e| fail("cannot create the directory for", e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("cannot write", e))?;
    f.write_all(data)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) })
        .map_err(|e| fail("cannot write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail("cannot rename into", e)
    })
}
