//! Listeners: bind one socket per port, pick the listener from each connection's local
//! address, enforce connection limits and deadlines, and hand the connection on — to TLS
//! termination and HTTP on https listeners, to plain HTTP on http listeners.
//!
//! The accept path reads the current runtime once per connection (an atomic load, no lock);
//! that one snapshot serves the connection from ClientHello to its last request. Nothing a
//! client sends can stop the accept loop or touch another connection.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::ListenerKind;
use crate::gather::{gather, Flushed};
use crate::http::connection;
use crate::http::service::Conn;
use crate::metrics::{Carried, Handshake};
use crate::names::HostName;
use crate::proxy_protocol;
use crate::route::Refusal;
use crate::runtime::{Decision, Runtime};
use crate::tls::client_auth::{ClientIdentity, Refused};
use crate::tls::client_hello::HelloError;
use crate::tls::load::Cert;
use crate::tls::peek::{read_client_hello, PeekError, PrefixedIo};
use crate::tls::resolver::presenting;

/// Closes a connection whose handshake was refused with an alert after the client may
/// have sent more (with TLS 1.3 a client has sent its certificate, Finished and often its
/// first request when the server judges the certificate): our side is shut down, and what
/// the client still sends is read and discarded for a bounded time, as `http/linger.rs`
/// does, so that the kernel does not answer those bytes with a reset that destroys the
/// alert before the client reads it.
async fn close_after_alert<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: IO) {
    use crate::http::linger::{MAX_DISCARD, PAUSE, TOTAL};
    use tokio::io::AsyncReadExt;
    let _ = io.shutdown().await;
    let until = Instant::now() + TOTAL;
    let mut buf = [0u8; 4096];
    let mut discarded = 0;
    while discarded < MAX_DISCARD {
        let pause = (Instant::now() + PAUSE).min(until);
        match tokio::time::timeout_at(pause, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => discarded += n,
            _ => break,
        }
    }
}

/// The answer to plain HTTP (or anything that is not TLS) sent to an https listener.
const PLAIN_HTTP_ON_HTTPS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 59\r\nConnection: close\r\n\r\n400 bad request: this port speaks HTTPS; use https:// URLs\n";

/// The most a ClientHello may take before Portico gives up on it.
const HELLO_LIMIT: usize = 64 * 1024;

/// The sockets to open for a set of listener addresses: one dual-stack socket on `[::]:port`
/// when some listener wants `*:port`, else one per specific address.
pub fn socket_addrs(rt: &Runtime) -> Vec<SocketAddr> {
    addrs_for(rt.listeners.iter().map(|l| l.config.address))
}

/// [`socket_addrs`]' rule over some listener addresses (`quic::socket_addrs` gives it the
/// `http3` listeners').
pub fn addrs_for(addrs: impl Iterator<Item = crate::config::ListenAddr>) -> Vec<SocketAddr> {
    let mut by_port: BTreeMap<u16, BTreeSet<Option<IpAddr>>> = BTreeMap::new();
    for a in addrs {
        by_port.entry(a.port).or_default().insert(a.ip);
    }
    let mut out = Vec::new();
    for (port, ips) in by_port {
        if ips.contains(&None) {
            out.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
        } else {
            out.extend(
                ips.into_iter()
                    .flatten()
                    .map(|ip| SocketAddr::new(ip, port)),
            );
        }
    }
    out
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            // One socket for IPv4 and IPv6: v4 clients arrive as ::ffff:a.b.c.d.
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    };
    open_or_ipv4(addr, open)
}

/// `open(addr)`; when `addr` is `[::]:port` and the host has no IPv6, `open(0.0.0.0:port)`,
/// so `*:port` is still served on IPv4 (not when the port is taken or forbidden: those are
/// the operator's to see). TCP and UDP (HTTP/3) sockets are opened by this one rule.
pub(crate) fn open_or_ipv4<T>(
    addr: SocketAddr,
    open: impl Fn(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    match open(addr) {
        Err(e)
            if addr.is_ipv6()
                && addr.ip().is_unspecified()
                && !matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                ) =>
        {
            open(SocketAddr::new(
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                addr.port(),
            ))
        }
        other => other,
    }
}

