//! The fleet's configuration, with real processes: one etcd member, two Portico nodes on
//! 127.0.0.2 and 127.0.0.3 (the same port; each node's own file changes the pushed
//! listener's address) with `[cluster] config = "etcd"`, and `portico cluster push`.
//! A push reaches every node; a changed one too; one that fails on one node (a document
//! root only the other has) leaves that node on the version it ran, and `portico cluster
//! status --json` says so, until `portico reload` there finds what was missing; an invalid
//! push stores nothing; a value in etcd that is not a
//! configuration changes nothing; and a node restarted while etcd is down serves its
//! sealed copy of the last version it ran.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use portico::store::ClusterKey;

use crate::support::admin::Logged;
use crate::support::client::{self, Http, Opts};
use crate::support::etcd::EtcdCluster;
use crate::support::eventually;
use crate::support::free_port;
use crate::support::pki::{Key, Pki, Validity};

const PREFIX: &str = "/portico/cfg";

struct Fleet {
    dir: tempfile::TempDir,
    port: u16,
    cert: (PathBuf, PathBuf),
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&dir.path().join("pki"));
        let cert = pki.leaf(
            "abc",
            &["a.test", "b.test", "c.test"],
            Key::Ecdsa,
            Validity::Current,
        );
        // The nodes listen on 127.0.0.2 and .3; a port free on 127.0.0.1 is free there too.
        Fleet {
            dir,
            port: free_port(),
            cert,
        }
    }

    /// Node `name`'s own file: its address for the pushed listener "https", its state_dir,
    /// and `[cluster] config = "etcd"`; and its document root for site b.
    fn node(&self, name: &str, ip: &str, etcd: &EtcdCluster, key: &Path) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(dir.join("www/b")).expect("node dir");
        std::fs::write(dir.join("www/b/index.html"), format!("b on {name}")).expect("root");
        let file = dir.join("portico.toml");
        std::fs::write(
            &file,
            format!(
                "state_dir = \"state\"\n\
                 [[listener]]\nname = \"https\"\naddress = \"{ip}:{}\"\n\
                 [admin]\nenabled = false\n\
                 [cluster]\netcd = {}\nprefix = \"{PREFIX}\"\nnode = \"{name}\"\nkey_file = \"{}\"\nconfig = \"etcd\"\n",
                self.port,
                etcd.toml_list(),
                key.display()
            ),
        )
        .expect("config");
        file
    }

    /// A fleet configuration: sites a (a fixed answer) and b (files), and `extra`.
    fn pushed(&self, name: &str, a_body: &str, extra: &str) -> PathBuf {
        let file = self.dir.path().join(name);
        std::fs::write(
            &file,
            format!(
                "[[listener]]\nname = \"https\"\naddress = \"*:{}\"\n\
                 [[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\
                 [[site]]\nname = \"a\"\nhosts = [\"a.test\"]\nrespond = {{ body = \"{a_body}\" }}\n\
                 [[site]]\nname = \"b\"\nhosts = [\"b.test\"]\nroot = \"www/b\"\n{extra}",
                self.port,
                self.cert.0.display(),
                self.cert.1.display()
            ),
        )
        .expect("pushed file");
        file
    }

    /// `portico cluster push FILE -c NODE_FILE`: its exit code and output.
    fn push(&self, file: &Path, node_file: &Path) -> (Option<i32>, String) {
        let out = portico(&["cluster", "push"], &[file, Path::new("-c"), node_file]);
        (out.0, out.1)
    }

    /// What `host` answers on `ip` (status and body), or None.
    fn fetch(&self, ip: &str, host: &str) -> Option<String> {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let addr = format!("{ip}:{}", self.port).parse().ok()?;
        tokio.block_on(async {
            let get = async {
                let (tls, _) = client::connect(addr, &Opts::sni(host).http1()).await.ok()?;
                let mut http = Http::over(tls).await;
                let r = http.try_get(host, "/").await?;
                Some(format!("{} {}", r.status.as_u16(), r.text()))
            };
            tokio::time::timeout(Duration::from_secs(5), get)
                .await
                .ok()
                .flatten()
        })
    }

    /// Waits until `host` on `ip` answers `want`.
    fn serves(&self, ip: &str, host: &str, want: &str) {
        let mut last = None;
        eventually(&format!("{host} on {ip} answers {want:?}"), || {
            last = self.fetch(ip, host);
            (last.as_deref() == Some(want)).then_some(())
        });
    }
}

