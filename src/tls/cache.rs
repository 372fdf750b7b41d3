//! The bounded cache of certificates' chains and private keys.
//!
//! A [`Cert`] always keeps what choosing and explaining it needs (its names, dates, key
//! type, fingerprint, files): a few hundred bytes. Its chain and signing key, what a
//! handshake presents, take a few kilobytes more; with a million certificates in a
//! directory they would not fit. So they are [`Held`] by the certificate only while the
//! [`KeyCache`] has room (`limits.certificate_cache`); the cache evicts the ones not used
//! lately (the CLOCK algorithm: each use sets a bit, eviction clears it once and passes
//! over), and an evicted certificate's files are read again at its next handshake, on the
//! blocking pool, before the handshake starts (listener.rs).
//!
//! The handshake path stays lock-free: [`Held::get`] is one atomic load, plus a store the
//! first time after each eviction pass. The cache's lock is taken only when a certificate
//! is loaded (at build, or by a cold handshake), never by a warm one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;

use super::load::Cert;

/// A certificate's chain and key while they are in memory.
#[derive(Default)]
pub struct Held {
    key: ArcSwapOption<CertifiedKey>,
    /// Set by a use; the cache clears it when it passes over the certificate.
    used: AtomicBool,
    /// Whether the cache may drop it: certificates not read from files (the local CA's
    /// leaves, certificates checked from a request body) have nowhere to come back from.
    evictable: AtomicBool,
}

impl Held {
    /// Held for good: never evicted.
    pub fn pinned(key: Arc<CertifiedKey>) -> Held {
        Held {
            key: ArcSwapOption::from(Some(key)),
            used: AtomicBool::new(false),
            evictable: AtomicBool::new(false),
        }
    }

    /// The chain and key when in memory.
    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        let key = self.key.load_full()?;
        // A load first: a hot certificate's bit is already set, and a store on every
        // handshake would bounce its cache line between the cores.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        Some(key)
    }

    pub fn is_held(&self) -> bool {
        self.key.load().is_some()
    }
}

/// The certificates holding their chain and key, in the order the CLOCK hand visits them.
pub struct KeyCache {
    capacity: AtomicUsize,
    ring: Mutex<VecDeque<Weak<Cert>>>,
    /// Certificates read again from their files since the process started.
    loads: AtomicUsize,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new(crate::config::DEFAULT_CERTIFICATE_CACHE)
    }
}

impl KeyCache {
    pub fn new(capacity: usize) -> KeyCache {
        KeyCache {
            capacity: AtomicUsize::new(capacity.max(1)),
            ring: Mutex::default(),
            loads: AtomicUsize::new(0),
        }
    }

    /// Takes a new `limits.certificate_cache`, evicting at once down to it.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        self.evict(&mut ring);
    }

    /// How many certificates hold their chain and key now (or did, and were dropped since).
    pub fn len(&self) -> usize {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// How many times an evicted certificate was read again.
    pub fn reloads(&self) -> usize {
        self.loads.load(Ordering::Relaxed)
    }

    /// Makes `cert` hold `key` (read from its files), evicting others over the capacity.
    /// When it holds one already (two handshakes loaded it at once), that one stays and is
    /// returned.
    pub fn hold(&self, cert: &Arc<Cert>, key: Arc<CertifiedKey>) -> Arc<CertifiedKey> {
        let held = cert.held();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = held.key.load_full() {
            return current;
        }
        held.key.store(Some(key.clone()));
        held.used.store(true, Ordering::Relaxed);
        held.evictable.store(true, Ordering::Relaxed);
        ring.push_back(Arc::downgrade(cert));
        self.evict(&mut ring);
        key
    }

    /// Takes `cert`, just read from its files, into the cache: from now on it may be evicted.
    pub fn adopt(&self, cert: &Arc<Cert>) {
        let held = cert.held();
        if !held.is_held() {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        held.used.store(true, Ordering::Relaxed);
        held.evictable.store(true, Ordering::Relaxed);
        ring.push_back(Arc::downgrade(cert));
        self.evict(&mut ring);
    }

    /// Notes that an evicted certificate was read again.
    pub fn count_reload(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
    }

    /// The CLOCK hand: drops entries of certificates that are gone, passes once over each
    /// recently used one (clearing its bit), and evicts the first one not used since.
    /// Bounded: each entry is visited at most twice per call.
    fn evict(&self, ring: &mut VecDeque<Weak<Cert>>) {
        let capacity = self.capacity();
        let mut visits = ring.len().saturating_mul(2);
        while ring.len() > capacity && visits > 0 {
            visits -= 1;
            let Some(weak) = ring.pop_front() else { break };
            let Some(cert) = weak.upgrade() else { continue };
            let held = cert.held();
            if !held.evictable.load(Ordering::Relaxed) {
                continue;
            }
            if held.used.swap(false, Ordering::Relaxed) {
                ring.push_back(weak);
            } else {
                held.key.store(None);
            }
        }
        // Everything was used since the last pass: evict in order, so the bound holds.
        while ring.len() > capacity {
            let Some(weak) = ring.pop_front() else { break };
            if let Some(cert) = weak.upgrade() {
                cert.held().key.store(None);
            }
        }
    }
}
