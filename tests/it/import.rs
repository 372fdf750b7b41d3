//! `portico import`: configurations as people post them, translated; real nginx and Apache
//! serving the source, Portico serving the output, and `probe --compare` between the two.
//! IIS cannot run here: its test reads an applicationHost.config and a `netsh http show
//! sslcert` listing written as people post them, with certificates made at test time.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use portico::cli::probe::{probe, Sni, Target, Trust, TIMEOUT};
use portico::names::HostName;

use crate::support::pki::{Key, Pki, Validity};
use crate::support::{apache, free_port, nginx, site_root, Running};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run portico")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `portico import SOURCE FILE -o OUT` and extra arguments: (exit code, stderr).
fn import(source: &str, file: &Path, out: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["import", source];
    let file = p(file);
    let out_s = p(out);
    args.push(&file);
    args.extend(["-o", &out_s]);
    args.extend(extra);
    let o = run(&args);
    (o.status.code().unwrap_or(-1), text(&o.stderr))
}

/// Waits until Portico (started on `config`) accepts on `addr`.
async fn serve(config: &Path, addr: SocketAddr) -> Running {
    let running = Running::serve(config);
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "portico does not accept on {addr}; its configuration:\n{}",
        std::fs::read_to_string(config).unwrap_or_default()
    );
}

/// `portico probe --compare OLD --with NEW --names ...`: (exit code, stdout).
fn compare(old: SocketAddr, new: SocketAddr, names: &[&str], ca: &Path) -> (i32, String) {
    let o = run(&[
        "probe",
        "--compare",
        &old.to_string(),
        "--with",
        &new.to_string(),
        "--names",
        &names.join(","),
        "--ca",
        &p(ca),
    ]);
    (o.status.code().unwrap_or(-1), text(&o.stdout))
}

/// The verdict line of `name` in a comparison ("a.test: same").
fn verdict<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{out}"))
}

/// The subject CN and SHA-256 of the leaf presented for `sni` (None: no SNI) at `addr`,
/// or None when the handshake is refused.
async fn leaf(addr: SocketAddr, sni: Option<&str>, trust: &Trust) -> Option<String> {
    let target: Target = addr.to_string().parse().expect("target");
    let sni = match sni {
        Some(n) => Sni::Name(HostName::parse(n).expect("name")),
        None => Sni::Off,
    };
    let alpn = vec!["http/1.1".to_string()];
    let r = probe(&target, &sni, trust, &alpn, TIMEOUT).await;
    r.chain.first().map(|c| c.subject.clone())
}

