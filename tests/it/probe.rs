//! `portico probe`: the client side, against the in-process server, a tiny rustls server
//! presenting an expired leaf, and a real nginx — in-process through the library and through
//! the binary for exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use portico::cli::probe::{
    probe, render_human, render_table, Report, Sni, Target, Trust, Verdict, Verification, TIMEOUT,
};
use portico::names::HostName;

use crate::support::nginx::{self, Nginx};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{free_port, serve, site_root, TestServer};

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn name(s: &str) -> HostName {
    HostName::parse(s).expect("test name")
}

fn alpn() -> Vec<String> {
    vec!["h2".to_string(), "http/1.1".to_string()]
}

/// Portico with an exact, a wildcard and a two-name SAN certificate on one listener;
/// clients without SNI get one.test's certificate. `unknown_sni` is the listener's setting.
struct Portico {
    dir: tempfile::TempDir,
    pki: Pki,
    server: TestServer,
}

impl Portico {
    fn addr(&self) -> SocketAddr {
        self.server.addr("127.0.0.1")
    }

    fn target(&self) -> Target {
        self.addr().to_string().parse().expect("target")
    }

    fn trust(&self) -> Trust {
        Trust::load(Some(&self.pki.root_file())).expect("test root")
    }
}

async fn portico(unknown_sni: &str) -> Portico {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certificates = pki.pool(Pki::X_TEST);
    site_root(dir.path(), "www", "hello");
    let toml = format!(
        r#"
[[listener]]
name = "main"
address = "127.0.0.1:{port}"
no_sni = "one.test"
unknown_sni = "{unknown_sni}"

{certificates}

[[site]]
name = "exact"
hosts = ["exact.x.test"]
root = "www"
[[site]]
name = "wild"
hosts = ["*.x.test"]
root = "www"
[[site]]
name = "san"
hosts = ["one.test", "two.test"]
root = "www"
"#,
        port = free_port(),
    );
    let server = serve(dir.path(), &toml).await;
    Portico { dir, pki, server }
}

async fn probe_sni(target: &Target, sni: Sni, trust: &Trust) -> Report {
    probe(target, &sni, trust, &alpn(), TIMEOUT).await
}

