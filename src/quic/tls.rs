//! The certificate choice of a QUIC handshake: the TCP path's own resolution, asked from
//! inside rustls.
//!
//! On TCP the accept path reads the ClientHello before rustls does, decides, and may wait
//! (an evicted certificate read again, an on-demand order). QUIC's ClientHello arrives in
//! CRYPTO frames that only quinn's rustls session reads, so the decision is made in the
//! rustls resolver, which runs inside the handshake and cannot wait. The rules are
//! `Runtime::decide` and `Runtime::certificate_for`, called as the TCP path calls them;
//! [`admit`] adds what QUIC cannot do (yet) and says why, for the log, the metrics and
//! `portico explain`. It never presents a certificate TCP would not present for that name.

use std::sync::{Arc, OnceLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Handshake;
use crate::names::HostName;
use crate::route::{Refusal, Resolved};
use crate::runtime::{Decision, Runtime};
use crate::tls::load::Cert;

/// The one ALPN protocol a QUIC connection may choose.
pub const ALPN_H3: &[u8] = b"h3";

/// Why a name is not served over QUIC. TCP may still serve it (all but `Refused`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotOnQuic {
    /// Refused the same way on TCP: unknown name, no SNI, no certificate yet.
    Refused(Refusal),
    /// A passthrough site's TLS ends at its backend, and QUIC cannot be relayed by SNI.
    Passthrough,
    /// The site asks for client certificates (`client_auth`); its TCP path does that, QUIC
    /// does not in this version.
    ClientAuth { site: usize },
    /// The catch-all site orders this name on demand and has no certificate for it yet: a
    /// QUIC handshake cannot wait for the order (the TCP one does, and starts it).
    OnDemand { site: usize },
}

impl NotOnQuic {
    /// How the refusal is counted in `portico_tls_handshakes_total`.
    pub(super) fn outcome(&self) -> Handshake {
        match self {
            NotOnQuic::Refused(Refusal::NoSni) => Handshake::RefusedNoSni,
            NotOnQuic::Refused(Refusal::UnknownName(_)) => Handshake::RefusedUnknownSni,
            NotOnQuic::Refused(Refusal::NoCertificate(_)) => Handshake::NoCertificate,
            NotOnQuic::OnDemand { .. } => Handshake::RefusedUnknownSni,
            NotOnQuic::Passthrough | NotOnQuic::ClientAuth { .. } => Handshake::Failed,
        }
    }

    /// In words, for the log and `portico explain`.
    pub fn words(&self, rt: &Runtime) -> String {
        let site = |s: usize| rt.sites.get(s).map_or("?", |s| s.name.as_str()).to_string();
        match self {
            NotOnQuic::Refused(r) => format!(
                "refused as on TCP ({})",
                match r {
                    Refusal::NoSni => "no SNI and no_sni = \"reject\"".to_string(),
                    Refusal::UnknownName(n) => format!("{n} is not bound here"),
                    Refusal::NoCertificate(n) => format!("{n} has no certificate yet"),
                }
            ),
            NotOnQuic::Passthrough => {
                "refused: a passthrough site's TLS ends at its backend, which QUIC cannot reach by SNI; clients use TCP".to_string()
            }
            NotOnQuic::ClientAuth { site: s } => format!(
                "refused: site \"{}\" asks for client certificates (client_auth), which Portico's QUIC path does not do yet; clients use TCP",
                site(*s)
            ),
            NotOnQuic::OnDemand { site: s } => format!(
                "refused: site \"{}\" orders this name's certificate on demand and a QUIC handshake cannot wait for it; the TCP handshake orders it, and QUIC serves the name once the certificate exists",
                site(*s)
            ),
        }
    }
}

/// Whether a QUIC connection on listener `li` naming `sni` is terminated, and as which
/// binding: `Runtime::decide`, then what QUIC leaves out. `explain` calls it too.
pub fn admit<'a>(rt: &'a Runtime, li: usize, sni: Option<&str>) -> Result<Resolved<'a>, NotOnQuic> {
    match rt.decide(li, sni) {
        Decision::Terminate(r) => match rt.sites[r.binding.site].client_auth {
            None => Ok(r),
            Some(_) => Err(NotOnQuic::ClientAuth {
                site: r.binding.site,
            }),
        },
        Decision::Passthrough { .. } => Err(NotOnQuic::Passthrough),
        Decision::Refuse(refusal) => Err(NotOnQuic::Refused(refusal)),
        Decision::OnDemand { site, .. } => Err(NotOnQuic::OnDemand { site }),
    }
}