/// Replaces the source's address in the imported file by Portico's and returns the path.
fn move_to(out: &Path, from: &str, to: &str) {
    let toml = std::fs::read_to_string(out).expect("imported file");
    assert!(toml.contains(from), "{from} not in:\n{toml}");
    std::fs::write(out, toml.replace(from, to)).expect("rewrite");
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_import_serves_what_nginx_serves_and_refuses_what_it_serves_wrongly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new(&d.join("certs"));
    pki.leaf("default", &["default.test"], Key::Ecdsa, Validity::Current);
    pki.leaf(
        "a",
        &["a.test", "www.a.test"],
        Key::Ecdsa,
        Validity::Current,
    );
    pki.leaf("b", &["b.test"], Key::Rsa, Validity::Current);
    let root = site_root(d, "www", "hello");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Sites in included files, certificates by paths relative to the main file's directory
    // (nginx's configuration prefix), as on Debian.
    std::fs::create_dir_all(d.join("sites")).expect("mkdir");
    std::fs::write(
        d.join("sites/10-default.conf"),
        format!(
            "server {{\n    listen {listen} ssl;\n    server_name default.test;\n    ssl_certificate certs/default.pem;\n    ssl_certificate_key certs/default.key;\n    root {};\n}}\n",
            p(&root)
        ),
    )
    .expect("write");
    std::fs::write(
        d.join("sites/20-a.conf"),
        format!(
            "server {{\n    listen {listen} ssl;\n    server_name a.test www.a.test;\n    ssl_certificate certs/a.pem;\n    ssl_certificate_key certs/a.key;\n    location / {{\n        root {};\n    }}\n    location /api {{\n        proxy_pass http://127.0.0.1:9;\n    }}\n}}\n",
            p(&root)
        ),
    )
    .expect("write");
    std::fs::write(
        d.join("sites/30-b.conf"),
        format!(
            "server {{\n    listen {listen} ssl;\n    server_name b.test wrong.test;\n    ssl_certificate certs/b.pem;\n    ssl_certificate_key certs/b.key;\n    return 301 https://a.test$request_uri;\n}}\n\
             server {{\n    listen {listen} ssl;\n    server_name b.test;\n    ssl_certificate certs/a.pem;\n    ssl_certificate_key certs/a.key;\n    root {};\n}}\n",
            p(&root)
        ),
    )
    .expect("write");
    let _nginx = nginx::start(
        d,
        port,
        "  ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;\n  include sites/*.conf;\n",
    )
    .await;

    let out = d.join("out/portico.toml");
    std::fs::create_dir_all(d.join("out")).expect("mkdir");
    let (code, report) = import("nginx", &d.join("nginx.conf"), &out, &[]);
    assert_eq!(code, 1, "problems found, so exit 1:\n{report}");
    let toml = std::fs::read_to_string(&out).expect("output");
    // Comments point back to the source lines.
    assert!(toml.contains("sites/20-a.conf:3"), "{toml}");
    // The report: what nginx serves wrongly, found by its rules and by Portico's check.
    let wrong: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("wrong today:"))
        .collect();
    let has = |lines: &[&str], what: &str| lines.iter().any(|l| l.contains(what));
    assert!(
        has(&wrong, "wrong.test") && has(&wrong, "does not cover wrong.test"),
        "{report}"
    );
    assert!(has(&wrong, "b.test is claimed twice"), "{report}");
    assert!(
        has(&wrong, "sites/10-default.conf:1") && has(&wrong, "its first server block"),
        "{report}"
    );
    assert!(has(&wrong, "TLSv1, TLSv1.1"), "{report}");
    assert!(
        report.contains("not translated:") && report.contains("sites/20-a.conf:9: location /api"),
        "{report}"
    );

    let portico = free_port();
    let new = format!("127.0.0.1:{portico}");
    move_to(&out, &listen, &new);
    let new: SocketAddr = new.parse().expect("addr");
    let _portico = serve(&out, new).await;
    let old: SocketAddr = listen.parse().expect("addr");
    let names = [
        "default.test",
        "a.test",
        "www.a.test",
        "b.test",
        "wrong.test",
        "unknown.test",
    ];
    let (code, table) = compare(old, new, &names, &pki.root_file());
    assert_eq!(code, 0, "{table}");
    for n in ["default.test", "a.test", "www.a.test", "b.test", "(no SNI)"] {
        assert_eq!(verdict(&table, n), "same", "{n}:\n{table}");
    }
    for n in ["wrong.test", "unknown.test"] {
        assert_eq!(verdict(&table, n), "fixed", "{n}:\n{table}");
    }
    // Portico refuses the names nginx answers with a certificate that does not cover them.
    let trust = Trust::load(Some(&pki.root_file())).expect("root");
    assert_eq!(leaf(new, Some("wrong.test"), &trust).await, None);
    assert!(leaf(old, Some("wrong.test"), &trust).await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_compare_exits_1_when_two_servers_present_different_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new(&d.join("certs"));
    pki.leaf("a1", &["a.test"], Key::Ecdsa, Validity::Current);
    pki.leaf("a2", &["a.test"], Key::Ecdsa, Validity::Current);
    let (one, two) = (free_port(), free_port());
    let conf = |port: u16, stem: &str| {
        format!(
            "server {{\n listen 127.0.0.1:{port} ssl;\n server_name a.test;\n ssl_certificate certs/{stem}.pem;\n ssl_certificate_key certs/{stem}.key;\n return 200 ok;\n}}\n"
        )
    };
    let both = format!("{}{}", conf(one, "a1"), conf(two, "a2"));
    let _nginx = nginx::start(d, one, &both).await;
    let old: SocketAddr = format!("127.0.0.1:{one}").parse().expect("addr");
    let new: SocketAddr = format!("127.0.0.1:{two}").parse().expect("addr");
    let (code, table) = compare(old, new, &["a.test"], &pki.root_file());
    assert_eq!(code, 1, "{table}");
    assert_eq!(verdict(&table, "a.test"), "DIFFERENT", "{table}");
    let (code, table) = compare(old, old, &["a.test"], &pki.root_file());
    assert_eq!(code, 0, "{table}");
}

