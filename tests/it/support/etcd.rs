//! A real etcd cluster for the fleet tests: `members` etcd processes (Debian's etcd-server)
//! on loopback ports, each with its own data directory, forming one cluster. Members can be
//! stopped and started again with their data, as an operator would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Debian's etcd server.
pub const ETCD: &str = "/usr/bin/etcd";
/// Debian's etcd command-line client.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

struct Member {
    name: String,
    client: String,
    peer: String,
    data: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

/// A running etcd cluster; every member is killed when it is dropped.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial: String,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers writes.
    pub fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("http://127.0.0.1:{}", free_port()),
                peer: format!("http://127.0.0.1:{}", free_port()),
                data: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                process: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.process = Some(spawn(m, &initial));
        }
        let cluster = EtcdCluster {
            members,
            initial,
            _dir: dir,
        };
        cluster.wait_healthy();
        cluster
    }

    /// The members' client URLs, as `[cluster] etcd` lists them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// The `etcd = [...]` line of a `[cluster]` table.
    pub fn toml_list(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Kills member `i` (its data stays).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Starts member `i` again with its data.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        let p = spawn(&self.members[i], &self.initial);
        self.members[i].process = Some(p);
    }

    /// Waits until a write through every running member's endpoint works.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let running: Vec<&Member> = self
                .members
                .iter()
                .filter(|m| m.process.is_some())
                .collect();
            let endpoints: Vec<&str> = running.iter().map(|m| m.client.as_str()).collect();
            let ok = !endpoints.is_empty()
                && self
                    .etcdctl_at(&endpoints.join(","), &["endpoint", "health"])
                    .is_ok_and(|out| out.matches("is healthy").count() == endpoints.len());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `etcdctl ARGS` against every member; its standard output, or its error text.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        self.etcdctl_at(&self.endpoints().join(","), args)
    }

    fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .map_err(|e| format!("etcdctl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Every key and value under `prefix`, as raw bytes (for scanning what is stored).
    pub fn dump(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints().join(",")))
            .args(["get", "--prefix", "-w", "json", prefix])
            .output()
            .expect("etcdctl get");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .expect("base64")
        };
        doc["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(&b64(&kv["key"])).into_owned(),
                            b64(&kv["value"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every member's log, for a failure message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {}:\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn spawn(m: &Member, initial: &str) -> Child {
    let log = std::fs::File::create(&m.log).expect("etcd log");
    let state = if m.data.exists() { "existing" } else { "new" };
    Command::new(ETCD)
        .args(["--name", &m.name])
        .arg(format!("--data-dir={}", path(&m.data)))
        .arg(format!("--listen-client-urls={}", m.client))
        .arg(format!("--advertise-client-urls={}", m.client))
        .arg(format!("--listen-peer-urls={}", m.peer))
        .arg(format!("--initial-advertise-peer-urls={}", m.peer))
        .arg(format!("--initial-cluster={initial}"))
        .arg(format!("--initial-cluster-state={state}"))
        .arg("--initial-cluster-token=portico-test")
        // Quick elections: the tests stop members on purpose.
        .args(["--heartbeat-interval=50", "--election-timeout=500"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("etcd is required (scripts/test installs etcd-server): {e}"))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}

/// A TCP forwarder from one Portico node to one etcd member, which the test cuts and
/// joins again: that node alone loses etcd while every other client keeps it (a network
/// partition). Written because no real component cuts one client off; it copies bytes and
/// looks at none of them.
pub struct Partition {
    /// What the node's `[cluster] etcd` names.
    pub url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Partition {
    /// Forwards a free loopback port to `member` (a client URL, `http://127.0.0.1:PORT`).
    pub fn to(member: &str) -> Partition {
        use std::sync::atomic::Ordering;
        let target = member
            .strip_prefix("http://")
            .expect("an http:// member")
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                // Cut: the connection is closed at once, as by a refusing network.
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let (Ok(mut list), Ok(c3), Ok(s3)) =
                    (c.lock(), client.try_clone(), server.try_clone())
                {
                    list.push(c3);
                    list.push(s3);
                }
                pipe(client, s2);
                pipe(server, c2);
            }
        });
        Partition { url, open, conns }
    }

    /// Closes every connection through it and refuses new ones until [`Partition::join`].
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Forwards again.
    pub fn join(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
