//! ACME against a real Pebble (the Debian package) on loopback: Pebble validates the
//! challenges against Portico's own listeners (never `PEBBLE_VA_ALWAYS_VALID`), with names
//! resolved to 127.0.0.1 by pebble-challtestsrv.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod certs;
mod fake_ca;
mod renewal;

use crate::support::client::{connect, Opts};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{free_port, Running};

const BIN: &str = env!("CARGO_BIN_EXE_portico");
const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// Pebble and its DNS server, both on loopback.
pub(crate) struct Pebble {
    _dns: Running,
    _pebble: Running,
    pub(crate) directory: String,
    /// The root Pebble's own HTTPS listener is signed by (not the issuing CA).
    pub(crate) ca: PathBuf,
}

fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `child` listens on `port` (true) or exits (false), for at most 30 s.
pub(crate) fn listens(child: &mut Running, port: u16) -> bool {
    let start = Instant::now();
    loop {
        if child.0.try_wait().expect("wait for portico").is_some() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Something listens there; it is Portico only if Portico is still running
            // (it exits at once when it cannot bind).
            std::thread::sleep(Duration::from_millis(200));
            return child.0.try_wait().expect("wait for portico").is_none();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "portico did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a child on `N` ports chosen free just before, and waits until it listens on all of
/// them. `free_port` lets its port go before the child binds it, so another test (or an
/// outgoing connection's ephemeral port) can take it in between; the child then exits, and
/// it is started again on other ports.
fn start_listening<const N: usize>(
    what: &str,
    mut spawn: impl FnMut([u16; N]) -> std::process::Child,
) -> (Running, [u16; N]) {
    for _ in 0..5 {
        let ports: [u16; N] = std::array::from_fn(|_| free_port());
        let mut child = Running(spawn(ports));
        let start = Instant::now();
        loop {
            if let Some(status) = child.0.try_wait().expect("wait for the child") {
                eprintln!("{what} exited ({status}) before listening on {ports:?}; other ports");
                break;
            }
            if ports
                .iter()
                .all(|&p| TcpStream::connect(("127.0.0.1", p)).is_ok())
            {
                return (child, ports);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what} did not start listening on {ports:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{what} exited before listening five times; see its log");
}

/// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
fn pebble(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
    pebble_with(
        dir,
        http_port,
        tls_port,
        r#""externalAccountBindingRequired": false"#,
    )
}

/// Pebble with `extra` fields in its configuration (certificate lifetime, EAB keys).
pub(crate) fn pebble_with(dir: &Path, http_port: u16, tls_port: u16, extra: &str) -> Pebble {
    pebble_resolving(dir, http_port, tls_port, extra, "127.0.0.1")
}

/// Pebble whose DNS server resolves every name to `ip` (a loopback address).
pub(crate) fn pebble_resolving(
    dir: &Path,
    http_port: u16,
    tls_port: u16,
    extra: &str,
    ip: &str,
) -> Pebble {
    assert!(
        Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists(),
        "these tests need the Debian package pebble (apt-get install pebble)"
    );
    std::fs::create_dir_all(dir).expect("mkdir");
    let pki = Pki::new(&dir.join("pki"));
    let (cert, key) = pki.leaf(
        "pebble",
        &["localhost", "127.0.0.1"],
        Key::Ecdsa,
        Validity::Current,
    );
    let log = |name: &str| std::fs::File::create(dir.join(name)).expect("log file");
    let (dns, [dns_port, _]) = start_listening("pebble-challtestsrv", |[dns_port, mgmt]| {
        Command::new(CHALLTESTSRV)
            .args(["-defaultIPv4", ip, "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{mgmt}")])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv")
    });
    let config = dir.join("pebble.json");
    let (pebble, [port, _]) = start_listening("pebble", |[port, mgmt]| {
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble": {{"listenAddress": "127.0.0.1:{port}", "managementListenAddress": "127.0.0.1:{mgmt}", "certificate": "{}", "privateKey": "{}", "httpPort": {http_port}, "tlsPort": {tls_port}, "ocspResponderURL": "", {extra}}}}}"#,
                cert.display(),
                key.display()
            ),
        )
        .expect("write pebble config");
        Command::new(PEBBLE)
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble")
    });
    Pebble {
        _dns: dns,
        _pebble: pebble,
        directory: format!("https://127.0.0.1:{port}/dir"),
        ca: pki.root_file(),
    }
}

/// A Portico process serving `dir/portico.toml`, its log in `dir/portico.log`.
pub(crate) fn portico(dir: &Path, log: &str) -> Running {
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(dir.join("portico.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).expect("log file"))
        .spawn()
        .expect("start portico");
    Running(child)
}

/// The configuration: an http and an https listener on loopback, and `sites`.
fn write_config(dir: &Path, pebble: &Pebble, challenges: &str, ports: (u16, u16), sites: &str) {
    write_config_with(dir, pebble, challenges, "", ports, sites)
}

/// The configuration, with `acme_extra` lines in the `[acme]` table.
pub(crate) fn write_config_with(
    dir: &Path,
    pebble: &Pebble,
    challenges: &str,
    acme_extra: &str,
    ports: (u16, u16),
    sites: &str,
) {
    std::fs::write(
        dir.join("portico.toml"),
        format!(
            "state_dir = \"state\"\n[acme]\ndirectory = \"{}\"\nemail = \"ops@example.test\"\nca = \"{}\"\nchallenges = {challenges}\n{acme_extra}\n[[listener]]\naddress = \"127.0.0.1:{}\"\nkind = \"http\"\n[[listener]]\naddress = \"127.0.0.1:{}\"\n\n{sites}",
            pebble.directory,
            pebble.ca.display(),
            ports.0,
            ports.1
        ),
    )
    .expect("write config");
}

/// Polls (generously) until the https port presents a certificate for `name` whose names are
/// `sans`; panics with the log if that never happens.
async fn served(port: u16, name: &str, sans: &[&str], dir: &Path, log: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    loop {
        if let Ok((_, presented)) = connect(addr, &Opts::sni(name)).await {
            let mut got = presented.sans.clone();
            got.sort();
            let mut want: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "the certificate served for {name}");
            return;
        }
        if start.elapsed() > Duration::from_secs(120) {
            panic!(
                "no certificate for {name}; portico log:\n{}",
                std::fs::read_to_string(dir.join(log)).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} is not private", path.display());
}

/// Issues a certificate for one site through `challenges`, and checks what was stored.
async fn issue(dir: &Path, challenges: &str, hosts: &[&str]) -> (Pebble, (u16, u16)) {
    let pebble_extra = r#""externalAccountBindingRequired": false"#;
    let (pebble, ports, _portico) = issue_with(dir, challenges, hosts, pebble_extra, "").await;
    (pebble, ports)
}

/// [`issue`] with extra Pebble configuration and extra `[acme]` lines; the Portico process
/// is returned running.
async fn issue_with(
    dir: &Path,
    challenges: &str,
    hosts: &[&str],
    pebble_extra: &str,
    acme_extra: &str,
) -> (Pebble, (u16, u16), Running) {
    let hosts_toml: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    // Portico's two ports are chosen free before it binds them, and Pebble must know them
    // first; when another test takes one in between, Portico exits, and both start again
    // on other ports.
    let mut attempt = 0;
    let (pebble, ports, portico) = loop {
        attempt += 1;
        // Held while Pebble and its DNS server pick their own free ports, so that they
        // cannot take Portico's; let go just before Portico binds them.
        let hold = |_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let held: [std::net::TcpListener; 2] = std::array::from_fn(hold);
        let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
        let ports = (port(&held[0]), port(&held[1]));
        let pebble = pebble_with(&dir.join("pebble"), ports.0, ports.1, pebble_extra);
        write_config_with(
            dir,
            &pebble,
            challenges,
            acme_extra,
            ports,
            &format!(
                "[[site]]\nname = \"shop\"\nhosts = [{}]\ntls = \"acme\"\nrespond = {{ body = \"shop\" }}\n",
                hosts_toml.join(", ")
            ),
        );
        drop(held);
        let mut portico = portico(dir, "portico.log");
        if listens(&mut portico, ports.1) {
            break (pebble, ports, portico);
        }
        let log = std::fs::read_to_string(dir.join("portico.log")).unwrap_or_default();
        assert!(
            attempt < 3,
            "portico exited before listening three times:\n{log}"
        );
        eprintln!("portico exited before listening on {ports:?}; other ports:\n{log}");
    };
    for h in hosts {
        served(ports.1, h, hosts, dir, "portico.log").await;
    }
    assert_private(&acme_home(dir).join("account.json"));
    assert_private(&acme_home(dir).join("shop.key"));
    assert!(acme_home(dir).join("shop.pem").exists());
    let log = std::fs::read_to_string(dir.join("portico.log")).expect("log");
    // Pebble really validated against Portico: the answers show in the log.
    if challenges.contains("tls-alpn-01") && !challenges.contains("http-01") {
        assert!(
            log.contains("answered an ACME TLS-ALPN-01 challenge"),
            "{log}"
        );
    }
    if challenges.contains("http-01") && !challenges.contains("tls-alpn-01") {
        for h in hosts {
            assert!(
                log.lines()
                    .any(|l| l.contains("/.well-known/acme-challenge/")
                        && l.contains(&format!("host=\"{h}\""))
                        && l.contains("status=200")),
                "no HTTP-01 answer for {h}:\n{log}"
            );
        }
    }
    // The metrics say so too (the admin socket, as an operator would ask it).
    let socket = dir.join("state/admin.sock");
    let metrics = || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--unix-socket"])
            .arg(&socket)
            .arg("http://localhost/metrics")
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = crate::support::eventually("the ACME metrics", || {
        let text = metrics();
        text.contains("portico_acme_next_renewal_seconds{site=\"shop\"}")
            .then_some(text)
    });
    assert!(
        text.contains("portico_acme_orders_total{outcome=\"ok\"} 1\n"),
        "{text}"
    );
    let next: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("portico_acme_next_renewal_seconds{site=\"shop\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a next renewal time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        next > now,
        "the next order is in the future: {next} vs {now}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("portico_certificate_not_after_seconds{")
                && l.contains("source=\"acme\"")),
        "{text}"
    );
    (pebble, ports, portico)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_through_http_01_for_a_site_with_two_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue(
        dir.path(),
        r#"["http-01"]"#,
        &["shop.example.test", "www.shop.example.test"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_through_tls_alpn_01() {
    let dir = tempfile::tempdir().expect("tempdir");
    issue(dir.path(), r#"["tls-alpn-01"]"#, &["shop.example.test"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_the_stored_certificate_without_a_new_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pebble, ports) = issue(
        dir.path(),
        r#"["tls-alpn-01", "http-01"]"#,
        &["shop.example.test"],
    )
    .await;
    let stored = std::fs::read(acme_home(dir.path()).join("shop.pem")).expect("stored");
    // Pebble is gone: only the stored certificate can be served now.
    drop(pebble);
    let _portico = portico(dir.path(), "restart.log");
    served(
        ports.1,
        "shop.example.test",
        &["shop.example.test"],
        dir.path(),
        "restart.log",
    )
    .await;
    assert_eq!(
        std::fs::read(acme_home(dir.path()).join("shop.pem")).expect("stored"),
        stored
    );
    let log = std::fs::read_to_string(dir.path().join("restart.log")).expect("log");
    assert!(
        !log.contains("ACME order started"),
        "the restart ordered again:\n{log}"
    );
    // `bindings` says where the certificate came from.
    let out = Command::new(BIN)
        .args(["bindings", "--json", "-c"])
        .arg(dir.path().join("portico.toml"))
        .output()
        .expect("portico bindings");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bindings JSON");
    let row = doc["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["bindings"].as_array().into_iter().flatten())
        .find(|r| {
            r["host"] == "shop.example.test"
                && !r["certificates"].as_array().is_none_or(Vec::is_empty)
        })
        .unwrap_or_else(|| panic!("no https row for shop.example.test: {doc:#}"));
    assert_eq!(row["how"], "acme", "{row:#}");
    assert!(row["acme_pending"].is_null(), "{row:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_directory_gets_its_own_account_and_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pebble, ports) = issue(dir.path(), r#"["tls-alpn-01"]"#, &["shop.example.test"]).await;
    let first_home = acme_home(dir.path());
    let first = std::fs::read(first_home.join("shop.pem")).expect("stored");
    // The same CA under another URL, as when moving from staging to production: the stored
    // certificate and account belong to the first one and must not be used for the second.
    let file = dir.path().join("portico.toml");
    let toml = std::fs::read_to_string(&file).expect("config");
    let other = pebble.directory.replace("127.0.0.1", "localhost");
    std::fs::write(&file, toml.replace(&pebble.directory, &other)).expect("write");
    let second_home = acme_home(dir.path());
    assert_ne!(first_home, second_home);
    let _portico = portico(dir.path(), "switch.log");
    served(
        ports.1,
        "shop.example.test",
        &["shop.example.test"],
        dir.path(),
        "switch.log",
    )
    .await;
    assert_private(&second_home.join("account.json"));
    let second = std::fs::read(second_home.join("shop.pem")).expect("a new certificate");
    assert_ne!(second, first);
    assert_eq!(
        std::fs::read(first_home.join("shop.pem")).expect("the first one is kept"),
        first
    );
    let log = std::fs::read_to_string(dir.path().join("switch.log")).expect("log");
    assert!(log.contains("ACME account created"), "{log}");
    assert!(log.contains("ACME order started"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_order_leaves_other_sites_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Held while Pebble picks its ports (see issue_with).
    let held: [std::net::TcpListener; 2] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
    let ports = (port(&held[0]), port(&held[1]));
    // Pebble validates HTTP-01 on a port nobody listens on: the order must fail.
    let pebble = pebble(&dir.path().join("pebble"), free_port(), ports.1);
    write_config(
        dir.path(),
        &pebble,
        r#"["http-01"]"#,
        ports,
        "[[site]]\nname = \"dev\"\nhosts = [\"dev.example.test\"]\ntls = \"internal\"\nrespond = { body = \"dev\" }\n[[site]]\nname = \"shop\"\nhosts = [\"shop.example.test\"]\ntls = \"acme\"\nrespond = { body = \"shop\" }\n",
    );
    drop(held);
    let _portico = portico(dir.path(), "portico.log");
    wait_port(ports.1, "portico");
    let start = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(dir.path().join("portico.log")).unwrap_or_default();
        if log.contains("ACME order failed") {
            break log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the order never failed:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The CA's problem document is in the log line.
    assert!(log.contains("urn:ietf:params:acme:error:"), "{log}");
    served(
        ports.1,
        "dev.example.test",
        &["dev.example.test"],
        dir.path(),
        "portico.log",
    )
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.1));
    let refused = connect(addr, &Opts::sni("shop.example.test"))
        .await
        .expect_err("a site without its certificate must be refused at the handshake");
    assert_eq!(
        crate::support::client::alert(&refused),
        Some(rustls::AlertDescription::UnrecognisedName),
        "with the alert that says the name is not served (yet)"
    );
    assert!(!acme_home(dir.path()).join("shop.pem").exists());
    // The operator sees why: the failure with the CA's problem document, and when the task
    // tries again (backoff).
    let start = Instant::now();
    let entry = loop {
        let entry = renewal::acme_entry(&renewal::certs_json(dir.path()), "shop");
        if entry["acme"]["state"] == "backoff" {
            break entry;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no backoff status: {entry:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(entry["certificate"].is_null());
    assert!(entry["pending"].is_string(), "{entry:#}");
    assert!(entry["next_renewal"].is_string(), "{entry:#}");
    assert_eq!(entry["acme"]["rule"], "retry");
    let problem = &entry["acme"]["last_error"]["problem"];
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:ietf:params:acme:error:")),
        "{entry:#}"
    );
    let out = Command::new(BIN)
        .args(["certs", "-c"])
        .arg(dir.path().join("portico.toml"))
        .output()
        .expect("portico certs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last order failed"), "{text}");
    assert!(
        text.contains("ACME problem: urn:ietf:params:acme:error:"),
        "{text}"
    );
    // The other site is not affected.
    let dev = doc_entry(&renewal::certs_json(dir.path()), "dev");
    assert!(
        dev["pending"].is_null() && dev["certificate"].is_object(),
        "{dev:#}"
    );
}

/// The folder where Portico keeps the ACME files (account, certificates, status) of the
/// directory configured in `dir/portico.toml`.
pub(crate) fn acme_home(dir: &Path) -> PathBuf {
    let (config, report) = portico::config::Config::load(&dir.join("portico.toml"));
    let config = config.unwrap_or_else(|| panic!("{report}"));
    portico::acme::home(&config).expect("an [acme] table")
}

fn doc_entry(doc: &serde_json::Value, site: &str) -> serde_json::Value {
    doc["certificates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["sites"][0] == site).cloned())
        .unwrap_or_else(|| panic!("no entry for {site}: {doc:#}"))
}
