//! `probe --cert FILE --key FILE`: the client certificate a probe presents, and what the
//! server asked for. The resolver records the server's request (and the CA names it
//! listed) whether or not a certificate was given, so a probe says that a server wants one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::report::ClientAuthSeen;

/// A client certificate and key, loaded from PEM files.
#[derive(Debug, Clone)]
pub struct ClientCert {
    key: Arc<CertifiedKey>,
    subject: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: the key cannot be used: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl ClientCert {
    pub fn load(cert: &Path, key: &Path) -> Result<ClientCert, ClientCertError> {
        fn pem(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> ClientCertError + '_ {
            move |source| ClientCertError::Pem {
                path: path.to_path_buf(),
                source,
            }
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(pem(cert))?
            .collect::<Result<_, _>>()
            .map_err(pem(cert))?;
        let leaf = chain
            .first()
            .ok_or_else(|| ClientCertError::NoCertificate(cert.to_path_buf()))?;
        let subject = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_default();
        let der = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
        let signing = super::provider()
            .key_provider
            .load_private_key(der)
            .map_err(|source| ClientCertError::Key {
                path: key.to_path_buf(),
                source,
            })?;
        let certified = CertifiedKey::new(chain, signing);
        if certified.keys_match().is_err() {
            return Err(ClientCertError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            });
        }
        Ok(ClientCert {
            key: Arc::new(certified),
            subject,
        })
    }
}

/// The rustls client certificate resolver of one probe: presents the certificate, if any,
/// and records that the server asked and which CAs it named.
#[derive(Debug)]
pub(super) struct Asked {
    cert: Option<ClientCert>,
    seen: Mutex<Option<ClientAuthSeen>>,
}

impl Asked {
    pub(super) fn new(cert: Option<&ClientCert>) -> Asked {
        Asked {
            cert: cert.cloned(),
            seen: Mutex::new(None),
        }
    }

    /// What the server asked for, if it asked.
    pub(super) fn seen(&self) -> Option<ClientAuthSeen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesClientCert for Asked {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let acceptable = root_hint_subjects
            .iter()
            .map(|dn| {
                use x509_parser::prelude::FromDer;
                x509_parser::x509::X509Name::from_der(dn)
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_else(|_| "(a name that does not parse)".to_string())
            })
            .collect();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(ClientAuthSeen {
            acceptable,
            sent: self.cert.as_ref().map(|c| c.subject.clone()),
        });
        self.cert.as_ref().map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        self.cert.is_some()
    }
}

/// After a handshake in which the server asked for a client certificate: closes our side
/// (close_notify) and reads until the server answers, by the deadline. Returns the alert
/// it sent, if it refused the certificate.
pub(super) async fn answer<IO>(
    stream: &mut tokio_rustls::client::TlsStream<IO>,
    deadline: tokio::time::Instant,
) -> Option<rustls::AlertDescription>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return None,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                return match e.get_ref()?.downcast_ref::<rustls::Error>()? {
                    rustls::Error::AlertReceived(a) => Some(*a),
                    _ => None,
                }
            }
        }
    }
}
