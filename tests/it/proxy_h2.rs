//! HTTP/2 to https upstreams: an in-test TLS backend that speaks h2 or HTTP/1.1 by ALPN and
//! says which version each request came in. Requests arrive over HTTP/2, multiplexed on one
//! connection, with `:authority` set to the client's host; bodies stream both ways; `TE:
//! trailers` and trailers pass; a WebSocket upgrade still goes over HTTP/1.1.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Barrier};

use crate::support::body::{full, Gen, TBody};
use crate::support::client::{connect, expect_echo, send_h1, websocket, Opts};
use crate::support::pki::Pki;
use crate::support::{free_port, serve, TestServer};

/// How many requests `/together` waits for before any of them is answered.
const TOGETHER: usize = 6;

/// The backend's shared state.
struct Backend {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    together: Barrier,
}

/// `/together` answers once `TOGETHER` requests are in at once (or after 30 s, "alone": a
/// bound); `/echo` streams the request body back as it arrives; `/upload` counts the body;
/// `/download?N` sends N bytes; `/trailers` answers with trailers; `/ws` upgrades (only
/// possible over HTTP/1.1) and echoes. Every response says the request's version in
/// `x-version`; `/` also echoes the target, `host` and `te`.
async fn handle(
    state: Arc<Backend>,
    mut req: Request<Incoming>,
) -> Result<Response<TBody>, Infallible> {
    let version = format!("{:?}", req.version());
    let mut resp = match req.uri().path() {
        "/together" => {
            let met = tokio::time::timeout(Duration::from_secs(30), state.together.wait()).await;
            Response::new(full(if met.is_ok() { "together" } else { "alone" }))
        }
        "/echo" => Response::new(req.into_body().map_err(io::Error::other).boxed()),
        "/upload" => {
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                n += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Response::new(full(format!("got {n}")))
        }
        "/download" => {
            let n: u64 = req.uri().query().and_then(|q| q.parse().ok()).unwrap_or(0);
            Response::new(
                Gen {
                    left: n,
                    exact: false,
                }
                .boxed(),
            )
        }
        "/trailers" => {
            let te = req.headers().get("te").cloned();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let frames = vec![
                Frame::data(Bytes::from(format!("te={te:?}"))),
                Frame::trailers(trailers),
            ];
            Response::new(Frames(frames.into_iter()).boxed())
        }
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = on.await else { return };
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = io.read(&mut buf).await {
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("upgrade"));
            r.headers_mut()
                .insert("upgrade", HeaderValue::from_static("websocket"));
            r
        }
        _ => {
            let mut text = format!("{} {}\n", req.method(), req.uri());
            for name in ["host", "te"] {
                for v in req.headers().get_all(name) {
                    text += &format!("{name}: {}\n", v.to_str().unwrap_or("?"));
                }
            }
            Response::new(full(text))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&version) {
        resp.headers_mut().insert("x-version", v);
    }
    Ok(resp)
}

/// Fixed frames, data and trailers.
struct Frames(std::vec::IntoIter<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.next().map(Ok))
    }
}

/// A request body fed from a channel, so the test decides when each piece is sent.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts the backend: TLS for `backend.test` (from `pki`), ALPN `h2` then `http/1.1`.
async fn h2_backend(pki: &Pki) -> (SocketAddr, Arc<Backend>) {
    let acceptor = pki.backend_acceptor("h2-backend", &["backend.test"], &[b"h2", b"http/1.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(Backend {
        accepted: AtomicUsize::new(0),
        together: Barrier::new(TOGETHER),
    });
    let shared = state.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let state = shared.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(tls);
                let svc = service_fn(move |req| handle(state.clone(), req));
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    (addr, state)
}

/// Portico proxying `app.test` to the backend, verified against the test root.
async fn portico(dir: &std::path::Path, pki: &Pki, up: SocketAddr) -> TestServer {
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[site]]\nhosts = [\"app.test\"]\ntls = \"internal\"\nproxy = {{ upstreams = [\"https://{up}\"], ca = \"{}\", server_name = \"backend.test\" }}\n",
        free_port(),
        pki.root_file().display()
    );
    serve(dir, &toml).await
}

/// One request to Portico on a new HTTP/1.1 connection.
async fn send(addr: SocketAddr, method: Method, path: &str, body: TBody) -> Response<Incoming> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "app.test")
        .body(body)
        .expect("request");
    send_h1(addr, "app.test", req).await
}

