//! Automatic certificates with ACME (RFC 8555): an account kept in `state_dir/acme/<directory>/`
//! (one folder per directory URL, so another CA never sees this one's account or
//! certificates), one
//! order at a time per `tls = "acme"` site, the HTTP-01 and TLS-ALPN-01 challenges answered by
//! the running listeners, and the issued certificate stored next to the account.
//!
//! The ACME work runs in background tasks ([`Manager`]); it never blocks serving. When a
//! certificate is stored, the serve loop is told and rebuilds the runtime from the
//! configuration in memory, so the new certificate goes in through the same swap as a reload.
//! A failure for one site is logged and retried with backoff; it never touches other sites.

mod challenge;
mod lock;
mod manager;
pub mod on_demand;
mod order;
pub mod status;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

pub use challenge::{tls_alpn_config, ACME_TLS_ALPN};
pub use manager::Manager;
// For the fleet's side of ACME (cluster/acme.rs): the same account and challenge code.
pub(crate) use challenge::certificate as tls_alpn_certificate;
pub(crate) use order::{account_from, create_account};
pub(crate) use store::{account_path, file_stem};

use crate::config::CertFiles;

/// Why an ACME step failed. The ACME problem document, when the CA sent one, is in `Acme`.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the account file {path} is not valid: {source}")]
    Account {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot make the {what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("cannot use the challenge key: {0}")]
    Key(rustls::Error),
    #[error("the CA offers none of the allowed challenge types for {0}")]
    NoChallenge(String),
    #[error("authorization for {0} is {1}")]
    Authorization(String, String),
    #[error("validation of {0} failed: {1}")]
    Challenge(String, instant_acme::Problem),
    #[error("the order ended {0:?} instead of ready")]
    OrderStatus(instant_acme::OrderStatus),
    #[error("the issued certificate does not load: {0}")]
    Load(#[from] crate::tls::load::LoadError),
    #[error("the fleet: {0}")]
    Fleet(#[from] crate::cluster::acme::FleetError),
}

impl AcmeError {
    /// The CA's problem document, when the failure is one.
    pub fn problem(&self) -> Option<&instant_acme::Problem> {
        match self {
            AcmeError::Acme(instant_acme::Error::Api(p)) | AcmeError::Challenge(_, p) => Some(p),
            _ => None,
        }
    }
}

/// Challenge answers the ACME tasks publish and the listeners read: HTTP-01 key
/// authorizations by token, TLS-ALPN-01 certificates by host name. Read without locks
/// (an atomic load); written rarely, by copy and swap.
#[derive(Default)]
pub struct Challenges {
    http: ArcSwap<HashMap<String, String>>,
    tls_alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("http", &self.http.load().len())
            .field("tls_alpn", &self.tls_alpn.load().len())
            .finish()
    }
}

impl Challenges {
    /// The key authorization for an HTTP-01 token, if an order is waiting for it.
    pub fn http(&self, token: &str) -> Option<String> {
        self.http.load().get(token).cloned()
    }

    /// The TLS-ALPN-01 certificate for `host` (normalized), if an order is waiting for it.
    pub fn tls_alpn(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn.load().get(host).cloned()
    }

    pub(crate) fn set_http(&self, token: &str, key_authorization: Option<String>) {
        self.http.rcu(|m| {
            let mut m = HashMap::clone(m);
            match &key_authorization {
                Some(k) => m.insert(token.to_string(), k.clone()),
                None => m.remove(token),
            };
            m
        });
    }

    pub(crate) fn set_tls_alpn(&self, host: &str, cert: Option<Arc<CertifiedKey>>) {
        self.tls_alpn.rcu(|m| {
            let mut m = HashMap::clone(m);
            match &cert {
                Some(c) => m.insert(host.to_string(), c.clone()),
                None => m.remove(host),
            };
            m
        });
    }
}

pub use store::home as directory_home;

/// The folder of the configured ACME directory's account, certificates, status and lock
/// files (see `store::home`); None without an `[acme]` table.
pub fn home(config: &crate::config::Config) -> Option<std::path::PathBuf> {
    let acme = config.acme.as_ref()?;
    Some(store::home(&config.state_dir, &acme.directory))
}

/// Where a site's ACME certificate and key are stored, in `home`.
pub fn cert_files(home: &Path, site: &str) -> CertFiles {
    CertFiles::new(
        home.join(format!("{}.pem", store::file_stem(site))),
        home.join(format!("{}.key", store::file_stem(site))),
    )
}
