//! What an outside test of the running server found (issue 19): each test guards one fix,
//! speaking raw HTTP/1.1 or raw HTTP/2 frames over real TLS where a well-behaved client
//! library would not send what an attacker sends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::support::client::{connect, Opts};
use crate::support::{free_port, good_connection, serve, TestServer};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Serves `sites` (TOML `[[site]]` tables) on one https listener with `limits`.
async fn server(limits: &str, sites: &str) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[limits]\n{limits}\n[[listener]]\naddress = \"127.0.0.1:{}\"\n{sites}",
        free_port()
    );
    let server = serve(dir.path(), &toml).await;
    (dir, server)
}

const RESPOND_SITE: &str =
    "[[site]]\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = { body = \"a\" }\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal field without indexing, with a new name.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0x00, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

/// A request header block: `method` (GET or POST), https, `path`, `:authority` a.test,
/// and `extra` field representations.
fn request_block(method: &str, path: &str, extra: &[u8]) -> Vec<u8> {
    let mut b = vec![if method == "GET" { 0x82 } else { 0x83 }, 0x87];
    b.push(0x04); // :path, literal value, name from the static table
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, 6]); // :authority
    b.extend_from_slice(b"a.test");
    b.extend_from_slice(extra);
    b
}

/// A TLS connection that negotiated h2, with nothing sent yet.
async fn h2_tls(server: &TestServer) -> TlsStream<TcpStream> {
    let opts = Opts {
        alpn: vec![b"h2".to_vec()],
        ..Opts::sni("a.test")
    };
    let (tls, _) = connect(server.addr("127.0.0.1"), &opts)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// One frame read from the server: (type, flags, stream, payload); None once it closed.
async fn read_frame(tls: &mut TlsStream<TcpStream>) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

/// What the server sent until it closed (or `within` passed): every frame's type, stream
/// and (for GOAWAY and RST_STREAM) error code; and whether it closed.
#[derive(Debug, Default)]
struct Seen {
    frames: Vec<(u8, u32, Option<u32>)>,
    closed: bool,
}

impl Seen {
    fn goaway_code(&self) -> Option<u32> {
        self.frames
            .iter()
            .find(|(kind, _, _)| *kind == GOAWAY)
            .and_then(|(_, _, code)| *code)
    }

    fn reset_code(&self, stream: u32) -> Option<u32> {
        self.frames
            .iter()
            .find(|(kind, s, _)| *kind == RST_STREAM && *s == stream)
            .and_then(|(_, _, code)| *code)
    }
}

/// Reads frames without answering any (no SETTINGS or PING acknowledgement): a client
/// that stopped talking.
async fn read_until_closed(tls: &mut TlsStream<TcpStream>, within: Duration) -> Seen {
    let deadline = Instant::now() + within;
    let mut seen = Seen::default();
    loop {
        match tokio::time::timeout_at(deadline, read_frame(tls)).await {
            Err(_) => return seen,
            Ok(None) => {
                seen.closed = true;
                return seen;
            }
            Ok(Some((kind, _, stream, payload))) => {
                let code = match kind {
                    GOAWAY => payload.get(4..8),
                    RST_STREAM => payload.get(0..4),
                    _ => None,
                }
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                seen.frames.push((kind, stream, code));
            }
        }
    }
}

// Item 1 ------------------------------------------------------------------------------

#[tokio::test]
async fn h2_without_preface_or_request_is_closed_at_the_header_deadline() {
    // The idle timeout and drain deadline are far beyond the bound waited for below, so
    // only the header deadline can close these connections in time.
    let (_dir, server) = server(
        "header_timeout = \"1s\"\nidle_timeout = \"10m\"\ndrain_timeout = \"10m\"",
        RESPOND_SITE,
    )
    .await;
    let mut good = good_connection(&server).await;
    // No preface at all.
    let mut silent = h2_tls(&server).await;
    // The preface and SETTINGS, then nothing.
    let mut idle = h2_tls(&server).await;
    idle.write_all(H2_PREFACE).await.expect("preface");
    idle.write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    let silent_seen = read_until_closed(&mut silent, Duration::from_secs(20)).await;
    assert!(
        silent_seen.closed,
        "no preface: closed, saw {silent_seen:?}"
    );
    let idle_seen = read_until_closed(&mut idle, Duration::from_secs(20)).await;
    assert!(idle_seen.closed, "no request: closed, saw {idle_seen:?}");
    assert_eq!(
        idle_seen.goaway_code(),
        Some(0),
        "a client that sent its preface is told GOAWAY first: {idle_seen:?}"
    );
    assert_eq!(good.get("a.test", "/").await.text(), "a");
}

#[tokio::test]
async fn idle_h2_connection_is_closed_right_after_its_goaway() {
    let (_dir, server) = server(
        "idle_timeout = \"1s\"\ndrain_timeout = \"10m\"",
        RESPOND_SITE,
    )
    .await;
    let mut tls = h2_tls(&server).await;
    tls.write_all(H2_PREFACE).await.expect("preface");
    let mut out = frame(SETTINGS, 0, 0, &[]);
    out.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block("GET", "/", &[]),
    ));
    tls.write_all(&out).await.expect("request");
    // The client answers nothing, not even the PING that follows the first GOAWAY: before,
    // the server waited for it until the drain deadline (here ten minutes).
    let seen = read_until_closed(&mut tls, Duration::from_secs(20)).await;
    assert!(
        seen.frames.iter().any(|(k, s, _)| *k == HEADERS && *s == 1),
        "the request was answered: {seen:?}"
    );
    assert_eq!(seen.goaway_code(), Some(0), "GOAWAY NO_ERROR: {seen:?}");
    assert!(seen.closed, "closed soon after the GOAWAY: {seen:?}");
}