/// Runs the real binary without blocking the runtime that serves it.
async fn portico_bin(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_portico"))
            .arg("probe")
            .args(args)
            .output()
            .expect("run portico")
    })
    .await
    .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn probe_exact_name_verifies_against_the_test_root() {
    let s = portico("reject").await;
    let r = probe_sni(&s.target(), Sni::Name(name("exact.x.test")), &s.trust()).await;
    assert_eq!(r.verdict(), Verdict::Ok, "{r:#?}");
    assert_eq!(r.sni.as_deref(), Some("exact.x.test"));
    let tls = r.tls.as_ref().expect("negotiated");
    assert_eq!(tls.version, "TLS 1.3");
    assert_eq!(tls.alpn.as_deref(), Some("h2"));
    assert!(
        tls.cipher_suite.starts_with("TLS13_"),
        "{}",
        tls.cipher_suite
    );
    assert_eq!(r.chain.len(), 2, "leaf and intermediate");
    assert_eq!(r.chain[0].dns_names, vec!["exact.x.test"]);
    assert_eq!(r.chain[0].subject, "CN=exact Ecdsa");
    assert_eq!(r.chain[0].issuer, "CN=Portico Test Intermediate");
    assert_eq!(r.chain[1].subject, "CN=Portico Test Intermediate");
    assert_eq!(r.chain[1].issuer, "CN=Portico Test Root");
    assert_eq!(r.chain[0].sha256.len(), 32 * 3 - 1);
    assert!(r.chain[0].not_before < r.chain[0].not_after);
    assert_eq!(r.covers, Some(true));
    assert_eq!(r.verification, Some(Verification::Verified));

    let out = portico_bin(args(&[
        &s.addr().to_string(),
        "--sni",
        "exact.x.test",
        "--ca",
        &p(&s.pki.root_file()),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("result     ok"), "{}", stdout(&out));
}

#[tokio::test]
async fn probe_wildcard_name_is_covered_by_the_wildcard_leaf() {
    let s = portico("reject").await;
    let r = probe_sni(&s.target(), Sni::Name(name("shop.x.test")), &s.trust()).await;
    assert_eq!(r.verdict(), Verdict::Ok, "{r:#?}");
    assert_eq!(r.chain[0].dns_names, vec!["*.x.test"]);
    assert_eq!(r.covers, Some(true));
}

#[tokio::test]
async fn probe_unknown_name_is_refused_with_unrecognized_name() {
    let s = portico("reject").await;
    let r = probe_sni(&s.target(), Sni::Name(name("nope.test")), &s.trust()).await;
    let alert = r.alert.clone().expect("an alert");
    assert_eq!(
        (alert.name.as_str(), alert.code),
        ("unrecognized_name", 112)
    );
    assert!(matches!(r.verdict(), Verdict::Refused(_)));
    assert!(r.chain.is_empty() && r.tls.is_none());

    let out = portico_bin(args(&[&s.addr().to_string(), "--sni", "nope.test"])).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("refused    the server sent the alert unrecognized_name (112)"),
        "{text}"
    );
    assert!(
        text.contains("result     refused(unrecognized_name)"),
        "{text}"
    );
}

#[tokio::test]
async fn probe_without_sni_gets_the_listener_no_sni_certificate() {
    let s = portico("reject").await;
    let r = probe_sni(&s.target(), Sni::Off, &s.trust()).await;
    assert_eq!(r.sni, None);
    assert_eq!(r.name, None, "HOST is an IP address: no name to check");
    assert_eq!(r.chain[0].dns_names, vec!["one.test", "two.test"]);
    assert_eq!(r.covers, None);
    assert_eq!(r.verification, Some(Verification::Verified));
    assert_eq!(r.verdict(), Verdict::Ok);
    // An IP address as HOST sends no SNI by default either.
    let r = probe_sni(&s.target(), Sni::FromHost, &s.trust()).await;
    assert_eq!((r.sni.as_deref(), r.chain[0].dns_names.len()), (None, 2));
}

#[tokio::test]
async fn probe_against_the_wrong_ca_fails_verification_but_shows_the_chain() {
    let s = portico("reject").await;
    let other = Pki::new(&s.dir.path().join("other"));
    let trust = Trust::load(Some(&other.root_file())).expect("other root");
    let r = probe_sni(&s.target(), Sni::Name(name("exact.x.test")), &trust).await;
    assert_eq!(r.verdict(), Verdict::NotVerified);
    assert_eq!(r.covers, Some(true));
    assert_eq!(r.chain.len(), 2);
    match &r.verification {
        // Both test PKIs use the same names, so webpki finds a root by name and then the
        // signature check fails; either way the chain does not verify.
        Some(Verification::Failed(e)) => {
            assert!(
                e.contains("BadSignature") || e.contains("UnknownIssuer"),
                "{e}"
            )
        }
        v => panic!("expected a verification failure, got {v:?}"),
    }

    let out = portico_bin(args(&[
        &s.addr().to_string(),
        "--sni",
        "exact.x.test",
        "--ca",
        &p(&other.root_file()),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("verified   NO, not to --ca"), "{text}");
    assert!(text.contains("result     not verified"), "{text}");
}

#[tokio::test]
async fn probe_names_table_marks_the_name_that_gets_a_mismatch() {
    // unknown_sni = "no_sni": an unknown name gets one.test's certificate instead of a refusal.
    let s = portico("no_sni").await;
    let r = probe_sni(&s.target(), Sni::Name(name("other.test")), &s.trust()).await;
    assert_eq!(r.verdict(), Verdict::Mismatch);
    assert_eq!(r.covers, Some(false));
    assert_eq!(r.verification, Some(Verification::Verified));

    let out = portico_bin(args(&[
        &s.addr().to_string(),
        "--names",
        "exact.x.test,a.x.test,other.test",
        "--ca",
        &p(&s.pki.root_file()),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    let row = |n: &str| -> Vec<&str> {
        rows.iter()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("no row for {n}:\n{text}"))
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    };
    assert_eq!(
        &row("exact.x.test")[..4],
        ["exact.x.test", "ok", "CN=exact Ecdsa", "exact.x.test"]
    );
    assert_eq!(
        &row("a.x.test")[..4],
        ["a.x.test", "ok", "CN=wildcard Ecdsa", "*.x.test"]
    );
    assert_eq!(
        &row("other.test")[..4],
        [
            "other.test",
            "MISMATCH",
            "CN=san Ecdsa",
            "one.test,two.test"
        ]
    );
    assert!(
        text.contains("3 names: 2 ok, 1 mismatch, 0 not verified, 0 refused, 0 error"),
        "{text}"
    );
    assert!(
        text.contains("mismatch: the leaf does not cover other.test"),
        "{text}"
    );

    let json = portico_bin(args(&[
        &s.addr().to_string(),
        "--names",
        "exact.x.test,other.test",
        "--ca",
        &p(&s.pki.root_file()),
        "--json",
    ]))
    .await;
    assert_eq!(json.status.code(), Some(1));
    let text = stdout(&json);
    for needle in [
        "\"schema\": 1,",
        "\"source\": \"ca_file\",",
        "\"ok\": false,",
        "\"result\": \"ok\",",
        "\"result\": \"mismatch\",",
        "\"covers\": false,",
        "\"verified\": true,",
        "\"dns_names\": [\n",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
}

#[tokio::test]
async fn probe_human_output_snapshot() {
    let s = portico("reject").await;
    let trust = s.trust();
    let r = probe_sni(&s.target(), Sni::Name(name("exact.x.test")), &trust).await;
    let cipher = r.tls.as_ref().expect("tls").cipher_suite.clone();
    let text = render_human(&r, &trust, portico::runtime::unix_now())
        .replace(&s.addr().to_string(), "127.0.0.1:PORT")
        .replace(&p(&s.pki.root_file()), "ROOT")
        .replace(&cipher, "CIPHER");
    // Dates and fingerprints change on every run; everything else is stable.
    let masked: String = text
        .lines()
        .map(|l| {
            match ["not before", "not after", "sha256"]
                .iter()
                .find_map(|k| l.find(k).map(|at| at + k.len()))
            {
                Some(end) => format!("{} <masked>\n", l[..end].trim_end()),
                None => format!("{l}\n"),
            }
        })
        .collect();
    let expected = "\
target     127.0.0.1:PORT
sni        exact.x.test
tls        TLS 1.3, CIPHER, ALPN h2
chain      2 certificates, leaf first
  [0] subject     CN=exact Ecdsa
      dns names   exact.x.test
      issuer      CN=Portico Test Intermediate
      not before <masked>
      not after <masked>
      sha256 <masked>
  [1] subject     CN=Portico Test Intermediate
      dns names   -
      issuer      CN=Portico Test Root
      not before <masked>
      not after <masked>
      sha256 <masked>
name       exact.x.test is covered by the leaf
verified   yes, to --ca ROOT (1 certificate)
result     ok
";
    assert_eq!(masked, expected, "actual:\n{masked}");
}

#[tokio::test]
async fn probe_binary_usage_errors_exit_2() {
    for bad in [
        args(&["127.0.0.1:443", "--sni", "a.test", "--no-sni"]),
        args(&["127.0.0.1"]),
        args(&["127.0.0.1:443", "--sni", "*.a.test"]),
        args(&["127.0.0.1:443", "--names", "a.test", "--sni", "b.test"]),
    ] {
        let out = portico_bin(bad.clone()).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}

/// Serves one chain with rustls for every name: for certificates Portico refuses to load.
async fn tiny_server(cert: &Path, key: &Path) -> SocketAddr {
    let acceptor = crate::support::pki::acceptor(cert, key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn probe_expired_certificate_fails_verification_but_shows_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (cert, key) = pki.leaf("old", &["old.test"], Key::Ecdsa, Validity::Expired);
    let addr = tiny_server(&cert, &key).await;
    let target: Target = addr.to_string().parse().expect("target");
    let trust = Trust::load(Some(&pki.root_file())).expect("root");
    let r = probe_sni(&target, Sni::Name(name("old.test")), &trust).await;
    assert_eq!(r.verdict(), Verdict::NotVerified, "{r:#?}");
    assert_eq!(r.covers, Some(true));
    assert_eq!(r.chain.len(), 2);
    assert_eq!(r.chain[0].dns_names, vec!["old.test"]);
    assert!(r.chain[0].not_after < portico::runtime::unix_now());
    match &r.verification {
        Some(Verification::Failed(e)) => assert!(e.to_lowercase().contains("expired"), "{e}"),
        v => panic!("expected a verification failure, got {v:?}"),
    }

    let out = portico_bin(args(&[
        &addr.to_string(),
        "--sni",
        "old.test",
        "--ca",
        &p(&pki.root_file()),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("[0] subject     CN=old Ecdsa"), "{text}");
    assert!(text.contains("days ago)"), "{text}");
    assert!(text.contains("result     not verified"), "{text}");
}

/// A real nginx on loopback serving one TLS server per site; the first is the default.
async fn start_nginx(dir: &Path, port: u16, sites: &[(&str, PathBuf, PathBuf)]) -> Nginx {
    let mut servers = String::new();
    for (i, (host, cert, key)) in sites.iter().enumerate() {
        let default = if i == 0 { " default_server" } else { "" };
        servers += &format!(
            "  server {{\n    listen 127.0.0.1:{port} ssl{default};\n    server_name {host};\n    ssl_certificate {};\n    ssl_certificate_key {};\n    return 200 \"{host}\\n\";\n  }}\n",
            p(cert),
            p(key)
        );
    }
    nginx::start(dir, port, &servers).await
}

#[tokio::test]
async fn probe_nginx_two_sni_sites_and_its_default_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (c1, k1) = pki.leaf("one", &["one.test"], Key::Ecdsa, Validity::Current);
    let (c2, k2) = pki.leaf("two", &["two.test"], Key::Rsa, Validity::Current);
    let port = free_port();
    let _nginx = start_nginx(
        dir.path(),
        port,
        &[("one.test", c1, k1), ("two.test", c2, k2)],
    )
    .await;
    let target: Target = format!("127.0.0.1:{port}").parse().expect("target");
    let trust = Trust::load(Some(&pki.root_file())).expect("root");

    let one = probe_sni(&target, Sni::Name(name("one.test")), &trust).await;
    assert_eq!(one.verdict(), Verdict::Ok, "{one:#?}");
    assert_eq!(one.chain[0].subject, "CN=one Ecdsa");
    assert_eq!(one.chain[0].dns_names, vec!["one.test"]);
    assert_eq!(one.chain[1].subject, "CN=Portico Test Intermediate");
    let two = probe_sni(&target, Sni::Name(name("two.test")), &trust).await;
    assert_eq!(two.verdict(), Verdict::Ok, "{two:#?}");
    assert_eq!(two.chain[0].subject, "CN=two Rsa");
    assert_eq!(two.chain[0].dns_names, vec!["two.test"]);
    assert_ne!(one.chain[0].sha256, two.chain[0].sha256);
    // nginx answers a name it does not know with its default server's certificate.
    let three = probe_sni(&target, Sni::Name(name("three.test")), &trust).await;
    assert_eq!(three.verdict(), Verdict::Mismatch, "{three:#?}");
    assert_eq!(three.chain[0].sha256, one.chain[0].sha256);
    assert_eq!(three.verification, Some(Verification::Verified));

    let reports = vec![one, two, three];
    let table = render_table(&target, &trust, &reports);
    assert!(
        table.contains("mismatch: the leaf does not cover three.test"),
        "{table}"
    );

    let out = portico_bin(args(&[
        &target.to_string(),
        "--names",
        "one.test,two.test,three.test",
        "--ca",
        &p(&pki.root_file()),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("3 names: 2 ok, 1 mismatch"), "{text}");
    let three_row = text
        .lines()
        .find(|l| l.starts_with("three.test "))
        .unwrap_or_else(|| panic!("no three.test row:\n{text}"));
    assert!(
        three_row.contains("MISMATCH") && three_row.contains("CN=one Ecdsa"),
        "{three_row}"
    );
}
