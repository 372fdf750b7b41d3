//! HTTP/3 over QUIC (`http3 = true`): the same certificate choice, the same 421 rule and the
//! same site actions as on TCP, spoken to by an h3 client (h3 + h3-quinn + quinn).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::support::client::{client_config, dns_sans, get, Opts};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{free_port, serve, site_root, TestServer};

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// What the server presented on a QUIC connection, and the h3 request sender over it.
pub(crate) struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    sans: Vec<String>,
    sha256: String,
    /// How the connection ended, once it has: the h3 driver's last word.
    pub(crate) closed: tokio::sync::watch::Receiver<Option<String>>,
    _endpoint: quinn::Endpoint,
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Why a request got no whole response: `retry` when the server had not taken it (GOAWAY
/// seen, the connection closed with H3_NO_ERROR, or the stream rejected with
/// H3_REQUEST_REJECTED before a response head), which RFC 9114 lets a client send again
/// on a new connection; anything else is a failed request.
#[derive(Debug)]
pub(crate) struct NoReply {
    pub(crate) retry: bool,
    pub(crate) why: String,
}

fn not_taken(e: &h3::error::StreamError) -> bool {
    use h3::error::{Code, StreamError};
    e.is_h3_no_error()
        || matches!(e, StreamError::RemoteClosing { .. })
        || matches!(e, StreamError::RemoteTerminate { code, .. } if *code == Code::H3_REQUEST_REJECTED)
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of the leaf in a PEM chain file.
fn leaf_sha256(pem: &std::path::Path) -> String {
    let leaf = CertificateDer::pem_file_iter(pem)
        .expect("read pem")
        .next()
        .expect("a certificate")
        .expect("parse pem");
    sha256_hex(leaf.as_ref())
}

/// Connects over QUIC with ALPN h3, verifying against `root` for `sni`.
pub(crate) async fn connect(addr: SocketAddr, sni: &str, root: &Pki) -> Result<H3, String> {
    connect_trusting(addr, sni, root.root_der()).await
}

/// [`connect`] with the root certificate itself.
pub(crate) async fn connect_trusting(
    addr: SocketAddr,
    sni: &str,
    root: CertificateDer<'static>,
) -> Result<H3, String> {
    let mut opts = Opts::sni(sni);
    opts.alpn = vec![b"h3".to_vec()];
    opts.root = Some(root);
    let tls = client_config(&opts);
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(addr, sni)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no peer certificates")?;
    let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| e.to_string())?;
    let sans = dns_sans(&leaf);
    let sha256 = sha256_hex(chain[0].as_ref());
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| e.to_string())?;
    let (ended, closed) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        let words = if e.is_h3_no_error() {
            "H3_NO_ERROR".to_string()
        } else {
            format!("{e:?}")
        };
        let _ = ended.send(Some(words));
    });
    Ok(H3 {
        send,
        sans,
        sha256,
        closed,
        _endpoint: endpoint,
    })
}

impl H3 {
    /// Sends a request for `https://authority/path` with `headers` and `body` (streamed in
    /// 64 KiB DATA frames), and reads the whole response.
    async fn request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.try_request(method, authority, path, headers, body)
            .await
            .expect("a response")
    }

    /// [`H3::request`], saying why there was no whole response instead of panicking.
    pub(crate) async fn try_request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, NoReply> {
        // Before the response head, an error the server had not taken the request for.
        let before = |stage: &str, e: h3::error::StreamError| NoReply {
            retry: not_taken(&e),
            why: format!("{stage}: {e:?}"),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://{authority}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut stream = self
            .send
            .send_request(req.body(()).expect("request"))
            .await
            .map_err(|e| before("send request", e))?;
        for chunk in body.chunks(64 * 1024) {
            stream
                .send_data(Bytes::copy_from_slice(chunk))
                .await
                .map_err(|e| before("send body", e))?;
        }
        stream
            .finish()
            .await
            .map_err(|e| before("finish request", e))?;
        let resp = stream
            .recv_response()
            .await
            .map_err(|e| before("response head", e))?;
        let mut out = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(|e| NoReply {
            retry: false,
            why: format!("response body: {e:?}"),
        })? {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                out.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: out,
        })
    }

    pub(crate) async fn try_get(&mut self, authority: &str, path: &str) -> Result<Reply, NoReply> {
        self.try_request("GET", authority, path, &[], b"").await
    }

    async fn get(&mut self, authority: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", authority, path, headers, b"").await
    }
}