/// What one connection's resolver decided, read by the connection after the handshake.
#[derive(Debug)]
pub(super) enum Chosen {
    Serve {
        site: usize,
        cert: Arc<Cert>,
        sni: Option<HostName>,
    },
    Refused(NotOnQuic),
    /// No certificate variant for the client's signature schemes.
    NoVariant,
    /// The certificate's chain and key were evicted from the cache: reading them again is
    /// file I/O, which the handshake cannot wait for. A load is started on the blocking
    /// pool so that the next handshake finds them (the TCP path waits for it instead).
    Cold {
        cert: Arc<Cert>,
    },
}

/// The resolver of one QUIC connection: it holds the runtime the connection loaded at
/// accept, decides once, and keeps the decision for the connection.
pub(super) struct Choose {
    rt: Arc<Runtime>,
    li: usize,
    chosen: OnceLock<Chosen>,
}

impl std::fmt::Debug for Choose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Choose")
            .field("listener", &self.li)
            .field("chosen", &self.chosen.get())
            .finish()
    }
}

impl Choose {
    pub(super) fn new(rt: Arc<Runtime>, li: usize) -> Choose {
        Choose {
            rt,
            li,
            chosen: OnceLock::new(),
        }
    }

    pub(super) fn chosen(&self) -> Option<&Chosen> {
        self.chosen.get()
    }

    fn decide(&self, hello: &ClientHello<'_>) -> (Chosen, Option<Arc<CertifiedKey>>) {
        let rt = &self.rt;
        let sni = hello.server_name();
        let resolved = match admit(rt, self.li, sni) {
            Ok(r) => r,
            Err(why) => return (Chosen::Refused(why), None),
        };
        let Some(cert) = rt.certificate_for(&resolved, hello.signature_schemes()) else {
            return (Chosen::NoVariant, None);
        };
        let site = resolved.binding.site;
        match cert.in_memory() {
            Some(key) => (
                Chosen::Serve {
                    site,
                    cert,
                    sni: sni.and_then(|s| HostName::parse(s).ok()),
                },
                Some(key),
            ),
            None => {
                warm(rt, &cert);
                (Chosen::Cold { cert }, None)
            }
        }
    }
}

impl ResolvesServerCert for Choose {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls asks once per handshake; a second ask (none is known) gets the first answer.
        if let Some(done) = self.chosen.get() {
            return match done {
                Chosen::Serve { cert, .. } => cert.in_memory(),
                _ => None,
            };
        }
        let (chosen, key) = self.decide(&hello);
        let _ = self.chosen.set(chosen);
        key
    }
}

/// Reads an evicted certificate's chain and key again on the blocking pool, so the next
/// handshake for it finds them in memory. At most a few at once (like the TCP path's).
fn warm(rt: &Runtime, cert: &Arc<Cert>) {
    static WARMING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
    let Ok(permit) = WARMING.try_acquire() else {
        return;
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (cert, keys) = (cert.clone(), rt.keys.clone());
    handle.spawn_blocking(move || {
        let _permit = permit;
        if let Err(e) = cert.certified(&keys) {
            tracing::warn!(file = %cert.cert_file.display(), error = %e, "cannot read a certificate again for QUIC");
        }
    });
}

/// The rustls configuration every QUIC connection starts from: Portico's suites and
/// server order ([`crate::tls::server_config`]), TLS 1.3 (QUIC has no other), ALPN `h3`,
/// no early data (0-RTT is replayable), and no resumption: every handshake is a full one,
/// so the resolver's decision is always the connection's (a resumed session would skip
/// it). The resolver is set per connection ([`for_connection`]).
pub(super) fn template() -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = crate::tls::server_config(Arc::new(RefuseAll))?;
    config.alpn_protocols = vec![ALPN_H3.to_vec()];
    config.max_early_data_size = 0;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// The configuration of one connection: the template with that connection's resolver.
pub(super) fn for_connection(
    template: &rustls::ServerConfig,
    choose: Arc<Choose>,
) -> Result<quinn::crypto::rustls::QuicServerConfig, quinn::crypto::rustls::NoInitialCipherSuite> {
    let mut config = template.clone();
    config.cert_resolver = choose;
    quinn::crypto::rustls::QuicServerConfig::try_from(config)
}

/// The endpoint's own configuration, used only for what is not accepted with a
/// connection's: it presents nothing.
#[derive(Debug)]
pub(super) struct RefuseAll;

impl ResolvesServerCert for RefuseAll {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}
