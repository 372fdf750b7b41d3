//! The access log counts the body bytes actually sent: for proxied chunked responses (no
//! Content-Length), static files, and HEAD.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::admin::Logged;
use crate::support::client::{connect, get, send_h1, Opts};
use crate::support::{free_port, serve, site_root};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture")).into_owned()
    }

    /// The access log line for `path`, once written (waits at most 10 s: a bound).
    async fn line_for(&self, path: &str) -> String {
        let needle = format!(" path={path} ");
        for _ in 0..1000 {
            if let Some(line) = self.text().lines().find(|l| l.contains(&needle)) {
                return line.to_string();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no access log line for {path}:\n{}", self.text());
    }
}

/// Three frames of 1000 bytes, length not announced (sent chunked).
struct Chunks(u8);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'c'; 1000])))))
    }
}

/// A backend answering every request with `Chunks`.
async fn chunked_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Chunks(3)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// One request on a new HTTP/1.1 connection; returns the status, whether Content-Length
/// was sent, and the body length.
async fn request(
    addr: SocketAddr,
    host: &str,
    method: Method,
    path: &str,
) -> (StatusCode, bool, usize) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send_h1(addr, host, req).await;
    let status = resp.status();
    let has_length = resp.headers().contains_key(http::header::CONTENT_LENGTH);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, has_length, body.len())
}

// Current-thread on purpose: the server runs on this thread, so the scoped subscriber sees
// its log lines.
#[tokio::test]
async fn access_log_counts_body_bytes_actually_sent() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().expect("tempdir");
    let up = chunked_backend().await;
    let root = site_root(dir.path(), "www", "twelve bytes");
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n\
         [[site]]\nhosts = [\"app.test\"]\ntls = \"internal\"\nproxy = {{ upstreams = [\"http://{up}\"] }}\n\
         [[site]]\nhosts = [\"www.test\"]\ntls = \"internal\"\nroot = \"{}\"\n",
        free_port(),
        root.display()
    );
    let server = serve(dir.path(), &toml).await;
    let addr = server.addr("127.0.0.1");

    let (status, has_length, len) = request(addr, "app.test", Method::GET, "/chunked").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!has_length, "the proxied response is chunked");
    assert_eq!(len, 3000);
    let line = capture.line_for("/chunked").await;
    assert!(line.contains(" bytes=3000 "), "{line}");
    assert!(line.contains(" complete=true "), "{line}");
    assert!(line.contains(" status=200 "), "{line}");

    // A static file and a HEAD of it (nothing sent), on the other site.
    let get = |method: Method| request(addr, "www.test", method, "/index.html");
    assert_eq!(get(Method::GET).await.2, 12);
    let line = capture.line_for("/index.html").await;
    assert!(line.contains(" method=GET "), "{line}");
    assert!(line.contains(" bytes=12 "), "{line}");
    capture.0.lock().expect("capture").clear();
    assert_eq!(get(Method::HEAD).await.2, 0);
    let line = capture.line_for("/index.html").await;
    assert!(line.contains(" method=HEAD "), "{line}");
    assert!(line.contains(" bytes=0 "), "{line}");
    assert!(line.contains(" complete=true "), "{line}");
}

/// Every stderr line of `server`, parsed: each must be a JSON object (in JSON mode nothing
/// else is written).
fn json_lines(server: &Logged) -> Vec<serde_json::Value> {
    let text = server.stderr.lock().expect("stderr").clone();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{text}"))
        })
        .collect()
}

/// The access log lines with `msg` among [`json_lines`].
fn access_lines(server: &Logged, msg: &str) -> Vec<serde_json::Value> {
    json_lines(server)
        .into_iter()
        .filter(|v| v["logger"] == "access" && v["msg"] == msg)
        .collect()
}

/// Waits (at most 10 s: a bound) for the access line of `method path`.
async fn json_line_for(server: &Logged, method: &str, path: &str) -> serde_json::Value {
    for _ in 0..1000 {
        let found = access_lines(server, "request")
            .into_iter()
            .find(|v| v["method"] == method && v["path"] == path);
        if let Some(v) = found {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no access line for {method} {path}:\n{}",
        server.stderr.lock().expect("stderr")
    );
}

/// Waits (at most 30 s) until `addr` accepts.
async fn accepting(addr: SocketAddr) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing accepts on {addr}");
}

/// A plain TCP backend for a passthrough site: reads what comes, answers `pong`, closes.
async fn pong_backend() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(b"pong").await;
            let _ = tcp.shutdown().await;
        }
    });
    addr
}

