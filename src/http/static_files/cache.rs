//! The small in-memory cache of hot files: a file served in the last second is answered
//! without touching the disk. It never holds more than a bounded number of bytes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a small file read from disk is served from memory before it is looked at
/// again (nginx's `open_file_cache_valid` idea, with a short default).
pub(super) const CACHE_VALID: Duration = Duration::from_secs(1);
/// The most file bytes one root keeps in memory.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Small files recently served, by request path: a hot file costs no system call. Entries
/// are trusted for [`CACHE_VALID`], then checked again; the cache is emptied when full.
#[derive(Debug, Default)]
pub(super) struct FileCache {
    entries: Mutex<(HashMap<String, Cached>, usize)>,
}

#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) content_type: &'static str,
    pub(super) validators: super::conditional::Validators,
    pub(super) data: Bytes,
    pub(super) checked: Instant,
}

impl FileCache {
    pub(super) fn get(&self, key: &str) -> Option<Cached> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .0
            .get(key)
            .filter(|c| c.checked.elapsed() < CACHE_VALID)
            .cloned()
    }

    pub(super) fn put(&self, key: String, entry: Cached) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (map, bytes) = &mut *entries;
        if *bytes + entry.data.len() > CACHE_BYTES {
            map.clear();
            *bytes = 0;
        }
        *bytes += entry.data.len();
        if let Some(old) = map.insert(key, entry) {
            *bytes -= old.data.len();
        }
    }
}
