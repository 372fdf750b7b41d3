//! Loading a certificate: PEM files -> a checked [`Cert`] (chain, signing key, the names it
//! covers, its validity) or a [`LoadError`] that says exactly what is wrong with which file.
//!
//! A key that cannot be read is an error for the certificate that needs it, never a reason to
//! fall back to some other certificate.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::SignatureAlgorithm;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::cache::{Held, KeyCache};
use super::key::LazyKey;
use crate::error_text::describe_io;
use crate::names::HostName;

/// The kind of private key, which decides which clients can use the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    Ecdsa,
    Ed25519,
    Rsa,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Ecdsa => "ECDSA",
            KeyType::Ed25519 => "Ed25519",
            KeyType::Rsa => "RSA",
        })
    }
}

/// The signature schemes a certificate's key can sign with, known without the key: a
/// client that offers none of them cannot use the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signs {
    /// An ECDSA key (one scheme per curve) or an Ed25519 key.
    One(rustls::SignatureScheme),
    /// An RSA key: PSS or PKCS#1 with SHA-256, -384 or -512.
    Rsa,
}

impl Signs {
    /// Whether a client offering `offered` can use the key, as the key's own
    /// `choose_scheme` would answer.
    pub fn usable(self, offered: &[rustls::SignatureScheme]) -> bool {
        match self {
            Signs::One(scheme) => offered.contains(&scheme),
            Signs::Rsa => offered.iter().any(|s| super::key::RSA_SCHEMES.contains(s)),
        }
    }
}

/// A loaded certificate: what Portico needs to choose and explain it, and, while the
/// certificate cache has room for it, what rustls presents (tls/cache.rs).
pub struct Cert {
    held: Held,
    pub signs: Signs,
    /// SAN DNS names, normalized. Certificates without SANs cover nothing (like browsers,
    /// Portico ignores the subject CN).
    pub names: Vec<HostName>,
    pub subject: String,
    /// Shared: a directory of a million customer certificates has a handful of issuers.
    pub issuer: Arc<str>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub key_type: KeyType,
    pub sha256: [u8; 32],
    /// Shared with the [`CertFiles`] it was loaded from.
    pub cert_file: Arc<Path>,
    pub key_file: Arc<Path>,
}

impl fmt::Debug for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cert")
            .field("subject", &self.subject)
            .field("names", &self.names)
            .field("key_type", &self.key_type)
            .field("cert_file", &self.cert_file)
            .finish()
    }
}

impl Cert {
    /// A certificate known from what an earlier load found (`state_dir/names.cache`),
    /// its chain and key not in memory: they are read from `files` when first needed,
    /// and refused if the leaf is not the one `sha256` names.
    #[allow(clippy::too_many_arguments)]
    pub fn from_index(
        files: &CertFiles,
        names: Vec<HostName>,
        subject: String,
        issuer: Arc<str>,
        not_before: i64,
        not_after: i64,
        key_type: KeyType,
        signs: Signs,
        sha256: [u8; 32],
    ) -> Cert {
        Cert {
            held: Held::default(),
            signs,
            names,
            subject,
            issuer,
            not_before,
            not_after,
            key_type,
            sha256,
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
        }
    }

    /// The chain and key slot, for the certificate cache.
    pub fn held(&self) -> &Held {
        &self.held
    }

    /// The chain and key when they are in memory (a warm certificate).
    pub fn in_memory(&self) -> Option<Arc<CertifiedKey>> {
        self.held.get()
    }

    /// The chain and key, read again from the files when the cache evicted them. Blocking
    /// (file I/O); the handshake path calls it on the blocking pool. Files that no longer
    /// hold this certificate (replaced since it was listed) are an error: the change is the
    /// watcher's to apply, and this certificate is not to be presented for what they hold.
    pub fn certified(self: &Arc<Self>, cache: &KeyCache) -> Result<Arc<CertifiedKey>, LoadError> {
        if let Some(key) = self.in_memory() {
            return Ok(key);
        }
        let (again, _) = load_shared(&self.files())?;
        if again.sha256 != self.sha256 {
            return Err(LoadError::Changed {
                path: self.cert_file.to_path_buf(),
            });
        }
        let key = again.in_memory().ok_or_else(|| LoadError::Changed {
            path: self.cert_file.to_path_buf(),
        })?;
        cache.count_reload();
        Ok(cache.hold(self, key))
    }

    /// The files it was loaded from.
    pub fn files(&self) -> CertFiles {
        CertFiles {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
        }
    }

