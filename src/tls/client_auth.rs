//! Client certificates: a site's `client_auth` made into a rustls client verifier (a
//! [`Policy`]), the identity a verified connection carries ([`ClientIdentity`]), and why a
//! handshake under a policy failed ([`Refused`]).
//!
//! A policy is loaded by `runtime::build`, once per distinct `client_auth` value; the
//! handshake path only uses the verifier it holds. Nothing here reads a file after build,
//! and nothing here decides which site a connection is for: `Runtime::decide` did that
//! before the handshake started.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::HeaderValue;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};

use crate::config::ClientAuth;

/// One distinct `client_auth`: its settings, the verifier made from its files, and what
/// `bindings` and `explain` show of it.
pub struct Policy {
    pub config: ClientAuth,
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// The subjects of the CA certificates it trusts, in the file's order.
    pub trusted: Vec<String>,
    /// SHA-256 over what the policy is made of (the CA and CRL files' bytes, `required`):
    /// sessions are bound to it, so a session resumes only under the very policy that
    /// verified it. The same files give the same digest on every node of a fleet.
    pub digest: [u8; 32],
    /// Each CRL's `nextUpdate` (Unix seconds), when it has one: `check` warns about a CRL
    /// that should have been replaced by now.
    pub crl_next_update: Vec<(PathBuf, i64)>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("config", &self.config)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

/// Why a `client_auth` could not be made into a policy, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {}: {}", path.display(), crate::error_text::describe_io(source))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: certificate #{index} is not a usable CA certificate: {reason}", path.display())]
    BadCa {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{} is not a certificate revocation list (PEM or DER): {reason}", path.display())]
    BadCrl { path: PathBuf, reason: String },
    #[error("cannot make the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl PolicyError {
    /// The path in the configuration (below `site[N].client_auth`) the problem belongs to.
    pub fn field(&self) -> &'static str {
        match self {
            PolicyError::BadCrl { .. } => "crl",
            PolicyError::Read { .. } => "files",
            _ => "ca",
        }
    }

    pub fn fix(&self) -> &'static str {
        match self {
            PolicyError::Read { .. } => "fix the path (relative paths are relative to the configuration file) or the file's permissions",
            PolicyError::NoCertificate { .. } | PolicyError::BadCa { .. } => {
                "name a PEM file holding the CA certificates (BEGIN CERTIFICATE) that issue the client certificates"
            }
            PolicyError::BadCrl { .. } => "name a CRL file (BEGIN X509 CRL, or DER) issued by the client CA",
            PolicyError::Verifier(_) => "check the ca and crl files",
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, PolicyError> {
    std::fs::read(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a `client_auth`: the CA file into a root store, each CRL, and the verifier that
/// asks every client for a certificate and, when `required` is false, lets one without a
/// certificate through. Revocation is checked for the client's own certificate (not its
/// intermediates), and a certificate whose revocation status the CRLs do not give is
/// refused when CRLs are configured (fail closed).
pub fn load(config: &ClientAuth) -> Result<Policy, PolicyError> {
    use rustls::pki_types::pem::PemObject;
    let provider = crate::tls::server_provider();
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    hash.update(if config.required {
        b"required"
    } else {
        b"optional"
    });

    let pem = read(&config.ca)?;
    hash.update(&(pem.len() as u64).to_be_bytes());
    hash.update(&pem);
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PolicyError::BadCa {
            path: config.ca.clone(),
            index: 0,
            reason: e.to_string(),
        })?;
    if cas.is_empty() {
        return Err(PolicyError::NoCertificate {
            path: config.ca.clone(),
        });
    }
    let mut roots = RootCertStore::empty();
    let mut trusted = Vec::with_capacity(cas.len());
    for (index, der) in cas.into_iter().enumerate() {
        let subject = x509_parser::parse_x509_certificate(&der)
            .map(|(_, c)| c.subject().to_string())
            .map_err(|e| PolicyError::BadCa {
                path: config.ca.clone(),
                index,
                reason: e.to_string(),
            })?;
        roots.add(der).map_err(|e| PolicyError::BadCa {
            path: config.ca.clone(),
            index,
            reason: e.to_string(),
        })?;
        trusted.push(subject);
    }

    let mut crls = Vec::new();
    let mut crl_next_update = Vec::new();
    for path in &config.crl {
        let bytes = read(path)?;
        hash.update(&(bytes.len() as u64).to_be_bytes());
        hash.update(&bytes);
        let bad = |reason: String| PolicyError::BadCrl {
            path: path.clone(),
            reason,
        };
        let ders: Vec<CertificateRevocationListDer<'static>> =
            if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
                CertificateRevocationListDer::pem_slice_iter(&bytes)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(e.to_string()))?
            } else {
                vec![CertificateRevocationListDer::from(bytes)]
            };
        if ders.is_empty() {
            return Err(bad("no BEGIN X509 CRL block".to_string()));
        }
        for der in &ders {
            let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| bad(e.to_string()))?;
            if let Some(next) = crl.next_update() {
                crl_next_update.push((path.clone(), next.timestamp()));
            }
        }
        crls.extend(ders);
    }

    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    if !config.required {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build()?;
    Ok(Policy {
        config: config.clone(),
        verifier,
        trusted,
        digest: hash
            .finish()
            .as_ref()
            .try_into()
            .unwrap_or_else(|_| unreachable!("SHA-256 gives 32 bytes")),
        crl_next_update,
    })
}

/// The client certificate a connection was established with (or resumed with: rustls
/// keeps the chain in the session), verified by its site's policy then. Made once per
/// connection, after the handshake, and only when the client presented a certificate.
#[derive(Debug)]
pub struct ClientIdentity {
    /// The leaf's subject, RFC 4514 style (`CN=alice, O=Example`).
    pub subject: String,
    /// The leaf's SHA-256 fingerprint, colon-separated uppercase hex (as `bindings` shows).
    pub fingerprint: String,
    /// RFC 9440 `Client-Cert`: the leaf's DER as a structured-field byte sequence.
    pub cert_header: HeaderValue,
    /// RFC 9440 `Client-Cert-Chain`: the rest of the chain the client sent, or None.
    pub chain_header: Option<HeaderValue>,
    /// [`ClientIdentity::subject`] as a header value (non-printable bytes escaped).
    pub subject_header: HeaderValue,
}

impl ClientIdentity {
    /// The identity in a verified peer chain (leaf first); None for an empty chain.
    pub fn of(chain: &[CertificateDer<'_>]) -> Option<ClientIdentity> {
        let (leaf, rest) = chain.split_first()?;
        let subject = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_default();
        let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf);
        let fingerprint = sha
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let chain_header = if rest.is_empty() {
            None
        } else {
            let items: Vec<String> = rest.iter().map(|c| byte_sequence(c)).collect();
            HeaderValue::from_str(&items.join(", ")).ok()
        };
        Some(ClientIdentity {
            subject_header: HeaderValue::from_str(&printable(&subject))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            cert_header: HeaderValue::from_str(&byte_sequence(leaf))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            chain_header,
            subject,
            fingerprint,
        })
    }
}

/// A structured-field byte sequence (RFC 8941 3.3.5): standard base64 between colons.
fn byte_sequence(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `s` with every byte outside printable ASCII written as `\xNN`, so it fits in a header.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Why a handshake under a client-auth policy was refused, as the log line and the
/// metrics name it. rustls sends the matching alert itself (see [`Refused::alert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No certificate, and the site requires one: `certificate_required` (116).
    Missing,
    /// Not issued by the site's CA: `unknown_ca` (48). Also a certificate whose revocation
    /// status the site's CRLs do not give.
    UnknownCa,
    /// Listed in one of the site's CRLs: `certificate_revoked` (44).
    Revoked,
    /// Expired or not yet valid: `certificate_expired` (45).
    Expired,
    /// Any other verification failure (bad signature, wrong key usage, ...).
    Invalid,
}

impl Refused {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [Refused; 5] = [
        Refused::Missing,
        Refused::UnknownCa,
        Refused::Revoked,
        Refused::Expired,
        Refused::Invalid,
    ];

