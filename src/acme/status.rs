//! What each site's ACME task is doing, for operators: one small JSON file per site,
//! `state_dir/acme/<directory>/<site>.status.json`, rewritten (write-then-rename) by the task whenever its
//! state changes, and read by `portico certs` and `portico bindings`, which do not talk to
//! the server. The file is informative only: the task never reads it back to decide anything
//! except, at start, to carry the last error and the count of failed attempts over a restart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{store, AcmeError};
use crate::error_text::ErrorChain;

/// The current version of the file's layout.
const VERSION: u32 = 1;

/// What the task is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for the next renewal time.
    Waiting,
    /// An order is in progress.
    Ordering,
    /// The last order failed; waiting to retry.
    Backoff,
    /// Another process (the other side of a binary upgrade) holds this site's order lock,
    /// or, in a fleet, another node holds the site's fleet-wide order lock (`held_by`).
    Locked,
}

/// Why the next order is planned when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// There is no stored certificate that is valid and covers every host.
    NoCertificate,
    /// A random time in the CA's ACME Renewal Information window (RFC 9773).
    Ari,
    /// A third of the certificate's lifetime left, less a small random spread.
    OneThird,
    /// The previous order failed: exponential backoff.
    Retry,
}

/// An ACME problem document (RFC 8555 section 6.7), as the CA sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub detail: Option<String>,
    pub status: Option<u16>,
    /// Per-identifier problems: `identifier: type: detail`.
    #[serde(default)]
    pub subproblems: Vec<String>,
}

impl From<&instant_acme::Problem> for Problem {
    fn from(p: &instant_acme::Problem) -> Problem {
        Problem {
            kind: p.r#type.clone(),
            detail: p.detail.clone(),
            status: p.status,
            subproblems: p.subproblems.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A failed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// Unix seconds.
    pub at: i64,
    pub message: String,
    /// The CA's problem document, when the failure was one.
    pub problem: Option<Problem>,
}

impl LastError {
    pub(super) fn new(at: i64, e: &AcmeError) -> LastError {
        LastError {
            at,
            // Every cause down to the root one: the outermost error of a failed
            // connection (`client error (Connect)`) does not say why it failed.
            message: ErrorChain(e).to_string(),
            problem: e.problem().map(Problem::from),
        }
    }
}

/// The suggested renewal window the CA gave (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// One site's task, as last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: u32,
    pub site: String,
    pub hosts: Vec<String>,
    pub state: State,
    /// When the task plans to order next (unix seconds): the renewal time, or the retry
    /// time after a failure. None while an order runs.
    pub next_renewal: Option<i64>,
    pub rule: Rule,
    /// The ARI window the renewal time was picked from.
    pub ari_window: Option<Window>,
    /// The CA's explanation URL for the window, if it gave one.
    pub ari_explanation: Option<String>,
    /// Failed orders since the last success.
    pub attempts: u32,
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
    /// The most recent failure; cleared by a success.
    pub last_error: Option<LastError>,
    /// When the file was written (unix seconds).
    pub updated: i64,
    /// In a fleet: the node that ordered the certificate the site has now (this one or
    /// another, whose certificate came through etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
    /// In a fleet: the node holding the site's order lock while this one waits, as far as
    /// the fleet's status in etcd tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// In the fleet's copy of the status (`PREFIX/acme/status/...`): the SHA-256 (hex) of
    /// the certificate `issued_by` stored, so a node knows whether it has that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl Status {
    pub(super) fn new(site: &str, hosts: Vec<String>) -> Status {
        Status {
            version: VERSION,
            site: site.to_string(),
            hosts,
            state: State::Waiting,
            next_renewal: None,
            rule: Rule::NoCertificate,
            ari_window: None,
            ari_explanation: None,
            attempts: 0,
            last_attempt: None,
            last_success: None,
            last_error: None,
            updated: 0,
            issued_by: None,
            held_by: None,
            certificate: None,
        }
    }
}

/// Where a site's status file is.
pub fn path(home: &Path, site: &str) -> PathBuf {
    home.join(format!("{}.status.json", store::file_stem(site)))
}

/// The status the site's task last wrote, if there is a readable one.
pub fn read(home: &Path, site: &str) -> Option<Status> {
    let bytes = std::fs::read(path(home, site)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `status` (stamped with `now`), replacing the file in one rename. A failure is
/// logged, never fatal: the status is for people, the task goes on without it.
pub(super) fn write(home: &Path, status: &mut Status, now: i64) {
    status.updated = now;
    let file = path(home, &status.site);
    let result = serde_json::to_vec_pretty(status)
        .map_err(|e| AcmeError::Io {
            what: "cannot encode",
            path: file.clone(),
            source: std::io::Error::other(e),
        })
        .and_then(|json| store::write_private(&file, &json));
    if let Err(e) = result {
        tracing::warn!(site = %status.site, error = %ErrorChain(&e), "cannot write the ACME status file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_fields_are_left_out_without_a_fleet_and_read_back_with_one() {
        let mut st = Status::new("shop", vec!["shop.test".to_string()]);
        let json = serde_json::to_string(&st).expect("json");
        assert!(
            !json.contains("issued_by") && !json.contains("held_by"),
            "{json}"
        );
        // A file written before these fields existed still reads.
        assert_eq!(serde_json::from_str::<Status>(&json).expect("read"), st);
        st.issued_by = Some("edge-1".to_string());
        st.certificate = Some("AB:CD".to_string());
        let json = serde_json::to_string(&st).expect("json");
        assert_eq!(serde_json::from_str::<Status>(&json).expect("read"), st);
    }
}