// Item 2 ------------------------------------------------------------------------------

/// An HTTP/1.1 upstream that answers every request after `delay`; counts connections and
/// requests.
struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

async fn slow_upstream(delay: Duration) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        r.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        connections,
        requests,
    }
}

#[tokio::test]
async fn paced_resets_on_a_proxied_site_reuse_upstream_connections_and_end_in_enhance_your_calm() {
    let up = slow_upstream(Duration::from_millis(50)).await;
    let site = format!(
        "[[site]]\nhosts = [\"a.test\"]\ntls = \"internal\"\nproxy = {{ upstreams = [\"http://{}\"] }}\n",
        up.addr
    );
    let (_dir, server) = server("", &site).await;
    let mut tls = h2_tls(&server).await;
    tls.write_all(H2_PREFACE).await.expect("preface");
    tls.write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    let (mut read, mut write) = tokio::io::split(tls);
    let pairs = 150u32;
    let writer = tokio::spawn(async move {
        let mut sent = 0u32;
        for i in 0..pairs {
            let stream = 2 * i + 1;
            let headers = frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                stream,
                &request_block("GET", "/", &[]),
            );
            if write.write_all(&headers).await.is_err() {
                break;
            }
            // Long enough for the request to reach the upstream before it is cancelled,
            // which h2's burst limit (resets of streams not yet accepted) never sees.
            tokio::time::sleep(Duration::from_millis(3)).await;
            if write
                .write_all(&frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()))
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
        }
        sent
    });
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut head = [0u8; 9];
    loop {
        let Ok(Ok(_)) = tokio::time::timeout_at(deadline, read.read_exact(&mut head)).await else {
            seen.closed = true;
            break;
        };
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if read.read_exact(&mut payload).await.is_err() {
            seen.closed = true;
            break;
        }
        let code = (head[3] == GOAWAY)
            .then(|| payload.get(4..8))
            .flatten()
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        seen.frames.push((head[3], 0, code));
    }
    let resets = writer.await.expect("writer");
    assert_eq!(
        seen.goaway_code(),
        Some(ENHANCE_YOUR_CALM),
        "a sustained reset rate ends in GOAWAY ENHANCE_YOUR_CALM (after {resets} resets)"
    );
    assert!(seen.closed, "and the connection is closed");
    assert!(
        resets >= 100,
        "the guard judges after 100 resets, not before: {resets}"
    );
    // Every cancelled request the proxy had sent is finished in the background, so the
    // upstream sees the requests and few connections; before, each cancel closed its
    // connection and the next request dialled a new one.
    let requests =
        crate::support::eventually("the upstream answered the cancelled requests", || {
            let n = up.requests.load(Ordering::SeqCst);
            (n >= 90).then_some(n)
        });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let connections = up.connections.load(Ordering::SeqCst);
    assert!(
        connections * 2 < requests,
        "{requests} cancelled requests cost {connections} upstream connections"
    );
}

// Items 3 and 4 ----------------------------------------------------------------------

