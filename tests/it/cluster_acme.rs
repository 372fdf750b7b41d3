//! ACME in a fleet, with real processes: three etcd members, Portico nodes on 127.0.0.2,
//! .3 and .4 (the same ports on each), and Pebble, whose DNS server resolves the site's name
//! to one node only, not the one that orders: that node answers the challenge from etcd.
//! One order at Pebble, the same certificate on every node, a fourth node with an empty
//! state_dir serving it from etcd, no private key in clear in etcd, a node restarted
//! without etcd serving from its files; a holder killed mid-order, after which another
//! node completes it; and a renewal that is one order for the fleet.
//!
//! Which node orders is made certain by the test itself holding the site's fleet lock
//! (`etcdctl lock`, the same etcd lock service) while the nodes queue behind it in a known
//! order: the first to queue is the first to get it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portico::store::ClusterKey;

use crate::acme::{acme_home, pebble_resolving, Pebble};
use crate::support::admin::Logged;
use crate::support::client::{connect, Opts};
use crate::support::etcd::{EtcdCluster, ETCDCTL};
use crate::support::free_port;

pub(crate) const PREFIX: &str = "/portico/fleet";
pub(crate) const HOST: &str = "shop.example.test";
pub(crate) const WAITING: &str = "waiting for the fleet's ACME order lock";

pub(crate) struct Fleet {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) etcd: EtcdCluster,
    pub(crate) pebble: Pebble,
    /// The http and https ports, the same on every node's address.
    pub(crate) ports: (u16, u16),
    pub(crate) key: PathBuf,
    challenges: &'static str,
}

impl Fleet {
    /// etcd, and Pebble resolving every name to `dns_ip`.
    pub(crate) fn new(challenges: &'static str, dns_ip: &str) -> Fleet {
        Fleet::with_pebble(challenges, dns_ip, "")
    }

