//! `PUT` and `DELETE /api/v1/certificates/{name}`: add, replace or remove a certificate of
//! the pool at runtime, kept in `state_dir/certificates` (`tls/dir.rs`) so it survives a
//! restart.
//!
//! This file only reads the request: it checks the name, reads the body under a size limit
//! and a deadline, and splits its PEM into the chain and the key. The change itself is a
//! [`Command`] to the serve loop, which checks the pair, stages the files, rebuilds and
//! installs, or puts everything back (the one reload path); the answer carries the
//! reload's outcome, the schema of `POST /api/v1/reload`.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rustls::pki_types::pem::{PemObject, SectionKind};

use super::api::outcome_json;
use super::{not_allowed, problem, response, Body, Context, JSON};
use crate::control::{self, Changed, Command, Reply};
use crate::tls::dir;

/// The largest body a PUT may have. A chain of a leaf and two intermediates with an RSA-4096
/// key is about 8 KiB of PEM; this leaves room for long chains and explanatory text.
pub(super) const MAX_BODY: u64 = 1 << 20;
/// For the whole body to arrive once the head has.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

const PREFIX: &str = "/api/v1/certificates";

/// Answers a request under `/api/v1/certificates`.
pub(super) async fn answer(
    method: &Method,
    path: &str,
    body: Incoming,
    ctx: &Context,
) -> http::Response<Body> {
    let Some(name) = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        return problem(
            path,
            StatusCode::NOT_FOUND,
            "name the certificate: PUT or DELETE /api/v1/certificates/NAME (see docs/admin.md)",
        );
    };
    if *method != Method::PUT && *method != Method::DELETE {
        return not_allowed(path, "PUT, DELETE");
    }
    if let Err(e) = dir::check_name(name) {
        return problem(
            path,
            StatusCode::BAD_REQUEST,
            &format!(
                "{e}: a name is 1 to {} of a-z, 0-9, '.', '_', '-', not starting with a dot",
                dir::MAX_NAME
            ),
        );
    }
    let command = if *method == Method::PUT {
        let bytes = match read_body(body).await {
            Ok(bytes) => bytes,
            Err((status, message)) => return problem(path, status, &message),
        };
        match split_pem(&bytes) {
            Ok((chain, key)) => Command::PutCertificate {
                name: name.to_string(),
                chain,
                key,
            },
            Err(message) => return problem(path, StatusCode::BAD_REQUEST, &message),
        }
    } else {
        Command::DeleteCertificate {
            name: name.to_string(),
        }
    };
    match control::ask_as(&ctx.requests, command, "admin API").await {
        Some(Reply::Certificate(changed, outcome)) => {
            let status = match changed {
                Changed::Created => StatusCode::CREATED,
                Changed::Replaced | Changed::Deleted => StatusCode::OK,
                Changed::NoSuchName => {
                    return problem(
                        path,
                        StatusCode::NOT_FOUND,
                        &format!("no certificate {name:?} is stored (PUT one first)"),
                    )
                }
                // A removal the configuration cannot do without conflicts with it.
                Changed::Refused if *method == Method::DELETE => StatusCode::CONFLICT,
                Changed::Refused => StatusCode::UNPROCESSABLE_ENTITY,
                Changed::StoreFailed => StatusCode::INTERNAL_SERVER_ERROR,
                // etcd did not take it: nothing changed anywhere; send it again later.
                Changed::FleetUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            match outcome {
                Some(o) => response(status, JSON, outcome_json(&o).pretty()),
                None => problem(path, status, "no outcome"),
            }
        }
        Some(_) => problem(
            path,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the serve loop gave an unexpected answer",
        ),
        None => problem(
            path,
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ),
    }
}

/// The body, at most [`MAX_BODY`] bytes, within [`BODY_TIMEOUT`]; or the status and message
/// of the refusal.
async fn read_body(body: Incoming) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes; send the chain and the key only"),
        )
    };
    // A declared length says it before anything is read.
    if body.size_hint().lower() > MAX_BODY {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY as usize);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} seconds",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err((
            StatusCode::BAD_REQUEST,
            format!("the body could not be read: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Splits one PEM stream into the chain (every CERTIFICATE, in order) and the one private
/// key, each written again as PEM (text around the blocks and other blocks are dropped).
/// The message says what is missing; whether the two belong together is the serve loop's
/// check.
fn split_pem(body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    const WHAT: &str = "send the certificate chain (leaf first) and its private key, as PEM";
    if !body.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("the body is not PEM (no -----BEGIN line): {WHAT}"));
    }
    let (mut chain, mut keys) = (Vec::new(), Vec::new());
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(body) {
        match section {
            Ok((SectionKind::Certificate, der)) => {
                chain.extend(pem_block("CERTIFICATE", &der));
            }
            Ok((SectionKind::PrivateKey, der)) => keys.push(pem_block("PRIVATE KEY", &der)),
            Ok((SectionKind::RsaPrivateKey, der)) => keys.push(pem_block("RSA PRIVATE KEY", &der)),
            Ok((SectionKind::EcPrivateKey, der)) => keys.push(pem_block("EC PRIVATE KEY", &der)),
            Ok(_) => {}
            Err(e) => return Err(format!("the body's PEM cannot be decoded ({e:?}): {WHAT}")),
        }
    }
    if chain.is_empty() {
        return Err(format!("the body holds no CERTIFICATE block: {WHAT}"));
    }
    match keys.len() {
        1 => Ok((chain, keys.remove(0))),
        0 if body.windows(9).any(|w| w == b"ENCRYPTED") => Err(
            "the body's private key is encrypted, which Portico cannot use: decrypt it first (openssl pkey -in key.pem)"
                .to_string(),
        ),
        0 => Err(format!(
            "the body holds no private key (a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block): {WHAT}"
        )),
        n => Err(format!(
            "the body holds {n} private keys: send only the leaf certificate's"
        )),
    }
}

/// One PEM block: the label's lines around the base64 of `der`, 64 columns wide.
fn pem_block(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 is ASCII.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("in a test");
        let params =
            rcgen::CertificateParams::new(vec!["a.example.test".to_string()]).expect("in a test");
        let cert = params.self_signed(&key).expect("in a test");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn one_stream_splits_into_chain_and_key() {
        let (cert, key) = pair();
        let body = format!("subject=CN = a\n{cert}\nsome text\n{key}");
        let (chain, k) = split_pem(body.as_bytes()).expect("in a test");
        let chain_der: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<_, _>>()
            .expect("in a test");
        let orig: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("in a test");
        assert_eq!(chain_der, orig);
        let k = rustls::pki_types::PrivateKeyDer::from_pem_slice(&k).expect("in a test");
        let orig =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("in a test");
        assert_eq!(k.secret_der(), orig.secret_der());
        assert!(!String::from_utf8(chain)
            .expect("in a test")
            .contains("some text"));
    }

    #[test]
    fn malformed_bodies_say_what_is_missing() {
        let (cert, key) = pair();
        let err = |b: &str| split_pem(b.as_bytes()).expect_err(b);
        assert!(err("hello").contains("not PEM"));
        assert!(err(&key).contains("no CERTIFICATE"));
        assert!(err(&cert).contains("no private key"));
        assert!(err(&format!("{cert}{key}{key}")).contains("2 private keys"));
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(err(&format!("{cert}{encrypted}")).contains("encrypted"));
    }
}