/// Splits a PEM chain into the leaf and the rest (what CAs hand out as a "chain file").
fn split_chain(pem: &Path, leaf: &Path, chain: &Path) {
    let text = std::fs::read_to_string(pem).expect("pem");
    let end = "-----END CERTIFICATE-----\n";
    let cut = text.find(end).expect("a certificate") + end.len();
    std::fs::write(leaf, &text[..cut]).expect("leaf");
    std::fs::write(chain, &text[cut..]).expect("chain");
}

#[tokio::test(flavor = "multi_thread")]
async fn apache_import_serves_what_apache_serves_and_refuses_what_it_serves_wrongly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new(&d.join("certs"));
    let (first, _) = pki.leaf("first", &["first.test"], Key::Ecdsa, Validity::Current);
    let (shop, _) = pki.leaf(
        "shop",
        &["shop.test", "www.shop.test"],
        Key::Rsa,
        Validity::Current,
    );
    split_chain(
        &first,
        &d.join("certs/first-leaf.pem"),
        &d.join("certs/first-chain.pem"),
    );
    split_chain(
        &shop,
        &d.join("certs/shop-leaf.pem"),
        &d.join("certs/chain.pem"),
    );
    let root = site_root(d, "www", "hello");
    let port = free_port();
    // Apache listens on loopback only; the VirtualHosts are *:PORT, as posted (*:443).
    let addr = format!("127.0.0.1:{port}");
    let vhost = format!("*:{port}");
    std::fs::create_dir_all(d.join("sites-enabled")).expect("mkdir");
    // The first VirtualHost is Apache's default for the address.
    std::fs::write(
        d.join("sites-enabled/000-first.conf"),
        format!(
            "<VirtualHost {vhost}>\n    ServerName first.test\n    SSLEngine on\n    SSLCertificateFile certs/first-leaf.pem\n    SSLCertificateKeyFile certs/first.key\n    SSLCertificateChainFile certs/first-chain.pem\n    DocumentRoot {}\n</VirtualHost>\n",
            p(&root)
        ),
    )
    .expect("write");
    // A VirtualHost *:443 with a chain file, as CAs' install guides write it; one alias it
    // does not cover.
    std::fs::write(
        d.join("sites-enabled/shop.conf"),
        format!(
            "<IfModule mod_ssl.c>\n<VirtualHost {vhost}>\n    ServerName shop.test\n    ServerAlias www.shop.test old.shop.test\n    SSLEngine on\n    SSLProtocol all -SSLv3\n    SSLCertificateFile \"certs/shop-leaf.pem\"\n    SSLCertificateKeyFile certs/shop.key\n    SSLCertificateChainFile certs/chain.pem\n    DocumentRoot {}\n    <Directory {}>\n        Require all granted\n    </Directory>\n    RewriteRule ^/old /new [R=301]\n</VirtualHost>\n</IfModule>\n",
            p(&root),
            p(&root)
        ),
    )
    .expect("write");
    let (_apache, conf) = apache::start(
        d,
        port,
        "IncludeOptional sites-enabled/*.conf\nIncludeOptional conf-enabled/*.conf\n",
    )
    .await;

    let out = d.join("out/portico.toml");
    std::fs::create_dir_all(d.join("out")).expect("mkdir");
    let (code, report) = import("apache", &conf, &out, &[]);
    assert_eq!(code, 1, "{report}");
    let wrong: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("wrong today:"))
        .collect();
    let has = |what: &str| wrong.iter().any(|l| l.contains(what));
    assert!(has("does not cover old.shop.test"), "{report}");
    assert!(has("its first VirtualHost"), "{report}");
    assert!(has("TLSv1, TLSv1.1"), "{report}");
    assert!(
        report.contains("sites-enabled/shop.conf:14: RewriteRule"),
        "{report}"
    );
    // Apache listens on loopback only: the output's *:PORT would listen on every address.
    assert!(
        report.contains(&format!(
            "Apache listens on port {port} only at 127.0.0.1:{port}"
        )),
        "{report}"
    );
    // The chain file is joined to the certificate beside the output.
    assert!(d.join("out/chains/shop.test.pem").exists(), "{report}");

    let new_port = free_port();
    move_to(&out, &vhost, &format!("*:{new_port}"));
    let new: SocketAddr = format!("127.0.0.1:{new_port}").parse().expect("addr");
    let _portico = serve(&out, new).await;
    let old: SocketAddr = addr.parse().expect("addr");
    let names = [
        "first.test",
        "shop.test",
        "www.shop.test",
        "old.shop.test",
        "nobody.test",
    ];
    let (code, table) = compare(old, new, &names, &pki.root_file());
    assert_eq!(code, 0, "{table}");
    for n in ["first.test", "shop.test", "www.shop.test", "(no SNI)"] {
        assert_eq!(verdict(&table, n), "same", "{n}:\n{table}");
    }
    for n in ["old.shop.test", "nobody.test"] {
        assert_eq!(verdict(&table, n), "fixed", "{n}:\n{table}");
    }
    // The whole chain: the intermediate from the chain file is presented too.
    let target: Target = new.to_string().parse().expect("target");
    let trust = Trust::load(Some(&pki.root_file())).expect("root");
    let sni = Sni::Name(HostName::parse("shop.test").expect("name"));
    let r = probe(&target, &sni, &trust, &["http/1.1".to_string()], TIMEOUT).await;
    assert_eq!(r.chain.len(), 2, "{r:?}");
}

