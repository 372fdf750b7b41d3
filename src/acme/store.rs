//! Files in `state_dir/acme/`: the account credentials and each site's certificate and key.
//! Secrets are written with mode 0600 to a temporary file, then renamed over the old one, so a
//! reader never sees half a file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::AcmeError;

pub(super) fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("acme")
}

pub(super) fn account_path(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("account.json")
}

/// A site name made safe as a file name: anything but `[A-Za-z0-9._-]` becomes `_`, and a
/// leading dot too.
pub(super) fn file_stem(site: &str) -> String {
    let mut s: String = site
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') || s.is_empty() {
        s.insert(0, '_');
    }
    s
}

/// Writes `data` to `path` with mode 0600, through a temporary file and a rename.
pub(super) fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    let io = |what, source| AcmeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("cannot create the directory for", e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("cannot write", e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("cannot write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot rename into", e))
}
