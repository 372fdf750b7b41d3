//! A test PKI: a root CA, an intermediate, and leaves signed by the intermediate, written as
//! PEM files (leaf first, then the intermediate) into a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Ecdsa,
    Rsa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Current,
    /// Expires in this many days.
    ExpiresInDays(i64),
    Expired,
    NotYetValid,
}

pub struct Pki {
    pub dir: PathBuf,
    root_der: CertificateDer<'static>,
    pub root_pem: String,
    inter_pem: String,
    inter: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("mkdir");
        let root_key = KeyPair::generate().expect("root key");
        let mut root_params = CertificateParams::default();
        root_params
            .distinguished_name
            .push(DnType::CommonName, "Portico Test Root");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = root_params.self_signed(&root_key).expect("root");
        let root_issuer = Issuer::new(root_params, root_key);

        let inter_key = KeyPair::generate().expect("inter key");
        let mut inter_params = CertificateParams::default();
        inter_params
            .distinguished_name
            .push(DnType::CommonName, "Portico Test Intermediate");
        inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        inter_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let inter = inter_params
            .signed_by(&inter_key, &root_issuer)
            .expect("inter");
        let pki = Pki {
            dir: dir.to_path_buf(),
            root_der: root.der().clone(),
            root_pem: root.pem(),
            inter_pem: inter.pem(),
            inter: Issuer::new(inter_params, inter_key),
        };
        std::fs::write(dir.join("root.pem"), &pki.root_pem).expect("write root");
        pki
    }

    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root_der.clone()
    }

    pub fn root_file(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    /// A TLS acceptor for a test backend: a current ECDSA leaf for `sans` (files named
    /// `stem`), choosing among `alpn`.
    pub fn backend_acceptor(
        &self,
        stem: &str,
        sans: &[&str],
        alpn: &[&[u8]],
    ) -> tokio_rustls::TlsAcceptor {
        let (cert, key) = self.leaf(stem, sans, Key::Ecdsa, Validity::Current);
        acceptor_alpn(&cert, &key, alpn)
    }

    /// The exact, wildcard and two-name leaves several tests resolve against:
    /// `exact.x.test`, `*.x.test` and `one.test` + `two.test` (ECDSA, valid now).
    pub const X_TEST: &'static [(&'static str, &'static [&'static str])] = &[
        ("exact", &["exact.x.test"]),
        ("wildcard", &["*.x.test"]),
        ("san", &["one.test", "two.test"]),
    ];

    /// An ECDSA leaf, valid now, for each (file stem, SAN names), written as the
    /// `[[certificate]]` entries of a configuration.
    pub fn pool(&self, leaves: &[(&str, &[&str])]) -> String {
        let mut toml = String::new();
        for (stem, sans) in leaves {
            let (cert, key) = self.leaf(stem, sans, Key::Ecdsa, Validity::Current);
            toml.push_str(&format!(
                "[[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        toml
    }

    /// A leaf for `sans`, written as `<stem>.pem` (leaf + intermediate) and `<stem>.key`.
    /// Returns the two paths.
    pub fn leaf(
        &self,
        stem: &str,
        sans: &[&str],
        key: Key,
        validity: Validity,
    ) -> (PathBuf, PathBuf) {
        let key_pair = match key {
            Key::Ecdsa => KeyPair::generate().expect("ecdsa key"),
            Key::Rsa => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                    .expect("rsa key")
            }
        };
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{stem} {key:?}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // As public CAs do; ACME Renewal Information names a certificate by it.
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        let (nb, na) = match validity {
            Validity::Current => (now - Duration::days(1), now + Duration::days(90)),
            Validity::ExpiresInDays(d) => (now - Duration::days(1), now + Duration::days(d)),
            Validity::Expired => (now - Duration::days(90), now - Duration::days(1)),
            Validity::NotYetValid => (now + Duration::days(1), now + Duration::days(90)),
        };
        params.not_before = nb;
        params.not_after = na;
        let cert = params.signed_by(&key_pair, &self.inter).expect("leaf");
        let cert_path = self.dir.join(format!("{stem}.pem"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), self.inter_pem))
            .expect("write cert");
        std::fs::write(&key_path, key_pair.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

impl Pki {
    /// Puts a leaf for `sans` into the certificate directory `dir` as `name.pem` +
    /// `name.key`, each by an atomic rename (key first), as a deployment tool would; the
    /// leaf's subject holds `stem`.
    pub fn put_pair(&self, dir: &Path, name: &str, stem: &str, sans: &[&str]) {
        let (cert, key) = self.leaf(stem, sans, Key::Ecdsa, Validity::Current);
        for (from, to) in [(key, format!("{name}.key")), (cert, format!("{name}.pem"))] {
            let tmp = dir.join(format!(".{to}.tmp"));
            std::fs::copy(from, &tmp).expect("copy");
            std::fs::rename(&tmp, dir.join(to)).expect("rename");
        }
    }
}

/// A rustls acceptor presenting the chain and key in these PEM files, for test backends
/// and for servers presenting certificates Portico itself refuses to load.
pub fn acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    acceptor_alpn(cert, key, &[])
}

/// Like [`acceptor`], choosing among `alpn` (in the server's order of preference).
pub fn acceptor_alpn(cert: &Path, key: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}