/// A running server: its sockets, the current runtime and the connections it serves.
pub struct Server {
    runtime: Arc<ArcSwap<Runtime>>,
    shutdown: watch::Sender<bool>,
    drain: Option<mpsc::Sender<()>>,
    drained: mpsc::Receiver<()>,
    /// Per socket address asked for: the address bound (port 0 resolved), its accept loop,
    /// and a second descriptor of the listening socket, for a binary upgrade to hand over.
    sockets: BTreeMap<SocketAddr, Socket>,
    /// The UDP sockets of the `http3` listeners and their QUIC endpoints.
    quic: crate::quic::Endpoints,
}

struct Socket {
    bound: SocketAddr,
    task: JoinHandle<()>,
    fd: std::os::fd::OwnedFd,
}

impl Server {
    /// Binds every listener's socket and starts accepting.
    pub async fn start(rt: Runtime) -> io::Result<Server> {
        Server::start_with(rt, crate::upgrade::Sockets::default()).await
    }

    /// Like [`Server::start`], but takes the sockets in `inherited` (from a binary upgrade
    /// or the service manager), TCP and UDP, instead of binding their addresses; inherited
    /// sockets the runtime does not need are closed.
    pub async fn start_with(rt: Runtime, inherited: crate::upgrade::Sockets) -> io::Result<Server> {
        let (shutdown, _) = watch::channel(false);
        let (drain, drained) = mpsc::channel(1);
        let addrs = socket_addrs(&rt);
        let udp = crate::quic::socket_addrs(&rt);
        let mut server = Server {
            runtime: Arc::new(ArcSwap::from_pointee(rt)),
            shutdown,
            drain: Some(drain),
            drained,
            sockets: BTreeMap::new(),
            quic: crate::quic::Endpoints::new().map_err(io::Error::other)?,
        };
        let mut inherited_tcp: BTreeMap<SocketAddr, std::net::TcpListener> =
            inherited.tcp.into_iter().collect();
        let mut bound = Vec::with_capacity(addrs.len());
        let mut to_bind = Vec::new();
        for addr in addrs {
            match inherited_tcp.remove(&addr) {
                Some(l) => bound.push((addr, TcpListener::from_std(l)?)),
                None => to_bind.push(addr),
            }
        }
        bound.extend(bind_all(&to_bind)?);
        let mut inherited_udp: BTreeMap<SocketAddr, std::net::UdpSocket> =
            inherited.udp.into_iter().collect();
        let mut udp_bound = Vec::with_capacity(udp.len());
        let mut udp_to_bind = Vec::new();
        for addr in udp {
            match inherited_udp.remove(&addr) {
                Some(s) => udp_bound.push((addr, s)),
                None => udp_to_bind.push(addr),
            }
        }
        udp_bound.extend(crate::quic::Endpoints::bind_all(&udp_to_bind)?);
        let udp = udp_bound;
        server.accept_on(bound)?;
        server.serve_quic(udp)?;
        Ok(server)
    }

    /// The listening sockets, TCP and UDP, by the address they were bound for, for a
    /// binary upgrade.
    pub fn listening(
        &self,
    ) -> Vec<(
        crate::upgrade::Kind,
        SocketAddr,
        std::os::fd::BorrowedFd<'_>,
    )> {
        use crate::upgrade::Kind;
        use std::os::fd::AsFd;
        self.sockets
            .iter()
            .map(|(a, s)| (Kind::Tcp, *a, s.fd.as_fd()))
            .chain(
                self.quic
                    .listening()
                    .into_iter()
                    .map(|(a, fd)| (Kind::Udp, a, fd)),
            )
            .collect()
    }

    fn accept_on(&mut self, bound: Vec<(SocketAddr, TcpListener)>) -> io::Result<()> {
        use std::os::fd::AsFd;
        for (wanted, socket) in bound {
            let actual = socket.local_addr()?;
            let fd = socket.as_fd().try_clone_to_owned()?;
            // Only shutdown() clears `drain`, and it consumes the server.
            let Some(drain) = self.drain.clone() else {
                break;
            };
            let task = tokio::spawn(accept_loop(
                socket,
                self.runtime.clone(),
                self.shutdown.subscribe(),
                drain,
            ));
            self.sockets.insert(
                wanted,
                Socket {
                    bound: actual,
                    task,
                    fd,
                },
            );
        }
        Ok(())
    }