#[tokio::test]
async fn json_access_log_is_one_object_per_line_with_stable_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = site_root(dir.path(), "www", "twelve bytes");
    let backend = pong_backend().await;
    let (port, http_port) = (free_port(), free_port());
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\n\
             [admin]\nenabled = false\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[listener]]\naddress = \"127.0.0.1:{http_port}\"\nkind = \"http\"\n\
             [[site]]\nname = \"www\"\nhosts = [\"www.test\"]\ntls = \"internal\"\nroot = \"{}\"\n\
             [[site]]\nname = \"pass\"\nhosts = [\"pass.test\"]\npassthrough = {{ backend = \"{backend}\" }}\n",
            root.display()
        ),
    )
    .expect("write config");
    let server = Logged::serve(&config);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    accepting(addr).await;

    // HTTP/1.1: a GET and a HEAD of a static file, and a 404.
    assert_eq!(
        request(addr, "www.test", Method::GET, "/index.html")
            .await
            .2,
        12
    );
    let v = json_line_for(&server, "GET", "/index.html").await;
    assert_eq!(v["level"], "info", "{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["bytes"], 12, "{v}");
    assert_eq!(v["site"], "www", "{v}");
    assert_eq!(v["host"], "www.test", "{v}");
    assert_eq!(v["sni"], "www.test", "{v}");
    assert_eq!(v["proto"], "HTTP/1.1", "{v}");
    assert_eq!(v["tls_version"], "TLSv1.3", "{v}");
    assert_eq!(v["client_ip"], "127.0.0.1", "{v}");
    assert!(v["client_port"].as_u64().is_some_and(|p| p > 0), "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert!(v["listener"].is_string(), "{v}");
    let duration = v["duration"].as_f64().expect("duration is a number");
    assert!((0.0..10.0).contains(&duration), "{v}");
    let ts = v["ts"].as_str().expect("ts is a string");
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("ts {ts}: {e}"));

    request(addr, "www.test", Method::HEAD, "/index.html").await;
    let v = json_line_for(&server, "HEAD", "/index.html").await;
    assert_eq!(
        (v["status"].as_u64(), v["bytes"].as_u64()),
        (Some(200), Some(0)),
        "{v}"
    );

    let (status, _, _) = request(addr, "www.test", Method::GET, "/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v = json_line_for(&server, "GET", "/missing").await;
    assert_eq!(v["status"], 404, "{v}");

    // HTTP/2.
    let (_, reply) = get(addr, &Opts::sni("www.test"), "www.test", "/index.html?h2").await;
    assert_eq!(reply.text(), "twelve bytes");
    let v = eventually_async(|| {
        access_lines(&server, "request")
            .into_iter()
            .find(|v| v["proto"] == "HTTP/2.0")
    })
    .await;
    assert_eq!(
        (v["path"].as_str(), v["bytes"].as_u64()),
        (Some("/index.html"), Some(12)),
        "{v}"
    );

    // Plain HTTP (a redirect to https): no SNI, no TLS version, the keys left out.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .expect("connect http");
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        b"GET /plain HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer)
        .await
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 308"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let v = json_line_for(&server, "GET", "/plain").await;
    assert_eq!(v["status"], 308, "{v}");
    assert_eq!(v["host"], "www.test", "{v}");
    assert!(
        v.get("sni").is_none() && v.get("tls_version").is_none(),
        "{v}"
    );

    // A passthrough connection: its line once both sides closed.
    let _ = connect(addr, &Opts::sni("pass.test")).await;
    let v = eventually_async(|| access_lines(&server, "passthrough").pop()).await;
    assert_eq!(v["sni"], "pass.test", "{v}");
    assert_eq!(v["backend"], backend.to_string(), "{v}");
    assert_eq!(v["client_ip"], "127.0.0.1", "{v}");
    assert_eq!(v["bytes_to_client"], 4, "{v}");
    assert!(
        v["bytes_to_backend"].as_u64().is_some_and(|n| n > 100),
        "the ClientHello: {v}"
    );
    assert!(v["duration"].is_f64(), "{v}");

    // A reload to text keeps JSON (read at start only) and says so with a warning.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, text.replace("\"json\"", "\"text\"")).expect("write config");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.running.0.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let warning = eventually_async(|| {
        json_lines(&server).into_iter().find(|v| {
            v["level"] == "warn" && v["msg"].as_str().is_some_and(|m| m.contains("log.format"))
        })
    })
    .await;
    let msg = warning["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("writes its log as \"json\" until it restarts"),
        "{warning}"
    );
    eventually_async(|| {
        json_lines(&server)
            .into_iter()
            .find(|v| v["msg"] == "reloaded")
    })
    .await;
}

/// Polls `f` for at most 10 s without blocking the runtime.
async fn eventually_async<T>(mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1000 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting");
}