/// Three static sites with their own certificates, a passthrough site, and a proxy site,
/// on one https listener with `http3 = true`.
struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    server: TestServer,
    port: u16,
    certs: Vec<std::path::PathBuf>,
}

async fn setup(extra_sites: impl FnOnce(&Pki) -> String) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let port = free_port();
    let mut toml = format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\nhttp3 = true\n");
    let mut certs = Vec::new();
    for i in 1..=3 {
        let (cert, key) = pki.leaf(
            &format!("site{i}"),
            &[&format!("site{i}.example.test")],
            Key::Ecdsa,
            Validity::Current,
        );
        let root = site_root(dir.path(), &format!("site{i}"), &format!("page {i}"));
        std::fs::write(root.join("big.txt"), "0123456789".repeat(1000)).expect("write big");
        toml += &format!(
            "[[site]]\nname = \"site{i}\"\nhosts = [\"site{i}.example.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nroot = \"site{i}\"\n",
            p(&cert),
            p(&key)
        );
        certs.push(cert);
    }
    toml += "[[site]]\nname = \"relayed\"\nhosts = [\"relayed.example.test\"]\npassthrough = { backend = \"127.0.0.1:9\" }\n";
    toml += &extra_sites(&pki);
    let server = serve(dir.path(), &toml).await;
    Setup {
        _dir: dir,
        pki,
        server,
        port,
        certs,
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn three_sites_each_get_their_own_certificate_and_page_over_http3() {
    let s = setup(|_| String::new()).await;
    for i in 1..=3 {
        let name = format!("site{i}.example.test");
        let mut h3 = connect(addr(s.port), &name, &s.pki)
            .await
            .expect("QUIC handshake");
        assert_eq!(h3.sans, vec![name.clone()]);
        assert_eq!(h3.sha256, leaf_sha256(&s.certs[i - 1]));
        let r = h3.get(&name, "/", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("page {i}"));
        // HTTP/3 responses do not advertise HTTP/3 again.
        assert!(r.headers.get("alt-svc").is_none());
    }
    let rt = s.server.server.as_ref().expect("running").runtime();
    let text = rt.metrics.render(&rt);
    assert!(
        text.contains("portico_connections_total{listener=")
            && text.lines().any(|l| l.contains("protocol=\"h3\"")
                && l.starts_with("portico_connections_total")
                && l.ends_with(" 3")),
        "three h3 connections counted:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("portico_http_requests_total")
                && l.contains("site=\"site1\"")
                && l.contains("protocol=\"h3\"")),
        "h3 requests counted:\n{text}"
    );
}

#[tokio::test]
async fn tcp_responses_advertise_http3_with_alt_svc() {
    let s = setup(|_| String::new()).await;
    let mut opts = Opts::sni("site1.example.test");
    opts.root = Some(s.pki.root_der());
    let (_, reply) = get(addr(s.port), &opts, "site1.example.test", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers["alt-svc"],
        format!("h3=\":{}\"; ma=86400", s.port)
    );
    // Also on a 421, which no site answered.
    let (_, reply) = get(addr(s.port), &opts, "site2.example.test", "/").await;
    assert_eq!(reply.status, 421);
    assert!(reply.headers.contains_key("alt-svc"));
}

#[tokio::test]
async fn unknown_and_passthrough_names_are_refused_on_quic() {
    let s = setup(|_| String::new()).await;
    let unknown = connect(addr(s.port), "nobody.example.test", &s.pki).await;
    assert!(
        unknown.is_err(),
        "an unknown SNI must not complete a handshake"
    );
    let relayed = connect(addr(s.port), "relayed.example.test", &s.pki).await;
    assert!(
        relayed.is_err(),
        "a passthrough site's name must not be terminated over QUIC"
    );
    // The refusals touch nothing else.
    let mut h3 = connect(addr(s.port), "site1.example.test", &s.pki)
        .await
        .expect("QUIC handshake");
    assert_eq!(h3.get("site1.example.test", "/", &[]).await.status, 200);
}

