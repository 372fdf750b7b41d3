//! HTTP/3 over QUIC: the UDP sockets of the listeners with `http3 = true`, their QUIC
//! endpoints (quinn), the handshakes and the HTTP/3 connections (h3).
//!
//! A QUIC connection goes the TCP way, by the same code: one atomic load of the current
//! runtime per connection, `Runtime::listener_for` by local address, the listener's
//! connection permit, `Runtime::decide` and `Runtime::certificate_for` for the certificate
//! (`tls.rs`, in the rustls resolver), and `http::service::handle` for every request
//! (`h3.rs`), so the 421 rule and every site action are the TCP ones. Nothing here decides
//! which site answers, and nothing a client sends can stop an endpoint or touch another
//! connection.

mod h3;
pub mod tls;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::service::Conn;
use crate::metrics::{Carried, Handshake};
use crate::runtime::Runtime;
use tls::{Choose, Chosen};

/// Above this many handshakes in flight on one socket, a client whose address is not
/// validated yet is sent a Retry first (RFC 9000 8.1.2): it must echo a token, which costs a
/// spoofed source address its amplification and a flood one round trip per attempt.
const RETRY_ABOVE: usize = 64;

/// How long the endpoints get, at shutdown, to send their CONNECTION_CLOSE frames.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The UDP sockets to open: as `listener::socket_addrs` does for TCP, for the listeners
/// with `http3` only (one dual-stack `[::]:port` socket when one of them is `*:port`).
pub fn socket_addrs(rt: &Runtime) -> Vec<SocketAddr> {
    crate::listener::addrs_for(
        rt.listeners
            .iter()
            .filter(|l| l.config.http3)
            .map(|l| l.config.address),
    )
}

/// Reads into memory the chains and keys of the certificates not in memory (blocking; for
/// the blocking pool), until `until` or until the certificate cache is full, for a runtime
/// with `http3` listeners; returns how many it read. A QUIC handshake cannot wait for a
/// certificate's files (`tls::Choose` refuses a cold one), and a start from the names cache
/// has every certificate cold until its first handshake: without this, the first QUIC
/// client of each name after a start or a binary upgrade is refused.
pub fn warm_certificates(rt: &Runtime, until: std::time::Instant) -> usize {
    if socket_addrs(rt).is_empty() {
        return 0;
    }
    let pool = rt.pool();
    let room = rt.config.limits.certificate_cache;
    let mut read = 0;
    let certs = pool
        .certs()
        .cloned()
        .chain(rt.site_certs().map(|(_, c)| c))
        .take(room);
    for cert in certs {
        if std::time::Instant::now() >= until {
            break;
        }
        if cert.in_memory().is_some() {
            continue;
        }
        match cert.certified(&rt.keys) {
            Ok(_) => read += 1,
            // Its next handshake says why, on TCP and QUIC; the log says it now too.
            Err(e) => {
                tracing::warn!(file = %cert.cert_file.display(), error = %e, "cannot read a certificate for QUIC")
            }
        }
    }
    read
}

fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> io::Result<std::net::UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // No SO_REUSEADDR: on UDP it would let a second socket share the port, and the
        // kernel would split the packets of one connection between them.
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        Ok(socket.into())
    };
    crate::listener::open_or_ipv4(addr, open)
}

/// Why the QUIC side cannot start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("cannot make the QUIC TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error(
        "the TLS configuration has no cipher suite QUIC can start with (TLS_AES_128_GCM_SHA256)"
    )]
    Suite,
}

/// What every endpoint shares: the rustls configuration each connection starts from and
/// the endpoint configuration (Retry token key) every socket uses.
struct Base {
    template: rustls::ServerConfig,
    server: quinn::ServerConfig,
}

impl Base {
    fn new() -> Result<Base, QuicError> {
        let template = tls::template()?;
        let mut refuse = template.clone();
        refuse.cert_resolver = Arc::new(tls::RefuseAll);
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(refuse)
            .map_err(|_| QuicError::Suite)?;
        let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        Ok(Base { template, server })
    }
}

/// The QUIC endpoints of a running server, one per UDP socket.
pub struct Endpoints {
    base: Arc<Base>,
    sockets: BTreeMap<SocketAddr, Endpoint>,
}

struct Endpoint {
    bound: SocketAddr,
    endpoint: quinn::Endpoint,
    task: JoinHandle<()>,
    /// A second descriptor of the UDP socket, for a binary upgrade to hand over.
    fd: std::os::fd::OwnedFd,
}

/// What an endpoint's accept loop needs from the server.
pub struct Context {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub shutdown: watch::Receiver<bool>,
    pub drain: mpsc::Sender<()>,
}

impl Endpoints {
    pub fn new() -> Result<Endpoints, QuicError> {
        Ok(Endpoints {
            base: Arc::new(Base::new()?),
            sockets: BTreeMap::new(),
        })
    }

