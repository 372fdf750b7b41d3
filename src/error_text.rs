//! Errors in words an operator can act on. [`ErrorChain`] displays an error with every
//! cause down to the root one, for log lines and status files: the outermost error often
//! does not say what to fix (hyper's `client error (Connect)` hides the rustls verdict two
//! sources down). [`describe_io`] says why a file cannot be read without `(os error N)`.
//!
//! This module only formats; nothing decides anything from the text.

use std::fmt;
use std::io;

/// Why a file cannot be read, in words: `is a directory, not a file`, never
/// `Is a directory (os error 21)`.
pub fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (check the file's owner and mode)".to_string()
        }
        io::ErrorKind::IsADirectory => "is a directory, not a file".to_string(),
        io::ErrorKind::NotADirectory => "a part of the path is a file, not a directory".to_string(),
        _ => {
            // The system's words without the number.
            let text = e.to_string();
            match (e.raw_os_error(), text.rfind(" (os error ")) {
                (Some(_), Some(at)) => text[..at].to_string(),
                _ => text,
            }
        }
    }
}

/// Displays an error and its sources (`std::error::Error::source`), `a: b: c`.
///
/// Many errors already print their source in their own message (`"ACME: {0}"`, or a
/// `#[error(transparent)]` wrapper over an error that does); a source whose message the
/// text so far already ends with is not repeated, so each cause is said once.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !text.is_empty() && !last.ends_with(&text) {
                write!(f, ": {text}")?;
                last = text;
            }
            source = s.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::{describe_io, ErrorChain};

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("invalid peer certificate: UnknownIssuer")]
        Verify,
    }

    /// Says only what happened, like hyper's `client error (Connect)`.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Opaque(#[source] Inner);

    /// Repeats its source in its message, like `AcmeError::Acme`.
    #[derive(Debug, thiserror::Error)]
    #[error("ACME: {0}")]
    struct Repeats(#[source] Opaque);

    #[test]
    fn error_chain_names_the_root_cause() {
        let e = Opaque(Inner::Verify);
        assert_eq!(
            ErrorChain(&e).to_string(),
            "client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn error_chain_says_a_cause_already_in_the_message_once() {
        let e = Repeats(Opaque(Inner::Verify));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "ACME: client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn describe_io_never_shows_os_error_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = std::fs::read(dir.path()).expect_err("a directory cannot be read as a file");
        assert_eq!(describe_io(&e), "is a directory, not a file");
        let e = std::fs::read(dir.path().join("nope")).expect_err("missing");
        assert_eq!(describe_io(&e), "no such file");
        let e = std::io::Error::from_raw_os_error(28);
        assert!(!describe_io(&e).contains("os error"), "{}", describe_io(&e));
    }

    #[test]
    fn error_chain_of_an_error_without_source_is_its_message() {
        let e = std::io::Error::other("disk full");
        assert_eq!(ErrorChain(&e).to_string(), "disk full");
    }
}