#[tokio::test]
async fn another_sites_authority_gets_421_over_http3() {
    let s = setup(|_| String::new()).await;
    let mut h3 = connect(addr(s.port), "site1.example.test", &s.pki)
        .await
        .expect("QUIC handshake");
    let r = h3.get("site2.example.test", "/", &[]).await;
    assert_eq!(r.status, 421);
    assert!(r
        .text()
        .contains("site2.example.test is not served on this connection"));
    // The connection goes on serving its own site.
    assert_eq!(
        h3.get("site1.example.test", "/", &[]).await.text(),
        "page 1"
    );
}

#[tokio::test]
async fn static_files_keep_their_semantics_over_http3() {
    let s = setup(|_| String::new()).await;
    let mut h3 = connect(addr(s.port), "site2.example.test", &s.pki)
        .await
        .expect("QUIC handshake");
    let host = "site2.example.test";
    let whole = h3.get(host, "/big.txt", &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body.len(), 10_000);
    let etag = whole.headers["etag"].to_str().expect("ascii").to_string();
    let again = h3.get(host, "/big.txt", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let part = h3.get(host, "/big.txt", &[("range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.headers["content-range"], "bytes 10-19/10000");
    assert_eq!(part.text(), "0123456789");
    let missing = h3.get(host, "/nothing-here", &[]).await;
    assert_eq!(missing.status, 404);
    let head = h3.request("HEAD", host, "/big.txt", &[], b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn a_proxy_site_reaches_its_http1_upstream_over_http3_with_bodies_streamed() {
    let up = crate::proxy::backend("h1").await;
    let s = setup(|pki| {
        let (cert, key) = pki.leaf("app", &["app.example.test"], Key::Ecdsa, Validity::Current);
        format!(
            "[[site]]\nname = \"proxied\"\nhosts = [\"app.example.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nproxy = {{ upstreams = [\"http://{up}\"] }}\n",
            p(&cert),
            p(&key)
        )
    })
    .await;
    let mut h3 = connect(addr(s.port), "app.example.test", &s.pki)
        .await
        .expect("QUIC handshake");
    let r = h3.get("app.example.test", "/hello?x=1", &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.starts_with("h1\nGET /hello?x=1\n"), "{text}");
    assert!(text.contains("host: app.example.test"), "{text}");
    assert!(text.contains("x-forwarded-proto: https"), "{text}");
    // 3 MiB up, counted by the upstream; 3 MiB down.
    let body = vec![b'x'; 3 * 1024 * 1024];
    let r = h3
        .request(
            "POST",
            "app.example.test",
            "/upload",
            &[("content-length", &body.len().to_string())],
            &body,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("got {}", body.len()));
    let r = h3.get("app.example.test", "/download?3145728", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3 * 1024 * 1024);
}

#[tokio::test]
async fn explain_says_which_names_quic_refuses() {
    let s = setup(|_| String::new()).await;
    let rt = s.server.server.as_ref().expect("running").runtime();
    let opts = portico::inspect::explain::Options::default();
    let now = portico::runtime::unix_now();
    let served = portico::inspect::explain::explain(&rt, "site1.example.test", &opts, now);
    assert!(
        served
            .http3_why
            .contains("the same certificate and site as over TCP"),
        "{}",
        served.http3_why
    );
    let relayed = portico::inspect::explain::explain(&rt, "relayed.example.test", &opts, now);
    assert!(
        relayed.http3_why.contains("passthrough"),
        "{}",
        relayed.http3_why
    );
    let unknown = portico::inspect::explain::explain(&rt, "nobody.example.test", &opts, now);
    assert!(
        unknown.http3_why.contains("refused as on TCP"),
        "{}",
        unknown.http3_why
    );
}

#[tokio::test]
async fn shutdown_drains_http3_connections_and_closes_them() {
    let s = setup(|_| String::new()).await;
    let mut h3 = connect(addr(s.port), "site1.example.test", &s.pki)
        .await
        .expect("QUIC handshake");
    assert_eq!(h3.get("site1.example.test", "/", &[]).await.status, 200);
    let Setup {
        server,
        pki,
        port,
        _dir,
        ..
    } = s;
    // The idle connection gets GOAWAY and closes once nothing is in flight, so the drain
    // does not wait out its deadline (a bound, not a timing assertion).
    let started = std::time::Instant::now();
    assert!(server.stop(std::time::Duration::from_secs(20)).await);
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // Nothing answers QUIC on the port any more (the client gives up or is refused).
    let after = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        connect(addr(port), "site1.example.test", &pki),
    )
    .await;
    assert!(
        !matches!(after, Ok(Ok(_))),
        "no QUIC handshake after the drain"
    );
}

#[tokio::test]
async fn a_client_auth_sites_name_is_refused_on_quic_and_served_on_tcp() {
    let s = setup(|pki| {
        let (cert, key) = pki.leaf("mtls", &["mtls.example.test"], Key::Ecdsa, Validity::Current);
        format!(
            "[[site]]\nname = \"mtls\"\nhosts = [\"mtls.example.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nclient_auth = {{ ca = \"{}\", required = false }}\nrespond = {{ body = \"mtls\" }}\n",
            p(&cert),
            p(&key),
            p(&pki.root_file())
        )
    })
    .await;
    assert!(
        connect(addr(s.port), "mtls.example.test", &s.pki)
            .await
            .is_err(),
        "a client_auth site is not terminated over QUIC"
    );
    let mut opts = Opts::sni("mtls.example.test");
    opts.root = Some(s.pki.root_der());
    let (_, reply) = get(addr(s.port), &opts, "mtls.example.test", "/").await;
    assert_eq!(reply.text(), "mtls");
    // Nor reached through another site's QUIC connection by :authority.
    let mut h3 = connect(addr(s.port), "site1.example.test", &s.pki)
        .await
        .expect("QUIC handshake");
    assert_eq!(h3.get("mtls.example.test", "/", &[]).await.status, 421);
    let rt = s.server.server.as_ref().expect("running").runtime();
    let ex = portico::inspect::explain::explain(
        &rt,
        "mtls.example.test",
        &portico::inspect::explain::Options::default(),
        portico::runtime::unix_now(),
    );
    assert!(ex.http3_why.contains("client_auth"), "{}", ex.http3_why);
}

#[tokio::test]
async fn probe_http3_reports_the_chain_h3_and_the_status_like_the_tcp_probe() {
    use portico::cli::probe::{quic, Sni, Target, Trust, Verdict, TIMEOUT};
    let s = setup(|_| String::new()).await;
    let target: Target = addr(s.port).to_string().parse().expect("target");
    let trust = Trust::load(Some(&s.pki.root_file())).expect("test root");
    let site2 = portico::names::HostName::parse("site2.example.test").expect("name");
    let r = quic::probe(&target, &Sni::Name(site2), &trust, TIMEOUT).await;
    assert_eq!(r.verdict(), Verdict::Ok, "{r:?}");
    assert!(r.over_quic);
    assert_eq!(r.http3_status, Some(200));
    let tls = r.tls.as_ref().expect("negotiated");
    assert_eq!(tls.alpn.as_deref(), Some("h3"));
    assert_eq!(r.chain[0].dns_names, vec!["site2.example.test".to_string()]);
    let colons = |hex: &str| {
        hex.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect::<Vec<_>>()
            .join(":")
    };
    assert_eq!(r.chain[0].sha256, colons(&leaf_sha256(&s.certs[1])));
    // A name the server refuses over QUIC: the alert, as over TCP.
    let nobody = portico::names::HostName::parse("nobody.example.test").expect("name");
    let r = quic::probe(&target, &Sni::Name(nobody), &trust, TIMEOUT).await;
    assert!(matches!(r.verdict(), Verdict::Refused(_)), "{r:?}");
    // Nothing answers QUIC on a port without an http3 listener: a clear error, within
    // the probe's deadline.
    let silent: Target = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("target");
    let r = quic::probe(
        &silent,
        &Sni::FromHost,
        &trust,
        std::time::Duration::from_secs(1),
    )
    .await;
    assert_eq!(r.verdict(), Verdict::Error);
    let error = r.error.as_deref().unwrap_or_default();
    assert!(error.contains("no QUIC answer"), "{error}");
}

#[tokio::test]
async fn portico_probe_http3_prints_h3_and_the_status() {
    let s = setup(|_| String::new()).await;
    let root = s.pki.root_file();
    let target = addr(s.port).to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["probe", "--http3", &target, "--sni", "site1.example.test"])
            .arg("--ca")
            .arg(root)
            .output()
            .expect("portico probe runs")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("TLS 1.3 over QUIC, ALPN h3"), "{text}");
    assert!(text.contains("HEAD / answered 200"), "{text}");
    assert!(
        text.contains("site1.example.test is covered by the leaf"),
        "{text}"
    );
}
