//! The rustls certificate resolver: SNI -> certificate through the listener's route table.
//!
//! It runs inside the handshake, so it must stay a pair of hash lookups: no locks, no I/O,
//! nothing proportional to the number of sites. It holds the table of the runtime it was
//! built with, so a connection sees one consistent runtime from peek to handshake.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::route::{certificate_for, Table};

#[derive(Debug)]
pub struct Resolver {
    table: Arc<Table>,
}

impl Resolver {
    pub fn new(table: Arc<Table>) -> Resolver {
        Resolver { table }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let resolved = self.table.resolve_sni(hello.server_name()).ok()?;
        certificate_for(&resolved, hello.signature_schemes()).map(|c| c.certified.clone())
    }
}
