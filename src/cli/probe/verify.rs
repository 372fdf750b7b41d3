//! The probe's certificate verifier: webpki's verdict, recorded instead of enforced.
//!
//! A probe must show what the server presented even when it would not verify, so this
//! verifier asks [`WebPkiServerVerifier`] for its verdict, records it with the chain, and lets
//! the handshake complete. It must never be used for a connection that carries data: the probe
//! closes the connection right after the handshake. Handshake signatures are still checked,
//! so the server has proved it holds the leaf's key.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// What the server presented and what webpki made of it.
#[derive(Debug)]
pub(super) struct Seen {
    /// Leaf first, as presented.
    pub(super) chain: Vec<CertificateDer<'static>>,
    /// Whether the chain leads to a trust anchor. A wrong name is not a failure here: the
    /// probe judges names with `HostName::covers`.
    pub(super) verdict: Result<(), rustls::Error>,
}

#[derive(Debug)]
pub(super) struct Recorder {
    webpki: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<Seen>>,
}

impl Recorder {
    pub(super) fn new(webpki: Arc<WebPkiServerVerifier>) -> Recorder {
        Recorder {
            webpki,
            seen: Mutex::new(None),
        }
    }

    /// The chain and verdict, if the server got as far as presenting a certificate.
    pub(super) fn take(&self) -> Option<Seen> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is whole.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => Ok(()),
            // webpki checks the name only after the chain has verified.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(()),
            Err(e) => Err(e),
        };
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Seen { chain, verdict });
        // Deliberately accepted: the verdict is reported, and the connection carries no data.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
