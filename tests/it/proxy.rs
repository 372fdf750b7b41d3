//! The `proxy` action against real backends on loopback: in-test hyper servers (plain and
//! TLS) and nginx. Round robin, failover and 502, 504, retries, forwarded headers and
//! trusted proxies, hop-by-hop headers, 413, upgrades, and 100 MB streamed both ways with
//! bounded memory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::body::{full, gen, Gen, TBody};
use crate::support::client::{connect, expect_echo, send_h1, websocket, Opts};
use crate::support::pki::Pki;
use crate::support::{free_port, nginx, serve, TestServer};

/// Reads a body to its end, counting bytes and checking each one is 'x'.
async fn drain_x<B>(mut body: B) -> Result<u64, String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(d) = frame.data_ref() {
            if d.iter().any(|&b| b != b'x') {
                return Err("a byte other than 'x'".to_string());
            }
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// The in-test backend. `/slow` never answers in time, `/upload` counts the body,
/// `/download?N` sends N bytes, `/ws` upgrades and echoes; anything else echoes the request
/// head: the backend's name, the method and target, then one line per header.
async fn handle(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<TBody>, Infallible> {
    let resp = match req.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(full("late"))
        }
        "/upload" => match drain_x(req.into_body()).await {
            Ok(n) => Response::new(full(format!("got {n}"))),
            Err(e) => Response::new(full(format!("error {e}"))),
        },
        "/download" => {
            let n: u64 = req.uri().query().and_then(|q| q.parse().ok()).unwrap_or(0);
            Response::new(gen(n).boxed())
        }
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(up) = on.await else { return };
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .body(full(""))
                .expect("101")
        }
        _ => {
            let mut text = format!("{name}\n{} {}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                text += &format!("{k}: {}\n", v.to_str().unwrap_or("?"));
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            text += &format!("body: {}\n", String::from_utf8_lossy(&body));
            Response::new(full(text))
        }
    };
    Ok(resp)
}

async fn serve_conn<IO>(name: &'static str, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service_fn(move |req| handle(name, req)))
        .with_upgrades()
        .await;
}

/// A plain HTTP backend named `name`.
pub(crate) async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve_conn(name, tcp));
        }
    });
    addr
}

/// A TLS backend named `name` whose certificate (from `pki`) covers `cert_name`.
pub(crate) async fn tls_backend(pki: &Pki, name: &'static str, cert_name: &str) -> SocketAddr {
    let acceptor = pki.backend_acceptor(&format!("backend-{name}"), &[cert_name], &[]);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_conn(name, tls).await;
                }
            });
        }
    });
    addr
}

/// A loopback address where nothing listens (bound, then closed).
fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Portico on one https listener with one proxy site per (host, proxy table).
async fn portico(dir: &std::path::Path, sites: &[(&str, String)]) -> TestServer {
    let mut toml = format!("[[listener]]\naddress = \"127.0.0.1:{}\"\n", free_port());
    for (host, proxy) in sites {
        toml += &format!("[[site]]\nhosts = [\"{host}\"]\ntls = \"internal\"\nproxy = {proxy}\n");
    }
    serve(dir, &toml).await
}

/// Sends one request on a new HTTP/1.1 connection to Portico for `host`.
async fn send(
    addr: SocketAddr,
    host: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: TBody,
) -> Response<Incoming> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send_h1(addr, host, req.body(body).expect("request")).await
}

async fn text(resp: Response<Incoming>) -> (StatusCode, HeaderMap, String) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let (s, _, t) = text(send(addr, host, Method::GET, path, headers, full("")).await).await;
    (s, t)
}

/// The values of header `name` in an echoed request head.
fn echoed<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}: ");
    echo.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