/// An HTTP/1.1 request head of exactly `size` bytes (request line, Host, one padding
/// header to make up the size, and `extra_headers` small headers).
fn head_of(size: usize, extra_headers: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a.test\r\n");
    for i in 0..extra_headers {
        head.push_str(&format!("x-{i}: 1\r\n"));
    }
    let fixed = head.len() + "x-pad: \r\n".len() + "\r\n".len();
    head.push_str(&format!("x-pad: {}\r\n\r\n", "p".repeat(size - fixed)));
    assert_eq!(head.len(), size);
    head.into_bytes()
}

/// Sends `head` on a new HTTP/1.1 connection in pieces of `split` bytes, and reads the
/// answer until the server closes or 10 s pass.
async fn send_head(server: &TestServer, head: &[u8], split: usize) -> String {
    let (mut tls, _) = connect(server.addr("127.0.0.1"), &Opts::sni("a.test").http1())
        .await
        .expect("handshake");
    for piece in head.chunks(split) {
        tls.write_all(piece).await.expect("write");
        tls.flush().await.expect("flush");
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                // One response is all a test needs: the first that is complete.
                if buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.starts_with(b"HTTP/1.1 431") {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn max_header_bytes_is_exact_however_the_head_is_split() {
    let (_dir, server) = server("max_header_bytes = 32768", RESPOND_SITE).await;
    for split in [100_000, 16_384, 4_000, 1_000] {
        let at_limit = send_head(&server, &head_of(32_768, 0), split).await;
        assert!(
            at_limit.starts_with("HTTP/1.1 200"),
            "a head of exactly the limit, split {split}: {at_limit:.80}"
        );
        for over in [32_769, 33_000, 40_000, 49_000] {
            let answer = send_head(&server, &head_of(over, 0), split).await;
            assert!(
                answer.starts_with("HTTP/1.1 431"),
                "a head of {over} bytes, split {split}: {answer:.80}"
            );
        }
    }
}

#[tokio::test]
async fn a_431_connection_lingers_while_the_client_is_still_sending() {
    // The client goes on sending after the server has answered. Closing at once with
    // unread bytes makes the kernel reset the connection, and a reset destroys what the
    // server had not sent yet (over a slow link, the 431 itself). With a lingering close the
    // server goes on reading (and discarding) for a while, so the client's writes meet no
    // reset.
    let (_dir, server) = server("max_header_bytes = 8192", RESPOND_SITE).await;
    let (mut tls, _) = connect(server.addr("127.0.0.1"), &Opts::sni("a.test").http1())
        .await
        .expect("handshake");
    tls.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {}",
            "x".repeat(40_000)
        )
        .as_bytes(),
    )
    .await
    .expect("write the head");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("an answer")
            .expect("read");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Keep sending, within the linger's pause (0.5 s) and size bounds.
    let filler = vec![b'x'; 8 * 1024];
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let sent = async {
            tls.write_all(&filler).await?;
            tls.flush().await
        }
        .await;
        assert!(
            sent.is_ok(),
            "write {i} after the 431 met a reset: {sent:?}"
        );
    }
}

