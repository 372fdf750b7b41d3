//! A TLS client for tests (rustls): says what the server presented, and sends HTTP/1.1 or
//! HTTP/2 requests over the connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// How the test client behaves.
#[derive(Clone, Debug)]
pub struct Opts {
    /// The SNI sent; None sends no SNI (the name "no-sni.invalid" is then used only locally).
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
    /// Offer only RSA signature schemes.
    pub rsa_only: bool,
    pub tls12_only: bool,
    /// Verify the chain against this root (for the SNI name) instead of accepting anything.
    pub root: Option<CertificateDer<'static>>,
    /// Offer only these cipher suites (default: rustls' own list and order).
    pub suites: Option<Vec<rustls::SupportedCipherSuite>>,
}

impl Opts {
    pub fn sni(name: &str) -> Opts {
        Opts {
            sni: Some(name.to_string()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            rsa_only: false,
            tls12_only: false,
            root: None,
            suites: None,
        }
    }

    pub fn no_sni() -> Opts {
        Opts {
            sni: None,
            ..Opts::sni("x")
        }
    }

    pub fn http1(mut self) -> Opts {
        self.alpn = vec![b"http/1.1".to_vec()];
        self
    }
}

/// What the server presented.
#[derive(Debug, Clone)]
pub struct Presented {
    pub sans: Vec<String>,
    /// The leaf's serial number, in hex.
    pub serial: String,
    /// The SHA-256 of the leaf (DER), in hex.
    pub sha256: String,
    pub subject: String,
    pub rsa: bool,
    pub version: rustls::ProtocolVersion,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
    pub suite: Option<rustls::CipherSuite>,
}

#[derive(Debug)]
struct AcceptAll {
    rsa_only: bool,
}

impl ServerCertVerifier for AcceptAll {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        if self.rsa_only {
            portico::inspect::explain::RSA_ONLY_SCHEMES.to_vec()
        } else {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}

pub fn client_config(opts: &Opts) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(suites) = &opts.suites {
        provider.cipher_suites = suites.clone();
    }
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions");
    let mut config = match &opts.root {
        Some(root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root.clone()).expect("root");
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAll {
                rsa_only: opts.rsa_only,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = opts.alpn.clone();
    config.enable_sni = opts.sni.is_some();
    Arc::new(config)
}

/// Connects and completes the handshake with a fresh client configuration.
pub async fn connect(
    addr: SocketAddr,
    opts: &Opts,
) -> io::Result<(TlsStream<TcpStream>, Presented)> {
    connect_with(addr, opts, client_config(opts)).await
}

/// Connects with a given configuration (reuse it to test session resumption).
pub async fn connect_with(
    addr: SocketAddr,
    opts: &Opts,
    config: Arc<ClientConfig>,
) -> io::Result<(TlsStream<TcpStream>, Presented)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(
        opts.sni
            .clone()
            .unwrap_or_else(|| "no-sni.invalid".to_string()),
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let presented = {
        let (_, conn) = tls.get_ref();
        let chain = conn
            .peer_certificates()
            .expect("server presented certificates");
        let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("parse leaf");
        let sans = dns_sans(&leaf);
        Presented {
            sans,
            serial: leaf.raw_serial_as_string(),
            sha256: aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, chain[0].as_ref())
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            subject: leaf.subject().to_string(),
            rsa: leaf.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1",
            version: conn.protocol_version().expect("version"),
            alpn: conn.alpn_protocol().map(|p| p.to_vec()),
            resumed: matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
            suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        }
    };
    Ok((tls, presented))
}

/// The alert the server sent, if the handshake failed with one.
/// The DNS names among a certificate's SAN entries.
pub fn dns_sans(leaf: &X509Certificate<'_>) -> Vec<String> {
    leaf.subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn alert(e: &io::Error) -> Option<AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

/// An HTTP client on one TLS connection.
pub enum Http {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    /// Starts HTTP on `tls`, by the ALPN the server chose.
    pub async fn over(tls: TlsStream<TcpStream>) -> Http {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Http::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            Http::H1(send)
        }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.send(host, path, &[]).await
    }

    pub async fn send(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.try_send(host, path, headers).await.expect("response")
    }

    /// A GET that reports a closed connection as None instead of panicking.
    pub async fn try_get(&mut self, host: &str, path: &str) -> Option<Reply> {
        self.try_send(host, path, &[]).await
    }

    pub async fn try_send(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<Reply> {
        let mut req = match self {
            Http::H1(_) => Request::get(path).header("host", host),
            Http::H2(_) => Request::get(format!("https://{host}{path}")),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).expect("request");
        let resp = match self {
            Http::H1(s) => s.send_request(req).await,
            Http::H2(s) => s.send_request(req).await,
        }
        .ok()?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(Reply {
            status,
            headers,
            body,
        })
    }
}

/// One GET on a new connection.
pub async fn get(addr: SocketAddr, opts: &Opts, host: &str, path: &str) -> (Presented, Reply) {
    let (tls, presented) = connect(addr, opts).await.expect("handshake");
    let mut http = Http::over(tls).await;
    (presented, http.get(host, path).await)
}

/// Sends `req` on a new HTTP/1.1 connection to `addr` with SNI `host` (certificates are not
/// verified) and returns the response; the connection lives until the response is read.
pub async fn send_h1<B>(
    addr: SocketAddr,
    host: &str,
    req: Request<B>,
) -> http::Response<hyper::body::Incoming>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tls, _) = connect(addr, &Opts::sni(host).http1())
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("response")
}

/// Opens a connection to `addr` with SNI `host`, asks for a WebSocket upgrade of `/ws` over
/// HTTP/1.1, and returns the stream and the response head, lowercased.
pub async fn websocket(addr: SocketAddr, host: &str) -> (TlsStream<TcpStream>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut tls, _) = connect(addr, &Opts::sni(host).http1())
        .await
        .expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tls.read(&mut b).await.expect("read"),
            1,
            "closed: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    (tls, String::from_utf8_lossy(&head).to_lowercase())
}

/// Writes each message and expects it echoed back whole.
pub async fn expect_echo(tls: &mut TlsStream<TcpStream>, messages: &[&[u8]]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for msg in messages {
        tls.write_all(msg).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        tls.read_exact(&mut got).await.expect("echo");
        assert_eq!(&got, msg);
    }
}
