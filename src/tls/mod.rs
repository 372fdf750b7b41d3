//! TLS: loading certificates, the pool that indexes them, the rustls resolver, the local CA,
//! and the ClientHello parser that lets Portico route before it terminates.

pub mod client_hello;
pub mod internal_ca;
pub mod load;
pub mod peek;
pub mod pool;
pub mod resolver;