    /// Binds every address, or none (the sockets bound so far are closed on an error).
    pub fn bind_all(addrs: &[SocketAddr]) -> io::Result<Vec<(SocketAddr, std::net::UdpSocket)>> {
        addrs
            .iter()
            .map(|&addr| {
                bind(addr).map(|s| (addr, s)).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot listen on {addr} (UDP, http3): {e}"),
                    )
                })
            })
            .collect()
    }

    /// The addresses this server has QUIC sockets for.
    pub fn has(&self, addr: &SocketAddr) -> bool {
        self.sockets.contains_key(addr)
    }

    /// Starts an endpoint and its accept loop on each bound socket.
    pub fn serve(
        &mut self,
        bound: Vec<(SocketAddr, std::net::UdpSocket)>,
        ctx: impl Fn() -> Option<Context>,
    ) -> io::Result<()> {
        use std::os::fd::AsFd;
        for (wanted, socket) in bound {
            let Some(ctx) = ctx() else { break };
            let actual = socket.local_addr()?;
            let fd = socket.as_fd().try_clone_to_owned()?;
            let endpoint = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(self.base.server.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )?;
            let task = tokio::spawn(accept_loop(
                endpoint.clone(),
                actual,
                self.base.clone(),
                ctx,
            ));
            tracing::debug!(addr = %actual, "listening for QUIC (HTTP/3)");
            self.sockets.insert(
                wanted,
                Endpoint {
                    bound: actual,
                    endpoint,
                    task,
                    fd,
                },
            );
        }
        Ok(())
    }

    /// The UDP sockets, by the address they were bound for, for a binary upgrade.
    pub fn listening(&self) -> Vec<(SocketAddr, std::os::fd::BorrowedFd<'_>)> {
        use std::os::fd::AsFd;
        self.sockets
            .iter()
            .map(|(a, e)| (*a, e.fd.as_fd()))
            .collect()
    }

    /// The UDP addresses actually bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.values().map(|e| e.bound).collect()
    }

    /// Stops accepting on the sockets not in `wanted`; their connections go on until they
    /// end, as on TCP.
    pub fn keep_only(&mut self, wanted: &[SocketAddr]) {
        let gone: Vec<SocketAddr> = self
            .sockets
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(e) = self.sockets.remove(&addr) {
                stop_accepting(&e);
                tracing::info!(addr = %e.bound, "stopped listening (UDP, http3)");
            }
        }
    }

    /// The drain's first step: no new connections on any socket.
    pub async fn stop_accepting(&mut self) {
        for e in self.sockets.values() {
            stop_accepting(e);
        }
        for e in self.sockets.values_mut() {
            let _ = (&mut e.task).await;
        }
    }

    /// The drain's QUIC side, once accepting has stopped and GOAWAY is on its way: each
    /// endpoint waits until its connections have closed, for at most `until`; whatever is
    /// still open then gets CONNECTION_CLOSE, and the endpoint a moment to send it. Then
    /// the socket is closed in this process, whatever TCP is still draining: after a binary
    /// upgrade the new process holds the same socket, and every datagram this process
    /// still reads is one the new process's connections lose.
    pub async fn close_when_idle(&mut self, until: Instant) {
        let sockets = std::mem::take(&mut self.sockets);
        let closing: Vec<JoinHandle<()>> = sockets
            .into_values()
            .map(|e| {
                tokio::spawn(async move {
                    let idle = tokio::time::timeout_at(until, e.endpoint.wait_idle())
                        .await
                        .is_ok();
                    if !idle {
                        tracing::debug!(addr = %e.bound, "QUIC connections still open at the drain deadline; closing them");
                    }
                    e.endpoint
                        .close(quinn::VarInt::from_u32(0x100), b"server shutting down");
                    let _ = tokio::time::timeout(CLOSE_WAIT, e.endpoint.wait_idle()).await;
                    tracing::debug!(addr = %e.bound, "stopped reading the UDP socket");
                })
            })
            .collect();
        for task in closing {
            let _ = task.await;
        }
    }
}

fn stop_accepting(e: &Endpoint) {
    // New handshakes are refused from now on; the accept loop ends.
    e.endpoint.set_server_config(None);
    e.task.abort();
}