    /// Whether a client offering `offered` can use this certificate's key.
    pub fn can_sign(&self, offered: &[rustls::SignatureScheme]) -> bool {
        self.signs.usable(offered)
    }

    /// Whether the private key can sign: parses a key whose parsing was deferred
    /// (`tls/key.rs`), so `portico check` still finds a key that matches its certificate's
    /// public key but whose private part aws-lc refuses. Serving parses it on first use.
    pub fn key_usable(self: &Arc<Self>, cache: &KeyCache) -> bool {
        const ANY: &[rustls::SignatureScheme] = &[
            rustls::SignatureScheme::ECDSA_NISTP256_SHA256,
            rustls::SignatureScheme::ECDSA_NISTP384_SHA384,
            rustls::SignatureScheme::ECDSA_NISTP521_SHA512,
            rustls::SignatureScheme::ED25519,
            rustls::SignatureScheme::RSA_PSS_SHA256,
            rustls::SignatureScheme::RSA_PKCS1_SHA256,
        ];
        self.certified(cache)
            .is_ok_and(|k| k.key.choose_scheme(ANY).is_some())
    }

    /// Whether this certificate covers `name` (exactly or by a wildcard SAN).
    pub fn covers(&self, name: &HostName) -> bool {
        self.names.iter().any(|n| n.covers(name))
    }

    /// Whether this certificate covers a name in normal form that is not a wildcard
    /// ([`crate::names::is_normal_name`]), such as a request's host.
    pub fn covers_name(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.covers_name(name))
    }

    /// Valid at `now` (unix seconds).
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The SHA-256 fingerprint as colon-separated hex.
    pub fn fingerprint(&self) -> String {
        self.sha256
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Which of a certificate's two files a problem is in: the chain (`cert = ...`) or the
/// private key (`key = ...`). It names the file in messages and gives the diagnostic path
/// its last part (`site[0].tls.key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
}

impl Part {
    /// The configuration key that names the file.
    pub fn key(self) -> &'static str {
        match self {
            Part::Cert => "cert",
            Part::Key => "key",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Cert => "certificate file",
            Part::Key => "key file",
        })
    }
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the {part} {}: {}", path.display(), describe_io(source))]
    Read {
        part: Part,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the {part} {} is not a PEM file (no -----BEGIN line)", path.display())]
    NotPem { part: Part, path: PathBuf },
    #[error("{} has no CERTIFICATE block", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} has no private key (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)", path.display())]
    NoKey { path: PathBuf },
    #[error("{} holds an encrypted private key, which Portico cannot use", path.display())]
    EncryptedKey { path: PathBuf },
    #[error("{}: unsupported private key: {source}", path.display())]
    UnsupportedKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: certificate #{index} cannot be parsed: {reason}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: the chain is not in leaf-first order: certificate #{index} ({subject}) is not issued by the next one ({next})", path.display())]
    ChainOrder {
        path: PathBuf,
        index: usize,
        subject: String,
        next: String,
    },
    #[error("{} no longer holds the certificate listed for it (it was replaced since)", path.display())]
    Changed { path: PathBuf },
}

impl LoadError {
    /// The file the problem is in; None when it is in the pair (a key that does not match
    /// the certificate).
    pub fn part(&self) -> Option<Part> {
        match self {
            LoadError::Read { part, .. } | LoadError::NotPem { part, .. } => Some(*part),
            LoadError::NoCertificate { .. }
            | LoadError::BadCertificate { .. }
            | LoadError::ChainOrder { .. }
            | LoadError::Changed { .. } => Some(Part::Cert),
            LoadError::NoKey { .. }
            | LoadError::EncryptedKey { .. }
            | LoadError::UnsupportedKey { .. } => Some(Part::Key),
            LoadError::KeyMismatch { .. } => None,
        }
    }

    /// The diagnostic path of the problem, given the path of the table that names the two
    /// files (`certificate[0]` -> `certificate[0].key`).
    pub fn path_in(&self, table: &str) -> String {
        match self.part() {
            Some(part) => format!("{table}.{}", part.key()),
            None => table.to_string(),
        }
    }

