//! Bad input from the network: each case is handled (closed or answered 4xx) while a good
//! connection opened beforehand keeps working.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::{connect, Opts};
use crate::support::{free_port, good_connection, serve};

async fn server(limits: &str) -> (tempfile::TempDir, crate::support::TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[limits]\n{limits}\n[[listener]]\naddress = \"127.0.0.1:{}\"\nmax_connections = 20\n[[site]]\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = {{ body = \"a\" }}\n",
        free_port()
    );
    let server = serve(dir.path(), &toml).await;
    (dir, server)
}

/// Reads until EOF or error, with a bound; returns what was read and whether the peer closed.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn garbage_instead_of_client_hello_is_closed() {
    let (_dir, server) = server("").await;
    let mut good = good_connection(&server).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0, 0, 0][..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0, 0, 1, 0][..],
        &[0u8; 300][..],
    ] {
        let mut tcp = TcpStream::connect(server.addr("127.0.0.1"))
            .await
            .expect("connect");
        tcp.write_all(garbage).await.expect("write");
        let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
        assert!(closed, "garbage {garbage:?} closes the connection");
        if garbage.starts_with(b"GET") || garbage[0] == 0 {
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with("HTTP/1.1 400") && answer.ends_with("use https:// URLs\n"),
                "plain bytes get a 400 that says why: {answer:?}"
            );
        }
        assert_eq!(
            good.get("a.test", "/").await.text(),
            "a",
            "the good connection is unaffected"
        );
    }
}

#[tokio::test]
async fn silent_client_hits_the_handshake_deadline() {
    let (_dir, server) = server("handshake_timeout = \"500ms\"").await;
    let mut good = good_connection(&server).await;
    let mut silent = TcpStream::connect(server.addr("127.0.0.1"))
        .await
        .expect("connect");
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(
        closed,
        "a client that sends nothing is closed at the handshake deadline"
    );
    assert_eq!(good.get("a.test", "/").await.text(), "a");
}

#[tokio::test]
async fn slowloris_headers_hit_the_header_deadline() {
    let (_dir, server) = server("header_timeout = \"1s\"").await;
    let mut good = good_connection(&server).await;
    let (mut slow, _) = connect(server.addr("127.0.0.1"), &Opts::sni("a.test").http1())
        .await
        .expect("handshake");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    // The server answers 408 or just closes; either way the read ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(
        ended.is_ok(),
        "the server closed a connection whose headers never finished"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(good.get("a.test", "/").await.text(), "a");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (_dir, server) = server("max_header_bytes = 8192").await;
    let mut good = good_connection(&server).await;
    let (mut tls, _) = connect(server.addr("127.0.0.1"), &Opts::sni("a.test").http1())
        .await
        .expect("handshake");
    let big = "x".repeat(20_000);
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 431"), "got {text:?}");
    // HTTP/2: a header list over the limit is refused too; the good connection survives.
    assert_eq!(good.get("a.test", "/").await.text(), "a");
}

#[tokio::test]
async fn connection_limit_closes_extra_connections() {
    let (_dir, server) = server("").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(
            TcpStream::connect(server.addr("127.0.0.1"))
                .await
                .expect("connect"),
        );
    }
    // Give the accept loop time to take all twenty permits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(server.addr("127.0.0.1"))
        .await
        .expect("connect");
    let (_, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(closed, "the 21st connection is closed");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut good = good_connection(&server).await;
    assert_eq!(good.get("a.test", "/").await.text(), "a");
}

#[tokio::test]
async fn shutdown_drains_idle_connections_promptly() {
    let (_dir, server) = server("").await;
    let mut good = good_connection(&server).await;
    assert_eq!(good.get("a.test", "/").await.text(), "a");
    let drained = server.stop(Duration::from_secs(5)).await;
    assert!(
        drained,
        "idle keep-alive connections are closed within the drain deadline"
    );
}
