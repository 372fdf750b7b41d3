//! TLS: loading certificates, the pool that indexes them, the rustls resolver, the local CA,
//! and the ClientHello parser that lets Portico route before it terminates.

pub mod client_hello;
pub mod internal_ca;
pub mod key;
pub mod load;
pub mod peek;
pub mod pool;
pub mod resolver;

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
use rustls::crypto::CryptoProvider;

/// The TLS versions Portico's listeners accept.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto every listener uses: aws-lc-rs with AES-128-GCM first. With
/// [`prefer_server_order`] a TLS 1.3 handshake then runs its key schedule on SHA-256, which
/// has hardware support on current x86-64 and ARMv8 CPUs, where OpenSSL clients' first
/// choice (AES-256-GCM with SHA-384) runs SHA-512 in software on many of them. AES-128 is
/// what Go (and so Caddy) servers pick for clients with AES hardware as well.
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

/// Applies the choices every listener shares to `config`: the cipher suite order of
/// [`server_provider`] wins over the client's. Session tickets stay at rustls' two per full
/// handshake (as OpenSSL's): one ticket would save about 3% of a full handshake's
/// instructions but cost a full handshake to a client that opens a second connection.
pub fn prefer_server_order(config: &mut rustls::ServerConfig) {
    config.ignore_client_order = true;
}