/// Runs `portico ARGS PATHS...`: exit code, stdout and stderr together.
fn portico(args: &[&str], paths: &[&Path]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .args(paths)
        .output()
        .expect("portico runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn status(node_file: &Path) -> serde_json::Value {
    let (code, out) = portico(&["cluster", "status", "--json", "-c"], &[node_file]);
    assert_eq!(code, Some(0), "{out}");
    let json = out.find('{').map_or("", |i| &out[i..]);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn node<'a>(st: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    st["nodes"].as_array()?.iter().find(|n| n["node"] == name)
}

#[test]
fn a_pushed_configuration_reaches_every_node_and_a_failing_one_leaves_the_node_as_it_was() {
    let mut etcd = EtcdCluster::start(1);
    let fleet = Fleet::new();
    let key = fleet.dir.path().join("cluster.key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&key, [9u8; 32]).expect("key file");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let a_file = fleet.node("a", "127.0.0.2", &etcd, &key);
    let b_file = fleet.node("b", "127.0.0.3", &etcd, &key);

    // Nothing pushed yet: a node does not start, and says why.
    let (code, out) = portico(&["serve", "-c"], &[&a_file]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no fleet configuration to run"), "{out}");

    // An invalid configuration, or one that sets a node-local table: exit 1, nothing stored.
    let bad = fleet.pushed(
        "bad.toml",
        "x",
        "[[site]]\nname = \"c\"\nhosts = [\"c.test\"]\nrot = \"www\"\n",
    );
    let (code, out) = fleet.push(&bad, &a_file);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("unknown key \"rot\"") && out.contains("nothing pushed"),
        "{out}"
    );
    let with_cluster = fleet.pushed(
        "cluster.toml",
        "x",
        "[cluster]\netcd = [\"http://127.0.0.1:1\"]\n",
    );
    let (code, out) = fleet.push(&with_cluster, &a_file);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the pushed configuration sets cluster"),
        "{out}"
    );
    assert!(etcd.dump(&format!("{PREFIX}/config/")).is_empty());

    // Version 1: both nodes serve both sites, each on its own address.
    let v1 = fleet.pushed("v1.toml", "a v1", "");
    let (code, out) = fleet.push(&v1, &a_file);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration version 1"), "{out}");
    let node_a = Logged::serve(&a_file);
    let mut node_b = Logged::serve(&b_file);
    for (ip, name) in [("127.0.0.2", "a"), ("127.0.0.3", "b")] {
        fleet.serves(ip, "a.test", "200 a v1");
        fleet.serves(ip, "b.test", &format!("200 b on {name}"));
    }

    // Version 2, changed: every node serves the change.
    let v2 = fleet.pushed("v2.toml", "a v2", "");
    let (code, out) = fleet.push(&v2, &b_file);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration version 2"), "{out}");
    fleet.serves("127.0.0.2", "a.test", "200 a v2");
    fleet.serves("127.0.0.3", "a.test", "200 a v2");

    // Version 3 adds site c, whose root only node a has: a runs it, b keeps version 2 and
    // its record says why.
    std::fs::create_dir_all(fleet.dir.path().join("a/www/c")).expect("root c");
    std::fs::write(fleet.dir.path().join("a/www/c/index.html"), "c").expect("root c");
    let v3 = fleet.pushed(
        "v3.toml",
        "a v3",
        "[[site]]\nname = \"c\"\nhosts = [\"c.test\"]\nroot = \"www/c\"\n",
    );
    let (code, out) = fleet.push(&v3, &a_file);
    assert_eq!(code, Some(0), "{out}");
    fleet.serves("127.0.0.2", "c.test", "200 c");
    fleet.serves("127.0.0.2", "a.test", "200 a v3");
    node_b.line_containing("the fleet's configuration failed on this node");
    assert_eq!(
        fleet.fetch("127.0.0.3", "a.test").as_deref(),
        Some("200 a v2")
    );
    let st = eventually("both records show version 3's outcome", || {
        let st = status(&a_file);
        let a = node(&st, "a")?;
        let b = node(&st, "b")?;
        (a["config_version"] == 3 && b["config_failed"]["version"] == 3).then_some(st)
    });
    let b = node(&st, "b").expect("node b");
    assert_eq!(b["config_version"], 2, "{st}");
    let errors = b["config_failed"]["errors"].to_string();
    assert!(errors.contains("www/c"), "{st}");
    assert!(
        node(&st, "a").expect("a")["config_failed"].is_null(),
        "{st}"
    );
    assert_eq!(st["config"]["version"], 3, "{st}");
    assert!(
        st["config"]["by"].as_str().is_some_and(|b| b.contains('@')),
        "{st}"
    );
    // `portico check` on node b names what is missing there.
    let (code, out) = portico(&["check", "-c"], &[&b_file]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("www/c") && out.contains("version 3"), "{out}");
    // And the text status shows the failure.
    let (code, text) = portico(&["cluster", "status", "-c"], &[&a_file]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("fleet configuration version 3 FAILED here"),
        "{text}"
    );

    // Once node b has the missing root, `portico reload` loads its file with version 3.
    std::fs::create_dir_all(fleet.dir.path().join("b/www/c")).expect("root c on b");
    std::fs::write(fleet.dir.path().join("b/www/c/index.html"), "c on b").expect("root c");
    let (code, out) = portico(&["reload", "-c"], &[&b_file]);
    assert_eq!(code, Some(0), "{out}");
    fleet.serves("127.0.0.3", "c.test", "200 c on b");
    fleet.serves("127.0.0.3", "a.test", "200 a v3");
    eventually("node b's record shows version 3 running", || {
        let st = status(&a_file);
        let b = node(&st, "b")?;
        (b["config_version"] == 3 && b["config_failed"].is_null()).then_some(())
    });

    // etcd holds the configuration sealed, its version public.
    for (k, v) in etcd.dump(&format!("{PREFIX}/config/")) {
        if k.ends_with("/config/meta") {
            serde_json::from_slice::<serde_json::Value>(&v).expect("public meta");
        } else {
            assert!(ClusterKey::is_sealed(&v), "{k} is not sealed");
        }
    }

    // A value that is no configuration changes nothing.
    etcd.etcdctl(&["put", &format!("{PREFIX}/config/current"), "garbage"])
        .expect("etcdctl put");
    node_a.line_containing("the fleet's configuration is unusable");
    assert_eq!(
        fleet.fetch("127.0.0.2", "a.test").as_deref(),
        Some("200 a v3")
    );

    // Version 4 (without site c) runs on both again.
    let v4 = fleet.pushed("v4.toml", "a v4", "");
    let (code, out) = fleet.push(&v4, &a_file);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration version 4"), "{out}");
    fleet.serves("127.0.0.2", "a.test", "200 a v4");
    fleet.serves("127.0.0.3", "a.test", "200 a v4");

    // A node started from etcd keeps its sealed copy at once (not only after a change).
    drop(node_a);
    let copy = fleet.dir.path().join("a/state/cluster/config");
    std::fs::remove_file(&copy).expect("node a's copy");
    let mut node_a = Logged::serve(&a_file);
    fleet.serves("127.0.0.2", "a.test", "200 a v4");
    eventually("node a's sealed copy", || copy.exists().then_some(()));
    assert!(ClusterKey::is_sealed(&std::fs::read(&copy).expect("copy")));

    // etcd goes away; the nodes, restarted, serve the last version they ran from their copy.
    etcd.stop(0);
    drop(node_a);
    drop(node_b);
    node_a = Logged::serve(&a_file);
    node_b = Logged::serve(&b_file);
    fleet.serves("127.0.0.2", "a.test", "200 a v4");
    fleet.serves("127.0.0.3", "a.test", "200 a v4");
    fleet.serves("127.0.0.3", "b.test", "200 b on b");
    node_b.line_containing("trying this node's copy");
    drop(node_b);
    drop(node_a);
}