    fn serve_quic(&mut self, bound: Vec<(SocketAddr, std::net::UdpSocket)>) -> io::Result<()> {
        let (runtime, shutdown, drain) = (&self.runtime, &self.shutdown, &self.drain);
        self.quic.serve(bound, || {
            Some(crate::quic::Context {
                runtime: runtime.clone(),
                shutdown: shutdown.subscribe(),
                drain: drain.clone()?,
            })
        })
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.values().map(|s| s.bound).collect()
    }

    /// The UDP addresses bound for HTTP/3.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.quic.local_addrs()
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Where the current runtime is read from, for readers outside the connection path
    /// (the admin listener); every install is seen through it.
    pub fn runtime_handle(&self) -> Arc<ArcSwap<Runtime>> {
        self.runtime.clone()
    }

    /// Installs `rt` for new connections. Addresses it adds are bound first — if one cannot
    /// be, nothing changes and the error says which. Then the runtime is swapped in, the old
    /// one is retired (its connections finish their requests and close), and addresses it no
    /// longer has stop accepting. Sockets kept across the swap are never closed, so no
    /// connection is refused during a reload.
    pub fn install(&mut self, rt: Runtime) -> io::Result<()> {
        let wanted = socket_addrs(&rt);
        let new: Vec<SocketAddr> = wanted
            .iter()
            .filter(|a| !self.sockets.contains_key(a))
            .copied()
            .collect();
        let bound = bind_all(&new)?;
        let udp_wanted = crate::quic::socket_addrs(&rt);
        let udp_new: Vec<SocketAddr> = udp_wanted
            .iter()
            .filter(|a| !self.quic.has(a))
            .copied()
            .collect();
        let udp = crate::quic::Endpoints::bind_all(&udp_new)?;
        let old = self.runtime.swap(Arc::new(rt));
        old.retire();
        self.accept_on(bound)?;
        self.serve_quic(udp)?;
        self.quic.keep_only(&udp_wanted);
        let gone: Vec<SocketAddr> = self
            .sockets
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(socket) = self.sockets.remove(&addr) {
                socket.task.abort();
                tracing::info!(addr = %socket.bound, "stopped listening");
            }
        }
        Ok(())
    }

    /// Stops accepting, asks every connection to finish its requests, and waits up to
    /// `deadline` for them. Returns whether every connection finished in time.
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        for socket in self.sockets.values() {
            socket.task.abort();
        }
        self.quic.stop_accepting().await;
        let _ = self.shutdown.send(true);
        self.drain = None;
        for (_, socket) in std::mem::take(&mut self.sockets) {
            let _ = socket.task.await;
        }
        // Every connection holds a drain sender; recv() returns None once all are gone.
        let until = Instant::now() + deadline;
        let (drained, quic) = (&mut self.drained, &mut self.quic);
        let all = async { tokio::time::timeout_at(until, drained.recv()).await.is_ok() };
        // HTTP/3 connections close themselves once their requests are done; each endpoint
        // lets go of its socket as soon as its own are, not when TCP is done too, and any
        // still open past the deadline get CONNECTION_CLOSE then.
        let (drained, ()) = tokio::join!(all, quic.close_when_idle(until));
        drained
    }
}

/// Binds every address, or none: on an error the sockets bound so far are closed.
fn bind_all(addrs: &[SocketAddr]) -> io::Result<Vec<(SocketAddr, TcpListener)>> {
    addrs
        .iter()
        .map(|&addr| {
            bind(addr)
                .map(|s| (addr, s))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
        })
        .collect()
}

