//! At most one order per site at a time, across processes. During a binary upgrade the old
//! and the new process both run ACME tasks for a moment; an advisory lock (`flock`) on
//! `state_dir/acme/<directory>/<site>.lock`, held for the length of an order, keeps them from ordering
//! the same certificate twice. The kernel drops the lock with the file descriptor, so a
//! process that dies never leaves a site locked. The lock files are never removed (removing
//! a lock file would let two processes lock two different files).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use super::{store, AcmeError};

/// A held order lock; dropping it releases the lock.
#[derive(Debug)]
pub(super) struct OrderLock {
    _file: std::fs::File,
}

/// Takes the site's order lock, or returns None when another process holds it.
pub(super) fn try_lock(home: &Path, site: &str) -> Result<Option<OrderLock>, AcmeError> {
    let path = home.join(format!("{}.lock", store::file_stem(site)));
    let io = |what, source| AcmeError::Io {
        what,
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(home).map_err(|e| io("cannot create the directory for", e))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io("cannot open", e))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(OrderLock { _file: file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(io("cannot lock", e.into())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = super::try_lock(dir.path(), "shop").expect("lock");
        assert!(first.is_some());
        // flock locks belong to the open file description: a second open, as another
        // process would make, is refused.
        assert!(super::try_lock(dir.path(), "shop").expect("lock").is_none());
        assert!(super::try_lock(dir.path(), "other")
            .expect("lock")
            .is_some());
        drop(first);
        assert!(super::try_lock(dir.path(), "shop").expect("lock").is_some());
    }
}
