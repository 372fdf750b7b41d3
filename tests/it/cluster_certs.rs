//! The fleet's local CA and the admin API's certificates, with real processes: three etcd
//! members and Portico nodes sharing a prefix and a cluster key, each on its own port.
//! Every node's `tls = "internal"` leaf chains to one CA (node a's, the first to start); a
//! certificate PUT on one node is served by the others within 2 s, replaced on another,
//! deleted on a third and gone everywhere (its host falls back to the pool's wildcard); a
//! pair a node held before it joined is offered to the fleet, and a node started with an
//! empty state_dir serves it from etcd; a node with another cluster key installs nothing of
//! the fleet's; a pair whose key does not open is installed nowhere; a pair deleted while
//! a node was down is removed there when it returns; etcd
//! holds no private key in clear; a PUT or DELETE while etcd is away is 503 and changes
//! nothing; and a node restarted then serves the fleet's certificates and CA from its files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portico::store::ClusterKey;

use crate::support::admin::{request, request_body, up, Answer, Logged, To};
use crate::support::client::{connect, Opts};
use crate::support::etcd::EtcdCluster;
use crate::support::free_port;
use crate::support::pki::{Key, Pki, Validity};

const PREFIX: &str = "/portico/certs";

struct Fleet {
    dir: tempfile::TempDir,
    etcd: EtcdCluster,
    pki: Pki,
    /// The pool's wildcard for `*.x.test`, every node's fallback.
    pool: String,
}

/// One node: its directory, https port and admin socket.
struct Node {
    name: &'static str,
    dir: PathBuf,
    port: u16,
    logged: Logged,
}

impl Node {
    fn admin(&self) -> To {
        To::Unix(self.dir.join("state/admin.sock"))
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        self.logged.stderr.lock().expect("lock").clone()
    }

    fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/ca.pem")).unwrap_or_default()
    }
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&dir.path().join("pki"));
        let pool = pki.pool(&[("wildcard", &["*.x.test"])]);
        Fleet {
            etcd: EtcdCluster::start(3),
            dir,
            pki,
            pool,
        }
    }

    /// A key file holding `byte` 32 times, mode 0600.
    fn key_file(&self, byte: u8) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(format!("cluster-{byte}.key"));
        std::fs::write(&path, [byte; 32]).expect("key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts node `name`: an internal site `dev.test`, a pool site for `app.x.test` and
    /// `old.x.test`, the admin socket, the fleet with cluster key `key`.
    fn start(&self, name: &'static str, key: u8) -> Node {
        self.start_with(name, key, "")
    }

    /// [`Fleet::start`] with more hosts for the pool site (`, "h1", "h2"`).
    fn start_with(&self, name: &'static str, key: u8, more_hosts: &str) -> Node {
        let dir = self.node_dir(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let port = free_port();
        let file = dir.join("portico.toml");
        std::fs::write(
            &file,
            format!(
                "state_dir = \"state\"\n\
                 [[listener]]\naddress = \"127.0.0.1:{port}\"\n{}\
                 [[site]]\nname = \"dev\"\nhosts = [\"dev.test\"]\ntls = \"internal\"\nrespond = {{ body = \"dev\" }}\n\
                 [[site]]\nname = \"app\"\nhosts = [\"app.x.test\", \"old.x.test\"{more_hosts}]\nrespond = {{ body = \"app\" }}\n\
                 [cluster]\netcd = {}\nprefix = \"{PREFIX}\"\nnode = \"{name}\"\nkey_file = \"{}\"\n",
                self.pool,
                self.etcd.toml_list(),
                self.key_file(key).display()
            ),
        )
        .expect("config");
        let logged = Logged::serve(&file);
        let node = Node {
            name,
            dir,
            port,
            logged,
        };
        crate::support::eventually(&format!("node {name} listening"), || {
            std::net::TcpStream::connect(node.addr()).ok()
        });
        node
    }

    /// A leaf for `sans` from the test PKI as one PEM body (chain, then key), and its serial.
    fn body(&self, stem: &str, sans: &[&str]) -> (String, String) {
        let (cert, key) = self.pki.leaf(stem, sans, Key::Ecdsa, Validity::Current);
        let (cert, key) = (read(&cert), read(&key));
        let serial = serial(&cert);
        (cert + &key, serial)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The serial number of the first certificate in a PEM text, as the client reports it.
fn serial(pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("a cert");
    let (_, x) = x509_parser::parse_x509_certificate(&der).expect("parse");
    x.raw_serial_as_string()
}

/// The serial `node` presents for `sni`, if it completes a handshake within 5 s.
async fn served(node: &Node, sni: &str) -> Option<String> {
    let opts = Opts::sni(sni);
    let connecting = connect(node.addr(), &opts);
    let (_, presented) = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .ok()?
        .ok()?;
    Some(presented.serial)
}

/// Waits (30 s at most) until every node presents `serial` for `sni`; how long the slowest
/// took from `since`.
async fn all_serve(nodes: &[&Node], sni: &str, serial: &str, since: Instant) -> Duration {
    let mut slowest = Duration::ZERO;
    for node in nodes {
        loop {
            if served(node, sni).await.as_deref() == Some(serial) {
                slowest = slowest.max(since.elapsed());
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "node {} never presented {serial} for {sni} (it presents {:?}); its log:\n{}",
                node.name,
                served(node, sni).await,
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    slowest
}

/// Whether a client that trusts only `ca_pem` verifies `node`'s certificate for `dev.test`.
async fn verifies(node: &Node, ca_pem: &str) -> bool {
    use rustls::pki_types::pem::PemObject;
    let root = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .expect("the CA certificate");
    let opts = Opts {
        root: Some(root),
        ..Opts::sni("dev.test")
    };
    connect(node.addr(), &opts).await.is_ok()
}

/// Waits (30 s at most) until a client trusting only `ca_pem` verifies `node`.
async fn eventually_verifies(node: &Node, ca_pem: &str) {
    let start = Instant::now();
    while !verifies(node, ca_pem).await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node {} never chained to the fleet's CA; its log:\n{}",
            node.name,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put(node: &Node, name: &str, body: &str) -> Answer {
    let to = node.admin();
    up(&to).await;
    let target = format!("/api/v1/certificates/{name}");
    request_body(&to, "PUT", &target, &[], body.to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ca_and_the_admin_certificates_are_the_fleets() {
    let mut fleet = Fleet::new();
    // Node a held an admin certificate before it joined the fleet: it offers it.
    let store = fleet.node_dir("a").join("state/certificates");
    std::fs::create_dir_all(&store).expect("store");
    let (old_cert, old_key) = fleet
        .pki
        .leaf("old", &["old.x.test"], Key::Ecdsa, Validity::Current);
    std::fs::copy(&old_cert, store.join("old.pem")).expect("copy");
    std::fs::copy(&old_key, store.join("old.key")).expect("copy");
    let old_serial = serial(&read(&old_cert));

    let a = fleet.start("a", 1);
    a.logged
        .line_containing("this node's local CA is the fleet's");
    let b = fleet.start("b", 1);
    let c = fleet.start("c", 1);

    // One CA: each node's leaf verifies against a's ca.pem, and every node keeps that CA.
    let ca = a.ca();
    assert!(ca.contains("BEGIN CERTIFICATE"), "a has a CA: {ca:?}");
    for node in [&a, &b, &c] {
        eventually_verifies(node, &ca).await;
        assert_eq!(node.ca(), ca, "node {} has the fleet's CA", node.name);
    }

    // The pair a held before it joined is every node's.
    let start = Instant::now();
    all_serve(&[&a, &b, &c], "old.x.test", &old_serial, start).await;

    // PUT on a: b and c serve it within 2 s.
    let (body, app1) = fleet.body("app1", &["app.x.test"]);
    let answer = put(&a, "app", &body).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let took = all_serve(&[&a, &b, &c], "app.x.test", &app1, Instant::now()).await;
    assert!(took < Duration::from_secs(2), "the fleet took {took:?}");

    // Replaced on b: a and c serve the new one within 2 s.
    let (body, app2) = fleet.body("app2", &["app.x.test"]);
    let answer = put(&b, "app", &body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let took = all_serve(&[&a, &b, &c], "app.x.test", &app2, Instant::now()).await;
    assert!(took < Duration::from_secs(2), "the fleet took {took:?}");

    // Deleted on c: gone everywhere, the host falls back to the pool's wildcard.
    let wildcard = serial(&read(&fleet.pki.dir.join("wildcard.pem")));
    let answer = request(&c.admin(), "DELETE", "/api/v1/certificates/app", &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let took = all_serve(&[&a, &b, &c], "app.x.test", &wildcard, Instant::now()).await;
    assert!(took < Duration::from_secs(2), "the fleet took {took:?}");
    for node in [&a, &b, &c] {
        let gone = node.dir.join("state/certificates/app.pem");
        assert!(!gone.exists(), "{} still has {}", node.name, gone.display());
    }

    // A node with an empty state_dir serves the fleet's certificates and CA from etcd.
    let (body, api) = fleet.body("api", &["app.x.test"]);
    assert_eq!(put(&b, "api", &body).await.status, 201);
    // Its configuration has a host only an admin certificate covers: without the fleet's
    // certificates before its first build it would not start.
    let (body, only) = fleet.body("only", &["only.y.test"]);
    assert_eq!(put(&b, "only", &body).await.status, 201);
    let d = fleet.start_with("d", 1, r#", "only.y.test""#);
    assert_eq!(served(&d, "only.y.test").await, Some(only));
    d.logged
        .line_containing("the fleet's certificates written before the first build");
    // Checked once, as they were written: its first build parses only the pool's wildcard,
    // not the three fleet pairs again.
    let loaded = d.logged.line_containing("pool certificates loaded");
    assert!(loaded.ends_with("certificates=4 parsed=1"), "{loaded}");
    let since = Instant::now();
    all_serve(&[&d], "old.x.test", &old_serial, since).await;
    all_serve(&[&d], "app.x.test", &api, since).await;
    eventually_verifies(&d, &ca).await;

    // A pair deleted while a node is down is removed there when it comes back, not offered
    // to the fleet again: that node's state_dir has synced with the fleet before.
    drop(b);
    let answer = request(&a.admin(), "DELETE", "/api/v1/certificates/old", &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    all_serve(&[&a, &c, &d], "old.x.test", &wildcard, Instant::now()).await;
    let b = fleet.start("b", 1);
    b.logged.line_containing("fleet DELETE certificates/old");
    all_serve(&[&b], "old.x.test", &wildcard, Instant::now()).await;
    assert!(!b.dir.join("state/certificates/old.pem").exists());
    let stored = fleet.etcd.dump(&format!("{PREFIX}/certificates/old"));
    assert!(stored.is_empty(), "old came back: {stored:?}");
    all_serve(&[&b], "app.x.test", &api, Instant::now()).await;

    // A node with another cluster key says so and installs nothing of the fleet's; its
    // PUT is refused (its key would seal nothing the fleet can open).
    let e = fleet.start("e", 2);
    e.logged.line_containing("is not the fleet's");
    assert_eq!(served(&e, "old.x.test").await, Some(wildcard.clone()));
    assert_eq!(served(&e, "app.x.test").await, Some(wildcard.clone()));
    assert_ne!(e.ca(), ca, "e keeps its own CA");
    assert!(!verifies(&e, &ca).await);
    let answer = put(&e, "mine", &fleet.body("mine", &["app.x.test"]).0).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(!e.dir.join("state/certificates/mine.pem").exists());

    // A pair in etcd whose key does not open is logged with its key and installed nowhere.
    let (bad, _) = fleet
        .pki
        .leaf("bad", &["bad.x.test"], Key::Ecdsa, Validity::Current);
    let bad = read(&bad);
    let bad_key = format!("{PREFIX}/certificates/bad.key");
    fleet
        .etcd
        .etcdctl(&["put", "--", &format!("{PREFIX}/certificates/bad.pem"), &bad])
        .expect("etcdctl put");
    fleet
        .etcd
        .etcdctl(&[
            "put",
            "--",
            &bad_key,
            "PSEAL1 not sealed with the fleet's key",
        ])
        .expect("etcdctl put");
    a.logged.line_containing(&format!("key={bad_key}"));
    for node in [&a, &b, &c, &d] {
        assert!(
            !node.dir.join("state/certificates/bad.pem").exists(),
            "{}",
            node.name
        );
    }
    fleet
        .etcd
        .etcdctl(&["del", "--prefix", &format!("{PREFIX}/certificates/bad.")])
        .expect("etcdctl del");

    // etcd holds every certificate's key sealed, and no private key in clear at all.
    let stored = fleet.etcd.dump(&format!("{PREFIX}/"));
    for expected in [
        "certificates/api.key",
        "certificates/api.pem",
        "ca/ca.pem",
        "ca/ca.key",
    ] {
        assert!(
            stored
                .iter()
                .any(|(k, _)| k == &format!("{PREFIX}/{expected}")),
            "{expected} is not in etcd: {:?}",
            stored.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
    }
    assert!(
        !stored.iter().any(|(k, _)| k.ends_with("/app.pem")),
        "app was deleted"
    );
    for (k, v) in &stored {
        assert!(
            !String::from_utf8_lossy(v).contains("PRIVATE KEY"),
            "{k} holds a private key in clear"
        );
        if k.ends_with(".key") {
            assert!(ClusterKey::is_sealed(v), "{k} is not sealed");
        }
    }

    // Every etcd member stopped: a PUT is 503 naming etcd, and nothing changed.
    for i in 0..3 {
        fleet.etcd.stop(i);
    }
    let (body, _) = fleet.body("late", &["app.x.test"]);
    let answer = put(&a, "late", &body).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains("etcd"), "{}", answer.body);
    assert!(!a.dir.join("state/certificates/late.pem").exists());
    assert_eq!(served(&a, "app.x.test").await, Some(api.clone()));
    // A DELETE too; the pair stays, here and on the wire.
    let answer = request(&a.admin(), "DELETE", "/api/v1/certificates/api", &[]).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(a.dir.join("state/certificates/api.pem").exists());
    assert_eq!(served(&a, "app.x.test").await, Some(api.clone()));

    // A node restarted while etcd is away serves the fleet's certificates and CA from its
    // own files.
    drop(c);
    let c = fleet.start("c", 1);
    assert_eq!(served(&c, "app.x.test").await, Some(api));
    assert!(verifies(&c, &ca).await, "c's leaf chains to the fleet's CA");
}

/// The lead's benchmark, as a test: node a starts with `PORTICO_FLEET_CERTS_N` (10,000)
/// pairs in its `state_dir/certificates` and offers them; node b, started with an empty
/// `state_dir`, serves them all from etcd after one rebuild. Prints how long each took and
/// asserts only correctness. `cargo test --release --test it cluster_certs -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "generates many certificates; run on demand"]
async fn a_cold_node_serves_every_admin_certificate_of_the_fleet() {
    let n: usize = std::env::var("PORTICO_FLEET_CERTS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let fleet = Fleet::new();
    let started = Instant::now();
    let store = fleet.node_dir("a").join("state/certificates");
    std::fs::create_dir_all(&store).expect("store");
    let mut serials = Vec::with_capacity(n);
    for i in 0..n {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![format!("c{i}.x.test")])
            .expect("params")
            .self_signed(&key)
            .expect("sign");
        std::fs::write(store.join(format!("c{i}.pem")), cert.pem()).expect("write");
        std::fs::write(store.join(format!("c{i}.key")), key.serialize_pem()).expect("write");
        serials.push(serial(&cert.pem()));
    }
    eprintln!("generated {n} pairs in {:?}", started.elapsed());
    let started = Instant::now();
    let hosts: String = (0..n).map(|i| format!(", \"c{i}.x.test\"")).collect();
    let a = fleet.start_with("a", 1, &hosts);
    a.logged
        .line_containing("admin certificates offered to the fleet");
    eprintln!(
        "node a offered them {:?} after its start",
        started.elapsed()
    );
    let started = Instant::now();
    let b = fleet.start_with("b", 1, &hosts);
    let listening = started.elapsed();
    b.logged
        .line_containing("the fleet's certificates written before the first build");
    let sample: Vec<usize> = (0..n).step_by((n / 20).max(1)).chain([n - 1]).collect();
    for &i in &sample {
        all_serve(&[&b], &format!("c{i}.x.test"), &serials[i], started).await;
    }
    eprintln!(
        "node b listened after {listening:?} and served every sampled certificate after {:?}",
        started.elapsed()
    );
    for line in b
        .log()
        .lines()
        .filter(|l| l.contains("cluster:") || l.contains("reloaded"))
    {
        eprintln!("b: {line}");
    }
    let held = dir_pairs(&b.dir.join("state/certificates"));
    assert_eq!(held, n, "node b holds every pair");
}

fn dir_pairs(dir: &Path) -> usize {
    portico::tls::dir::list(dir).pairs.len()
}
