//! The certificate pool: every loaded certificate indexed by the names it covers, and the
//! rule that picks the best one for a name.
//!
//! Choice: an exact SAN beats a wildcard SAN; among equals, per key type, a certificate valid
//! now beats one that is not, and then the one that expires last wins; key types with only
//! invalid certificates are dropped when another key type has a valid one. One certificate per key
//! type is kept, so RSA and ECDSA certificates for the same names are both offered and the
//! client's signature algorithms decide (ECDSA preferred). Choices are made when the runtime
//! is built, never during a handshake.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::SignatureScheme;

use super::load::Cert;
use crate::names::HostName;

/// How a certificate came to be chosen for a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The site names its certificate (`tls = { cert, key }`).
    Pinned,
    /// Issued by Portico's local CA (`tls = "internal"`).
    Internal,
    /// Issued by the ACME CA for the site (`tls = "acme"`), read from `state_dir/acme`.
    Acme,
    /// A pool certificate with the host among its SAN names.
    Exact,
    /// A pool certificate covering the host with a wildcard SAN.
    Wildcard,
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            How::Pinned => "pinned",
            How::Internal => "internal CA",
            How::Acme => "ACME",
            How::Exact => "pool, exact name",
            How::Wildcard => "pool, wildcard",
        })
    }
}

/// The certificates a host may be served with: best first, at most one per key type.
#[derive(Debug, Clone)]
pub struct Choice {
    pub variants: Box<[Arc<Cert>]>,
    pub how: How,
}

impl Choice {
    pub fn single(cert: Arc<Cert>, how: How) -> Choice {
        Choice {
            variants: Box::new([cert]),
            how,
        }
    }

    /// The certificate for a client offering `schemes`: the first variant whose key can sign
    /// with one of them. Falls back to the first variant, letting rustls refuse the handshake
    /// with a precise error when the client can use none.
    pub fn for_client(&self, schemes: &[SignatureScheme]) -> Option<&Arc<Cert>> {
        self.variants
            .iter()
            .find(|c| c.can_sign(schemes))
            .or_else(|| self.variants.first())
    }

    /// The certificate presented to a client offering every usual algorithm.
    pub fn preferred(&self) -> Option<&Arc<Cert>> {
        self.variants.first()
    }
}

/// Every certificate of the pool, indexed by SAN name (wildcards under their `*.` name).
#[derive(Default)]
pub struct Pool {
    certs: Vec<Arc<Cert>>,
    by_name: HashMap<HostName, Vec<u32>>,
}

impl Pool {
    pub fn new(certs: Vec<Arc<Cert>>) -> Pool {
        let mut by_name: HashMap<HostName, Vec<u32>> = HashMap::with_capacity(certs.len());
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                // u32 is plenty: a pool of four billion certificates would not fit in memory.
                by_name.entry(name.clone()).or_default().push(i as u32);
            }
        }
        Pool { certs, by_name }
    }

    pub fn certs(&self) -> &[Arc<Cert>] {
        &self.certs
    }

    /// The certificates that could serve `name`: those naming it exactly if there are any,
    /// else those covering it with a wildcard. For a wildcard host, only certificates with
    /// that same wildcard SAN cover it.
    pub fn candidates(&self, name: &HostName) -> (Vec<&Arc<Cert>>, How) {
        if let Some(ids) = self.by_name.get(name) {
            let how = if name.is_wildcard() {
                How::Wildcard
            } else {
                How::Exact
            };
            return (ids.iter().map(|&i| &self.certs[i as usize]).collect(), how);
        }
        if let Some(ids) = name.parent_wildcard().and_then(|w| self.by_name.get(&w)) {
            return (
                ids.iter().map(|&i| &self.certs[i as usize]).collect(),
                How::Wildcard,
            );
        }
        (Vec::new(), How::Exact)
    }

    /// The best certificates for `name` at `now` (unix seconds), or None if none covers it.
    pub fn best(&self, name: &HostName, now: i64) -> Option<Choice> {
        let (candidates, how) = self.candidates(name);
        if candidates.is_empty() {
            return None;
        }
        Some(Choice {
            variants: rank(candidates, now),
            how,
        })
    }
}

/// Orders candidates by key type (ECDSA, Ed25519, RSA) and keeps the best of each type.
pub fn rank(candidates: Vec<&Arc<Cert>>, now: i64) -> Box<[Arc<Cert>]> {
    let mut best: Vec<&Arc<Cert>> = Vec::new();
    for c in candidates {
        match best.iter_mut().find(|b| b.key_type == c.key_type) {
            Some(b) => {
                if better(c, b, now) {
                    *b = c;
                }
            }
            None => best.push(c),
        }
    }
    // An expired or not-yet-valid certificate is offered only when nothing valid covers the
    // name: an old RSA certificate left next to a fresh ECDSA one must not be presented.
    if best.iter().any(|c| c.is_valid_at(now)) {
        best.retain(|c| c.is_valid_at(now));
    }
    best.sort_by_key(|c| c.key_type);
    best.into_iter().cloned().collect()
}

/// Whether `a` should be chosen over `b` (same key type): valid beats invalid, then the
/// later expiry wins.
pub fn better(a: &Cert, b: &Cert, now: i64) -> bool {
    (a.is_valid_at(now), a.not_after) > (b.is_valid_at(now), b.not_after)
}
