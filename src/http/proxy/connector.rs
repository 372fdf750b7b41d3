//! Connections to upstreams for hyper-util's pooled client: TCP through `HttpConnector`, then
//! TLS through rustls for `https://` upstreams, with SNI and certificate verification.
//!
//! A connector is bound to one upstream: it connects there whatever the request URI says,
//! because the URI's authority carries the host the upstream should see (HTTP/2's
//! `:authority`), not where to connect. It reports an `h2` ALPN result to the client, which
//! then speaks HTTP/2 on that connection.
//!
//! Verification is never turned off: roots come from the site's `ca` file or the system bundle.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{Scheme, Upstream};

/// Where https upstreams' roots come from when a site names no `ca`.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why the roots for https upstreams cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("cannot read {}: {}", path.display(), crate::error_text::describe_io(source))]
    Read { path: PathBuf, source: io::Error },
    #[error("{} holds no usable CERTIFICATE block", path.display())]
    Empty { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Bad {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot make the TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// ALPN offered to https upstreams that may speak HTTP/2.
pub(super) const ALPN_H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for connections that must stay on HTTP/1.1 (upgrades).
pub(super) const ALPN_H1: &[&[u8]] = &[b"http/1.1"];

/// Loads the roots from `ca` or, without one, from the system bundle. The PEM must parse;
/// certificates webpki cannot use as roots are skipped, but at least one must be usable.
/// ALPN is left empty for the caller to set ([`with_alpn`]).
pub(super) fn client_config(ca: Option<&Path>) -> Result<ClientConfig, RootsError> {
    let path = ca.unwrap_or(Path::new(SYSTEM_BUNDLE));
    let pem = std::fs::read(path).map_err(|source| RootsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RootsError::Bad {
            path: path.to_path_buf(),
            source,
        })?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(RootsError::Empty {
            path: path.to_path_buf(),
        });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `config` offering `alpn`.
pub(super) fn with_alpn(config: &ClientConfig, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Why a connection to an upstream could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP connection failed: {0}")]
    Tcp(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    #[error("TLS handshake did not finish within {0:?}")]
    TlsTimeout(Duration),
    #[error("https upstream, but no TLS configuration (a bug)")]
    NoTls,
    #[error("{0} does not make a URI (a bug): {1}")]
    BadTarget(String, #[source] http::Error),
    #[error("{0:?} is not a name to send as SNI")]
    BadName(String),
}

/// Makes TCP or TLS connections to one upstream; cloned by the pool for each new connection.
#[derive(Clone)]
pub(super) struct Connector {
    http: HttpConnector,
    /// Where to connect: the upstream's `scheme://host:port`.
    target: Uri,
    /// Set for https upstreams: the TLS configuration and the name sent as SNI and verified
    /// (`server_name`, else the upstream's host).
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

impl Connector {
    /// A connector to `upstream`; `tls` is required for an https upstream and unused for
    /// an http one.
    pub(super) fn new(
        upstream: &Upstream,
        tls: Option<Arc<ClientConfig>>,
        server_name: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Connector, ConnectError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let target = Uri::builder()
            .scheme(upstream.scheme.as_str())
            .authority(upstream.authority())
            .path_and_query("/")
            .build()
            .map_err(|e| ConnectError::BadTarget(upstream.to_string(), e))?;
        let tls = match upstream.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let config = tls.ok_or(ConnectError::NoTls)?;
                let name = server_name.unwrap_or(&upstream.host);
                let name = ServerName::try_from(name.to_string())
                    .map_err(|_| ConnectError::BadName(name.into()))?;
                Some((TlsConnector::from(config), name))
            }
        };
        Ok(Connector {
            http,
            target,
            tls,
            timeout: connect_timeout,
        })
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.http
            .poll_ready(cx)
            .map_err(|e| ConnectError::Tcp(e.into()))
    }

    /// Connects to the bound upstream; `_uri` names the pool the connection goes to, not
    /// where it goes.
    fn call(&mut self, _uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let target = self.target.clone();
        let tls = self.tls.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let tcp = http
                .call(target)
                .await
                .map_err(|e| ConnectError::Tcp(e.into()))?;
            let Some((tls, name)) = tls else {
                return Ok(Stream::Plain(tcp));
            };
            let stream = tokio::time::timeout(timeout, tls.connect(name, tcp.into_inner()))
                .await
                .map_err(|_| ConnectError::TlsTimeout(timeout))?
                .map_err(ConnectError::Tls)?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection to an upstream, plain or TLS.
pub(super) enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => {
                let (tcp, tls) = s.inner().get_ref();
                let connected = tcp.connected();
                if tls.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}
