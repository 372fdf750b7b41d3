//! The rustls certificate resolver of the https listeners: it presents the certificate the
//! accept path chose.
//!
//! The accept path (listener.rs) peeks the ClientHello, resolves it with
//! `Runtime::decide` and picks the certificate by the client's signature schemes before
//! rustls sees a byte; a certificate whose chain and key were evicted from the cache is read
//! again there, on the blocking pool, within the handshake deadline. So the resolver, which
//! runs inside the handshake and must not wait, does no lookup at all: it returns the
//! chain and key the accept path put in the handshake's task ([`presenting`]). A
//! connection thus sees one decision from peek to handshake.

use std::future::Future;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

tokio::task_local! {
    static CHOSEN: Option<Arc<CertifiedKey>>;
}

/// Runs a handshake (`f`) that presents `chosen`; None refuses it (rustls then sends
/// handshake_failure, as with no certificate).
pub async fn presenting<F: Future>(chosen: Option<Arc<CertifiedKey>>, f: F) -> F::Output {
    CHOSEN.scope(chosen, f).await
}

#[derive(Debug)]
pub struct Resolver;

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Outside `presenting` (a handshake nobody chose for) there is nothing to present.
        CHOSEN.try_with(|c| c.clone()).ok().flatten()
    }
}
