//! On-demand TLS: the catch-all site with `tls = { acme = true, on_demand = { ... } }`.
//! A real Pebble issues; the permission endpoint is the user's own service, so a small
//! HTTP server in the test is the real thing (it counts what it is asked).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::acme::{listens, pebble_resolving, portico, write_config_with};
use crate::support::admin::Logged;
use crate::support::client::{alert, connect, Opts};
use crate::support::pki::Pki;
use crate::support::{eventually, free_port};

/// What the permission endpoint does for one name.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    Garbage,
    Hang,
}

/// The permission endpoint: answers by name, counts the questions per name.
struct Endpoint {
    port: u16,
    asked: Arc<Mutex<HashMap<String, usize>>>,
}

impl Endpoint {
    async fn start(answer: fn(&str) -> Reply) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let asked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counts = asked.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let target = text.split(' ').nth(1).unwrap_or("");
                    let domain = target
                        .split_once("?domain=")
                        .map(|(_, d)| d.to_string())
                        .unwrap_or_default();
                    *counts
                        .lock()
                        .expect("lock")
                        .entry(domain.clone())
                        .or_default() += 1;
                    match answer(&domain) {
                        Reply::Status(code) => {
                            let response = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            let _ = tcp.write_all(response.as_bytes()).await;
                        }
                        Reply::Garbage => {
                            let _ = tcp.write_all(b"\x00\xffnot http at all\r\n\r\n").await;
                        }
                        Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Endpoint { port, asked }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/allowed", self.port)
    }

    fn asked(&self, name: &str) -> usize {
        self.asked
            .lock()
            .expect("lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

/// The catch-all site ordering on demand, asking `permission`.
fn catch_all(permission: &str, wait: &str, extra: &str) -> String {
    format!(
        "[[site]]\nname = \"customers\"\nhosts = [\"*\"]\n\
         tls = {{ acme = true, on_demand = {{ permission = \"{permission}\", wait = \"{wait}\"{extra} }} }}\n\
         respond = {{ body = \"customers\" }}\n"
    )
}

/// The admin socket's /metrics.
fn metrics(dir: &Path) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(dir.join("state/admin.sock"))
        .arg("http://localhost/metrics")
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_is_ordered_and_served_a_refused_one_is_never_ordered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let endpoint = Endpoint::start(|name| match name {
        "shop.customer.test" | "second.customer.test" => Reply::Status(200),
        _ => Reply::Status(403),
    })
    .await;
    let pki = Pki::new(&dir.join("pki"));
    let certs = dir.join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    pki.put_pair(&certs, "pooled", "pooled", &["pooled.customer.test"]);
    let sites = format!(
        "[[certificate]]\ndir = \"certs\"\n{}",
        catch_all(&endpoint.url(), "3s", ", orders_per_hour = 1")
    );
    let (pebble, ports, mut node) =
        start(dir, &sites, r#""externalAccountBindingRequired": false"#);
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.1));

    // A name with a pool certificate never reaches the endpoint.
    let (_, presented) = connect(addr, &Opts::sni("pooled.customer.test"))
        .await
        .expect("pooled name served");
    assert_eq!(presented.sans, ["pooled.customer.test"]);

    // The allowed name: the first handshake waits for the order; if Pebble is slower than
    // the wait, the next try gets it.
    let presented = served(addr, "shop.customer.test", dir).await;
    assert_eq!(presented.sans, ["shop.customer.test"]);
    assert_eq!(endpoint.asked("shop.customer.test"), 1);

    // A refused name: unrecognized_name every time, one question (the cache), no order.
    for _ in 0..5 {
        let Err(e) = connect(addr, &Opts::sni("scanner.customer.test")).await else {
            panic!("a refused name was served");
        };
        assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
    }
    assert_eq!(endpoint.asked("scanner.customer.test"), 1);
    assert_eq!(endpoint.asked("pooled.customer.test"), 0);
    let text = metrics(dir);
    let series = |s: &str| value(&text, s);
    assert_eq!(
        series("portico_on_demand_orders_total{outcome=\"issued\"}"),
        1,
        "{text}"
    );
    assert_eq!(
        series("portico_on_demand_orders_total{outcome=\"failed\"}"),
        0
    );
    assert_eq!(
        series("portico_on_demand_permission_lookups_total{answer=\"yes\"}"),
        1
    );
    assert_eq!(
        series("portico_on_demand_permission_lookups_total{answer=\"no\"}"),
        1
    );
    assert!(
        series("portico_on_demand_permission_cache_hits_total") >= 4,
        "{text}"
    );
    // Stored where a restart finds it: the certificate store.
    assert!(dir
        .join("state/certificates/on-demand.shop.customer.test.pem")
        .exists());

    // explain tells a refused name from an unknown one (over the running server).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["explain", "--live", "-c"])
        .arg(dir.join("portico.toml"))
        .arg("scanner.customer.test")
        .output()
        .expect("explain");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("refused it (cached)"), "{said}");

