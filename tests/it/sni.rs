//! Certificate choice by SNI: every client gets the right certificate or a clear refusal.

use rustls::AlertDescription;

use crate::support::client::{alert, client_config, connect, connect_with, get, Opts};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{free_port, serve, site_root};

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn three_sites_each_get_their_own_certificate_and_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let mut toml = format!("[[listener]]\naddress = \"127.0.0.1:{}\"\n", free_port());
    for i in 1..=3 {
        let (cert, key) = pki.leaf(
            &format!("site{i}"),
            &[&format!("site{i}.example.test")],
            Key::Ecdsa,
            Validity::Current,
        );
        site_root(dir.path(), &format!("site{i}"), &format!("page {i}"));
        toml += &format!(
            "[[site]]\nname = \"site{i}\"\nhosts = [\"site{i}.example.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nroot = \"site{i}\"\n",
            p(&cert),
            p(&key)
        );
    }
    let server = serve(dir.path(), &toml).await;
    for i in 1..=3 {
        let name = format!("site{i}.example.test");
        let mut opts = Opts::sni(&name);
        opts.root = Some(pki.root_der());
        let (presented, reply) = get(server.addr("127.0.0.1"), &opts, &name, "/").await;
        assert_eq!(presented.sans, vec![name.clone()]);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("page {i}"));
    }
}

/// A pool with an exact certificate, a wildcard, and a SAN certificate for two sites.
struct Pool {
    _dir: tempfile::TempDir,
    server: crate::support::TestServer,
}

async fn pool_server(extra_listener: &str) -> Pool {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certificates = pki.pool(&[Pki::X_TEST, &[("deep", &["a.b.x.test"])]].concat());
    site_root(dir.path(), "w", "wildcard site");
    site_root(dir.path(), "e", "exact site");
    site_root(dir.path(), "one", "site one");
    site_root(dir.path(), "two", "site two");
    site_root(dir.path(), "deep", "deep site");
    let port = free_port();
    let toml = format!(
        r#"
[[listener]]
name = "main"
address = "127.0.0.1:{port}"
no_sni = "one.test"
{extra_listener}

{certificates}

[[site]]
name = "wild"
hosts = ["*.x.test"]
listeners = ["main"]
root = "w"
[[site]]
name = "exact"
hosts = ["exact.x.test"]
listeners = ["main"]
root = "e"
[[site]]
name = "one"
hosts = ["one.test"]
listeners = ["main"]
root = "one"
[[site]]
name = "two"
hosts = ["two.test"]
listeners = ["main"]
root = "two"
[[site]]
name = "deep"
hosts = ["a.b.x.test"]
listeners = ["main"]
root = "deep"
"#
    );
    let server = serve(dir.path(), &toml).await;
    Pool { _dir: dir, server }
}

#[tokio::test]
async fn wildcard_covers_one_label_and_exact_beats_wildcard() {
    let pool = pool_server("").await;
    let addr = pool.server.addr("127.0.0.1");
    let (c, r) = get(addr, &Opts::sni("a.x.test"), "a.x.test", "/").await;
    assert_eq!(c.sans, vec!["*.x.test"]);
    assert_eq!(r.text(), "wildcard site");
    let (c, r) = get(addr, &Opts::sni("exact.x.test"), "exact.x.test", "/").await;
    assert_eq!(
        c.sans,
        vec!["exact.x.test"],
        "an exact certificate beats the wildcard"
    );
    assert_eq!(r.text(), "exact site");
    // a.b.x.test is two labels under x.test: the wildcard certificate must not be used.
    let (c, r) = get(addr, &Opts::sni("a.b.x.test"), "a.b.x.test", "/").await;
    assert_eq!(c.sans, vec!["a.b.x.test"]);
    assert_eq!(r.text(), "deep site");
    let err = connect(addr, &Opts::sni("z.b.x.test"))
        .await
        .expect_err("two labels under the wildcard");
    assert_eq!(alert(&err), Some(AlertDescription::UnrecognisedName));
}

#[tokio::test]
async fn san_certificate_shared_by_two_sites_and_coalescing() {
    let pool = pool_server("").await;
    let addr = pool.server.addr("127.0.0.1");
    let (tls, c) = connect(addr, &Opts::sni("one.test"))
        .await
        .expect("handshake");
    assert_eq!(c.sans, vec!["one.test", "two.test"]);
    assert_eq!(c.alpn.as_deref(), Some(&b"h2"[..]));
    let mut http = crate::support::client::Http::over(tls).await;
    assert_eq!(http.get("one.test", "/").await.text(), "site one");
    // HTTP/2 coalescing: the same connection serves the other name its certificate covers.
    let r = http.get("two.test", "/").await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "site two".to_string()));
    // A host bound here but not covered by this connection's certificate: 421.
    let r = http.get("exact.x.test", "/").await;
    assert_eq!(r.status, 421);
    // A host covered by nothing and bound nowhere: 421 too.
    let r = http.get("other.test", "/").await;
    assert_eq!(r.status, 421);
}