/// The thumbprints of the IIS test's certificates (as netsh prints them).
const SITEV1: &str = "5a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
const SITEV2: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0abcdef12";
const LEGACY: &str = "9C8B7A6F5E4D3C2B1A09F8E7D6C5B4A392817065";

#[tokio::test(flavor = "multi_thread")]
async fn iis_import_binds_sni_hosts_and_names_the_ip_binding_that_shadows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new(&d.join("pki"));
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    for (thumb, names) in [
        (SITEV1, &["sitev1.mysite.com"][..]),
        (SITEV2, &["sitev2.mysite.com"][..]),
        (LEGACY, &["legacy.mysite.com"][..]),
    ] {
        let (c, k) = pki.leaf(thumb, names, Key::Rsa, Validity::Current);
        std::fs::rename(c, certs.join(format!("{thumb}.pem"))).expect("move");
        std::fs::rename(k, certs.join(format!("{thumb}.key"))).expect("move");
    }
    let port = free_port();
    // As posted: two SNI bindings on *:443 and one IP binding, 10.0.0.5:443, for a legacy
    // site; the test maps 10.0.0.5 to a loopback address and 443 to a free port.
    let config = include_str!("import/applicationHost.config")
        .replace("10.0.0.5", "127.0.0.3")
        .replace(":443:", &format!(":{port}:"));
    let sslcert = include_str!("import/sslcert.txt")
        .replace("10.0.0.5", "127.0.0.3")
        .replace(":443", &format!(":{port}"));
    std::fs::write(d.join("applicationHost.config"), config).expect("write");
    std::fs::write(d.join("sslcert.txt"), sslcert).expect("write");
    let out = d.join("portico.toml");
    let (code, report) = import(
        "iis",
        &d.join("applicationHost.config"),
        &out,
        &[
            "--sslcert",
            &p(&d.join("sslcert.txt")),
            "--cert-dir",
            &p(&certs),
        ],
    );
    assert_eq!(code, 1, "{report}");
    let wrong: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("wrong today:"))
        .collect();
    for host in ["sitev1.mysite.com", "sitev2.mysite.com"] {
        assert!(
            wrong
                .iter()
                .any(|l| l.contains(&format!("hides {host}'s SNI binding"))),
            "{host}:\n{report}"
        );
    }
    assert!(
        wrong.iter().any(|l| l.contains("applicationHost.config:")),
        "{report}"
    );

    let ip = format!("127.0.0.3:{port}");
    let all = format!("127.0.0.1:{port}");
    let _portico = serve(&out, ip.parse().expect("addr")).await;
    let trust = Trust::load(Some(&pki.root_file())).expect("root");
    let cn = |thumb: &str| Some(format!("CN={thumb} Rsa"));
    let all: SocketAddr = all.parse().expect("addr");
    let ip: SocketAddr = ip.parse().expect("addr");
    assert_eq!(
        leaf(all, Some("sitev1.mysite.com"), &trust).await,
        cn(SITEV1)
    );
    assert_eq!(
        leaf(all, Some("sitev2.mysite.com"), &trust).await,
        cn(SITEV2)
    );
    // On the IP, each SNI host gets its own certificate, not the IP's.
    assert_eq!(
        leaf(ip, Some("sitev1.mysite.com"), &trust).await,
        cn(SITEV1)
    );
    assert_eq!(
        leaf(ip, Some("legacy.mysite.com"), &trust).await,
        cn(LEGACY)
    );
    assert_eq!(leaf(ip, None, &trust).await, cn(LEGACY));
    assert_eq!(leaf(ip, Some("other.mysite.com"), &trust).await, None);
}