    /// How to fix it, in one line.
    pub fn fix(&self) -> &'static str {
        match self {
            LoadError::Read { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                "make the file readable by the user Portico runs as"
            }
            LoadError::Read { source, .. } if source.kind() == io::ErrorKind::IsADirectory => {
                "name the file itself, not its directory; relative paths are relative to the configuration file"
            }
            LoadError::Read { .. } => {
                "check the path; relative paths are relative to the configuration file"
            }
            LoadError::NotPem {
                part: Part::Cert, ..
            }
            | LoadError::NoCertificate { .. } => {
                "give a PEM file with the leaf certificate first, then its intermediates"
            }
            LoadError::NotPem {
                part: Part::Key, ..
            }
            | LoadError::NoKey { .. }
            | LoadError::EncryptedKey { .. } => {
                "give an unencrypted PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM key"
            }
            LoadError::UnsupportedKey { .. } => {
                "use an ECDSA P-256/P-384, RSA (2048 bits or more) or Ed25519 key"
            }
            LoadError::BadCertificate { .. } => "re-export the certificate as PEM",
            LoadError::KeyMismatch { .. } => "pair the certificate with the key it was issued for",
            LoadError::ChainOrder { .. } => {
                "put the leaf certificate first, then each issuer in order"
            }
            LoadError::Changed { .. } => {
                "nothing to do: the change is picked up within seconds (replace files by renaming over them, so a reader never sees half a pair)"
            }
        }
    }
}

/// A file's bytes and its metadata, from one open: the metadata describes exactly the
/// file that was read, and no second lookup of the path is needed for it.
fn read(path: &Path, part: Part) -> Result<(Vec<u8>, std::fs::Metadata), LoadError> {
    use std::io::Read;
    let fail = |source| LoadError::Read {
        part,
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    // A PEM file is small; the length is only a hint (a FIFO or /proc file says 0).
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 20) + 1);
    file.read_to_end(&mut bytes).map_err(fail)?;
    Ok((bytes, meta))
}

fn has_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// A certificate chain file and its key file.
///
/// The paths are shared (`Arc`), not copied, by the configuration, the certificate cache,
/// each loaded certificate and the file watcher: with 100,000 certificates every copy of
/// both paths would cost about 9 MB. A file holding both is one path. Paths are compared
/// and hashed by their bytes, as written (after joining to the configuration's folder):
/// `Path`'s own comparison walks components, which showed in start-up profiles.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: Arc<Path>,
    pub key: Arc<Path>,
}

impl CertFiles {
    pub fn new(cert: PathBuf, key: PathBuf) -> CertFiles {
        let cert: Arc<Path> = Arc::from(cert);
        let key = if key == *cert {
            cert.clone()
        } else {
            Arc::from(key)
        };
        CertFiles { cert, key }
    }

    /// Whether chain and key are one file.
    pub fn same_file(&self) -> bool {
        Arc::ptr_eq(&self.cert, &self.key) || bytes(&self.cert) == bytes(&self.key)
    }
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_encoded_bytes()
}

impl PartialEq for CertFiles {
    fn eq(&self, other: &CertFiles) -> bool {
        bytes(&self.cert) == bytes(&other.cert) && bytes(&self.key) == bytes(&other.key)
    }
}

impl Eq for CertFiles {}

impl std::hash::Hash for CertFiles {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        bytes(&self.cert).hash(h);
        bytes(&self.key).hash(h);
    }
}

/// Loads a chain and its key, checking that the key matches the leaf and that the chain is
/// leaf-first. Validity dates are recorded, not judged: that depends on the time of use.
///
/// When the chain and the key are in one file (as many deployments keep them), the file is
/// read and its PEM decoded once.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Cert, LoadError> {
    let files = CertFiles::new(cert_file.into(), key_file.into());
    load_shared(&files).map(|(cert, _)| cert)
}

/// [`load`], keeping the paths as given (shared, not copied, by the [`Cert`]), and with
/// the metadata of the two files as they were read (the same for a file holding both).
pub fn load_shared(files: &CertFiles) -> Result<(Cert, [std::fs::Metadata; 2]), LoadError> {
    let CertFiles {
        cert: cert_file,
        key: key_file,
    } = files;
    let (cert_pem, cert_meta) = read(cert_file, Part::Cert)?;
    if !has_pem(&cert_pem) {
        return Err(LoadError::NotPem {
            part: Part::Cert,
            path: cert_file.to_path_buf(),
        });
    }
    let same_file = files.same_file();
    let (chain, key_in_cert_file) = sections(&cert_pem, same_file);
    if chain.is_empty() {
        return Err(LoadError::NoCertificate {
            path: cert_file.to_path_buf(),
        });
    }
    let (key_pem, key, key_meta) = if same_file {
        (cert_pem, key_in_cert_file, cert_meta.clone())
    } else {
        let (key_pem, key_meta) = read(key_file, Part::Key)?;
        if !has_pem(&key_pem) {
            return Err(LoadError::NotPem {
                part: Part::Key,
                path: key_file.to_path_buf(),
            });
        }
        let key = sections(&key_pem, true).1;
        (key_pem, key, key_meta)
    };
    let key = the_key(key, &key_pem, key_file)?;
    let cert = from_der(chain, key, files)?;
    Ok((cert, [cert_meta, key_meta]))
}

