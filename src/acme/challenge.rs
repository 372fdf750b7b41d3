//! The TLS-ALPN-01 challenge (RFC 8737): a self-signed certificate for the name being
//! validated, carrying the SHA-256 of the key authorization in the `acmeIdentifier`
//! extension, presented only to clients that offer the `acme-tls/1` protocol.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::AcmeError;

/// The ALPN protocol ID of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The challenge certificate for `host` and a key authorization's SHA-256 digest.
pub(crate) fn certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let rcgen = |what| move |source| AcmeError::Rcgen { what, source };
    let key = rcgen::KeyPair::generate().map_err(rcgen("challenge key"))?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(rcgen("challenge certificate"))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params
        .self_signed(&key)
        .map_err(rcgen("challenge certificate"))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(AcmeError::Key)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// Presents one certificate to everyone.
#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A TLS configuration that completes an `acme-tls/1` handshake with `cert` and nothing else.
pub fn tls_alpn_config(cert: Arc<CertifiedKey>) -> Result<ServerConfig, rustls::Error> {
    let mut config = crate::tls::server_config(Arc::new(One(cert)))?;
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(config)
}
