//! Session tickets: the keys that seal them, and their rotation.
//!
//! A ticket is `key id (4 bytes) || nonce (12) || AES-256-GCM(state)`, the id as associated
//! data. Up to three keys are kept, newest first: the newest seals, all three open, so a
//! ticket resumes for two rotations after its key stopped sealing.
//!
//! On its own, a node makes its keys itself and rotates them every six hours, the first
//! handshake after the time is due doing it (a compare of the time per handshake, a lock
//! once in six hours). In a fleet the keys come from the store, made by one node for all
//! (`cluster::tickets`), and [`Tickets::install`] sets them: a ticket one node issued then
//! resumes on every other. Key bytes never leave this module except sealed for the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How often the sealing key changes.
pub const ROTATION: Duration = Duration::from_secs(6 * 60 * 60);
/// Keys kept: the newest seals, every one opens.
pub const KEPT: usize = 3;
/// What the client is told a ticket is good for: two rotations, the least a ticket is
/// accepted for (sealed just before a rotation, it opens until its key is the third
/// newer one's victim).
const LIFETIME: u32 = 2 * 6 * 60 * 60;
const ID_LEN: usize = 4;
const TAG_LEN: usize = 16;

/// One ticket key, as the store keeps it (sealed) and as it is installed.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    /// Unique in a fleet's set: the generation that made it.
    pub id: u32,
    pub secret: [u8; 32],
    /// When it was made, in Unix seconds.
    pub created: i64,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl TicketKey {
    /// A new random key for generation `id`.
    pub fn random(id: u32, created: i64) -> TicketKey {
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .unwrap_or_else(|_| panic!("the system random number generator failed"));
        TicketKey {
            id,
            secret,
            created,
        }
    }
}

struct Keys {
    /// Newest first; never empty.
    keys: Vec<(u32, LessSafeKey)>,
}

impl Keys {
    fn of(set: &[TicketKey]) -> Keys {
        Keys {
            keys: set
                .iter()
                .take(KEPT)
                .map(|k| {
                    // 32 bytes are always an AES-256 key.
                    let key =
                        UnboundKey::new(&AES_256_GCM, &k.secret).unwrap_or_else(|_| unreachable!());
                    (k.id, LessSafeKey::new(key))
                })
                .collect(),
        }
    }
}

/// The process's ticket keys (in `runtime::Shared`, so every runtime and reload uses them).
pub struct Tickets {
    keys: ArcSwap<Keys>,
    /// The key set as installed, newest first (for rotation and for `cluster status`).
    set: Mutex<Vec<TicketKey>>,
    /// When the newest key must be replaced, in Unix seconds (local rotation only).
    due: AtomicU64,
    /// Whether this node rotates its own keys (false once a fleet installs them).
    local: AtomicBool,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("generation", &self.generation())
            .field("local", &self.local.load(Ordering::Relaxed))
            .finish()
    }
}

fn unix_now() -> i64 {
    crate::runtime::unix_now()
}

impl Tickets {
    /// Keys of this node's own, rotated every [`ROTATION`].
    pub fn local() -> Arc<Tickets> {
        let now = unix_now();
        let first = TicketKey::random(1, now);
        Arc::new(Tickets {
            keys: ArcSwap::from_pointee(Keys::of(std::slice::from_ref(&first))),
            set: Mutex::new(vec![first]),
            due: AtomicU64::new(due_after(now)),
            local: AtomicBool::new(true),
        })
    }

    /// Installs a fleet's key set (newest first); from now on this node does not rotate
    /// its keys itself. An empty set changes nothing.
    pub fn install(&self, set: Vec<TicketKey>) {
        if set.is_empty() {
            return;
        }
        self.local.store(false, Ordering::Relaxed);
        self.keys.store(Arc::new(Keys::of(&set)));
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = set;
    }

    /// The generation of the sealing key (1 for a node's first own key).
    pub fn generation(&self) -> u32 {
        self.keys.load().keys.first().map_or(0, |(id, _)| *id)
    }

    /// The key set in use, newest first.
    pub fn set(&self) -> Vec<TicketKey> {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn rotate_if_due(&self) {
        if !self.local.load(Ordering::Relaxed) {
            return;
        }
        let now = unix_now();
        if u64::try_from(now).unwrap_or(0) < self.due.load(Ordering::Relaxed) {
            return;
        }
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        // Another handshake may have rotated while this one waited for the lock.
        if u64::try_from(now).unwrap_or(0) < self.due.load(Ordering::Relaxed)
            || !self.local.load(Ordering::Relaxed)
        {
            return;
        }
        *set = next_set(&set, now);
        self.keys.store(Arc::new(Keys::of(&set)));
        self.due.store(due_after(now), Ordering::Relaxed);
    }
}

fn due_after(now: i64) -> u64 {
    u64::try_from(now).unwrap_or(0) + ROTATION.as_secs()
}

/// The set after one rotation of `set` (newest first): a new key of the next generation in
/// front, at most [`KEPT`] kept.
pub fn next_set(set: &[TicketKey], now: i64) -> Vec<TicketKey> {
    let id = set.first().map_or(1, |k| k.id.wrapping_add(1).max(1));
    let mut next = Vec::with_capacity(KEPT);
    next.push(TicketKey::random(id, now));
    next.extend(set.iter().take(KEPT - 1).cloned());
    next
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain, None)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(cipher, None)
    }
}