#[tokio::test]
async fn get_and_post_are_proxied_with_forwarded_headers_and_without_hop_by_hop_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = backend("one").await;
    let server = portico(
        dir.path(),
        &[("app.test", format!("{{ upstreams = [\"http://{up}\"] }}"))],
    )
    .await;
    let addr = server.addr("127.0.0.1");

    let (status, echo) = get(
        addr,
        "app.test",
        "/a/b?c=1",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-host", "evil.test"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic eDp5"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert!(echo.starts_with("one\nGET /a/b?c=1\n"), "{echo}");
    assert_eq!(
        echoed(&echo, "host"),
        ["app.test"],
        "Host passes through: {echo}"
    );
    assert_eq!(
        echoed(&echo, "x-forwarded-for"),
        ["127.0.0.1"],
        "an untrusted peer's XFF is replaced"
    );
    assert_eq!(echoed(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed(&echo, "x-forwarded-host"), ["app.test"]);
    assert_eq!(
        echoed(&echo, "forwarded"),
        ["for=127.0.0.1;host=\"app.test\";proto=https"]
    );
    assert!(
        echoed(&echo, "x-secret").is_empty(),
        "a header named by Connection is hop-by-hop: {echo}"
    );
    assert!(echoed(&echo, "proxy-authorization").is_empty(), "{echo}");
    assert_eq!(echoed(&echo, "x-kept"), ["yes"]);

    let (status, _, echo) = text(
        send(
            addr,
            "app.test",
            Method::POST,
            "/form",
            &[],
            full("a=1&b=2"),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(echo.starts_with("one\nPOST /form\n"), "{echo}");
    assert!(echo.ends_with("body: a=1&b=2\n"), "{echo}");
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_extended_and_host_can_be_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = backend("one").await;
    let server = portico(
        dir.path(),
        &[(
            "app.test",
            format!("{{ upstreams = [\"http://{up}\"], trusted_proxies = [\"127.0.0.0/8\"], host = \"internal.app:8080\" }}"),
        )],
    )
    .await;
    let (status, echo) = get(
        server.addr("127.0.0.1"),
        "app.test",
        "/",
        &[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "public.test"),
            ("forwarded", "for=198.51.100.1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed(&echo, "host"), ["internal.app:8080"], "{echo}");
    assert_eq!(
        echoed(&echo, "x-forwarded-for"),
        ["198.51.100.1, 127.0.0.1"]
    );
    assert_eq!(echoed(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed(&echo, "x-forwarded-host"), ["public.test"]);
    assert_eq!(
        echoed(&echo, "forwarded"),
        ["for=198.51.100.1, for=127.0.0.1;host=\"app.test\";proto=https"]
    );
}

#[tokio::test]
async fn round_robin_takes_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let server = portico(
        dir.path(),
        &[(
            "app.test",
            format!("{{ upstreams = [\"http://{a}\", \"http://{b}\", \"http://{c}\"] }}"),
        )],
    )
    .await;
    let addr = server.addr("127.0.0.1");
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..9 {
        let (status, echo) = get(addr, "app.test", "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        *counts
            .entry(echo.lines().next().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            ("a".to_string(), 3),
            ("b".to_string(), 3),
            ("c".to_string(), 3)
        ]
    );
}

#[tokio::test]
async fn a_down_upstream_is_failed_over_and_all_down_gives_502() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = backend("live").await;
    let (dead1, dead2) = (dead_addr(), dead_addr());
    let server = portico(
        dir.path(),
        &[
            (
                "app.test",
                format!("{{ upstreams = [\"http://{dead1}\", \"http://{live}\"] }}"),
            ),
            (
                "down.test",
                format!("{{ upstreams = [\"http://{dead1}\", \"http://{dead2}\"] }}"),
            ),
        ],
    )
    .await;
    let addr = server.addr("127.0.0.1");
    for _ in 0..6 {
        let (status, echo) = get(addr, "app.test", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "{echo}");
        assert!(echo.starts_with("live\n"));
    }
    let (status, body) = get(addr, "down.test", "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "502 bad gateway: no upstream server answered\n");
}

#[tokio::test]
async fn get_is_retried_on_another_upstream_but_post_with_a_body_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = backend("live").await;
    let dead = dead_addr();
    // max_fails = 0: the dead upstream is never skipped, so every other request tries it.
    let server = portico(
        dir.path(),
        &[(
            "app.test",
            format!("{{ upstreams = [\"http://{dead}\", \"http://{live}\"], max_fails = 0 }}"),
        )],
    )
    .await;
    let addr = server.addr("127.0.0.1");
    for _ in 0..4 {
        assert_eq!(get(addr, "app.test", "/", &[]).await.0, StatusCode::OK);
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = send(addr, "app.test", Method::POST, "/", &[], full("payload")).await;
        statuses.push(resp.status());
    }
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
}

#[tokio::test]
async fn slow_upstream_gets_504() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = backend("slow").await;
    let server = portico(
        dir.path(),
        &[(
            "app.test",
            format!("{{ upstreams = [\"http://{up}\"], response_timeout = \"200ms\" }}"),
        )],
    )
    .await;
    let (status, body) = get(server.addr("127.0.0.1"), "app.test", "/slow", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.starts_with("504 gateway timeout"), "{body}");
}

#[tokio::test]
async fn request_body_over_max_body_bytes_gets_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = backend("one").await;
    let server = portico(
        dir.path(),
        &[(
            "app.test",
            format!("{{ upstreams = [\"http://{up}\"], max_body_bytes = 1000 }}"),
        )],
    )
    .await;
    let addr = server.addr("127.0.0.1");
    // Declared too large: refused before the upstream is asked.
    let resp = send(
        addr,
        "app.test",
        Method::POST,
        "/upload",
        &[],
        gen(5000).boxed(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked, found too large while streaming.
    let chunked = Gen {
        left: 200_000,
        exact: false,
    }
    .boxed();
    let resp = send(addr, "app.test", Method::POST, "/upload", &[], chunked).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = send(
        addr,
        "app.test",
        Method::POST,
        "/upload",
        &[],
        gen(1000).boxed(),
    )
    .await;
    assert_eq!(text(resp).await.2, "got 1000");
}

/// Resident anonymous memory of process `pid` (the heap, where a buffered body would be),
/// in KiB: VmRSS minus file-backed pages.
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon")
}

#[tokio::test]
async fn hundred_megabytes_stream_both_ways_without_being_held_in_memory() {
    // The server runs as its own process, so what is measured is its memory alone (the
    // test process also holds the client, the backend and every other test running).
    const SIZE: u64 = 100 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let up = backend("big").await;
    let port = free_port();
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[site]]\nhosts = [\"app.test\"]\ntls = \"internal\"\n\
             proxy = {{ upstreams = [\"http://{up}\"] }}\n"
        ),
    )
    .expect("write config");
    let child = crate::support::Running::serve(&config);
    let pid = child.0.id();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Warm up (connections, TLS, the pool) before measuring; the first answers once the
    // server listens.
    let mut warm = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            warm = get(addr, "app.test", "/", &[]).await.0 == StatusCode::OK;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(warm, "the server answers");
    let before = rss_anon_kib(pid);

    let resp = send(
        addr,
        "app.test",
        Method::POST,
        "/upload",
        &[],
        gen(SIZE).boxed(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await.2, format!("got {SIZE}"));

    let resp = send(
        addr,
        "app.test",
        Method::GET,
        &format!("/download?{SIZE}"),
        &[],
        full(""),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(drain_x(resp.into_body()).await, Ok(SIZE));

    let grown_mib = rss_anon_kib(pid).saturating_sub(before) / 1024;
    // Holding either body would take 100 MiB; streaming takes a few buffers.
    assert!(
        grown_mib < 40,
        "the server's resident memory grew by {grown_mib} MiB"
    );
    drop(child);
}

#[tokio::test]
async fn upgrade_is_tunneled_to_the_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = backend("ws").await;
    let server = portico(
        dir.path(),
        &[("app.test", format!("{{ upstreams = [\"http://{up}\"] }}"))],
    )
    .await;
    let (mut tls, head) = websocket(server.addr("127.0.0.1"), "app.test").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    expect_echo(&mut tls, &[b"ping", b"and more bytes"]).await;
}

#[tokio::test]
async fn https_upstream_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let up = tls_backend(&pki, "secure", "backend.test").await;
    let ca = pki.root_file().display().to_string();
    let server = portico(
        dir.path(),
        &[
            ("app.test", format!("{{ upstreams = [\"https://{up}\"], ca = \"{ca}\", server_name = \"backend.test\" }}")),
            // The certificate does not cover 127.0.0.1: verification fails, the site gets 502.
            ("wrong.test", format!("{{ upstreams = [\"https://{up}\"], ca = \"{ca}\" }}")),
        ],
    )
    .await;
    let addr = server.addr("127.0.0.1");
    let (status, echo) = get(addr, "app.test", "/x", &[]).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert!(echo.starts_with("secure\nGET /x\n"), "{echo}");
    assert_eq!(
        get(addr, "wrong.test", "/x", &[]).await.0,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn nginx_as_the_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let servers = format!(
        "  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      return 200 \"nginx host=$http_host xff=$http_x_forwarded_for uri=$request_uri\\n\";\n    }}\n  }}\n"
    );
    let _nginx = nginx::start(dir.path(), port, &servers).await;
    let server = portico(
        dir.path(),
        &[(
            "app.test",
            format!("{{ upstreams = [\"http://127.0.0.1:{port}\"] }}"),
        )],
    )
    .await;
    let (status, body) = get(server.addr("127.0.0.1"), "app.test", "/p?q=1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "nginx host=app.test xff=127.0.0.1 uri=/p?q=1\n");
}

#[tokio::test]
async fn upgraded_connection_closes_after_a_reload_drain_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = backend("ws").await;
    let toml = format!(
        "[limits]\ndrain_timeout = \"300ms\"\n[[listener]]\naddress = \"127.0.0.1:{}\"\n[[site]]\nhosts = [\"app.test\"]\ntls = \"internal\"\nproxy = {{ upstreams = [\"http://{up}\"] }}\n",
        free_port()
    );
    let mut server = serve(dir.path(), &toml).await;
    let (mut tls, head) = websocket(server.addr("127.0.0.1"), "app.test").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    expect_echo(&mut tls, &[b"ping"]).await;

    // A reload: the tunnel belongs to the replaced runtime and is closed at its drain deadline.
    let shared = portico::runtime::Shared::new();
    let rt = crate::support::build(&dir.path().join("portico.toml"), &shared);
    server
        .server
        .as_mut()
        .expect("running")
        .install(rt)
        .expect("install");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the upgraded connection is closed after the drain deadline"
    );
}

#[tokio::test]
async fn connect_is_answered_405_by_portico_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = backend("one").await;
    let server = portico(
        dir.path(),
        &[("app.test", format!("{{ upstreams = [\"http://{up}\"] }}"))],
    )
    .await;
    let (mut tls, _) = connect(server.addr("127.0.0.1"), &Opts::sni("app.test").http1())
        .await
        .expect("connect");
    // (A CONNECT naming another authority gets 421 from the service, as any request does.)
    tls.write_all(b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n")
        .await
        .expect("write");
    let mut got = vec![0u8; 4096];
    let n = tls.read(&mut got).await.expect("read");
    let head = String::from_utf8_lossy(&got[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(head.contains("allow: get, head, post"), "{head}");
    assert!(head.contains("connect is not forwarded"), "{head}");
    // Ordinary requests to the site still go through.
    let (status, body) = get(server.addr("127.0.0.1"), "app.test", "/x", &[]).await;
    assert_eq!(status, 200, "{body}");
}
