//! The fleet's session ticket keys, with real processes: three etcd members, Portico nodes
//! sharing a prefix and a cluster key, and `openssl s_client -sess_out` / `-sess_in` as
//! the client. A ticket node A issued resumes on node B; a node of another fleet, or with
//! another cluster key, does not resume it; etcd holds the keys sealed only; and a node
//! restarted while etcd is down still resumes the fleet's tickets from its sealed copy.
//! `portico cluster status` shows the nodes, the rotator's lock and the keys' generation.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portico::store::ClusterKey;

use crate::support::admin::Logged;
use crate::support::etcd::EtcdCluster;
use crate::support::free_port;
use crate::support::pki::{Key, Pki, Validity};

struct Fleet {
    dir: tempfile::TempDir,
    cert: (PathBuf, PathBuf),
    root: PathBuf,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&dir.path().join("pki"));
        let cert = pki.leaf("a", &["a.test"], Key::Ecdsa, Validity::Current);
        let root = pki.root_file();
        Fleet { dir, cert, root }
    }

    /// A key file holding `byte` 32 times, mode 0600.
    fn key_file(&self, byte: u8) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(format!("cluster-{byte}.key"));
        std::fs::write(&path, [byte; 32]).expect("key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// A node's configuration: one site on its own port, in the fleet `prefix`.
    fn node(&self, name: &str, etcd: &EtcdCluster, prefix: &str, key: &Path) -> (PathBuf, u16) {
        let port = free_port();
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let file = dir.join("portico.toml");
        std::fs::write(
            &file,
            format!(
                "[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
                 [[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\
                 [[site]]\nname = \"a\"\nhosts = [\"a.test\"]\nrespond = {{ body = \"a\" }}\n\
                 [admin]\nenabled = false\n\
                 [cluster]\netcd = {}\nprefix = \"{prefix}\"\nnode = \"{name}\"\nkey_file = \"{}\"\n",
                self.cert.0.display(),
                self.cert.1.display(),
                etcd.toml_list(),
                key.display()
            ),
        )
        .expect("config");
        (file, port)
    }

    /// One TLS 1.3 connection to `port` with a request; `sess_in` offers a saved session.
    /// Whether the handshake resumed, and the session saved to `sess_out`.
    fn connect(&self, port: u16, sess_in: Option<&Path>, sess_out: &Path) -> bool {
        let mut cmd = Command::new("openssl");
        // -ign_eof: read until the server closes (after the response and its ticket).
        cmd.args([
            "s_client",
            "-tls1_3",
            "-ign_eof",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-servername", "a.test", "-CAfile"])
        .arg(&self.root)
        .arg("-sess_out")
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
        // A request, so the server's ticket (sent with the response) arrives before the end.
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
        let out = child.wait_with_output().expect("openssl ends");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "the handshake with port {port} failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.contains("Reused, TLSv1.3")
    }

    /// Whether a session from `from` resumes on `to` (a fresh session each time).
    fn resumes(&self, from: u16, to: u16) -> bool {
        let sess = self.dir.path().join(format!("sess-{from}-{to}.pem"));
        let _ = std::fs::remove_file(&sess);
        assert!(
            !self.connect(from, None, &sess),
            "a first connection is new"
        );
        assert!(sess.exists(), "openssl saved the session");
        let again = self.dir.path().join("sess-again.pem");
        self.connect(to, Some(&sess), &again)
    }

    /// Waits (up to 20 s) for a session from `from` to resume on `to`.
    fn eventually_resumes(&self, from: u16, to: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.resumes(from, to) {
            assert!(
                Instant::now() < deadline,
                "a ticket from port {from} never resumed on port {to}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_ticket_from_one_node_resumes_on_another() {
    let mut etcd = EtcdCluster::start(3);
    let fleet = Fleet::new();
    let key = fleet.key_file(1);
    let (a_file, a) = fleet.node("a", &etcd, "/portico/fleet", &key);
    let (b_file, b) = fleet.node("b", &etcd, "/portico/fleet", &key);
    let node_a = Logged::serve(&a_file);
    let node_b = Logged::serve(&b_file);
    wait_listening(a);
    wait_listening(b);
    fleet.eventually_resumes(a, b);
    fleet.eventually_resumes(b, a);
    // Exactly one node made the fleet's keys.
    let made = |n: &Logged| {
        n.stderr
            .lock()
            .expect("lock")
            .contains("this node rotates the session ticket keys")
    };
    assert!(made(&node_a) ^ made(&node_b), "one rotator");

    // Another fleet (another prefix), and a node with another key in this fleet: neither
    // resumes the fleet's tickets, and the second says why.
    let (c_file, c) = fleet.node("c", &etcd, "/portico/other", &key);
    let other_key = fleet.key_file(2);
    let (d_file, d) = fleet.node("d", &etcd, "/portico/fleet", &other_key);
    let _node_c = Logged::serve(&c_file);
    let node_d = Logged::serve(&d_file);
    wait_listening(c);
    wait_listening(d);
    node_d.line_containing("is not the fleet's");
    for _ in 0..3 {
        assert!(
            !fleet.resumes(a, c),
            "another fleet resumed this fleet's ticket"
        );
        assert!(
            !fleet.resumes(a, d),
            "a node with another key resumed the fleet's ticket"
        );
    }

    // etcd holds every secret sealed: no ticket key, no private key in clear.
    let fleet_values = etcd.dump("/portico/fleet/");
    assert!(
        fleet_values
            .iter()
            .any(|(k, _)| k.ends_with("/tickets/set")),
        "{fleet_values:?}"
    );
    for (k, v) in &fleet_values {
        // Public by design: who is up (a JSON record) and who holds which lock (a name).
        if k.contains("/nodes/") {
            serde_json::from_slice::<serde_json::Value>(v).expect("a node record");
        } else if k.contains("/holders/") {
            assert!(
                ["a", "b"].contains(&String::from_utf8_lossy(v).as_ref()),
                "{k}"
            );
        } else if k.ends_with(".pem") {
            // A certificate (the fleet's local CA's): public, with no key beside it.
            let text = String::from_utf8_lossy(v);
            assert!(text.contains("BEGIN CERTIFICATE"), "{k}");
            assert!(!text.contains("PRIVATE KEY"), "{k}");
        } else {
            assert!(
                v.is_empty() || ClusterKey::is_sealed(v),
                "{k} is not sealed"
            );
        }
    }

    // `portico cluster status` sees the nodes up, the rotator's lock, the keys' generation,
    // and which machine's key is the fleet's.
    let status = |file: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["cluster", "status", "--json", "-c"])
            .arg(file)
            .output()
            .expect("cluster status runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let st = crate::support::eventually("every node's record", || {
        let st = status(&a_file);
        let nodes: Vec<String> = st["nodes"]
            .as_array()?
            .iter()
            .filter_map(|n| n["node"].as_str().map(str::to_string))
            .collect();
        // Records are rewritten every 5 s: wait for the ones made after the keys came.
        let synced = st["nodes"].as_array()?.iter().all(|n| {
            n["node"] == "d"
                || (n["synced_revision"].as_i64() > Some(0)
                    && n["tickets_generation"] == st["tickets"]["generation"])
        });
        (nodes == ["a", "b", "d"] && synced).then_some(st)
    });
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3), "{st}");
    let rotator = if made(&node_a) { "a" } else { "b" };
    assert!(
        st["locks"].as_array().is_some_and(|l| l
            .iter()
            .any(|l| l["lock"] == "tickets" && l["node"] == rotator)),
        "{st}"
    );
    let generation = st["tickets"]["generation"].as_i64().expect("a generation");
    assert!(generation >= 1, "{st}");
    for n in st["nodes"].as_array().expect("nodes") {
        if n["node"] != "d" {
            assert_eq!(n["tickets_generation"].as_i64(), Some(generation), "{n}");
            assert!(n["synced_revision"].as_i64() > Some(0), "{n}");
        }
    }
    assert_eq!(st["key"]["is_the_fleets"], true, "{st}");
    let on_d = status(&d_file);
    assert_eq!(on_d["key"]["is_the_fleets"], false, "{on_d}");
    assert_eq!(on_d["tickets"], "sealed", "{on_d}");

    // etcd goes away entirely; a node restarted meanwhile serves, and resumes the fleet's
    // tickets from its sealed local copy.
    let sess = fleet.dir.path().join("before.pem");
    assert!(!fleet.connect(a, None, &sess));
    for i in 0..3 {
        etcd.stop(i);
    }
    drop(node_b);
    let node_b = Logged::serve(&b_file);
    wait_listening(b);
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["cluster", "status", "-c"])
        .arg(&b_file)
        .output()
        .expect("cluster status runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer"), "{err}");
    let again = fleet.dir.path().join("after.pem");
    assert!(
        fleet.connect(b, Some(&sess), &again),
        "the restarted node did not resume the fleet's ticket without etcd"
    );
    drop(node_b);
}
