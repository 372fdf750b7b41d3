//! TLS passthrough by SNI next to terminated sites on one port, default passthrough for
//! unknown names, PROXY protocol out to backends and in from trusted load balancers.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use portico::proxy_protocol;

use crate::support::client::{get, Opts};
use crate::support::pki::Pki;
use crate::support::{free_port, serve};

/// A TLS backend with its own certificate. It reports the PROXY header it got (if told to
/// expect one) and answers every request with `body`.
async fn backend(
    pki: &Pki,
    name: &str,
    body: &'static str,
    expect_proxy: bool,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Option<proxy_protocol::Header>>,
) {
    let acceptor = pki.backend_acceptor(&format!("backend-{name}"), &[name], &[]);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut header = None;
                let mut rest = Vec::new();
                if expect_proxy {
                    let mut buf = Vec::new();
                    loop {
                        let mut b = [0u8; 512];
                        let n = tcp.read(&mut b).await.expect("read header");
                        assert!(n > 0, "closed before the PROXY header");
                        buf.extend_from_slice(&b[..n]);
                        if let Some((h, len)) = proxy_protocol::parse(&buf).expect("a PROXY header")
                        {
                            header = Some(h);
                            rest = buf.split_off(len);
                            break;
                        }
                    }
                }
                let _ = tx.send(header);
                let io = portico::tls::peek::PrefixedIo::new(rest, tcp);
                let Ok(mut tls) = acceptor.accept(io).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn passthrough_site_shows_backend_certificate_next_to_a_terminated_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (pass, mut headers) = backend(&pki, "pass.test", "from the backend", true).await;
    let (fallback, _) = backend(&pki, "other.test", "from the default backend", false).await;
    let toml = format!(
        r#"
[[listener]]
address = "127.0.0.1:{}"
unknown_sni = "passthrough"
default_passthrough = {{ backend = "{fallback}" }}
[[site]]
name = "legacy"
hosts = ["pass.test"]
passthrough = {{ backend = "{pass}", proxy_protocol = "v2" }}
[[site]]
name = "terminated"
hosts = ["term.test"]
tls = "internal"
respond = {{ body = "from portico" }}
"#,
        free_port()
    );
    let server = serve(dir.path(), &toml).await;
    let addr = server.addr("127.0.0.1");

    let (c, r) = get(addr, &Opts::sni("pass.test").http1(), "pass.test", "/").await;
    assert_eq!(
        c.subject, "CN=backend-pass.test Ecdsa",
        "the client sees the backend's own certificate"
    );
    assert_eq!(r.text(), "from the backend");
    match headers
        .recv()
        .await
        .expect("a connection")
        .expect("a PROXY header")
    {
        proxy_protocol::Header::Proxied {
            source,
            destination,
        } => {
            assert_eq!(source.ip().to_string(), "127.0.0.1");
            assert_eq!(
                destination, addr,
                "the destination is the address the client connected to"
            );
        }
        other => panic!("expected a proxied header, got {other:?}"),
    }

    let (c, r) = get(addr, &Opts::sni("term.test"), "term.test", "/").await;
    assert_eq!(
        c.sans,
        vec!["term.test"],
        "the other site on the same port is terminated by Portico"
    );
    assert_eq!(r.text(), "from portico");

    let (c, r) = get(
        addr,
        &Opts::sni("unknown.test").http1(),
        "unknown.test",
        "/",
    )
    .await;
    assert_eq!(
        c.subject, "CN=backend-other.test Ecdsa",
        "unknown names go to the default backend"
    );
    assert_eq!(r.text(), "from the default backend");

    // explain shows the same decisions, from the same code.
    let explain = |host: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["explain", "-c"])
            .arg(dir.path().join("portico.toml"))
            .arg(host)
            .output()
            .expect("explain runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = explain("pass.test");
    assert!(
        text.contains(&format!("relayed untouched to {pass}")),
        "{text}"
    );
    let text = explain("unknown.test");
    assert!(
        text.contains(&format!("default backend {fallback}")),
        "{text}"
    );
    let text = explain("term.test");
    assert!(!text.contains("relayed untouched"), "{text}");
}

#[tokio::test]
async fn proxy_protocol_in_from_trusted_sources_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (pass, mut headers) = backend(&pki, "pass.test", "ok", true).await;
    let (trusted, untrusted) = (free_port(), free_port());
    let toml = format!(
        r#"
[[listener]]
name = "behind-lb"
address = "127.0.0.1:{trusted}"
proxy_protocol_from = ["127.0.0.0/8"]
[[listener]]
name = "direct"
address = "127.0.0.1:{untrusted}"
proxy_protocol_from = ["10.0.0.0/8"]
[[site]]
name = "legacy"
hosts = ["pass.test"]
passthrough = {{ backend = "{pass}", proxy_protocol = "v1" }}
"#
    );
    let _server = serve(dir.path(), &toml).await;

    // Through the "load balancer": a v1 header names the real client, which reaches the backend.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", trusted))
        .await
        .expect("connect");
    tcp.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 5555 443\r\n")
        .await
        .expect("header");
    let config = crate::support::client::client_config(&Opts::sni("pass.test").http1());
    let name = rustls::pki_types::ServerName::try_from("pass.test").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake through PROXY");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: pass.test\r\n\r\n")
        .await
        .expect("request");
    let mut resp = String::new();
    let _ = tls.read_to_string(&mut resp).await;
    assert!(resp.ends_with("ok"), "{resp:?}");
    assert_eq!(
        headers.recv().await.expect("connection").expect("header"),
        proxy_protocol::Header::Proxied {
            source: "192.0.2.7:5555".parse().expect("addr"),
            destination: "198.51.100.1:443".parse().expect("addr")
        },
        "the backend learns the real client from Portico's own PROXY header"
    );

    // A trusted source that sends no header is refused: the header is required from it.
    let err = crate::support::client::connect(
        format!("127.0.0.1:{trusted}").parse().expect("addr"),
        &Opts::sni("pass.test"),
    )
    .await;
    assert!(err.is_err(), "a trusted source must send the header");

    // An untrusted source that sends a header is refused, not believed.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", untrusted))
        .await
        .expect("connect");
    tcp.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 5555 443\r\n")
        .await
        .expect("header");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut answer),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"),
        "an untrusted PROXY header is not TLS and is refused"
    );
    assert!(headers.try_recv().is_err(), "nothing reached the backend");
}