/// Loads a chain and its key from PEM bytes already in memory, with the checks of [`load`];
/// `files` is what the [`Cert`] and the errors name (where the bytes come from or are to be
/// stored). The admin API checks a certificate this way before it writes a file.
pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], files: &CertFiles) -> Result<Cert, LoadError> {
    let chain = sections(chain_pem, false).0;
    if chain.is_empty() {
        return Err(LoadError::NoCertificate {
            path: files.cert.to_path_buf(),
        });
    }
    let key = the_key(sections(key_pem, true).1, key_pem, &files.key)?;
    from_der(chain, key, files)
}

/// The private key a file's sections gave, or why there is none.
fn the_key(
    key: KeySection,
    key_pem: &[u8],
    key_file: &Path,
) -> Result<PrivateKeyDer<'static>, LoadError> {
    match key {
        Some(Ok(key)) => Ok(key),
        Some(Err(_)) | None if key_pem.windows(9).any(|w| w == b"ENCRYPTED") => {
            Err(LoadError::EncryptedKey {
                path: key_file.to_path_buf(),
            })
        }
        Some(Err(_)) | None => Err(LoadError::NoKey {
            path: key_file.to_path_buf(),
        }),
    }
}

/// One pass over the PEM sections of a file: every certificate that decodes, and, when
/// `want_key`, what `PrivateKeyDer::from_pem_slice` would say (the first private key, or
/// the first section that fails to decode before one; None when there is neither). Every
/// section's base64 is decoded once, which matters with 100,000 files.
type KeySection = Option<Result<PrivateKeyDer<'static>, rustls::pki_types::pem::Error>>;

fn sections(pem: &[u8], want_key: bool) -> (Vec<CertificateDer<'static>>, KeySection) {
    let mut chain = Vec::new();
    let mut key = None;
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        match item {
            Ok((kind, der)) => {
                if kind == SectionKind::Certificate {
                    chain.push(CertificateDer::from(der));
                } else if want_key && key.is_none() {
                    key = PrivateKeyDer::from_pem(kind, der).map(Ok);
                }
            }
            Err(e) => {
                if want_key && key.is_none() {
                    key = Some(Err(e));
                }
            }
        }
    }
    // Kept for as long as the certificate is: one or two entries, not the four a push
    // reserves.
    chain.shrink_to_fit();
    (chain, key)
}

/// The key parsed now, and its key type.
fn eager(
    key: &PrivateKeyDer<'_>,
    key_file: &Path,
) -> Result<(Arc<dyn SigningKey>, KeyType), LoadError> {
    let signing: Arc<dyn SigningKey> =
        signing_key(key).map_err(|source| LoadError::UnsupportedKey {
            path: key_file.to_path_buf(),
            source,
        })?;
    let key_type = key_type(signing.algorithm());
    Ok((signing, key_type))
}

fn key_type(algorithm: SignatureAlgorithm) -> KeyType {
    match algorithm {
        SignatureAlgorithm::ECDSA => KeyType::Ecdsa,
        SignatureAlgorithm::ED25519 => KeyType::Ed25519,
        _ => KeyType::Rsa,
    }
}

/// Whether `key`'s public key is the one in the leaf certificate, by comparing their
/// SubjectPublicKeyInfo encodings, as rustls' `CertifiedKey::keys_match` does, but with
/// the leaf already parsed here.
fn matches(key: &dyn SigningKey, leaf: &X509Certificate<'_>) -> bool {
    key.public_key()
        .is_some_and(|spki| spki.as_ref() == leaf.public_key().raw)
}

