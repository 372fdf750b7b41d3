//! The small in-memory cache of hot files: a file served in the last second is answered
//! without touching the disk or the blocking pool. It never holds more than a bounded
//! number of bytes.
//!
//! Requests for one path that miss at once share one read: the first registers as its
//! reader ([`Lookup::Load`]), the others wait for it ([`Lookup::Wait`]) and then look again.
//! Without that, every request in flight when an entry was missing or had just expired
//! started its own blocking task, and tokio its own thread: 64 concurrent HTTP/2 requests
//! for one cold 3.6 KB file took `portico serve` from 4 to 50 threads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

/// How long a small file read from disk is served from memory before it is looked at
/// again (nginx's `open_file_cache_valid` idea, with a short default).
pub(super) const CACHE_VALID: Duration = Duration::from_secs(1);
/// The most file bytes one root keeps in memory.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Small files recently served, by request path: a hot file costs no system call. Entries
/// are trusted for [`CACHE_VALID`], then checked again; the cache is emptied when full.
#[derive(Debug, Default)]
pub(super) struct FileCache {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    files: HashMap<String, Cached>,
    /// The bytes of every file in `files`.
    bytes: usize,
    /// Paths a request is reading now. Waiters hold a receiver; the reader's [`Loading`]
    /// removes (and so drops) the sender when it is done, which wakes them.
    loading: HashMap<String, watch::Sender<()>>,
}

#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) content_type: &'static str,
    pub(super) validators: super::conditional::Validators,
    pub(super) data: Bytes,
    pub(super) checked: Instant,
}

/// What a request finds in the cache for its path.
pub(super) enum Lookup {
    Hit(Cached),
    /// Another request is reading the path: wait for it (`changed` returns, with an
    /// error, once it is done), then look again.
    Wait(watch::Receiver<()>),
    /// Nobody is: this request reads it and tells the others through the guard.
    Load(Loading),
}

/// The one request reading a path for the cache. Dropping it (after [`Loading::finish`],
/// or on any other outcome: a large file, an error, a cancelled request) wakes the waiters.
#[derive(Debug)]
pub(super) struct Loading {
    cache: Arc<FileCache>,
    key: String,
}

impl FileCache {
    /// The fresh entry for `key`, if any.
    pub(super) fn get(&self, key: &str) -> Option<Cached> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        fresh(&entries, key)
    }

    /// The fresh entry for `key`, or the read to wait for, or the right to read it.
    pub(super) fn lookup(self: &Arc<FileCache>, key: &str) -> Lookup {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = fresh(&entries, key) {
            return Lookup::Hit(hit);
        }
        if let Some(reader) = entries.loading.get(key) {
            return Lookup::Wait(reader.subscribe());
        }
        entries
            .loading
            .insert(key.to_owned(), watch::Sender::new(()));
        Lookup::Load(Loading {
            cache: self.clone(),
            key: key.to_owned(),
        })
    }

    fn put(&self, key: &str, entry: Cached) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Entries { files, bytes, .. } = &mut *entries;
        if *bytes + entry.data.len() > CACHE_BYTES {
            files.clear();
            *bytes = 0;
        }
        *bytes += entry.data.len();
        if let Some(old) = files.insert(key.to_owned(), entry) {
            *bytes -= old.data.len();
        }
    }
}

impl Loading {
    /// Stores what was read, then wakes the waiters, who find it.
    pub(super) fn finish(self, entry: Cached) {
        self.cache.put(&self.key, entry);
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        let mut entries = self.cache.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Only this guard inserted the key, so the sender there is this read's.
        entries.loading.remove(&self.key);
    }
}

fn fresh(entries: &Entries, key: &str) -> Option<Cached> {
    entries
        .files
        .get(key)
        .filter(|c| c.checked.elapsed() < CACHE_VALID)
        .cloned()
}