#[test]
fn a_malformed_source_is_exit_2_with_its_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("nginx.conf"),
        "http {\n  server {\n    listen 443 ssl;\n    server_name \"a.test;\n  }\n}\n",
    )
    .expect("write");
    let (code, report) = import("nginx", &d.join("nginx.conf"), &d.join("o.toml"), &[]);
    assert_eq!(code, 2, "{report}");
    assert!(report.contains("nginx.conf:4:"), "{report}");
    std::fs::write(
        d.join("apache2.conf"),
        "<VirtualHost *:443>\n  ServerName a.test\n</IfModule>\n",
    )
    .expect("write");
    let (code, report) = import("apache", &d.join("apache2.conf"), &d.join("o.toml"), &[]);
    assert_eq!(code, 2, "{report}");
    assert!(report.contains("apache2.conf:3:"), "{report}");
    std::fs::write(d.join("app.config"), "<configuration><sites>").expect("write");
    let (code, report) = import("iis", &d.join("app.config"), &d.join("o.toml"), &[]);
    assert_eq!(code, 2, "{report}");
    assert!(report.contains("app.config"), "{report}");
    let (code, report) = import("nginx", &d.join("missing.conf"), &d.join("o.toml"), &[]);
    assert_eq!(code, 2, "{report}");
    assert!(
        report.contains("missing.conf") && report.contains("no such file"),
        "{report}"
    );
    assert!(
        !d.join("o.toml").exists(),
        "nothing is written when the source cannot be read"
    );
}

#[test]
fn a_clean_source_is_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new(&d.join("certs"));
    let (cert, key) = pki.leaf("a", &["a.test"], Key::Ecdsa, Validity::Current);
    let root = site_root(d, "www", "a");
    std::fs::write(
        d.join("nginx.conf"),
        format!(
            "events {{}}\nhttp {{\n  server {{\n    listen 443 ssl default_server;\n    ssl_reject_handshake on;\n  }}\n  server {{\n    listen 443 ssl;\n    server_name a.test;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    root {};\n  }}\n  server {{\n    listen 80;\n    server_name a.test;\n    return 301 https://$host$request_uri;\n  }}\n}}\n",
            p(&cert),
            p(&key),
            p(&root)
        ),
    )
    .expect("write");
    let out = d.join("portico.toml");
    let (code, report) = import("nginx", &d.join("nginx.conf"), &out, &[]);
    assert_eq!(code, 0, "{report}");
    let toml = std::fs::read_to_string(&out).expect("output");
    assert!(
        toml.contains("address = \"*:443\"") && toml.contains("kind = \"http\""),
        "{toml}"
    );
    let o = run(&["check", "-c", &p(&out)]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}
