//! Sealing: what the fleet keeps in etcd that would be dangerous to read (private keys,
//! session ticket keys, the ACME account key) is encrypted with the cluster key before it
//! leaves the node, so an etcd backup or anyone who can read etcd holds nothing usable.
//!
//! AES-256-GCM (aws-lc-rs), a random 96-bit nonce per value, and the value's own key path as
//! associated data: a sealed value copied under another key does not open. A sealed value is
//! `PSEAL1` + nonce + ciphertext and tag.
//!
//! The cluster key is 32 random bytes in a file, the same file on every node: as written by
//! `head -c 32 /dev/urandom`, or as 64 hexadecimal digits (a trailing newline allowed).

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// What every sealed value starts with (the format's version is its last byte).
const MAGIC: &[u8] = b"PSEAL1";
/// The key's length: AES-256.
pub const KEY_LEN: usize = 32;

/// The cluster key, ready to seal and open.
pub struct ClusterKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("ClusterKey").field("id", &self.id).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the cluster key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cluster key {} holds {len} bytes; it must be 32 random bytes (head -c 32 /dev/urandom > {}) or 64 hexadecimal digits", path.display(), path.display())]
    Length { path: PathBuf, len: usize },
    #[error("the cluster key {} can be read by other users (mode {mode:o}); it opens every private key of the fleet", path.display())]
    Mode { path: PathBuf, mode: u32 },
}

/// A sealed value that did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not a sealed value (it does not start with {MAGIC:?})")]
    NotSealed,
    #[error("the value does not open with this node's cluster key: it was sealed with another key, for another key path, or it was changed")]
    WrongKey,
}

impl ClusterKey {
    /// Reads the key file. It must not be readable by group or others.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let read = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        ClusterKey::from_file_bytes(&bytes).ok_or(KeyError::Length {
            path: path.to_path_buf(),
            len: bytes.len(),
        })
    }

    /// The key from a key file's contents: 32 raw bytes, or 64 hex digits.
    pub fn from_file_bytes(bytes: &[u8]) -> Option<ClusterKey> {
        if bytes.len() == KEY_LEN {
            return Some(ClusterKey::new(bytes));
        }
        let text = std::str::from_utf8(bytes)
            .ok()?
            .trim_end_matches(['\n', '\r']);
        Some(ClusterKey::new(&crate::hex::decode_32(text)?))
    }

    fn new(bytes: &[u8]) -> ClusterKey {
        // A 32-byte key is always a valid AES-256 key.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).unwrap_or_else(|_| unreachable!());
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"portico cluster key id\0");
        ctx.update(bytes);
        let digest = ctx.finish();
        // A SHA-256 digest has 32 bytes.
        let id = crate::hex::encode(&digest.as_ref()[..8]);
        ClusterKey {
            key: LessSafeKey::new(unbound),
            id,
        }
    }

    /// A name for the key that gives nothing of it away (the first 8 bytes of a SHA-256 of
    /// it, in hex): what the log and `cluster status` show, and how a node finds out it
    /// has another key than the fleet.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `plaintext` sealed for the key path `at`.
    pub fn seal(&self, at: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // The system's random source failing is not something a server can go on without.
        SystemRandom::new()
            .fill(&mut nonce)
            .unwrap_or_else(|_| panic!("the system random number generator failed"));
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(at.as_bytes()),
                &mut body,
            )
            // Only fails for inputs of many GiB.
            .unwrap_or_else(|_| panic!("sealing {} bytes failed", plaintext.len()));
        out.extend_from_slice(&body);
        out
    }

    /// The plaintext of a value sealed for the key path `at`.
    pub fn open(&self, at: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(SealError::NotSealed)?;
        if rest.len() < NONCE_LEN {
            return Err(SealError::WrongKey);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::WrongKey)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(at.as_bytes()), &mut body)
            .map_err(|_| SealError::WrongKey)?;
        Ok(plain.to_vec())
    }

    /// Whether `value` is sealed (what a scan of etcd for clear-text secrets looks for).
    pub fn is_sealed(value: &[u8]) -> bool {
        value.starts_with(MAGIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_file_bytes(&[byte; KEY_LEN]).expect("32 bytes")
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_path() {
        let (k, other) = (key(1), key(2));
        let secret = b"-----BEGIN PRIVATE KEY-----\nabc\n";
        let sealed = k.seal("/p/certs/a.key", secret);
        assert!(ClusterKey::is_sealed(&sealed));
        assert!(
            !sealed.windows(5).any(|w| w == b"BEGIN"),
            "the plaintext shows through"
        );
        assert_eq!(
            k.open("/p/certs/a.key", &sealed).as_deref(),
            Ok(&secret[..])
        );
        assert_eq!(
            other.open("/p/certs/a.key", &sealed),
            Err(SealError::WrongKey)
        );
        assert_eq!(k.open("/p/certs/b.key", &sealed), Err(SealError::WrongKey));
        let mut changed = sealed.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(k.open("/p/certs/a.key", &changed), Err(SealError::WrongKey));
        assert_eq!(
            k.open("/p/certs/a.key", b"plain"),
            Err(SealError::NotSealed)
        );
        assert_eq!(k.open("/p/certs/a.key", MAGIC), Err(SealError::WrongKey));
        // A fresh nonce each time.
        assert_ne!(k.seal("/p/x", b"same"), k.seal("/p/x", b"same"));
    }

    #[test]
    fn the_key_file_is_raw_or_hex_and_names_its_problem() {
        let hex = "01".repeat(KEY_LEN) + "\n";
        let from_hex = ClusterKey::from_file_bytes(hex.as_bytes()).expect("hex");
        assert_eq!(from_hex.id(), key(1).id());
        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id().len(), 16);
        for bad in [
            &b""[..],
            &[0u8; 31][..],
            &[0u8; 33][..],
            "zz".repeat(32).as_bytes(),
        ] {
            assert!(ClusterKey::from_file_bytes(bad).is_none(), "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, [7u8; KEY_LEN]).expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = ClusterKey::load(&path).expect_err("readable by others");
        assert!(e.to_string().contains("mode 644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(ClusterKey::load(&path).expect("loads").id(), key(7).id());
        std::fs::write(&path, b"short").expect("write");
        let e = ClusterKey::load(&path).expect_err("too short");
        assert!(e.to_string().contains("holds 5 bytes"), "{e}");
        let e = ClusterKey::load(&dir.path().join("missing")).expect_err("missing");
        assert!(e.to_string().contains("cannot read the cluster key"), "{e}");
        let k = key(9);
        assert_eq!(
            format!("{k:?}"),
            format!("ClusterKey {{ id: {:?} }}", k.id())
        );
    }
}
