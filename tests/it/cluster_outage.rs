//! A fleet while etcd is away, with real processes (issue 14: "etcd unavailable"): three
//! etcd members, three Portico nodes on 127.0.0.2, .3 and .4 and Pebble, as in
//! `cluster_acme.rs`, whose harness this uses.
//!
//! One member down changes nothing: an order completes, one at Pebble, every node serves it
//! and tickets resume across nodes. All members down: every node goes on serving the same
//! certificate; one restarted meanwhile serves its ACME certificate from its own files and
//! resumes the fleet's tickets from its sealed copy; a renewal that comes due does not
//! order without the fleet's lock. etcd back: that renewal is one order, and every node
//! serves its result. And a node cut off from etcd while etcd compacts its history past
//! the node's watch reads the folder again and catches up with what changed meanwhile.
//! Below the node, the store's part: `Follow` resumes a broken watch from its revision and
//! reads the folder again only after a compaction; a holder whose lease ended writes
//! nothing through `Held::put_all_if_held`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portico::config::Cluster;
use portico::store::{Change, ClusterKey, Etcd, Follow, Followed};

use crate::cluster_acme::{fingerprint, log, logs, served_by_all, Fleet, HOST};
use crate::support::admin::Logged;
use crate::support::etcd::{EtcdCluster, Partition};
use crate::support::free_port;
use crate::support::pki::{Key, Pki, Validity};

const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
/// What a site task logs when it does not order for want of the fleet's lock.
const NO_LOCK: &str = "cannot take the fleet's ACME order lock";