async fn accept_loop(endpoint: quinn::Endpoint, bound: SocketAddr, base: Arc<Base>, ctx: Context) {
    let handshakes = Arc::new(AtomicUsize::new(0));
    while let Some(incoming) = endpoint.accept().await {
        let rt = ctx.runtime.load_full();
        let ip = incoming.local_ip().unwrap_or(bound.ip());
        let local = SocketAddr::new(ip.to_canonical(), bound.port());
        let peer = incoming.remote_address();
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Some(li) = rt
            .listener_for(local)
            .filter(|&li| rt.listeners[li].config.http3)
        else {
            tracing::debug!(%local, %peer, "no http3 listener for this address; refusing");
            incoming.refuse();
            continue;
        };
        if handshakes.load(Ordering::Relaxed) >= RETRY_ABOVE
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            let _ = incoming.retry();
            continue;
        }
        let Ok(permit) = rt.listeners[li].connections.clone().try_acquire_owned() else {
            tracing::warn!(listener = %rt.listeners[li].config.name, %peer, "connection limit reached; refusing a QUIC connection");
            incoming.refuse();
            continue;
        };
        let shutdown = ctx.shutdown.clone();
        let drain = ctx.drain.clone();
        let (base, handshakes) = (base.clone(), handshakes.clone());
        tokio::spawn(Box::pin(async move {
            connection(rt, li, incoming, peer, &base, &handshakes, shutdown).await;
            drop(permit);
            drop(drain);
        }));
    }
}

/// Counts a handshake in flight until dropped.
struct Handshaking<'a>(&'a AtomicUsize);

impl<'a> Handshaking<'a> {
    fn start(n: &'a AtomicUsize) -> Handshaking<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Handshaking(n)
    }
}

impl Drop for Handshaking<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The transport limits of a connection: `[limits]` as the runtime has them now.
fn transport(rt: &Runtime) -> quinn::TransportConfig {
    let limits = &rt.config.limits;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_concurrent_streams));
    // A QUIC connection that hears nothing for idle_timeout is gone (the HTTP/3 layer also
    // stops one with no request for that long, as on TCP).
    t.max_idle_timeout(quinn::IdleTimeout::try_from(limits.idle_timeout).ok());
    t
}

async fn connection(
    rt: Arc<Runtime>,
    li: usize,
    incoming: quinn::Incoming,
    peer: SocketAddr,
    base: &Base,
    handshakes: &AtomicUsize,
    shutdown: watch::Receiver<bool>,
) {
    let accepted = Instant::now();
    let deadline = accepted + rt.config.limits.handshake_timeout;
    let listener = &rt.listeners[li];
    let counters = &listener.metrics;
    let _open = counters.open();
    let ended = |outcome: Handshake| {
        counters.handshake(outcome);
        counters.carried(Carried::Nothing);
    };
    let choose = Arc::new(Choose::new(rt.clone(), li));
    let crypto = match tls::for_connection(&base.template, choose.clone()) {
        Ok(c) => c,
        Err(_) => {
            // Not reachable with Portico's suites (checked when the endpoints started).
            incoming.refuse();
            return;
        }
    };
    let mut config = base.server.clone();
    config.crypto = Arc::new(crypto);
    config.transport_config(Arc::new(transport(&rt)));
    let handshaking = Handshaking::start(handshakes);
    let connecting = match incoming.accept_with(Arc::new(config)) {
        Ok(c) => c,
        Err(e) => {
            ended(Handshake::Failed);
            tracing::debug!(%peer, error = %e, "QUIC connection not accepted");
            return;
        }
    };
    let quic = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(quic)) => quic,
        Ok(Err(e)) => {
            let outcome = match choose.chosen() {
                Some(Chosen::Refused(why)) => {
                    tracing::info!(listener = %listener.config.name, client = %peer, why = %why.words(&rt), "QUIC handshake refused");
                    why.outcome()
                }
                Some(Chosen::NoVariant) => Handshake::NoCertificate,
                Some(Chosen::Cold { cert }) => {
                    tracing::info!(listener = %listener.config.name, client = %peer, file = %cert.cert_file.display(), "QUIC handshake refused: the certificate is not in memory now (it is being read again; TCP handshakes wait for it)");
                    Handshake::Failed
                }
                _ => {
                    tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                    Handshake::Failed
                }
            };
            ended(outcome);
            return;
        }
        Err(_) => {
            ended(Handshake::Timeout);
            tracing::debug!(%peer, "QUIC handshake timed out");
            return;
        }
    };
    drop(handshaking);
    let Some(Chosen::Serve { site, cert, sni }) = choose.chosen() else {
        // A handshake that completed without the resolver: not possible without
        // resumption, which the QUIC configuration does not offer. Closed, not guessed at.
        ended(Handshake::Failed);
        quic.close(quinn::VarInt::from_u32(0x100), b"");
        return;
    };
    counters.handshake(Handshake::Ok);
    counters.handshake_seconds.observe(accepted.elapsed());
    counters.carried(Carried::H3);
    tracing::trace!(%peer, site = %rt.sites[*site].name, "QUIC connection established");
    let conn = Arc::new(Conn {
        runtime: rt.clone(),
        listener: li,
        peer,
        sni: sni.clone(),
        cert: Some(cert.clone()),
        // Sites with client_auth are refused on QUIC (tls::admit): no policy, no identity.
        policy: None,
        identity: None,
        tls_version: "TLSv1.3",
        upgraded: Arc::default(),
    });
    drop(choose);
    h3::serve(conn, quic, shutdown, deadline).await;
}