    // orders_per_hour = 1: a second allowed name waits in the queue (and its handshake
    // is refused after the wait), it is not ordered.
    let Err(e) = connect(addr, &Opts::sni("second.customer.test")).await else {
        panic!("a second order within the hour");
    };
    assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
    let text = metrics(dir);
    assert_eq!(value(&text, "portico_on_demand_orders_queued"), 1, "{text}");
    assert_eq!(
        value(&text, "portico_on_demand_orders_total{outcome=\"issued\"}"),
        1
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["explain", "--live", "-c"])
        .arg(dir.join("portico.toml"))
        .arg("second.customer.test")
        .output()
        .expect("explain");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("its order is queued"), "{said}");

    // After a restart, with Pebble gone, the stored certificate serves without a question.
    drop(node);
    drop(pebble);
    node = portico(dir, "restart.log");
    assert!(listens(&mut node, ports.1), "{}", log(dir));
    let (_, presented) = connect(addr, &Opts::sni("shop.customer.test"))
        .await
        .expect("served after a restart");
    assert_eq!(presented.sans, ["shop.customer.test"]);
    assert_eq!(endpoint.asked("shop.customer.test"), 1);
    drop(node);
}

/// Pebble (with `pebble_extra`) and Portico serving `sites`, on ports chosen before
/// Pebble starts (it validates on them).
fn start(
    dir: &Path,
    sites: &str,
    pebble_extra: &str,
) -> (crate::acme::Pebble, (u16, u16), crate::support::Running) {
    start_resolving(dir, sites, pebble_extra, "127.0.0.1")
}

/// [`start`] with Pebble resolving every name to `ip`.
fn start_resolving(
    dir: &Path,
    sites: &str,
    pebble_extra: &str,
    ip: &str,
) -> (crate::acme::Pebble, (u16, u16), crate::support::Running) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let hold = |_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let held: [std::net::TcpListener; 2] = std::array::from_fn(hold);
        let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
        let ports = (port(&held[0]), port(&held[1]));
        let pebble = pebble_resolving(&dir.join("pebble"), ports.0, ports.1, pebble_extra, ip);
        write_config_with(dir, &pebble, r#"["tls-alpn-01"]"#, "", ports, sites);
        drop(held);
        let mut node = portico(dir, "portico.log");
        if listens(&mut node, ports.1) {
            return (pebble, ports, node);
        }
        assert!(attempt < 3, "portico did not start: {}", log(dir));
    }
}

