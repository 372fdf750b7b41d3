//! TLS: loading certificates (one by one, or a directory of them), the pool that indexes
//! them, the rustls resolver, the local CA, and the ClientHello parser that lets Portico
//! route before it terminates.

pub mod cache;
pub mod client_auth;
pub mod client_hello;
pub mod dir;
pub mod internal_ca;
pub mod key;
pub mod load;
pub mod peek;
pub mod pool;
pub mod resolver;
pub mod tickets;

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
use rustls::crypto::CryptoProvider;

/// The TLS versions Portico's listeners accept.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto every listener uses: aws-lc-rs with AES-128-GCM first. With the server's
/// order winning ([`server_config`]) a TLS 1.3 handshake then runs its key schedule on
/// SHA-256, which has hardware support on current x86-64 and ARMv8 CPUs, where OpenSSL
/// clients' first choice (AES-256-GCM with SHA-384) runs SHA-512 in software on many of
/// them. AES-128 is what Go (and so Caddy) servers pick for clients with AES hardware as
/// well.
pub fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// The TLS configuration every listener (and the ACME TLS-ALPN-01 responder) starts from:
/// [`server_provider`]'s suites in the server's order (which wins over the client's), TLS
/// 1.3 and 1.2, no client certificates, and one session ticket per TLS 1.3 handshake (up
/// to four for a client that asks, RFC 9149). rustls' default of two tickets cost about 3%
/// of a full handshake's instructions; one is what Go's TLS (and so Caddy) sends, and a
/// client reconnecting one connection at a time gets a fresh ticket each time. The
/// trade-off, documented in docs/config.md: a client opening two connections at once
/// from one earlier connection's ticket resumes only one of them.
pub fn server_config(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let config = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    Ok(tuned(config))
}

/// [`server_config`] asking clients for a certificate and verifying it with `verifier`
/// (a site's client-auth policy, `client_auth.rs`).
pub fn server_config_verifying(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let config = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    Ok(tuned(config))
}

fn tuned(mut config: rustls::ServerConfig) -> rustls::ServerConfig {
    config.ignore_client_order = true;
    config.send_tls13_tickets = 1;
    config.max_tls13_tickets = 4;
    config
}
