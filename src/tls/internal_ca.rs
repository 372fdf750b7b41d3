//! Portico's local CA (`tls = "internal"`): a CA created in `state_dir` on first use, and leaf
//! certificates it issues for a site's hosts, reused across restarts and renewed before they
//! expire.
//!
//! Keys are written with mode 0600 and replaced atomically (write, then rename), so a crash
//! never leaves a half-written key. This module never touches a certificate it did not issue.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use super::load::{self, Cert, LoadError};
use crate::names::HostName;

/// How long an issued leaf certificate is valid.
pub const LEAF_LIFETIME: Duration = Duration::days(45);
/// A leaf with less than this left is replaced: a third of its life, and more than the
/// 14 days at which `check` starts warning, so an internal certificate never warns.
pub const RENEW_BEFORE: Duration = Duration::days(15);
const CA_LIFETIME: Duration = Duration::days(3650);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the local CA in {} is unusable: {source}", path.display())]
    BadCa { path: PathBuf, source: rcgen::Error },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// The local CA: its certificate and key, loaded from or created in `state_dir`.
pub struct LocalCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    subject_raw: Vec<u8>,
    /// The CA certificate (DER), which the chain of each leaf it issued carries.
    der: Vec<u8>,
}

/// Where a site's internal certificate and key live (`portico certs` reads them).
pub fn leaf_paths(state_dir: &Path, site: &str) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("internal");
    let stem = file_stem(site);
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// Where the CA certificate lives, for users to trust it.
pub fn ca_cert_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ca.pem")
}

fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    crate::state::private_dir(dir).map_err(|source| CaError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    // Append (not replace) the extension, so "x.pem" and "x.key" never share a temporary
    // file, and start from a fresh file so a stale one cannot lend its mode to a key.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| CaError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn read_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl LocalCa {
    /// Loads the CA from `state_dir`, creating it on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<LocalCa, CaError> {
        ensure_dir(state_dir)?;
        let cert_path = ca_cert_path(state_dir);
        let key_path = ca_key_path(state_dir);
        if !cert_path.exists() || !key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            // A random suffix keeps two installations' CAs apart in a trust store.
            let tag: String = key
                .public_key_raw()
                .iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect();
            dn.push(DnType::CommonName, format!("Portico Local CA {tag}"));
            dn.push(DnType::OrganizationName, "Portico (development only)");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::hours(1);
            params.not_after = now + CA_LIFETIME;
            let cert = params.self_signed(&key)?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
        }
        let cert_pem = read_string(&cert_path)?;
        let key = KeyPair::from_pem(&read_string(&key_path)?).map_err(|source| CaError::BadCa {
            path: key_path.clone(),
            source,
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| CaError::BadCa {
            path: cert_path.clone(),
            source,
        })?;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(
            |_| CaError::BadCa {
                path: cert_path.clone(),
                source: rcgen::Error::CouldNotParseCertificate,
            },
        )?;
        let subject_raw = x509_parser::parse_x509_certificate(&der)
            .map(|(_, c)| c.subject().as_raw().to_vec())
            .map_err(|_| CaError::BadCa {
                path: cert_path.clone(),
                source: rcgen::Error::CouldNotParseCertificate,
            })?;
        Ok(LocalCa {
            dir: state_dir.to_path_buf(),
            cert_pem,
            issuer,
            subject_raw,
            der: der.to_vec(),
        })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate for a site: the stored one if this CA issued it for exactly these hosts
    /// and it is not due for renewal, else a new one.
    pub fn leaf(&self, site: &str, hosts: &[HostName]) -> Result<Cert, CaError> {
        ensure_dir(&self.dir.join("internal"))?;
        let (cert_path, key_path) = leaf_paths(&self.dir, site);
        if let Ok(cert) = load::load(&cert_path, &key_path) {
            if self.reusable(&cert, hosts) {
                return Ok(cert);
            }
        }
        let key = KeyPair::generate()?;
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            hosts
                .first()
                .map(|h| h.to_string())
                .unwrap_or_else(|| site.to_string()),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + LEAF_LIFETIME;
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = format!("{}{}", cert.pem(), self.cert_pem);
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&cert_path, chain.as_bytes(), 0o644)?;
        Ok(load::load(&cert_path, &key_path)?)
    }

    fn reusable(&self, cert: &Cert, hosts: &[HostName]) -> bool {
        reusable(&self.subject_raw, &self.der, cert, hosts)
    }
}

