//! Portico: an HTTPS front door. One IP:port serves many sites, each with its own certificate
//! chosen from the client's SNI during the TLS handshake.
//!
//! Data flows one way: [`listener`] accepts and peeks the ClientHello, [`route`] resolves the
//! listener, name, site and certificate, [`tls`] terminates, [`http`] serves. [`config`] and
//! [`runtime`] turn a file into the immutable tables all of that reads.

/// The version `portico --version` prints: the package's, and the commit it was built from
/// (build.rs: `-dirty` when the tree differed from it, "unknown" without git).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PORTICO_COMMIT"),
    ")"
);

pub mod acme;
pub mod activation;
pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod error_text;
mod gather;
mod hex;
pub mod http;
pub mod import;
pub mod inspect;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod passthrough;
pub mod proxy_protocol;
pub mod quic;
pub mod route;
pub mod runtime;
pub mod state;
pub mod store;
pub mod tls;
pub mod upgrade;