    /// [`Fleet::new`] with `extra` fields in Pebble's configuration.
    pub(crate) fn with_pebble(challenges: &'static str, dns_ip: &str, extra: &str) -> Fleet {
        let etcd = EtcdCluster::start(3);
        let dir = tempfile::tempdir().expect("tempdir");
        // The nodes listen on 127.0.0.2 and up; ports free on 127.0.0.1 are free there too.
        let ports = (free_port(), free_port());
        let pebble = pebble_resolving(
            &dir.path().join("pebble"),
            ports.0,
            ports.1,
            &format!(r#""externalAccountBindingRequired": false{extra}"#),
            dns_ip,
        );
        let key = dir.path().join("cluster.key");
        std::fs::write(&key, [7u8; 32]).expect("key file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Fleet {
            dir,
            etcd,
            pebble,
            ports,
            key,
            challenges,
        }
    }

    pub(crate) fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes node `name`'s configuration: listeners on `ip`, the one ACME site, the fleet.
    pub(crate) fn configure(&self, name: &str, ip: &str) {
        self.configure_sites(
            name,
            ip,
            &format!(
                "[[site]]\nname = \"shop\"\nhosts = [\"{HOST}\"]\ntls = \"acme\"\nrespond = {{ body = \"shop\" }}\n"
            ),
        );
    }

    /// [`Fleet::configure`] with `sites` (TOML) in place of the one ACME site.
    pub(crate) fn configure_sites(&self, name: &str, ip: &str, sites: &str) {
        let dir = self.node_dir(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        std::fs::write(
            dir.join("portico.toml"),
            format!(
                "state_dir = \"state\"\n\
                 [acme]\ndirectory = \"{}\"\nemail = \"ops@example.test\"\nca = \"{}\"\nchallenges = {}\n\
                 [[listener]]\naddress = \"{ip}:{}\"\nkind = \"http\"\n\
                 [[listener]]\naddress = \"{ip}:{}\"\n{sites}\
                 [cluster]\netcd = {}\nprefix = \"{PREFIX}\"\nnode = \"{name}\"\nkey_file = \"{}\"\n",
                self.pebble.directory,
                self.pebble.ca.display(),
                self.challenges,
                self.ports.0,
                self.ports.1,
                self.etcd.toml_list(),
                self.key.display()
            ),
        )
        .expect("config");
    }

    pub(crate) fn start(&self, name: &str, ip: &str) -> Logged {
        self.configure(name, ip);
        self.serve(name, ip)
    }

    /// Starts node `name` from the configuration written for it, once it listens on `ip`.
    pub(crate) fn serve(&self, name: &str, ip: &str) -> Logged {
        let node = Logged::serve(&self.node_dir(name).join("portico.toml"));
        wait_listening(ip, self.ports.1);
        node
    }

    /// The etcd key of the site's order lock (as `Etcd::lock` names it).
    pub(crate) fn lock_name(&self, node: &str) -> String {
        let home = acme_home(&self.node_dir(node));
        let dir = home.file_name().expect("a folder").to_string_lossy();
        format!("{PREFIX}/locks/acme/{dir}/shop")
    }

    /// Takes the site's order lock as `etcdctl lock` (held until [`Fleet::release`]).
    pub(crate) fn hold_lock(&self, node: &str) -> (Child, String) {
        let mut child = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd.endpoints().join(",")))
            .args(["lock", &self.lock_name(node)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl lock");
        // It prints the lock's key once it holds it.
        use std::io::BufRead;
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("etcdctl lock answers");
        assert!(line.contains("/locks/acme/"), "etcdctl lock: {line:?}");
        (child, line.trim().to_string())
    }

    /// Nodes a, b and c on 127.0.0.2, .3 and .4, all waiting for the site's order lock
    /// (which this holds meanwhile), a first: a orders.
    pub(crate) fn start_three(&self) -> (Logged, Logged, Logged) {
        self.configure("a", "127.0.0.2");
        let test_lock = self.hold_lock("a");
        let a = self.start("a", "127.0.0.2");
        wait_log(&a, WAITING);
        let b = self.start("b", "127.0.0.3");
        let c = self.start("c", "127.0.0.4");
        wait_log(&b, WAITING);
        wait_log(&c, WAITING);
        self.release(test_lock);
        (a, b, c)
    }

    /// Lets go of a lock taken with [`Fleet::hold_lock`], at once: its key ends with its
    /// lease's id (hex), and revoking the lease ends the lock. (Signals are no good here:
    /// etcdctl 3.4 may exit on SIGINT without unlocking, and then the lock lasts until its
    /// session's 10 s TTL runs out, as long as the nodes' own wait: a race.)
    pub(crate) fn release(&self, (mut holder, key): (Child, String)) {
        let lease = key.rsplit('/').next().expect("a lease id");
        self.etcd
            .etcdctl(&["lease", "revoke", lease])
            .unwrap_or_else(|e| panic!("revoking the test's lock lease {lease}: {e}"));
        let _ = holder.kill();
        let _ = holder.wait();
    }

    pub(crate) fn pebble_orders(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("pebble/pebble.log"))
            .unwrap_or_default()
            .matches("Added order")
            .count()
    }

    /// Every key and value the fleet stored.
    pub(crate) fn stored(&self) -> Vec<(String, Vec<u8>)> {
        self.etcd.dump(&format!("{PREFIX}/"))
    }
}

pub(crate) fn wait_listening(ip: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {ip}:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn log(node: &Logged) -> String {
    node.stderr.lock().expect("lock").clone()
}

pub(crate) fn logs(nodes: &[(&str, &Logged)]) -> String {
    nodes
        .iter()
        .map(|(name, n)| format!("--- node {name}:\n{}", log(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until `node`'s log has `text` (30 s at most).
pub(crate) fn wait_log(node: &Logged, text: &str) {
    node.line_containing(text);
}

/// The SHA-256 of the certificate `ip` presents for the site, once it presents one.
pub(crate) async fn fingerprint(ip: &str, port: u16) -> Option<String> {
    let ip: IpAddr = ip.parse().expect("an address");
    // A node that does not answer is not serving (and must not hold the test up).
    let opts = Opts::sni(HOST);
    let connecting = connect(SocketAddr::new(ip, port), &opts);
    let (_, presented) = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .ok()?
        .ok()?;
    assert_eq!(presented.sans, vec![HOST.to_string()]);
    Some(presented.sha256)
}

/// Waits (up to `within`) until every address serves a certificate, and returns each one's.
pub(crate) async fn served_by_all(
    ips: &[&str],
    port: u16,
    within: Duration,
    nodes: &[(&str, &Logged)],
) -> Vec<(String, Instant)> {
    let start = Instant::now();
    let mut seen: Vec<Option<(String, Instant)>> = vec![None; ips.len()];
    while seen.iter().any(Option::is_none) {
        for (i, ip) in ips.iter().enumerate() {
            if seen[i].is_none() {
                seen[i] = fingerprint(ip, port).await.map(|f| (f, Instant::now()));
            }
        }
        assert!(
            start.elapsed() < within,
            "not every node served a certificate within {within:?}: {seen:?}\n{}",
            logs(nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.into_iter().flatten().collect()
}

/// The count of orders a node made, from its metrics (its admin socket).
pub(crate) fn orders_ok(node_dir: &Path) -> u64 {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--unix-socket"])
        .arg(node_dir.join("state/admin.sock"))
        .arg("http://localhost/metrics")
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("portico_acme_orders_total{outcome=\"ok\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_for_the_fleet_and_every_node_serves_it() {
    // Pebble validates at node c; node a orders.
    let fleet = Fleet::new(r#"["tls-alpn-01"]"#, "127.0.0.4");
    let (a, b, c) = fleet.start_three();
    let nodes = [("a", &a), ("b", &b), ("c", &c)];

    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let served = served_by_all(&ips, fleet.ports.1, Duration::from_secs(60), &nodes).await;
    let all = logs(&nodes);
    for (ip, (f, _)) in ips.iter().zip(&served) {
        assert_eq!(f, &served[0].0, "{ip} serves another certificate\n{all}");
    }
    // Watch, not poll: the last node served it within 2 s of the first.
    let first = served.iter().map(|(_, t)| *t).min().expect("three");
    let last = served.iter().map(|(_, t)| *t).max().expect("three");
    assert!(
        last - first < Duration::from_secs(2),
        "the nodes started serving {:?} apart\n{all}",
        last - first
    );

    // One order: node a's, the only one Pebble saw.
    let started = |n: &Logged| log(n).matches("ACME order started").count();
    assert_eq!(
        (started(&a), started(&b), started(&c)),
        (1, 0, 0),
        "orders per node\n{all}"
    );
    assert_eq!(fleet.pebble_orders(), 1, "orders Pebble received\n{all}");
    assert_eq!(
        ["a", "b", "c"].map(|n| orders_ok(&fleet.node_dir(n))),
        [1, 0, 0],
        "portico_acme_orders_total{{outcome=\"ok\"}} per node"
    );
    // Pebble validated at node c, which learned the answer from etcd.
    let c_log = log(&c);
    assert!(
        c_log.contains("ACME TLS-ALPN-01 answer from the fleet")
            && c_log.contains("answered an ACME TLS-ALPN-01 challenge"),
        "{all}"
    );
    assert!(!log(&a).contains("answered an ACME TLS-ALPN-01 challenge"));
    // b and c wrote the fleet's certificate into their own files, and say who ordered it.
    for n in ["b", "c"] {
        let home = acme_home(&fleet.node_dir(n));
        assert!(home.join("shop.pem").exists(), "node {n} has no local copy");
        crate::acme::assert_private(&home.join("shop.key"));
    }
    crate::support::eventually(
        "node b's `portico certs` naming the node that ordered",
        || {
            let out = Command::new(env!("CARGO_BIN_EXE_portico"))
                .args(["certs", "-c"])
                .arg(fleet.node_dir("b").join("portico.toml"))
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("fleet: issued by node a")
                .then_some(())
        },
    );

    // A fourth node with an empty state_dir serves the same certificate, from etcd alone.
    let d = fleet.start("d", "127.0.0.5");
    let nodes = [("a", &a), ("b", &b), ("c", &c), ("d", &d)];
    let d_served = served_by_all(
        &["127.0.0.5"],
        fleet.ports.1,
        Duration::from_secs(20),
        &nodes,
    )
    .await;
    assert_eq!(d_served[0].0, served[0].0, "{}", logs(&nodes));
    assert!(!log(&d).contains("ACME order started"), "{}", log(&d));
    assert_eq!(fleet.pebble_orders(), 1);

    // etcd holds no private key in clear: the account, the certificate key and every
    // challenge answer are sealed; what is not sealed is public.
    let stored = fleet.stored();
    let names: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.iter().any(|k| k.contains("/acme/accounts/"))
            && names.iter().any(|k| k.ends_with("/shop.key"))
            && names.iter().any(|k| k.ends_with("/shop.pem"))
            && names.iter().any(|k| k.contains("/acme/status/")),
        "{names:?}"
    );
    for (k, v) in &stored {
        let text = String::from_utf8_lossy(v);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{k} holds a private key in clear"
        );
        // Public by design: chains, statuses, and who is up and holds which lock.
        let public = k.ends_with(".pem")
            || k.contains("/acme/status/")
            || k.contains("/locks/")
            || k.contains("/holders/")
            || k.contains("/nodes/");
        assert!(
            public || v.is_empty() || ClusterKey::is_sealed(v),
            "{k} is not sealed"
        );
    }
    // The order's challenge answers are gone from etcd.
    assert!(
        !names.iter().any(|k| k.contains("/acme/challenges/")),
        "{names:?}"
    );

    // etcd goes away entirely: a node restarted meanwhile serves from its own files.
    let mut fleet = fleet;
    for i in 0..3 {
        fleet.etcd.stop(i);
    }
    drop(b);
    let b = fleet.start("b", "127.0.0.3");
    let nodes = [("b", &b)];
    let again = served_by_all(
        &["127.0.0.3"],
        fleet.ports.1,
        Duration::from_secs(20),
        &nodes,
    )
    .await;
    assert_eq!(again[0].0, served[0].0, "{}", log(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_completes_the_order_of_a_holder_that_died() {
    let fleet = Fleet::new(r#"["http-01"]"#, "127.0.0.4");
    let (a, b, c) = fleet.start_three();
    // Node a holds the lock and has published its answer: it dies before the CA is done.
    let start = Instant::now();
    while !log(&a).contains("ACME challenge ready") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node a never got to its challenge:\n{}",
            log(&a)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_log = {
        let mut a = a;
        let _ = a.running.0.kill();
        let _ = a.running.0.wait();
        log(&a)
    };
    let killed = Instant::now();
    assert!(!a_log.contains("ACME certificate stored"), "{a_log}");
    let nodes = [("b", &b), ("c", &c)];
    // The lock ends with a's lease (15 s); a waiting node takes it (within its next 10 s
    // wait) and orders again: some 30 s, given more on a loaded machine.
    let served = served_by_all(
        &["127.0.0.3", "127.0.0.4"],
        fleet.ports.1,
        Duration::from_secs(90),
        &nodes,
    )
    .await;
    assert_eq!(served[0].0, served[1].0, "{}", logs(&nodes));
    let all = logs(&nodes);
    let started = |n: &Logged| log(n).matches("ACME order started").count();
    assert_eq!(started(&b) + started(&c), 1, "one more order\n{all}");
    eprintln!("completed {:?} after the holder died", killed.elapsed());
    // The answer to the second order was served by c from etcd, or by c itself.
    assert!(
        log(&c).contains("/.well-known/acme-challenge/"),
        "Pebble validated at node c\n{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_is_one_order_and_every_node_serves_the_new_certificate() {
    // Certificates that live 30 s: every node plans the renewal for itself (20 s in, less
    // up to 2 s), and only the first one due orders; the others find it in etcd.
    let fleet = Fleet::with_pebble(
        r#"["tls-alpn-01"]"#,
        "127.0.0.4",
        r#", "certificateValidityPeriod": 30"#,
    );
    let (a, b, c) = fleet.start_three();
    let nodes = [("a", &a), ("b", &b), ("c", &c)];
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let first = served_by_all(&ips, fleet.ports.1, Duration::from_secs(60), &nodes).await;
    let issued = first[0].0.clone();
    // Every node comes to serve one new certificate, within 2 s of each other.
    let start = Instant::now();
    let mut seen: Vec<Option<(String, Instant)>> = vec![None; ips.len()];
    while seen.iter().any(Option::is_none) {
        for (i, ip) in ips.iter().enumerate() {
            if seen[i].is_none() {
                seen[i] = fingerprint(ip, fleet.ports.1)
                    .await
                    .filter(|f| *f != issued)
                    .map(|f| (f, Instant::now()));
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every node served a renewed certificate: {seen:?}\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed: Vec<(String, Instant)> = seen.into_iter().flatten().collect();
    let all = logs(&nodes);
    assert!(
        renewed.iter().all(|(f, _)| *f == renewed[0].0),
        "{renewed:?}\n{all}"
    );
    let at = |pick: fn(Instant, Instant) -> Instant| {
        renewed.iter().map(|(_, t)| *t).reduce(pick).expect("three")
    };
    assert!(
        at(Instant::max) - at(Instant::min) < Duration::from_secs(2),
        "{all}"
    );
    // The nodes due later did not order (their renewal times are within 2 s of the first).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = logs(&nodes);
    let started: usize = [&a, &b, &c]
        .iter()
        .map(|n| log(n).matches("ACME order started").count())
        .sum();
    assert_eq!(started, 2, "one order, one renewal\n{all}");
    assert_eq!(fleet.pebble_orders(), 2, "{all}");
}