/// Whether `cert` is a leaf the CA with this subject and certificate (DER) issued for
/// exactly `hosts`, valid now and not due for renewal: the one rule for reusing a stored
/// leaf. (A fleet's CA replacing this node's own makes every leaf of the old one due.)
fn reusable(ca_subject_raw: &[u8], ca_der: &[u8], cert: &Cert, hosts: &[HostName]) -> bool {
    let renew_at = cert.not_after - RENEW_BEFORE.whole_seconds();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let same_names =
        cert.names.len() == hosts.len() && hosts.iter().all(|h| cert.names.contains(h));
    let Some(chain) = cert.in_memory() else {
        return false;
    };
    let ours = chain
        .cert
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .is_some_and(|(_, c)| c.issuer().as_raw() == ca_subject_raw)
        && chain.cert.get(1).is_some_and(|c| c.as_ref() == ca_der);
    same_names && ours && cert.not_before <= now && now < renew_at
}

/// The leaf stored for `site` in `state_dir`, when serving would reuse it rather than issue
/// a new one ([`LocalCa::leaf`]'s rule). Reads only: it never creates the CA or writes a
/// file, so `check`, `bindings` and `explain` can show the certificate a server started
/// from this `state_dir` presents. None when there is no CA or no reusable leaf yet.
pub fn stored_leaf(state_dir: &Path, site: &str, hosts: &[HostName]) -> Option<Cert> {
    let ca_pem = fs::read(ca_cert_path(state_dir)).ok()?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).ok()?;
    let subject = x509_parser::parse_x509_certificate(&der)
        .ok()
        .map(|(_, c)| c.subject().as_raw().to_vec())?;
    let der = der.to_vec();
    let (cert_path, key_path) = leaf_paths(state_dir, site);
    let cert = load::load(&cert_path, &key_path).ok()?;
    reusable(&subject, &der, &cert, hosts).then_some(cert)
}

/// The CA's certificate and key as stored in `state_dir` (PEM), if both are there: what a
/// fleet's node offers as the fleet's CA.
pub fn stored_ca(state_dir: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    let cert = fs::read(ca_cert_path(state_dir)).ok()?;
    let key = fs::read(ca_key_path(state_dir)).ok()?;
    Some((cert, key))
}

fn ca_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ca.key")
}

/// Checks that `cert_pem` and `key_pem` make a CA this module can issue with: the key
/// parses, the certificate parses and is a CA, and the certificate's public key is the
/// key's.
pub fn check_ca(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), CaError> {
    let bad = |source| CaError::BadCa {
        path: PathBuf::from("the fleet's CA"),
        source,
    };
    let key_text =
        std::str::from_utf8(key_pem).map_err(|_| bad(rcgen::Error::CouldNotParseKeyPair))?;
    let cert_text =
        std::str::from_utf8(cert_pem).map_err(|_| bad(rcgen::Error::CouldNotParseCertificate))?;
    let key = KeyPair::from_pem(key_text).map_err(bad)?;
    let public = key.public_key_raw().to_vec();
    Issuer::from_ca_cert_pem(cert_text, key).map_err(bad)?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem)
        .map_err(|_| bad(rcgen::Error::CouldNotParseCertificate))?;
    let (_, c) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| bad(rcgen::Error::CouldNotParseCertificate))?;
    if !c.is_ca() || c.public_key().subject_public_key.data.as_ref() != public.as_slice() {
        return Err(bad(rcgen::Error::CouldNotParseCertificate));
    }
    Ok(())
}

