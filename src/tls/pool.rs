//! The certificate pool: every loaded certificate indexed by the names it covers, and the
//! rule that picks the best one for a name.
//!
//! Choice: an exact SAN beats a wildcard SAN; among equals, per key type, a certificate valid
//! now beats one that is not, and then the one that expires last wins; key types with only
//! invalid certificates are dropped when another key type has a valid one. One certificate per key
//! type is kept, so RSA and ECDSA certificates for the same names are both offered and the
//! client's signature algorithms decide (ECDSA preferred). Choices are made when the runtime
//! is built, never during a handshake.

use std::sync::Arc;

use rustls::SignatureScheme;

use super::load::{Cert, CertFiles};
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

/// The index's hash: foldhash, seeded per process (SipHash showed in start-up profiles).
type Hasher = foldhash::fast::RandomState;
type Map<K, V> = imbl::GenericHashMap<K, V, Hasher, imbl::shared_ptr::DefaultSharedPtr>;

/// Every certificate of the pool, indexed by SAN name (wildcards under their `*.` name).
///
/// Persistent maps (imbl): a change of one certificate makes a new pool that shares all
/// the rest with the old one, in O(log n) time and memory, so a directory of a million
/// certificates takes an added pair without a copy of the index, and a handshake reads an
/// immutable snapshot (`Runtime::pool`, swapped atomically).
#[derive(Default, Clone)]
pub struct Pool {
    certs: Map<CertFiles, Arc<Cert>>,
    by_name: Map<HostName, Arc<[Arc<Cert>]>>,
}

impl Pool {
    pub fn new(certs: Vec<Arc<Cert>>) -> Pool {
        // Most names have one certificate: no Vec for those.
        enum Found {
            One(Arc<Cert>),
            More(Vec<Arc<Cert>>),
        }
        let mut by_name: std::collections::HashMap<HostName, Found, Hasher> =
            std::collections::HashMap::with_capacity_and_hasher(certs.len(), Hasher::default());
        let mut all = Map::default();
        for cert in certs {
            let files = cert.files();
            if all.contains_key(&files) {
                continue;
            }
            for name in &cert.names {
                match by_name.entry(name.clone()) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(Found::One(cert.clone()));
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let found = o.get_mut();
                        match found {
                            Found::One(first) => {
                                *found = Found::More(vec![first.clone(), cert.clone()]);
                            }
                            Found::More(list) => list.push(cert.clone()),
                        }
                    }
                }
            }
            all.insert(files, cert);
        }
        let by_name = by_name
            .into_iter()
            .map(|(n, found)| {
                let certs: Arc<[Arc<Cert>]> = match found {
                    Found::One(c) => Arc::new([c]),
                    Found::More(list) => list.into(),
                };
                (n, certs)
            })
            .collect();
        Pool {
            certs: all,
            by_name,
        }
    }

    /// Every certificate, in no particular order.
    pub fn certs(&self) -> impl Iterator<Item = &Arc<Cert>> + '_ {
        self.certs.values()
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificate loaded from `files`, if it is in the pool.
    pub fn get(&self, files: &CertFiles) -> Option<&Arc<Cert>> {
        self.certs.get(files)
    }

    /// This pool with the certificates of `removed` taken out and `added` put in (one
    /// from the same files replaces the one there). The names each change touches are
    /// pushed to `touched`.
    pub fn changed(
        &self,
        removed: &[CertFiles],
        added: &[Arc<Cert>],
        touched: &mut Vec<HostName>,
    ) -> Pool {
        let mut next = self.clone();
        let replaced = added.iter().map(|c| c.files());
        for files in removed.iter().cloned().chain(replaced) {
            let Some(old) = next.certs.remove(&files) else {
                continue;
            };
            for name in &old.names {
                touched.push(name.clone());
                let Some(list) = next.by_name.get(name) else {
                    continue;
                };
                let rest: Vec<Arc<Cert>> = list
                    .iter()
                    .filter(|c| !Arc::ptr_eq(c, &old))
                    .cloned()
                    .collect();
                if rest.is_empty() {
                    next.by_name.remove(name);
                } else {
                    next.by_name.insert(name.clone(), rest.into());
                }
            }
        }
        for cert in added {
            for name in &cert.names {
                touched.push(name.clone());
                let mut list: Vec<Arc<Cert>> = next
                    .by_name
                    .get(name)
                    .map(|l| l.to_vec())
                    .unwrap_or_default();
                list.push(cert.clone());
                next.by_name.insert(name.clone(), list.into());
            }
            next.certs.insert(cert.files(), cert.clone());
        }
        next
    }

    /// The certificates that could serve `name`: those naming it exactly if there are any,
    /// else those covering it with a wildcard. For a wildcard host, only certificates with
    /// that same wildcard SAN cover it.
    fn candidate_slice(&self, name: &HostName) -> (&[Arc<Cert>], How) {
        if let Some(certs) = self.by_name.get(name) {
            let how = if name.is_wildcard() {
                How::Wildcard
            } else {
                How::Exact
            };
            return (certs, how);
        }
        if let Some(certs) = name.parent_wildcard().and_then(|w| self.by_name.get(&w)) {
            return (certs, How::Wildcard);
        }
        (&[], How::Exact)
    }

    /// Whether some certificate of the pool covers `name`.
    pub fn covers(&self, name: &HostName) -> bool {
        !self.candidate_slice(name).0.is_empty()
    }

    /// [`Pool::candidate_slice`], as references.
    pub fn candidates(&self, name: &HostName) -> (Vec<&Arc<Cert>>, How) {
        let (certs, how) = self.candidate_slice(name);
        (certs.iter().collect(), how)
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

    /// What [`Pool::best`] then [`Choice::for_client`] would give, without building the
    /// choice: the handshake path's lookup (no allocation, the candidates of one name).
    pub fn choose(
        &self,
        name: &HostName,
        schemes: &[SignatureScheme],
        now: i64,
    ) -> Option<&Arc<Cert>> {
        let (candidates, _) = self.candidate_slice(name);
        // As `rank`: when anything is valid, only valid certificates count; per key type
        // the valid one that expires last; then the first key type the client can use, or
        // else the first key type at all.
        let any_valid = candidates.iter().any(|c| c.is_valid_at(now));
        let pick = |usable_only: bool| {
            candidates
                .iter()
                .filter(|c| !any_valid || c.is_valid_at(now))
                .filter(|c| !usable_only || c.can_sign(schemes))
                .min_by(|a, b| {
                    a.key_type.cmp(&b.key_type).then_with(|| {
                        (b.is_valid_at(now), b.not_after).cmp(&(a.is_valid_at(now), a.not_after))
                    })
                })
        };
        pick(true).or_else(|| pick(false))
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