async fn accept_loop(
    socket: TcpListener,
    runtime: Arc<ArcSwap<Runtime>>,
    shutdown: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    loop {
        let (tcp, peer) = match socket.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let rt = runtime.load_full();
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Some(li) = rt.listener_for(local) else {
            tracing::debug!(%local, %peer, "no listener for this address; closing");
            continue;
        };
        let Ok(permit) = rt.listeners[li].connections.clone().try_acquire_owned() else {
            tracing::warn!(listener = %rt.listeners[li].config.name, %peer, "connection limit reached; closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shutdown = shutdown.clone();
        let drain = drain.clone();
        // Boxed: a connection's future holds the whole TLS and HTTP state machine (about
        // 10 KiB), and tokio moves a task's future several times while it spawns, runs and
        // finishes it; moving a pointer instead saved about 7% of a handshake's instructions.
        tokio::spawn(Box::pin(async move {
            connection(rt, li, tcp, peer, local, shutdown).await;
            drop(permit);
            drop(drain);
        }));
    }
}

async fn connection(
    rt: Arc<Runtime>,
    li: usize,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let deadline = Instant::now() + rt.config.limits.handshake_timeout;
    let listener = &rt.listeners[li];
    let _open = listener.metrics.open();
    // Behind an L4 load balancer the first bytes say who the client is; only trusted
    // sources may say so, and they must.
    let (client, local, tcp) = if listener
        .config
        .proxy_protocol_from
        .iter()
        .any(|c| c.contains(peer.ip()))
    {
        match read_proxy_header(tcp, deadline).await {
            Ok((header, io)) => match header {
                proxy_protocol::Header::Proxied {
                    source,
                    destination,
                } => (source, destination, io),
                proxy_protocol::Header::Local => (peer, local, io),
            },
            Err(e) => {
                tracing::info!(listener = %listener.config.name, %peer, error = %e, "PROXY protocol header refused");
                return;
            }
        }
    } else {
        (peer, local, PrefixedIo::new(Vec::new(), tcp))
    };
    match listener.config.kind {
        ListenerKind::Https => https(rt, li, tcp, client, local, deadline, shutdown).await,
        ListenerKind::Http => {
            listener.metrics.carried(Carried::Http1);
            let conn = Arc::new(Conn {
                runtime: rt,
                listener: li,
                peer: client,
                sni: None,
                cert: None,
                policy: None,
                identity: None,
                tls_version: "-",
                upgraded: Arc::default(),
            });
            connection::serve_http1(conn, tcp, shutdown).await;
        }
    }
}

/// Why a PROXY protocol header could not be read.
#[derive(Debug, thiserror::Error)]
enum ProxyHeaderError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("no complete header before the deadline")]
    Timeout,
    #[error("the connection closed before the header ended")]
    Closed,
    #[error(transparent)]
    Header(#[from] proxy_protocol::Error),
}

/// Reads a PROXY protocol header; what was read past it is kept for replay.
async fn read_proxy_header(
    mut tcp: TcpStream,
    deadline: Instant,
) -> Result<(proxy_protocol::Header, PrefixedIo<TcpStream>), ProxyHeaderError> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Some((header, len)) = proxy_protocol::parse(&buf)? {
            let rest = buf.split_off(len);
            return Ok((header, PrefixedIo::new(rest, tcp)));
        }
        // A v2 header's TLVs may add up to 64 KiB; nothing longer is a header.
        if buf.len() > 16 + 65_535 {
            return Err(proxy_protocol::Error::Malformed("header too long").into());
        }
        let mut chunk = [0u8; 1024];
        let n = match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return Err(ProxyHeaderError::Timeout),
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A fatal TLS alert record: what a refused client sees.
fn alert_record(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// Completes a TLS-ALPN-01 handshake with the challenge certificate, then closes: the CA
/// only looks at the certificate.
async fn acme_tls_alpn(
    cert: Arc<rustls::sign::CertifiedKey>,
    io: PrefixedIo<TcpStream>,
    client: SocketAddr,
    deadline: Instant,
) {
    let config = match crate::acme::tls_alpn_config(cert) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::warn!(%client, error = %e, "cannot make the TLS-ALPN-01 configuration");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout_at(deadline, acceptor.accept(io)).await {
        Ok(Ok(mut tls)) => {
            tracing::info!(%client, "answered an ACME TLS-ALPN-01 challenge");
            let _ = tls.shutdown().await;
        }
        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS-ALPN-01 handshake failed"),
        Err(_) => tracing::debug!(%client, "TLS-ALPN-01 handshake timed out"),
    }
}

/// The chain and key of a certificate the cache evicted, read again from its files on the
/// blocking pool (at most [`COLD_LOADS`] at once), within the handshake deadline.
async fn cold_certificate(
    rt: &Runtime,
    cert: &Arc<Cert>,
    deadline: Instant,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    static LOADING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(COLD_LOADS);
    let load = async {
        let _permit = LOADING.acquire().await.map_err(|e| e.to_string())?;
        let (cert, keys) = (cert.clone(), rt.keys.clone());
        match tokio::task::spawn_blocking(move || cert.certified(&keys)).await {
            Ok(Ok(key)) => Ok(key),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the load failed: {e}")),
        }
    };
    match tokio::time::timeout_at(deadline, load).await {
        Ok(r) => r,
        Err(_) => Err("the files were not read before the handshake deadline".to_string()),
    }
}

/// How many evicted certificates are read again at once: enough to keep the disk busy,
/// few enough that a flood of cold names cannot take the blocking pool.
const COLD_LOADS: usize = 8;

#[allow(clippy::too_many_arguments)]
async fn https(
    rt: Arc<Runtime>,
    li: usize,
    mut io: PrefixedIo<TcpStream>,
    client: SocketAddr,
    local: SocketAddr,
    deadline: Instant,
    shutdown: watch::Receiver<bool>,
) {
    let listener = &rt.listeners[li];
    if listener.tls.is_none() {
        return;
    }
    let counters = &listener.metrics;
    // What a connection that carries nothing ends as.
    let ended = |outcome: Handshake| {
        counters.handshake(outcome);
        counters.carried(Carried::Nothing);
    };
    let accepted = deadline
        .checked_sub(rt.config.limits.handshake_timeout)
        .unwrap_or(deadline);
    let (hello, read) = match read_client_hello(&mut io, HELLO_LIMIT, deadline).await {
        Ok(x) => x,
        Err(PeekError::Timeout) => {
            ended(Handshake::Timeout);
            tracing::debug!(%client, "no whole ClientHello before the deadline; closing");
            return;
        }
        Err(PeekError::Hello(HelloError::NotTls)) => {
            ended(Handshake::Failed);
            // Most often someone typed http:// for an https port: say so, like nginx does.
            tracing::debug!(%client, "plain bytes on an https listener; answering 400");
            let _ = io.write_all(PLAIN_HTTP_ON_HTTPS).await;
            let _ = io.shutdown().await;
            return;
        }
        Err(e) => {
            ended(Handshake::Failed);
            tracing::debug!(%client, error = %e, "no usable ClientHello; closing");
            return;
        }
    };
    // Everything read so far, and whatever a PROXY header read brought along unread.
    let (unread, mut tcp) = io.into_parts();
    let prefix = [read, unread].concat();
    let sni_sent = hello.server_name.as_deref();
    // An ACME CA validating TLS-ALPN-01 gets the challenge certificate and nothing else.
    if hello.alpn.iter().any(|p| p == crate::acme::ACME_TLS_ALPN) {
        let challenge = sni_sent
            .and_then(|s| HostName::parse(s).ok())
            .and_then(|h| rt.challenges.tls_alpn(h.as_str()));
        if let Some(cert) = challenge {
            ended(Handshake::AcmeChallenge);
            acme_tls_alpn(cert, PrefixedIo::new(prefix, tcp), client, deadline).await;
            return;
        }
    }
    let decision = match rt.decide(li, sni_sent) {
        // No certificate yet for a name the catch-all site orders on demand: ask and wait
        // (bounded by `wait` and the handshake deadline), then decide again; still none
        // is refused as unknown, the order going on for the next try.
        Decision::OnDemand { site, name } => {
            let on_demand = rt.on_demand.clone();
            on_demand.wait(&rt, site, &name, deadline).await;
            match rt.decide(li, sni_sent) {
                Decision::OnDemand { name, .. } => {
                    Decision::Refuse(Refusal::UnknownName(name.to_string()))
                }
                other => other,
            }
        }
        other => other,
    };
    let resolved = match decision {
        Decision::OnDemand { .. } => return,
        Decision::Terminate(r) => r,
        Decision::Passthrough { backend, resolved } => {
            counters.handshake(Handshake::Passthrough);
            counters.carried(Carried::Passthrough);
            let site = resolved.map(|r| &*rt.sites[r.binding.site].metrics);
            let timeout = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            crate::passthrough::serve(tcp, prefix, backend, client, local, timeout, sni_sent, site)
                .await;
            return;
        }
        Decision::Refuse(refusal) => {
            ended(match refusal {
                Refusal::NoSni => Handshake::RefusedNoSni,
                Refusal::UnknownName(_) => Handshake::RefusedUnknownSni,
                Refusal::NoCertificate(_) => Handshake::NoCertificate,
            });
            tracing::info!(listener = %listener.config.name, %client, sni = sni_sent.unwrap_or("-"), ?refusal, "handshake refused");
            let _ = tcp.write_all(&alert_record(refusal.alert())).await;
            let _ = tcp.shutdown().await;
            return;
        }
    };
    let schemes: Vec<SignatureScheme> = hello
        .signature_schemes
        .iter()
        .map(|&s| SignatureScheme::from(s))
        .collect();
    let cert = rt.certificate_for(&resolved, &schemes);
    let site = resolved.binding.site;
    // The site is known before the handshake: a site with `client_auth` is terminated with
    // its policy's configuration, every other one with the listener's.
    let policy = rt.sites[site].client_auth;
    let Some(tls_config) = rt.tls_for(li, site).cloned() else {
        return;
    };
    // Without a certificate for the client's signature schemes the handshake fails in
    // rustls' resolver; it is counted as what it is.
    let failure = if cert.is_some() {
        Handshake::Failed
    } else {
        Handshake::NoCertificate
    };
    let chosen = match &cert {
        None => None,
        Some(cert) => match cert.in_memory() {
            Some(key) => Some(key),
            None => match cold_certificate(&rt, cert, deadline).await {
                Ok(key) => Some(key),
                Err(reason) => {
                    ended(Handshake::Failed);
                    tracing::warn!(listener = %listener.config.name, %client, sni = sni_sent.unwrap_or("-"), site = %rt.sites[site].name, file = %cert.cert_file.display(), %reason, "handshake refused: the certificate cannot be loaded");
                    let _ = tcp.write_all(&alert_record(80)).await;
                    let _ = tcp.shutdown().await;
                    return;
                }
            },
        },
    };
    let sni = sni_sent.and_then(|s| HostName::parse(s).ok());
    // From the handshake on, what one wake-up of the connection writes leaves in one write.
    let (io, sender) = gather(PrefixedIo::new(prefix, tcp));
    let terminated = async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        let counters = &rt.listeners[li].metrics;
        let handshake = presenting(chosen, acceptor.accept(io).into_fallible());
        let tls = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err((e, io))) => {
                counters.handshake(failure);
                counters.carried(Carried::Nothing);
                let refused = policy
                    .and_then(|_| e.get_ref()?.downcast_ref::<rustls::Error>())
                    .and_then(Refused::of);
                match refused {
                    Some(why) => {
                        let site = &rt.sites[site];
                        site.metrics.client_cert_refused(why);
                        tracing::info!(listener = %rt.listeners[li].config.name, %client, site = %site.name, reason = why.as_str(), error = %e, "client certificate refused");
                        close_after_alert(io).await;
                    }
                    None => tracing::debug!(%client, error = %e, "TLS handshake failed"),
                }
                return;
            }
            Err(_) => {
                counters.handshake(Handshake::Timeout);
                counters.carried(Carried::Nothing);
                tracing::debug!(%client, "TLS handshake timed out");
                return;
            }
        };
        let (_, session) = tls.get_ref();
        counters.handshake(match session.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => Handshake::Resumed,
            _ => Handshake::Ok,
        });
        counters.handshake_seconds.observe(accepted.elapsed());
        let tls_version = match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let h2 = session.alpn_protocol() == Some(b"h2");
        // Under a policy, the certificate the client was verified with, in this handshake or
        // in the one its resumed session came from.
        let identity = match policy {
            None => None,
            Some(_) => {
                let identity = session
                    .peer_certificates()
                    .and_then(ClientIdentity::of)
                    .map(Arc::new);
                if identity.is_some() {
                    rt.sites[site].metrics.client_cert_verified();
                }
                identity
            }
        };
        counters.carried(if h2 { Carried::H2 } else { Carried::Http1 });
        let conn = Arc::new(Conn {
            runtime: rt,
            listener: li,
            peer: client,
            sni,
            cert,
            policy,
            identity,
            tls_version,
            upgraded: Arc::default(),
        });
        if h2 {
            connection::serve_h2(conn, tls, shutdown).await;
        } else {
            connection::serve_http1(conn, tls, shutdown).await;
        }
    };
    Flushed::new(Box::pin(terminated), sender).await;
}