#[tokio::test]
async fn no_sni_client_gets_listener_default() {
    let pool = pool_server("").await;
    let addr = pool.server.addr("127.0.0.1");
    let (c, r) = get(addr, &Opts::no_sni(), "one.test", "/").await;
    assert_eq!(c.sans, vec!["one.test", "two.test"]);
    assert_eq!(r.text(), "site one");
}

#[tokio::test]
async fn no_sni_is_refused_when_listener_rejects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[site]]\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = {{ body = \"a\" }}\n",
        free_port()
    );
    let server = serve(dir.path(), &toml).await;
    let err = connect(server.addr("127.0.0.1"), &Opts::no_sni())
        .await
        .expect_err("refused");
    assert_eq!(alert(&err), Some(AlertDescription::HandshakeFailure));
    // The same listener still serves a client with SNI.
    let (c, r) = get(
        server.addr("127.0.0.1"),
        &Opts::sni("a.test"),
        "a.test",
        "/",
    )
    .await;
    assert_eq!(c.sans, vec!["a.test"]);
    assert_eq!(r.text(), "a");
}

#[tokio::test]
async fn unknown_sni_is_refused_with_unrecognized_name() {
    let pool = pool_server("").await;
    let err = connect(pool.server.addr("127.0.0.1"), &Opts::sni("unknown.test"))
        .await
        .expect_err("refused");
    assert_eq!(alert(&err), Some(AlertDescription::UnrecognisedName));
}

#[tokio::test]
async fn unknown_sni_falls_back_to_no_sni_when_opted_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\nno_sni = \"a.test\"\nunknown_sni = \"no_sni\"\n[[site]]\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = {{ body = \"a\" }}\n",
        free_port()
    );
    let server = serve(dir.path(), &toml).await;
    let (tls, c) = connect(server.addr("127.0.0.1"), &Opts::sni("unknown.test"))
        .await
        .expect("fallback handshake");
    assert_eq!(c.sans, vec!["a.test"]);
    // The fallback certificate does not cover the unknown name, so its requests get 421.
    let mut http = crate::support::client::Http::over(tls).await;
    assert_eq!(http.get("unknown.test", "/").await.status, 421);
    assert_eq!(http.get("a.test", "/").await.text(), "a");
}

#[tokio::test]
async fn specific_ip_listener_beats_all_addresses_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let toml = format!(
        r#"
[[listener]]
name = "any"
address = "*:{port}"
[[listener]]
name = "two"
address = "127.0.0.2:{port}"
[[site]]
name = "general"
hosts = ["site.test"]
listeners = ["any"]
tls = "internal"
respond = {{ body = "general" }}
[[site]]
name = "dedicated"
hosts = ["site.test"]
listeners = ["two"]
tls = "internal"
respond = {{ body = "dedicated" }}
"#
    );
    let server = serve(dir.path(), &toml).await;
    let (_, r) = get(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        &Opts::sni("site.test"),
        "site.test",
        "/",
    )
    .await;
    assert_eq!(r.text(), "general");
    let (_, r) = get(
        format!("127.0.0.2:{port}").parse().expect("addr"),
        &Opts::sni("site.test"),
        "site.test",
        "/",
    )
    .await;
    assert_eq!(r.text(), "dedicated");
    // IPv6 loopback reaches the *:port listener through the dual-stack socket.
    if std::net::TcpStream::connect(format!("[::1]:{port}")).is_ok() {
        let (_, r) = get(
            format!("[::1]:{port}").parse().expect("addr"),
            &Opts::sni("site.test"),
            "site.test",
            "/",
        )
        .await;
        assert_eq!(r.text(), "general");
    }
    drop(server);
}