#[tokio::test]
async fn max_headers_is_one_limit_for_http1_and_http2() {
    let (_dir, server) = server("max_headers = 20", RESPOND_SITE).await;
    // HTTP/1.1: Host plus the padding header plus 18 = 20 header lines pass; 21 do not.
    let ok = send_head(&server, &head_of(2000, 18), 100_000).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "20 header lines: {ok:.80}");
    let refused = send_head(&server, &head_of(2000, 19), 100_000).await;
    assert!(
        refused.starts_with("HTTP/1.1 431"),
        "21 header lines: {refused:.80}"
    );
    // HTTP/2: 20 fields pass, 21 do not (pseudo-header fields are not counted).
    let mut h2 = good_connection(&server).await;
    let names: Vec<String> = (0..21).map(|i| format!("x-{i}")).collect();
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    assert_eq!(h2.send("a.test", "/", &fields[..20]).await.status, 200);
    assert_eq!(h2.send("a.test", "/", &fields).await.status, 431);
    // A cookie sent as crumbs counts once.
    let mut crumbs = fields[..19].to_vec();
    crumbs.extend([("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
    assert_eq!(h2.send("a.test", "/", &crumbs).await.status, 200);

    // The default, 100, which HTTP/1.1 leaves to hyper's own limit.
    let (_default_dir, default) = self::server("", RESPOND_SITE).await;
    let ok = send_head(&default, &head_of(4000, 98), 100_000).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "100 header lines: {ok:.80}");
    let refused = send_head(&default, &head_of(4000, 99), 100_000).await;
    assert!(
        refused.starts_with("HTTP/1.1 431"),
        "101 header lines: {refused:.80}"
    );
    let mut h2 = good_connection(&default).await;
    let names: Vec<String> = (0..101).map(|i| format!("x-{i}")).collect();
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    assert_eq!(h2.send("a.test", "/", &fields[..100]).await.status, 200);
    assert_eq!(h2.send("a.test", "/", &fields).await.status, 431);
}

// Item 5 ------------------------------------------------------------------------------

#[tokio::test]
async fn duplicate_or_disagreeing_host_gets_400() {
    let (_dir, server) = server("", RESPOND_SITE).await;
    let answer = |req: &'static str| {
        let server = &server;
        async move { send_head_raw(server, req.as_bytes()).await }
    };
    let twice = answer("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n").await;
    assert!(
        twice.starts_with("HTTP/1.1 400"),
        "two Host headers: {twice:.80}"
    );
    let same_twice = answer("GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n").await;
    assert!(same_twice.starts_with("HTTP/1.1 400"), "{same_twice:.80}");
    let disagree = answer("GET https://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n").await;
    assert!(
        disagree.starts_with("HTTP/1.1 400"),
        "absolute form vs Host: {disagree:.80}"
    );
    let agree = answer("GET https://a.test/ HTTP/1.1\r\nHost: A.test:443\r\n\r\n").await;
    assert!(
        agree.starts_with("HTTP/1.1 200"),
        "the same host: {agree:.80}"
    );
    // HTTP/2: `:authority` and a Host header that names another host.
    let mut h2 = good_connection(&server).await;
    assert_eq!(
        h2.send("a.test", "/", &[("host", "b.test")]).await.status,
        400
    );
    assert_eq!(
        h2.send("a.test", "/", &[("host", "a.test")]).await.status,
        200
    );
}

async fn send_head_raw(server: &TestServer, head: &[u8]) -> String {
    send_head(server, head, head.len()).await
}

// Item 8 ------------------------------------------------------------------------------

#[tokio::test]
async fn h2_trailers_with_a_pseudo_header_reset_the_stream() {
    let (_dir, server) = server("", RESPOND_SITE).await;
    let mut tls = h2_tls(&server).await;
    let mut out = H2_PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // Stream 1: trailers with `:path` (static index 4, as h2spec sends it): malformed.
    out.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &request_block("POST", "/", &[]),
    ));
    out.extend(frame(0x0, 0, 1, b"x"));
    out.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &[0x84]));
    // Stream 3: trailers with a literal `:method` name: malformed too.
    out.extend(frame(
        HEADERS,
        END_HEADERS,
        3,
        &request_block("POST", "/", &[]),
    ));
    out.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        3,
        &literal(":method", "GET"),
    ));
    // Stream 5: ordinary trailers: served.
    out.extend(frame(
        HEADERS,
        END_HEADERS,
        5,
        &request_block("POST", "/", &[]),
    ));
    out.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        5,
        &literal("x-checksum", "1"),
    ));
    tls.write_all(&out).await.expect("write");
    let seen = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert_eq!(seen.reset_code(1), Some(PROTOCOL_ERROR), "{seen:?}");
    assert_eq!(seen.reset_code(3), Some(PROTOCOL_ERROR), "{seen:?}");
    assert_ne!(seen.reset_code(5), Some(PROTOCOL_ERROR), "{seen:?}");
    assert!(
        seen.frames.iter().any(|(k, s, _)| *k == HEADERS && *s == 5),
        "stream 5 is answered: {seen:?}"
    );
    assert_eq!(
        seen.goaway_code(),
        None,
        "stream errors, not a connection error"
    );
}

#[tokio::test]
async fn h2_header_value_with_leading_or_trailing_white_space_gets_400() {
    let (_dir, server) = server("", RESPOND_SITE).await;
    let mut h2 = good_connection(&server).await;
    assert_eq!(h2.send("a.test", "/", &[("x-a", " v")]).await.status, 400);
    assert_eq!(h2.send("a.test", "/", &[("x-a", "v\t")]).await.status, 400);
    assert_eq!(h2.send("a.test", "/", &[("x-a", "v w")]).await.status, 200);
}