/// Connects until `name` is served (each refusal must be unrecognized_name).
async fn served(addr: SocketAddr, name: &str, dir: &Path) -> crate::support::client::Presented {
    let start = Instant::now();
    loop {
        match connect(addr, &Opts::sni(name)).await {
            Ok((_, presented)) => return presented,
            Err(e) => {
                assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "never served: {}",
                    log(dir)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_certificate_is_renewed_before_it_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let endpoint = Endpoint::start(|_| Reply::Status(200)).await;
    let sites = catch_all(&endpoint.url(), "5s", "");
    // 30-second certificates: renewed when 10 s are left.
    let (_pebble, ports, _node) = start(
        dir,
        &sites,
        r#""externalAccountBindingRequired": false, "certificateValidityPeriod": 30"#,
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.1));
    let first = served(addr, "renew.customer.test", dir).await;
    let start = Instant::now();
    let renewed = loop {
        let (_, now) = connect(addr, &Opts::sni("renew.customer.test"))
            .await
            .expect("served while it is renewed");
        if now.serial != first.serial {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never renewed: {}",
            log(dir)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(renewed.sans, ["renew.customer.test"]);
    let text = metrics(dir);
    assert!(
        value(&text, "portico_on_demand_orders_total{outcome=\"issued\"}") >= 2,
        "{text}"
    );
    // The renewal took the cached yes.
    assert_eq!(endpoint.asked("renew.customer.test"), 1);
    assert!(log(dir).contains("due for renewal"));
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("portico.log")).unwrap_or_default()
}

/// A configuration with the catch-all site and an `[acme]` table that is never asked
/// (nothing is allowed, so nothing is ordered).
fn no_order_config(dir: &Path, port: u16, permission: &str) -> std::path::PathBuf {
    let config = dir.join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[acme]\ndirectory = \"https://127.0.0.1:1/dir\"\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n{}",
            catch_all(permission, "10s", ", refused_ttl = \"10m\"")
        ),
    )
    .expect("write");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_permission_endpoint_down_is_a_no_with_a_log_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = free_port();
    let port = free_port();
    let config = no_order_config(
        dir.path(),
        port,
        &format!("http://127.0.0.1:{closed}/allowed"),
    );
    let node = Logged::serve(&config);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    eventually("serving", || std::net::TcpStream::connect(addr).ok());
    for _ in 0..3 {
        let Err(e) = connect(addr, &Opts::sni("down.customer.test")).await else {
            panic!("served without permission");
        };
        assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
    }
    let line = node.line_containing("the permission endpoint did not answer");
    assert!(line.contains("down.customer.test"), "{line}");
    let text = metrics(dir.path());
    // Asked once: "no answer" is cached too (for a shorter time than a no).
    assert_eq!(
        value(
            &text,
            "portico_on_demand_permission_lookups_total{answer=\"error\"}"
        ),
        1,
        "{text}"
    );
    assert_eq!(
        value(&text, "portico_on_demand_orders_total{outcome=\"issued\"}"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_silence_from_the_endpoint_is_a_no_and_other_names_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    pki.put_pair(&certs, "pooled", "pooled", &["pooled.customer.test"]);
    let endpoint = Endpoint::start(|name| match name {
        "garbage.customer.test" => Reply::Garbage,
        "silent.customer.test" => Reply::Hang,
        _ => Reply::Status(403),
    })
    .await;
    let port = free_port();
    let config = no_order_config(dir.path(), port, &endpoint.url());
    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(
        &config,
        text.replace("[[site]]", "[[certificate]]\ndir = \"certs\"\n[[site]]"),
    )
    .expect("write");
    let node = Logged::serve(&config);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    eventually("serving", || std::net::TcpStream::connect(addr).ok());
    // A silent endpoint holds its handshake (at most the look-up's timeout), not others.
    let silent =
        tokio::spawn(async move { connect(addr, &Opts::sni("silent.customer.test")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, presented) = connect(addr, &Opts::sni("pooled.customer.test"))
        .await
        .expect("a pooled name is served meanwhile");
    assert_eq!(presented.sans, ["pooled.customer.test"]);
    let Err(e) = connect(addr, &Opts::sni("garbage.customer.test")).await else {
        panic!("served on a garbage answer");
    };
    assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
    let Err(e) = silent.await.expect("join") else {
        panic!("served on no answer");
    };
    assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
    node.line_containing("did not answer in time");
    let line = node.line_containing("garbage.customer.test");
    assert!(line.contains("did not answer"), "{line}");
    assert_eq!(endpoint.asked("pooled.customer.test"), 0);

    // A flood of refused names: one question each, then the cache; no order.
    for round in 0..2 {
        for i in 0..20 {
            let name = format!("n{i}.flood.test");
            assert!(connect(addr, &Opts::sni(&name)).await.is_err(), "{round}");
        }
    }
    for i in 0..20 {
        assert_eq!(endpoint.asked(&format!("n{i}.flood.test")), 1);
    }
    let text = metrics(dir.path());
    assert_eq!(
        value(
            &text,
            "portico_on_demand_permission_lookups_total{answer=\"no\"}"
        ),
        20,
        "{text}"
    );
    assert_eq!(
        value(&text, "portico_on_demand_orders_total{outcome=\"issued\"}")
            + value(&text, "portico_on_demand_orders_total{outcome=\"failed\"}"),
        0
    );
}

/// In a fleet: the node a client asks orders, under the fleet's lock for the name; Pebble
/// validates at the other node, which answers from etcd; the pair goes through etcd to
/// the other node, which serves it without asking the endpoint or ordering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_one_node_orders_and_every_node_serves_it() {
    use crate::cluster_acme::{log, logs, Fleet};
    const NAME: &str = "fleet.customer.test";
    let endpoint = Endpoint::start(|_| Reply::Status(200)).await;
    // Pebble resolves every name to node a; node b is asked, so b orders.
    let fleet = Fleet::new(r#"["tls-alpn-01"]"#, "127.0.0.2");
    let start = |name: &str, ip: &str| {
        fleet.configure_sites(name, ip, &catch_all(&endpoint.url(), "10s", ""));
        fleet.serve(name, ip)
    };
    let a = start("a", "127.0.0.2");
    let b = start("b", "127.0.0.3");
    let nodes = || logs(&[("a", &a), ("b", &b)]);
    let at = |ip: [u8; 4]| SocketAddr::from((ip, fleet.ports.1));
    let t = Instant::now();
    let from_b = loop {
        match connect(at([127, 0, 0, 3]), &Opts::sni(NAME)).await {
            Ok((_, presented)) => break presented,
            Err(e) => {
                assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
                assert!(t.elapsed() < Duration::from_secs(120), "{}", nodes());
            }
        }
    };
    assert_eq!(from_b.sans, [NAME]);
    // Node a installs it from etcd (before any handshake there could ask or order).
    a.line_containing(&format!("fleet PUT certificates/on-demand.{NAME}"));
    let (_, from_a) = connect(at([127, 0, 0, 2]), &Opts::sni(NAME))
        .await
        .unwrap_or_else(|e| panic!("node a: {e}\n{}", log(&a)));
    assert_eq!(from_a.sha256, from_b.sha256);
    assert_eq!(endpoint.asked(NAME), 1, "{}", nodes());
    assert_eq!(fleet.pebble_orders(), 1);
    let issued = |node: &str| {
        value(
            &metrics(&fleet.node_dir(node)),
            "portico_on_demand_orders_total{outcome=\"issued\"}",
        )
    };
    assert_eq!((issued("a"), issued("b")), (0, 1));
    // etcd holds the pair (its key sealed), where a new node would find it.
    let keys: Vec<String> = fleet.stored().into_iter().map(|(k, _)| k).collect();
    assert!(
        keys.iter()
            .any(|k| k.ends_with(&format!("certificates/on-demand.{NAME}.pem"))),
        "{keys:?}"
    );
}

/// An order that fails (Pebble validates at an address where nothing listens) backs the
/// name off: later handshakes within the backoff order nothing, and explain says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_order_backs_the_name_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let endpoint = Endpoint::start(|_| Reply::Status(200)).await;
    let sites = catch_all(&endpoint.url(), "3s", "");
    let (pebble, ports, _node) = start_resolving(
        dir,
        &sites,
        r#""externalAccountBindingRequired": false"#,
        "127.0.0.9",
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.1));
    let name = "unreachable.customer.test";
    let Err(e) = connect(addr, &Opts::sni(name)).await else {
        panic!("served without a certificate");
    };
    assert_eq!(alert(&e), Some(AlertDescription::UnrecognisedName), "{e}");
    let failed = || {
        value(
            &metrics(dir),
            "portico_on_demand_orders_total{outcome=\"failed\"}",
        )
    };
    eventually("the order's failure", || (failed() == 1).then_some(()));
    assert!(log(dir).contains("on-demand: order failed"), "{}", log(dir));
    for _ in 0..3 {
        assert!(connect(addr, &Opts::sni(name)).await.is_err());
    }
    assert_eq!(failed(), 1, "no new order within the backoff");
    let orders = std::fs::read_to_string(dir.join("pebble/pebble.log"))
        .unwrap_or_default()
        .matches("Added order")
        .count();
    assert_eq!(orders, 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["explain", "--live", "-c"])
        .arg(dir.join("portico.toml"))
        .arg(name)
        .output()
        .expect("explain");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("backing off"), "{said}");
    assert_eq!(endpoint.asked(name), 1);
    drop(pebble);
}