    /// What a failed handshake's error says about the client's certificate, if anything.
    pub fn of(e: &rustls::Error) -> Option<Refused> {
        Some(match e {
            rustls::Error::NoCertificatesPresented => Refused::Missing,
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer
                | CertificateError::UnknownRevocationStatus
                | CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. } => Refused::UnknownCa,
                CertificateError::Revoked => Refused::Revoked,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Refused::Expired,
                _ => Refused::Invalid,
            },
            _ => return None,
        })
    }

    /// The label of the metric and the log line's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Missing => "certificate_required",
            Refused::UnknownCa => "unknown_ca",
            Refused::Revoked => "certificate_revoked",
            Refused::Expired => "certificate_expired",
            Refused::Invalid => "bad_certificate",
        }
    }

    /// The TLS alert rustls sends for it (RFC 8446 6.2); `Invalid` covers several.
    pub fn alert(self) -> Option<u8> {
        match self {
            Refused::Missing => Some(116),
            Refused::UnknownCa => Some(48),
            Refused::Revoked => Some(44),
            Refused::Expired => Some(45),
            Refused::Invalid => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_match_the_alerts_rustls_sends() {
        use rustls::AlertDescription;
        for (error, want) in [
            (rustls::Error::NoCertificatesPresented, Refused::Missing),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                Refused::UnknownCa,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Revoked),
                Refused::Revoked,
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                Refused::Expired,
            ),
        ] {
            let got = Refused::of(&error).expect("a client certificate problem");
            assert_eq!(got, want, "{error:?}");
            if let rustls::Error::InvalidCertificate(c) = error {
                let alert = u8::from(AlertDescription::from(c));
                assert_eq!(Some(alert), got.alert(), "{got:?}");
            }
        }
        assert_eq!(Refused::of(&rustls::Error::HandshakeNotComplete), None);
    }

    #[test]
    fn header_values_are_byte_sequences_and_printable() {
        assert_eq!(byte_sequence(b"\x00\xff"), ":AP8=:");
        assert_eq!(printable("CN=a\u{e9}\\"), "CN=a\\xc3\\xa9\\x5c");
    }
}
