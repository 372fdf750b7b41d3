//! The admin token: read from `token_file`, or made (32 random bytes, hex) and written there
//! with mode 0600 when the file is missing; compared in constant time.
//!
//! The token is a secret: it never appears in `Debug` output or log lines. The one place it
//! is shown is the sign-in URL `portico serve` prints on stderr at start.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::{constant_time, hmac, rand};

/// A token the operator writes into the file must be at least this long.
const MIN_LEN: usize = 16;
/// And at most this long.
const MAX_LEN: usize = 256;
/// The session cookie's value is derived from the token with this label, so the cookie is
/// not the token itself and changing the token signs every browser out.
const SESSION_LABEL: &[u8] = b"portico admin session v1";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the admin token file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create the admin token file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("the system's random generator failed")]
    Random,
    #[error("the admin token in {} is not usable: {why}", path.display())]
    Invalid { path: PathBuf, why: &'static str },
}

/// The token clients present, and the session cookie value derived from it.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Token {
    secret: String,
    session: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    fn new(secret: String) -> Token {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let session = crate::hex::encode(hmac::sign(&key, SESSION_LABEL).as_ref());
        Token { secret, session }
    }

    /// The token as written in the file (for the sign-in URL).
    pub(super) fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `offered` is the token, in time that does not depend on where they differ.
    pub(super) fn is(&self, offered: &str) -> bool {
        constant_time::verify_slices_are_equal(self.secret.as_bytes(), offered.as_bytes()).is_ok()
    }

    /// The value of the session cookie the sign-in sets.
    pub(super) fn session(&self) -> &str {
        &self.session
    }

    /// Whether `offered` is the session cookie's value, in constant time.
    pub(super) fn is_session(&self, offered: &str) -> bool {
        constant_time::verify_slices_are_equal(self.session.as_bytes(), offered.as_bytes()).is_ok()
    }
}

/// Reads the token from `path`, or creates the file with a new random token when it does not
/// exist. Returns the token and whether it was just created.
pub(super) fn load_or_create(path: &Path) -> Result<(Token, bool), TokenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => return parse(path, &text).map(|t| (t, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TokenError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes).map_err(|_| TokenError::Random)?;
    let secret = crate::hex::encode(&bytes);
    let write_err = |source| TokenError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        crate::state::private_dir(dir).map_err(write_err)?;
    }
    // Written whole to a private temporary file, then linked to its name: a reader never
    // sees half a token, and a file another process created meanwhile wins (link fails).
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{secret}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok((Token::new(secret), true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse(path, &text).map(|t| (t, false))
        }
        Err(e) => Err(write_err(e)),
    }
}

/// A token from the file's text: one line of URL-safe characters (so it goes into a URL,
/// a header and a cookie as it is).
fn parse(path: &Path, text: &str) -> Result<Token, TokenError> {
    let secret = text.trim();
    let invalid = |why| TokenError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    if secret.len() < MIN_LEN {
        return Err(invalid(
            "it is shorter than 16 characters (delete the file and Portico makes a new token)",
        ));
    }
    if secret.len() > MAX_LEN {
        return Err(invalid("it is longer than 256 characters"));
    }
    let url_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~');
    if !secret.chars().all(url_safe) {
        return Err(invalid(
            "it may hold only letters, digits and - _ . ~ (delete the file and Portico makes a new token)",
        ));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "the admin token file can be read by other users; chmod 600 it");
        }
    }
    Ok(Token::new(secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_gets_a_private_random_token_that_is_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/admin.token");
        let (token, created) = load_or_create(&path).expect("create");
        assert!(created);
        assert_eq!(token.secret().len(), 64);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = load_or_create(&path).expect("read");
        assert!(!created);
        assert_eq!(again, token);
        assert!(token.is(again.secret()));
        assert!(!token.is(&again.secret()[1..]));
        assert!(token.is_session(again.session()));
        assert_ne!(token.session(), token.secret());
    }

    #[test]
    fn unusable_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.token");
        for bad in [
            "short",
            "has spaces in the middle of it",
            "x%2Fencoded%2Fis-not-allowed",
        ] {
            std::fs::write(&path, bad).expect("write");
            assert!(
                matches!(load_or_create(&path), Err(TokenError::Invalid { .. })),
                "{bad:?} was accepted"
            );
        }
        std::fs::write(&path, "operator-chosen-token-0123\n").expect("write");
        let (token, _) = load_or_create(&path).expect("read");
        assert_eq!(token.secret(), "operator-chosen-token-0123");
    }
}