/// Makes `cert_pem` and `key_pem` (checked with [`check_ca`]) the CA in `state_dir`, the
/// key 0600, each file written whole and renamed into place; whether anything changed
/// (false when the same CA is there already). Leaves of the previous CA are no longer
/// reused: the next build issues new ones.
pub fn install_ca(state_dir: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, CaError> {
    check_ca(cert_pem, key_pem)?;
    if stored_ca(state_dir).is_some_and(|(c, k)| c == cert_pem && k == key_pem) {
        return Ok(false);
    }
    ensure_dir(state_dir)?;
    write_atomic(&ca_key_path(state_dir), key_pem, 0o600)?;
    write_atomic(&ca_cert_path(state_dir), cert_pem, 0o644)?;
    Ok(true)
}

/// A file name for a site: its name with anything unusual replaced, plus a short hash so two
/// names that sanitize alike do not share files.
fn file_stem(site: &str) -> String {
    let clean: String = site
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, site.as_bytes());
    let tag: String = digest
        .as_ref()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{clean}-{tag}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn hosts(names: &[&str]) -> Vec<HostName> {
        names
            .iter()
            .map(|n| HostName::parse(n).expect("valid name"))
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn ca_is_created_once_with_private_keys_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let ca = LocalCa::load_or_create(&state).expect("create");
        assert_eq!(mode(&state.join("ca.key")), 0o600);
        assert_eq!(mode(&state), 0o700);
        let again = LocalCa::load_or_create(&state).expect("load");
        assert_eq!(
            ca.cert_pem(),
            again.cert_pem(),
            "the CA is reused, not recreated"
        );
        let leaf = ca
            .leaf("site one", &hosts(&["a.test", "*.b.test"]))
            .expect("issue");
        assert_eq!(mode(&leaf.key_file), 0o600);
        assert_eq!(leaf.names, hosts(&["a.test", "*.b.test"]));
        assert!(
            leaf.in_memory().expect("held").cert.len() == 2,
            "the chain carries the CA certificate"
        );
        assert!(leaf.cert_file.starts_with(state.join("internal")));
    }

    #[test]
    fn leaf_is_reused_until_renewal_is_due_or_hosts_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = LocalCa::load_or_create(dir.path()).expect("create");
        let first = ca.leaf("s", &hosts(&["a.test"])).expect("issue");
        let second = ca.leaf("s", &hosts(&["a.test"])).expect("reuse");
        assert_eq!(
            first.sha256, second.sha256,
            "a fresh leaf is reused across restarts"
        );
        let other_hosts = ca
            .leaf("s", &hosts(&["a.test", "b.test"]))
            .expect("reissue");
        assert_ne!(
            other_hosts.sha256, second.sha256,
            "new hosts get a new certificate"
        );

        // A leaf with less than RENEW_BEFORE left is replaced.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["a.test".to_string(), "b.test".to_string()])
            .expect("params");
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(40);
        params.not_after = now + Duration::days(5);
        let old = params.signed_by(&key, &ca.issuer).expect("sign");
        fs::write(
            &other_hosts.cert_file,
            format!("{}{}", old.pem(), ca.cert_pem()),
        )
        .expect("write");
        fs::write(&other_hosts.key_file, key.serialize_pem()).expect("write");
        let renewed = ca.leaf("s", &hosts(&["a.test", "b.test"])).expect("renew");
        assert!(
            renewed.not_after - now.unix_timestamp() > RENEW_BEFORE.whole_seconds(),
            "renewed before expiry"
        );

        // A leaf from another CA in the same place is replaced too.
        let foreign = LocalCa::load_or_create(&dir.path().join("other")).expect("other CA");
        let stranger = foreign
            .leaf("s", &hosts(&["a.test", "b.test"]))
            .expect("issue");
        fs::copy(&stranger.cert_file, &renewed.cert_file).expect("copy");
        fs::copy(&stranger.key_file, &renewed.key_file).expect("copy");
        let mine = ca
            .leaf("s", &hosts(&["a.test", "b.test"]))
            .expect("reissue");
        assert_ne!(mine.sha256, stranger.sha256);
    }

    #[test]
    fn a_fleets_ca_replaces_this_nodes_and_its_leaves_are_issued_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mine, fleets) = (dir.path().join("mine"), dir.path().join("fleets"));
        let ca = LocalCa::load_or_create(&mine).expect("create");
        let old = ca.leaf("s", &hosts(&["a.test"])).expect("issue");
        LocalCa::load_or_create(&fleets).expect("create");
        let (cert, key) = stored_ca(&fleets).expect("stored");
        // Not a CA with its key: refused, and nothing is written.
        let (_, other_key) = stored_ca(&mine).expect("stored");
        assert!(check_ca(&cert, &other_key).is_err());
        assert!(install_ca(&mine, &cert, &other_key).is_err());
        assert!(install_ca(&mine, old.in_memory().expect("held").cert[0].as_ref(), &key).is_err());
        assert_ne!(stored_ca(&mine).map(|(c, _)| c), Some(cert.clone()));
        // The fleet's: written once, the key 0600; the old leaf is not reused.
        assert!(install_ca(&mine, &cert, &key).expect("install"));
        assert!(!install_ca(&mine, &cert, &key).expect("again"), "unchanged");
        assert_eq!(mode(&mine.join("ca.key")), 0o600);
        let ca = LocalCa::load_or_create(&mine).expect("load");
        assert_eq!(ca.cert_pem().as_bytes(), cert.as_slice());
        assert!(stored_leaf(&mine, "s", &hosts(&["a.test"])).is_none());
        let new = ca.leaf("s", &hosts(&["a.test"])).expect("issue");
        assert_ne!(new.sha256, old.sha256);
        assert!(stored_leaf(&mine, "s", &hosts(&["a.test"])).is_some());
    }

    #[test]
    fn file_stems_do_not_collide() {
        assert_ne!(file_stem("a b"), file_stem("a_b"));
        assert!(file_stem("../../etc").starts_with(".._.._etc-"));
        assert!(!file_stem("x/y").contains('/'));
    }
}