/// The signing key for `key`. rustls' `any_supported_type` tries RSA first, and aws-lc
/// parses (and checks, with a scalar multiplication) an EC key completely before saying it
/// is not RSA; for an EC key that doubles the cost of loading it. So a key that looks like
/// EC is tried as ECDSA first; anything else, or an EC-looking key ECDSA refuses, goes the
/// usual way, which gives the same key or the same error as before.
fn signing_key(key: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, rustls::Error> {
    if looks_ec(key) {
        if let Ok(signing) = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(key) {
            return Ok(signing);
        }
    }
    rustls::crypto::aws_lc_rs::sign::any_supported_type(key)
}

/// SEC1 keys are EC keys; a PKCS#8 key is one when its algorithm is id-ecPublicKey
/// (1.2.840.10045.2.1), which comes within the first few bytes of the encoding.
fn looks_ec(key: &PrivateKeyDer<'_>) -> bool {
    const EC_PUBLIC_KEY_OID: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    match key {
        PrivateKeyDer::Sec1(_) => true,
        PrivateKeyDer::Pkcs8(der) => {
            let head = &der.secret_pkcs8_der()[..der.secret_pkcs8_der().len().min(32)];
            head.windows(EC_PUBLIC_KEY_OID.len())
                .any(|w| w == EC_PUBLIC_KEY_OID)
        }
        _ => false,
    }
}

/// Builds a [`Cert`] from the chain and key read from `files`.
fn from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    files: &CertFiles,
) -> Result<Cert, LoadError> {
    let CertFiles {
        cert: cert_file,
        key: key_file,
    } = files;
    let mut parsed = Vec::with_capacity(chain.len());
    for (index, der) in chain.iter().enumerate() {
        let (_, x) = X509Certificate::from_der(der).map_err(|e| LoadError::BadCertificate {
            path: cert_file.to_path_buf(),
            index,
            reason: e.to_string(),
        })?;
        parsed.push(x);
    }
    let Some(leaf) = parsed.first() else {
        return Err(LoadError::NoCertificate {
            path: cert_file.to_path_buf(),
        });
    };
    // An ECDSA or RSA key whose public key is the leaf's is parsed when a handshake first
    // needs it (tls/key.rs). Any other key is parsed now, with the errors it always had.
    let lazy = LazyKey::new(&key).filter(|lazy| matches(lazy, leaf));
    let (signing, key_type, signs): (Arc<dyn SigningKey>, _, _) = match lazy {
        Some(lazy) => {
            let key_type = key_type(lazy.algorithm());
            let signs = lazy.scheme().map_or(Signs::Rsa, Signs::One);
            (Arc::new(lazy), key_type, signs)
        }
        None => {
            let (signing, key_type) = eager(&key, key_file)?;
            let signs = signs_of(signing.as_ref(), key_type);
            if !matches(signing.as_ref(), leaf) {
                // A key that matches a later certificate means the chain is out of
                // order, which is the more useful thing to say.
                check_order(&parsed, cert_file)?;
                return Err(LoadError::KeyMismatch {
                    cert: cert_file.to_path_buf(),
                    key: key_file.to_path_buf(),
                });
            }
            (signing, key_type, signs)
        }
    };
    check_order(&parsed, cert_file)?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let GeneralName::DNSName(dns) = gn {
                if let Ok(name) = HostName::parse(dns) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    let sha256 = {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &chain[0]);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    };
    let subject = leaf.subject().to_string();
    let issuer: Arc<str> = leaf.issuer().to_string().into();
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    drop(parsed);
    Ok(Cert {
        names,
        subject,
        issuer,
        not_before,
        not_after,
        key_type,
        sha256,
        signs,
        held: Held::pinned(Arc::new(CertifiedKey::new(chain, signing))),
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
    })
}

/// The schemes a parsed key signs with: an ECDSA key's curve decides its one scheme.
fn signs_of(key: &dyn SigningKey, key_type: KeyType) -> Signs {
    use rustls::SignatureScheme as S;
    match key_type {
        KeyType::Rsa => Signs::Rsa,
        KeyType::Ed25519 => Signs::One(S::ED25519),
        KeyType::Ecdsa => [
            S::ECDSA_NISTP256_SHA256,
            S::ECDSA_NISTP384_SHA384,
            S::ECDSA_NISTP521_SHA512,
        ]
        .into_iter()
        .find(|s| key.choose_scheme(&[*s]).is_some())
        .map_or(Signs::Rsa, Signs::One),
    }
}

fn check_order(parsed: &[X509Certificate<'_>], path: &Path) -> Result<(), LoadError> {
    for (index, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(LoadError::ChainOrder {
                path: path.to_path_buf(),
                index,
                subject: pair[0].subject().to_string(),
                next: pair[1].subject().to_string(),
            });
        }
    }
    Ok(())
}