/// The associated data of a ticket: its key id, and the context it is bound to if any.
fn aad(id: [u8; ID_LEN], context: Option<&[u8; 32]>) -> ([u8; ID_LEN + 32], usize) {
    let mut out = [0u8; ID_LEN + 32];
    out[..ID_LEN].copy_from_slice(&id);
    match context {
        Some(c) => {
            out[ID_LEN..].copy_from_slice(c);
            (out, ID_LEN + 32)
        }
        None => (out, ID_LEN),
    }
}

impl Tickets {
    /// Seals session state; with a `context` the ticket opens only under the same context.
    fn seal(&self, plain: &[u8], context: Option<&[u8; 32]>) -> Option<Vec<u8>> {
        self.rotate_if_due();
        let keys = self.keys.load();
        let (id, key) = keys.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let id = id.to_be_bytes();
        let mut out = Vec::with_capacity(ID_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let (aad, n) = aad(id, context);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..n]),
                &mut out[ID_LEN + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn open(&self, cipher: &[u8], context: Option<&[u8; 32]>) -> Option<Vec<u8>> {
        // A client's bytes: anything shorter or unknown is simply not a ticket of ours.
        if cipher.len() < ID_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (id, rest) = cipher.split_at(ID_LEN);
        let id: [u8; ID_LEN] = id.try_into().ok()?;
        let keys = self.keys.load();
        let (_, key) = keys.keys.iter().find(|(k, _)| k.to_be_bytes() == id)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let (aad, n) = aad(id, context);
        let plain = key
            .open_in_place(nonce, Aad::from(&aad[..n]), &mut sealed)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// The process's ticket keys, with every ticket bound to one context (a site and its
/// client-auth policy): sealed with the context as associated data, so a ticket made
/// under another context, or under none, does not open here, and one made here opens
/// nowhere else. The keys are the shared ones, so a fleet's tickets still resume on every
/// node, and rotation is theirs.
#[derive(Debug)]
pub struct Bound {
    tickets: Arc<Tickets>,
    context: [u8; 32],
}

impl Bound {
    pub fn new(tickets: Arc<Tickets>, context: [u8; 32]) -> Bound {
        Bound { tickets, context }
    }
}

impl ProducesTickets for Bound {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.tickets.seal(plain, Some(&self.context))
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.tickets.open(cipher, Some(&self.context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_with_any_of_the_three_newest_keys_and_no_other() {
        let t = Tickets::local();
        let ticket = t.encrypt(b"session state").expect("sealed");
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        // Two rotations later it still opens; after the third its key is gone.
        let mut set = t.set();
        for rotation in 1..=3 {
            set = next_set(&set, 0);
            t.install(set.clone());
            let opens = t.decrypt(&ticket).is_some();
            assert_eq!(opens, rotation < 3, "after rotation {rotation}");
            assert!(set.len() <= KEPT);
        }
        assert_eq!(t.generation(), 4);
        // Another node with the same set opens this node's tickets.
        let fresh = t.encrypt(b"x").expect("sealed");
        let other = Tickets::local();
        assert_eq!(other.decrypt(&fresh), None, "its own keys differ");
        other.install(t.set());
        assert_eq!(other.decrypt(&fresh).as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn a_bound_ticket_opens_only_under_its_own_context() {
        let t = Tickets::local();
        let a = Bound::new(t.clone(), [1; 32]);
        let b = Bound::new(t.clone(), [2; 32]);
        let ticket = a.encrypt(b"state").expect("sealed");
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        assert_eq!(b.decrypt(&ticket), None, "another context");
        assert_eq!(t.decrypt(&ticket), None, "no context");
        let plain = t.encrypt(b"state").expect("sealed");
        assert_eq!(a.decrypt(&plain), None, "an unbound ticket");
    }

    #[test]
    fn garbage_is_not_a_ticket() {
        let t = Tickets::local();
        let ticket = t.encrypt(b"state").expect("sealed");
        for bad in [
            Vec::new(),
            vec![0u8; 31],
            ticket[..ticket.len() - 1].to_vec(),
            {
                let mut changed = ticket.clone();
                changed[ID_LEN + NONCE_LEN] ^= 1;
                changed
            },
            {
                let mut other_id = ticket.clone();
                other_id[3] ^= 0x80;
                other_id
            },
        ] {
            assert_eq!(t.decrypt(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_node_rotates_its_own_keys_when_due_and_not_once_a_fleet_installs_them() {
        let t = Tickets::local();
        assert_eq!(t.generation(), 1);
        t.due.store(0, Ordering::Relaxed);
        t.encrypt(b"x").expect("sealed");
        assert_eq!(
            t.generation(),
            2,
            "rotated by the first handshake after it was due"
        );
        assert_eq!(t.set().len(), 2);
        t.install(vec![TicketKey::random(40, 0)]);
        t.due.store(0, Ordering::Relaxed);
        t.encrypt(b"x").expect("sealed");
        assert_eq!(
            t.generation(),
            40,
            "a fleet's keys are rotated by the fleet"
        );
    }
}
