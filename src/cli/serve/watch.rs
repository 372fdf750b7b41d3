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

pub(super) fn watched(
    config: &Config,
    stamps: impl Fn(&CertFiles) -> (Option<FileStamp>, Option<FileStamp>),
) -> Watched {
    let mut out = Vec::new();
    let in_dirs: Vec<CertFiles> = config
        .certificate_dirs
        .iter()
        .flat_map(|d| crate::tls::dir::list(&d.path).pairs)
        .map(|(_, f)| f)
        .collect();
    for f in config.cert_files().chain(&in_dirs) {
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
