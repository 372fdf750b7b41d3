//! examples/cluster/, as a user runs it: its three node configurations pass `portico
//! check`, and its `run` script starts etcd and the three nodes on 127.0.0.2, .3 and .4,
//! which curl reaches, and stops them all on Ctrl-C (SIGINT). The files are copied and
//! their ports replaced by free ones; nothing else is changed.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{copy_dir, free_port};

/// The script, stopped (SIGTERM, which it turns into its cleanup) if the test fails first.
struct Script(std::process::Child);

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn listening(ip: &str, port: u16) -> bool {
    std::net::TcpStream::connect((ip, port)).is_ok()
}

#[test]
fn the_cluster_example_checks_runs_and_stops() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dir.path().join("cluster");
    copy_dir(&examples.join("cluster"), &cluster);
    copy_dir(&examples.join("sites"), &dir.path().join("sites"));
    let (https, etcd_port, peer_port) = (free_port(), free_port(), free_port());
    for n in 1..=3 {
        let file = cluster.join(format!("node{n}.toml"));
        let text = std::fs::read_to_string(&file).expect("node config");
        assert!(
            text.contains(":8443\"") && text.contains(":23790\""),
            "{text}"
        );
        let text = text
            .replace(":8443\"", &format!(":{https}\""))
            .replace(":23790\"", &format!(":{etcd_port}\""));
        std::fs::write(&file, text).expect("write");
    }
    // `check` wants the key file the script makes: make one as docs/cluster.md says.
    let key = cluster.join("cluster.key");
    std::fs::write(&key, [5u8; 32]).expect("key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for n in 1..=3 {
        let out = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["check", "-c"])
            .arg(cluster.join(format!("node{n}.toml")))
            .output()
            .expect("check runs");
        assert!(
            out.status.success(),
            "node{n}.toml: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut child = Command::new(cluster.join("run"))
        .env("PORTICO", env!("CARGO_BIN_EXE_portico"))
        .env("ETCD_PORT", etcd_port.to_string())
        .env("ETCD_PEER_PORT", peer_port.to_string())
        .env("PORT", https.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("examples/cluster/run starts");
    let stdout = child.stdout.take().expect("stdout");
    let script = Script(child);
    // Its output, up to the last line it prints before it waits.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed.iter().any(|l: &String| l.contains("Ctrl-C stops")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => panic!(
                "run did not get ready:\n{}\n--- node1.log:\n{}",
                printed.join("\n"),
                std::fs::read_to_string(cluster.join("state/node1.log")).unwrap_or_default()
            ),
        }
    }
    let text = printed.join("\n");
    let curls: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(curls.len(), 6, "{text}");

    // Every node serves both sites, verified with node 1's CA: the printed commands, as a
    // reader would paste them, work because the fleet shares one local CA.
    for curl in &curls {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{curl} -sS --max-time 5"))
            .output()
            .expect("curl runs");
        let body = String::from_utf8_lossy(&out.stdout);
        let site = ["site1", "site2"]
            .into_iter()
            .find(|s| curl.contains(&format!("https://{s}.localhost")))
            .expect("a site's URL");
        assert!(
            body.contains(&format!("Hello from {site}.localhost")),
            "{curl}: {body}{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The three are one fleet.
    crate::support::eventually("the three nodes in `portico cluster status`", || {
        let out = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["cluster", "status", "--json", "-c"])
            .arg(cluster.join("node1.toml"))
            .output()
            .ok()?;
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (doc["nodes"].as_array()?.len() == 3).then_some(())
    });

    // Ctrl-C: the script stops etcd and the three nodes, and exits.
    let pid = script.0.id();
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let mut script = script;
    let deadline = Instant::now() + Duration::from_secs(30);
    while script.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "run did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while listening("127.0.0.1", etcd_port)
        || (2..=4).any(|i| listening(&format!("127.0.0.{i}"), https))
    {
        assert!(
            Instant::now() < deadline,
            "etcd or a node still listens after run stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