/// One TLS 1.3 connection to `ip:port` by openssl, with one request for the site, which
/// must answer; `sess_in` offers a saved session. Whether the handshake resumed; the
/// session is saved to `sess_out`.
fn get(ip: &str, port: u16, sess_in: Option<&Path>, sess_out: &Path) -> bool {
    let mut cmd = Command::new("timeout");
    // -ign_eof: read until the server closes (after the response and its ticket).
    cmd.args([
        "20", "openssl", "s_client", "-tls1_3", "-ign_eof", "-connect",
    ])
    .arg(format!("{ip}:{port}"))
    .args(["-servername", HOST, "-sess_out"])
    .arg(sess_out);
    if let Some(s) = sess_in {
        cmd.arg("-sess_in").arg(s);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    use std::io::Write;
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes());
    let out = child.wait_with_output().expect("openssl ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("HTTP/1.1 200") && text.contains("\r\n\r\nshop"),
        "no answer from {ip}:{port}:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.contains("Reused, TLSv1.3")
}

/// Whether a fresh session from `from` resumes on `to`.
fn resumes(dir: &Path, from: &str, to: &str, port: u16) -> bool {
    let sess = dir.join(format!("sess-{from}-{to}.pem"));
    let _ = std::fs::remove_file(&sess);
    assert!(!get(from, port, None, &sess), "a first connection is new");
    get(to, port, Some(&sess), &dir.join("sess-again.pem"))
}

/// Waits (up to 20 s) for a session from `from` to resume on `to`.
fn eventually_resumes(dir: &Path, from: &str, to: &str, port: u16, nodes: &[(&str, &Logged)]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !resumes(dir, from, to, port) {
        assert!(
            Instant::now() < deadline,
            "a ticket from {from} never resumed on {to}\n{}",
            logs(nodes)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits (up to `within`) until `node`'s log has `text` at least `times` times.
async fn wait_logged(node: &Logged, text: &str, times: usize, within: Duration, name: &str) {
    let start = Instant::now();
    while log(node).matches(text).count() < times {
        assert!(
            start.elapsed() < within,
            "node {name} did not log {text:?} {times} times within {within:?}:\n{}",
            log(node)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn orders_started(nodes: &[&Logged]) -> usize {
    nodes
        .iter()
        .map(|n| log(n).matches("ACME order started").count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_serves_through_an_etcd_outage_and_renews_once_etcd_is_back() {
    // Certificates that live 60 s: every node plans its renewal 40 s in (less up to 4 s),
    // which comes while etcd is down.
    let mut fleet = Fleet::with_pebble(
        r#"["tls-alpn-01"]"#,
        "127.0.0.4",
        r#", "certificateValidityPeriod": 60"#,
    );
    let port = fleet.ports.1;
    let work: PathBuf = fleet.dir.path().to_path_buf();

    // (a) One etcd member down changes nothing: the first order completes, once.
    fleet.etcd.stop(0);
    let (a, b, c) = fleet.start_three();
    let nodes = [("a", &a), ("b", &b), ("c", &c)];
    let served = served_by_all(&IPS, port, Duration::from_secs(60), &nodes).await;
    let issued = served[0].0.clone();
    assert!(
        served.iter().all(|(f, _)| *f == issued),
        "{served:?}\n{}",
        logs(&nodes)
    );
    assert_eq!(fleet.pebble_orders(), 1, "{}", logs(&nodes));
    assert_eq!(orders_started(&[&a, &b, &c]), 1, "{}", logs(&nodes));
    eventually_resumes(&work, IPS[0], IPS[1], port, &nodes);
    eventually_resumes(&work, IPS[1], IPS[2], port, &nodes);

    // (b) Every member down: every node goes on serving the same certificate.
    fleet.etcd.stop(1);
    fleet.etcd.stop(2);
    let down = Instant::now();
    for ip in IPS {
        assert_eq!(
            fingerprint(ip, port).await.as_deref(),
            Some(issued.as_str()),
            "{ip} while etcd is down\n{}",
            logs(&nodes)
        );
        get(ip, port, None, &work.join("sess-down.pem"));
    }
    // A session node a issues now resumes on node b, restarted while etcd is down: b
    // serves its ACME certificate from its files and has the fleet's ticket keys from its
    // sealed copy.
    let from_a = work.join("sess-from-a.pem");
    get(IPS[0], port, None, &from_a);
    drop(b);
    let b = fleet.start("b", IPS[1]);
    let nodes = [("a", &a), ("b", &b), ("c", &c)];
    let again = served_by_all(&IPS[1..2], port, Duration::from_secs(20), &nodes).await;
    assert_eq!(again[0].0, issued, "{}", log(&b));
    assert!(
        get(IPS[1], port, Some(&from_a), &work.join("sess-b.pem")),
        "node a's ticket did not resume on node b restarted without etcd\n{}",
        log(&b)
    );
    assert!(
        log(&b).contains("cluster: session ticket keys installed"),
        "{}",
        log(&b)
    );

    // The renewal comes due on every node while etcd is down: none orders without the
    // lock, each says so and tries again.
    for (name, node) in nodes {
        wait_logged(node, NO_LOCK, 1, Duration::from_secs(60), name).await;
    }
    wait_logged(&a, NO_LOCK, 2, Duration::from_secs(30), "a").await;
    assert_eq!(fleet.pebble_orders(), 1, "{}", logs(&nodes));
    assert_eq!(orders_started(&[&a, &b, &c]), 1, "{}", logs(&nodes));
    eprintln!("etcd was down for {:?}", down.elapsed());

    // (c) etcd back: the renewal completes, one order, and every node serves its result.
    for i in 0..3 {
        fleet.etcd.restart(i);
    }
    fleet.etcd.wait_healthy();
    let back = Instant::now();
    let mut seen: Vec<Option<String>> = vec![None; IPS.len()];
    while seen.iter().any(Option::is_none) {
        for (i, ip) in IPS.iter().enumerate() {
            if seen[i].is_none() {
                seen[i] = fingerprint(ip, port).await.filter(|f| *f != issued);
            }
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "not every node served the renewed certificate: {seen:?}\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "every node serves the renewal {:?} after etcd came back",
        back.elapsed()
    );
    let all = logs(&nodes);
    assert!(seen.iter().all(|f| *f == seen[0]), "{seen:?}\n{all}");
    assert_eq!(fleet.pebble_orders(), 2, "one order, one renewal\n{all}");
    assert_eq!(orders_started(&[&a, &b, &c]), 2, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_while_etcd_compacts_reads_again_and_catches_up() {
    const PREFIX: &str = "/portico/compacted";
    let etcd = EtcdCluster::start(3);
    // The node reaches etcd through a partition the test cuts; everyone else reaches it.
    let partition = Partition::to(&etcd.endpoints()[0]);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (cert, key) = pki.leaf("a", &["a.test"], Key::Ecdsa, Validity::Current);
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, [9u8; 32]).expect("key file");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n\
             [[listener]]\naddress = \"127.0.0.1:{}\"\n\
             [[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\
             [[site]]\nname = \"a\"\nhosts = [\"a.test\"]\nrespond = {{ body = \"a\" }}\n\
             [admin]\nenabled = false\n\
             [cluster]\netcd = [{:?}]\nprefix = \"{PREFIX}\"\nnode = \"n\"\nkey_file = \"{}\"\n",
            free_port(),
            cert.display(),
            key.display(),
            partition.url,
            key_file.display()
        ),
    )
    .expect("config");
    let node = Logged::serve(&config);
    // Its own first key, made and installed through the watch.
    node.line_containing("cluster: new session ticket key made for the fleet");
    node.line_containing("cluster: session ticket keys installed");

    partition.cut();
    node.line_containing("cluster: watching the ticket keys stopped");
    // Meanwhile the fleet's keys change, and etcd compacts its history past the change.
    let store = Etcd::connect(&Cluster {
        etcd: etcd.endpoints(),
        prefix: PREFIX.to_string(),
        node: "test".to_string(),
        key_file: "unused".into(),
        tls: None,
        config: portico::config::ConfigSource::File,
    })
    .await
    .expect("connect");
    let cluster_key = ClusterKey::load(&key_file).expect("the key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let set = format!(
        r#"{{"keys":[{{"id":77,"secret":"{}","created":{now}}}]}}"#,
        "ab".repeat(32)
    );
    let at = format!("{PREFIX}/tickets/set");
    store
        .put("tickets/set", &cluster_key.seal(&at, set.as_bytes()))
        .await
        .expect("put");
    let revision = store.put("elsewhere", b"x").await.expect("put");
    etcd.etcdctl(&["compact", &revision.to_string()])
        .expect("etcdctl compact");

    partition.join();
    node.line_containing(
        "etcd compacted its history past this node's watch; reading the folder again",
    );
    let installed = node.line_containing("generation=77");
    assert!(
        installed.contains("cluster: session ticket keys installed"),
        "{installed}"
    );
}

fn store_cluster(etcd: Vec<String>, prefix: &str) -> Cluster {
    Cluster {
        etcd,
        prefix: prefix.to_string(),
        node: "test".to_string(),
        key_file: "unused".into(),
        tls: None,
        config: portico::config::ConfigSource::File,
    }
}

/// `follow.next()` until it answers (etcd reachable again), 30 s at most.
async fn next_answer(follow: &mut Follow, store: &Etcd) -> Followed {
    let start = Instant::now();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(10), follow.next(store)).await;
        if let Ok(Ok(answer)) = r {
            return answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no answer: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_resumes_from_its_revision_and_reads_again_only_after_a_compaction() {
    const PREFIX: &str = "/portico/follow";
    let etcd = EtcdCluster::start(1);
    let partition = Partition::to(&etcd.endpoints()[0]);
    let cut_off = Etcd::connect(&store_cluster(vec![partition.url.clone()], PREFIX))
        .await
        .expect("connect");
    let other = Etcd::connect(&store_cluster(etcd.endpoints(), PREFIX))
        .await
        .expect("connect");
    other.put("f/a", b"A").await.expect("put");
    let mut follow = Follow::new("f");
    let put = |n: &str, v: &[u8]| Change::Put {
        name: n.to_string(),
        value: v.to_vec(),
    };
    match next_answer(&mut follow, &cut_off).await {
        Followed::Listing(l) => assert_eq!(l.items, vec![("a".to_string(), b"A".to_vec())]),
        other => panic!("a listing first: {other:?}"),
    }
    other.put("f/b", b"B").await.expect("put");
    match next_answer(&mut follow, &cut_off).await {
        Followed::Changes(c) => assert_eq!(c, vec![put("b", b"B")]),
        other => panic!("{other:?}"),
    }

    // Cut off: the watch ends; a change meanwhile comes after it resumes, as a change.
    partition.cut();
    let ended = tokio::time::timeout(Duration::from_secs(15), follow.next(&cut_off)).await;
    assert!(matches!(ended, Ok(Err(_))), "{ended:?}");
    other.put("f/c", b"C").await.expect("put");
    partition.join();
    match next_answer(&mut follow, &cut_off).await {
        Followed::Changes(c) => assert_eq!(c, vec![put("c", b"C")]),
        other => panic!("resumed, not read again: {other:?}"),
    }

    // Cut off while etcd compacts past the follow's revision: it reads the folder again.
    partition.cut();
    let ended = tokio::time::timeout(Duration::from_secs(15), follow.next(&cut_off)).await;
    assert!(matches!(ended, Ok(Err(_))), "{ended:?}");
    other.delete("f/a").await.expect("delete");
    other.put("f/d", b"D").await.expect("put");
    let revision = other.put("elsewhere", b"x").await.expect("put");
    etcd.etcdctl(&["compact", &revision.to_string()])
        .expect("etcdctl compact");
    partition.join();
    match next_answer(&mut follow, &cut_off).await {
        Followed::Listing(l) => assert_eq!(
            l.items,
            vec![
                ("b".to_string(), b"B".to_vec()),
                ("c".to_string(), b"C".to_vec()),
                ("d".to_string(), b"D".to_vec())
            ]
        ),
        other => panic!("read again after the compaction: {other:?}"),
    }
    // And on from there: a deletion is a deletion.
    other.delete("f/b").await.expect("delete");
    match next_answer(&mut follow, &cut_off).await {
        Followed::Changes(c) => assert_eq!(
            c,
            vec![Change::Delete {
                name: "b".to_string()
            }]
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_ended_writes_nothing() {
    let etcd = EtcdCluster::start(1);
    let store = Etcd::connect(&store_cluster(etcd.endpoints(), "/portico/fence"))
        .await
        .expect("connect");
    let held = store
        .lock(
            "acme/dir/shop",
            Duration::from_secs(15),
            Duration::from_secs(5),
        )
        .await
        .expect("lock")
        .expect("free");
    let items: [(&str, &[u8]); 2] = [("certs/shop.pem", b"one"), ("certs/shop.key", b"1")];
    assert!(held.put_all_if_held(&items).await.expect("txn"));
    assert_eq!(
        store.get("certs/shop.pem").await.expect("get").as_deref(),
        Some(&b"one"[..])
    );
    // Its lease ends behind its back (as after an outage longer than the TTL): every lease
    // etcd has is revoked, and another client takes the lock.
    let leases = etcd.etcdctl(&["lease", "list"]).expect("lease list");
    for id in leases
        .split_whitespace()
        .filter(|w| w.len() > 4 && w.chars().all(|c| c.is_ascii_hexdigit()))
    {
        let _ = etcd.etcdctl(&["lease", "revoke", id]);
    }
    let other = store
        .lock(
            "acme/dir/shop",
            Duration::from_secs(15),
            Duration::from_secs(5),
        )
        .await
        .expect("lock")
        .expect("free once the lease ended");
    let late: [(&str, &[u8]); 2] = [("certs/shop.pem", b"two"), ("certs/shop.key", b"2")];
    assert!(!held.put_all_if_held(&late).await.expect("txn"));
    assert_eq!(
        store.get("certs/shop.pem").await.expect("get").as_deref(),
        Some(&b"one"[..]),
        "the lost holder wrote"
    );
    assert!(other.put_all_if_held(&late).await.expect("txn"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_outlives_any_one_member_going_away() {
    let mut etcd = EtcdCluster::start(3);
    let store = Etcd::connect(&store_cluster(etcd.endpoints(), "/portico/outlives"))
        .await
        .expect("connect");
    // A 3 s lease: each member is away for longer than that, in turn, whichever one was
    // renewing it.
    let held = store
        .lock("tickets", Duration::from_secs(3), Duration::from_secs(5))
        .await
        .expect("lock")
        .expect("free");
    for i in 0..3 {
        etcd.stop(i);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(held.is_renewed(), "the lease ended with member {i} away");
        let locks = etcd
            .etcdctl(&["get", "--prefix", "--keys-only", "/portico/outlives/locks/"])
            .expect("etcdctl get");
        assert!(
            locks.contains("/locks/tickets/"),
            "member {i} away: {locks}"
        );
        assert!(
            held.put_all_if_held(&[("probe", b"x")]).await.expect("txn"),
            "member {i} away: the lock is not held"
        );
        etcd.restart(i);
        etcd.wait_healthy();
    }
}
