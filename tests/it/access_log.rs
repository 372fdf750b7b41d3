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

use crate::support::client::send_h1;
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