#[tokio::test]
async fn rsa_only_client_gets_rsa_certificate_others_ecdsa() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (rc, rk) = pki.leaf("rsa", &["dual.test"], Key::Rsa, Validity::Current);
    let (ec, ek) = pki.leaf("ecdsa", &["dual.test"], Key::Ecdsa, Validity::Current);
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n[[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n[[site]]\nhosts = [\"dual.test\"]\nrespond = {{ body = \"dual\" }}\n",
        free_port(), p(&rc), p(&rk), p(&ec), p(&ek)
    );
    let server = serve(dir.path(), &toml).await;
    let addr = server.addr("127.0.0.1");
    let (_, c) = connect(addr, &Opts::sni("dual.test"))
        .await
        .expect("handshake");
    assert!(!c.rsa, "a client offering ECDSA gets the ECDSA certificate");
    let mut rsa_only = Opts::sni("dual.test");
    rsa_only.rsa_only = true;
    let (_, c) = connect(addr, &rsa_only).await.expect("handshake");
    assert!(c.rsa, "an RSA-only client gets the RSA certificate");
    rsa_only.tls12_only = true;
    let (c, r) = get(addr, &rsa_only, "dual.test", "/").await;
    assert!(c.rsa);
    assert_eq!(c.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(r.text(), "dual");
}

#[tokio::test]
async fn tls12_and_tls13_with_alpn_and_resumption() {
    let pool = pool_server("").await;
    let addr = pool.server.addr("127.0.0.1");
    let mut opts = Opts::sni("one.test");
    let (c, r) = get(addr, &opts.clone().http1(), "one.test", "/").await;
    assert_eq!(c.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(c.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(r.text(), "site one");
    opts.tls12_only = true;
    let (c, r) = get(addr, &opts, "one.test", "/").await;
    assert_eq!(c.version, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(c.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(r.text(), "site one");
    // Session resumption: a second connection with the same client config resumes.
    let opts = Opts::sni("one.test");
    let config = client_config(&opts);
    let (tls, c) = connect_with(addr, &opts, config.clone())
        .await
        .expect("first");
    assert!(!c.resumed);
    // TLS 1.3 tickets arrive after the handshake; read once so the client stores them.
    let mut http = crate::support::client::Http::over(tls).await;
    assert_eq!(http.get("one.test", "/").await.status, 200);
    let (tls, c) = connect_with(addr, &opts, config.clone())
        .await
        .expect("second");
    assert!(c.resumed, "the second handshake resumes the session");
    // One ticket per handshake: the resumed connection brings the next one, and two
    // connections opened on it resume once between them (rustls' default sends two).
    let mut http = crate::support::client::Http::over(tls).await;
    assert_eq!(http.get("one.test", "/").await.status, 200);
    let (_, third) = connect_with(addr, &opts, config.clone())
        .await
        .expect("third");
    let (_, fourth) = connect_with(addr, &opts, config).await.expect("fourth");
    assert!(third.resumed, "each reconnect finds a fresh ticket");
    assert!(!fourth.resumed, "one ticket per handshake, not two");
}

// Multi-threaded: the blocking openssl calls must not stall the in-process server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_case_trailing_dot_and_ip_literal_with_openssl() {
    assert!(
        std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_ok(),
        "openssl is required (the .ci/run script installs it)"
    );
    let pool = pool_server("").await;
    let port = pool.server.addr("127.0.0.1").port();
    let presented = |servername: Option<&str>| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]);
        match servername {
            Some(n) => cmd.args(["-servername", n]),
            None => cmd.arg("-noservername"),
        };
        // "Q" on stdin makes s_client quit once the handshake is done.
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        use std::io::Write;
        let _ = child.stdin.take().expect("stdin").write_all(b"Q\n");
        let out = child.wait_with_output().expect("openssl ends");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let upper = presented(Some("EXACT.X.TEST"));
    assert!(
        upper.contains("CN = exact Ecdsa") || upper.contains("CN=exact Ecdsa"),
        "upper-case SNI is normalized:\n{upper}"
    );
    let dotted = presented(Some("exact.x.test."));
    assert!(
        dotted.contains("exact Ecdsa"),
        "a trailing dot is removed:\n{dotted}"
    );
    let ip = presented(Some("127.0.0.1"));
    assert!(
        ip.contains("san Ecdsa"),
        "an IP literal counts as no SNI and gets the no_sni certificate:\n{ip}"
    );
    let none = presented(None);
    assert!(
        none.contains("san Ecdsa"),
        "no SNI gets the no_sni certificate:\n{none}"
    );
    let unknown = presented(Some("nope.test"));
    assert!(
        unknown.contains("unrecognized name"),
        "unknown names get unrecognized_name:\n{unknown}"
    );
}

#[tokio::test]
async fn the_server_prefers_aes_128_gcm_but_accepts_what_the_client_offers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (cert, key) = pki.leaf("s", &["s.test"], Key::Ecdsa, Validity::Current);
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[site]]\nhosts = [\"s.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nrespond = {{ body = \"ok\" }}\n",
        free_port(),
        p(&cert),
        p(&key)
    );
    let server = serve(dir.path(), &toml).await;
    let addr = server.addr("127.0.0.1");
    // rustls clients, like OpenSSL's, list AES-256-GCM first; the server's order wins.
    let (_, presented) = connect(addr, &Opts::sni("s.test"))
        .await
        .expect("handshake");
    assert_eq!(
        presented.suite,
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    // A client that offers only another suite still gets it.
    let mut opts = Opts::sni("s.test");
    opts.suites = Some(vec![
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ]);
    let (_, presented) = connect(addr, &opts).await.expect("handshake");
    assert_eq!(
        presented.suite,
        Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
}