/// A client speaking HTTP/2 to Portico.
async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<TBody> {
    let (tls, presented) = connect(addr, &Opts::sni("app.test"))
        .await
        .expect("connect");
    assert_eq!(presented.alpn.as_deref(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

fn version(resp: &Response<Incoming>) -> String {
    resp.headers()
        .get("x-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

async fn text(resp: Response<Incoming>) -> String {
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn requests_reach_an_h2_upstream_multiplexed_on_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (up, backend) = h2_backend(&pki).await;
    let server = portico(dir.path(), &pki, up).await;
    let addr = server.addr("127.0.0.1");

    // The upstream sees HTTP/2, with the client's host as :authority (and Host).
    let resp = send(addr, Method::GET, "/a?b=1", full("")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(version(&resp), "HTTP/2.0");
    let echo = text(resp).await;
    assert!(echo.starts_with("GET https://app.test/a?b=1\n"), "{echo}");
    assert!(echo.contains("host: app.test\n"), "{echo}");

    // Several requests at once, each on its own client connection: the backend answers
    // only when all of them are in, which one connection can only do by multiplexing.
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..TOGETHER {
        all.spawn(async move {
            let resp = send(addr, Method::GET, "/together", full("")).await;
            (version(&resp), text(resp).await)
        });
    }
    while let Some(done) = all.join_next().await {
        let (version, body) = done.expect("request task");
        assert_eq!((version.as_str(), body.as_str()), ("HTTP/2.0", "together"));
    }
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        1,
        "every request went over one upstream connection"
    );
}

#[tokio::test]
async fn bodies_stream_both_ways_over_h2_and_trailers_pass() {
    const SIZE: u64 = 8 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (up, _backend) = h2_backend(&pki).await;
    let server = portico(dir.path(), &pki, up).await;
    let addr = server.addr("127.0.0.1");

    // Ping-pong: each piece of the request body is sent only after the previous one came
    // back, so neither body can be waiting to be collected anywhere on the way.
    let mut h2 = h2_client(addr).await;
    let (feed, fed) = mpsc::channel::<Bytes>(1);
    let req = Request::post("https://app.test/echo")
        .body(Fed(fed).boxed())
        .expect("request");
    let resp = h2.send_request(req).await.expect("response");
    assert_eq!(version(&resp), "HTTP/2.0");
    let mut body = resp.into_body();
    for i in 0..5 {
        let piece = format!("piece {i};");
        feed.send(Bytes::from(piece.clone())).await.expect("feed");
        let mut got = Vec::new();
        while got.len() < piece.len() {
            let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
                .await
                .expect("the piece comes back (bound)")
                .expect("a frame")
                .expect("frame ok");
            got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]));
        }
        assert_eq!(String::from_utf8_lossy(&got), piece);
    }
    drop(feed);
    let rest = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("the echo ends with the request (bound)")
        .expect("body");
    assert!(rest.to_bytes().is_empty());

    // Large bodies each way, length not announced.
    let resp = send(
        addr,
        Method::POST,
        "/upload",
        Gen {
            left: SIZE,
            exact: false,
        }
        .boxed(),
    )
    .await;
    assert_eq!(version(&resp), "HTTP/2.0");
    assert_eq!(text(resp).await, format!("got {SIZE}"));
    let resp = send(addr, Method::GET, &format!("/download?{SIZE}"), full("")).await;
    assert_eq!(version(&resp), "HTTP/2.0");
    let mut n = 0u64;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        n += frame
            .expect("frame")
            .data_ref()
            .map_or(0, |d| d.len() as u64);
    }
    assert_eq!(n, SIZE);

    // TE: trailers reaches the upstream (gRPC needs it), and its trailers come back.
    let req = Request::get("https://app.test/trailers")
        .header("te", "trailers")
        .body(full(""))
        .expect("request");
    let resp = h2.send_request(req).await.expect("response");
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "te=Some(\"trailers\")");
}

#[tokio::test]
async fn websocket_upgrade_to_an_h2_upstream_goes_over_http1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (up, _backend) = h2_backend(&pki).await;
    let server = portico(dir.path(), &pki, up).await;
    let addr = server.addr("127.0.0.1");

    // An HTTP/2 connection to the upstream is open and pooled first.
    let resp = send(addr, Method::GET, "/", full("")).await;
    assert_eq!(version(&resp), "HTTP/2.0");

    let (mut tls, head) = websocket(addr, "app.test").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("x-version: http/1.1\r\n"), "{head}");
    expect_echo(&mut tls, &[b"ping", b"and more bytes"]).await;
}

#[tokio::test]
async fn an_http2_request_whose_host_header_contradicts_its_authority_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (up, _backend) = h2_backend(&pki).await;
    let server = portico(dir.path(), &pki, up).await;
    let mut client = h2_client(server.addr("127.0.0.1")).await;
    // RFC 9113 8.3.1: a Host that names another host than :authority makes the request
    // malformed; it never reaches the upstream, which could otherwise route by Host.
    let req = Request::builder()
        .uri("https://app.test/")
        .header("host", "other.test")
        .body(full(""))
        .expect("request");
    let resp = client.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A Host that agrees is forwarded as the host the upstream hears.
    let req = Request::builder()
        .uri("https://app.test/")
        .header("host", "APP.test")
        .body(full(""))
        .expect("request");
    let resp = client.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = text(resp).await;
    assert!(echo.contains("host: app.test\n"), "{echo}");
}
