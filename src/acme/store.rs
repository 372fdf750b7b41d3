//! Files in `state_dir/acme/<directory>/`: the account credentials and each site's
//! certificate and key.
//! Secrets are written with mode 0600 to a temporary file, then renamed over the old one, so a
//! reader never sees half a file (through `state::write_private`).

use std::path::{Path, PathBuf};

use super::AcmeError;

/// The folder of one ACME directory's files: `state_dir/acme/<directory URL as a file
/// name>`. An account belongs to one CA, and so do the certificates it obtained: pointing
/// `directory` elsewhere (staging, then production) starts with a new account and orders
/// new certificates, and pointing it back finds the old ones again.
pub fn home(state_dir: &Path, directory: &str) -> PathBuf {
    let url = directory
        .strip_prefix("https://")
        .or_else(|| directory.strip_prefix("http://"))
        .unwrap_or(directory);
    state_dir
        .join("acme")
        .join(file_stem(url.trim_end_matches('/')))
}

pub(crate) fn account_path(home: &Path) -> PathBuf {
    home.join("account.json")
}

/// A site name made safe as a file name: anything but `[A-Za-z0-9._-]` becomes `_`, and a
/// leading dot too.
pub(crate) fn file_stem(site: &str) -> String {
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

/// Writes `data` to `path` with mode 0600, through a temporary file and a rename
/// ([`crate::state::write_private`], the one writer of private files).
pub(super) fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    crate::state::write_private(path, data).map_err(|e| AcmeError::Io {
        what: e.what,
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_url_has_its_own_folder() {
        let state = Path::new("/var/lib/portico");
        let le = home(state, "https://acme-v02.api.letsencrypt.org/directory");
        assert_eq!(
            le,
            Path::new("/var/lib/portico/acme/acme-v02.api.letsencrypt.org_directory")
        );
        assert_eq!(
            home(state, "https://acme-v02.api.letsencrypt.org/directory/"),
            le
        );
        assert_ne!(
            home(
                state,
                "https://acme-staging-v02.api.letsencrypt.org/directory"
            ),
            le
        );
        assert_eq!(
            home(state, "https://127.0.0.1:14000/dir"),
            Path::new("/var/lib/portico/acme/127.0.0.1_14000_dir")
        );
    }
}
