//! Test support: a PKI made at test time with rcgen, an in-process server on loopback, and
//! TLS/HTTP clients that report what the server presented.

#![allow(dead_code, unreachable_pub)]

pub mod admin;
pub mod apache;
pub mod body;
pub mod client;
pub mod etcd;
pub mod nginx;
pub mod pki;
pub mod webdriver;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use portico::config::Config;
use portico::listener::Server;
use portico::runtime::{self, Mode, Shared};

/// A port that was free a moment ago on 127.0.0.1. Tests that need a fixed port for several
/// addresses (`*:port` next to `127.0.0.2:port`) use it; the race with other processes is
/// accepted for tests.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Copies the directory tree `from` to `to` (the examples' sites, for instance).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// The ports the README's quickstart runs on, replaced by free ones in [`quickstart`].
pub struct QuickstartPorts {
    pub https: u16,
    pub http: u16,
    pub admin: u16,
}

/// `examples/quickstart.toml` and its sites copied into `dir`, on free ports; the
/// configuration file's path and the ports.
pub fn quickstart(dir: &Path) -> (PathBuf, QuickstartPorts) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    copy_dir(&examples.join("sites"), &dir.join("sites"));
    let ports = QuickstartPorts {
        https: free_port(),
        http: free_port(),
        admin: free_port(),
    };
    let toml = std::fs::read_to_string(examples.join("quickstart.toml"))
        .expect("quickstart.toml")
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{}", ports.https))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", ports.http))
        .replace("127.0.0.1:9900", &format!("127.0.0.1:{}", ports.admin));
    assert!(
        toml.contains(&format!("127.0.0.1:{}", ports.admin)),
        "the quickstart's admin listener is on 127.0.0.1:9900: {toml}"
    );
    let file = dir.join("quickstart.toml");
    std::fs::write(&file, toml).expect("write config");
    (file, ports)
}

/// A child process, killed (and reaped) when dropped.
pub struct Running(pub std::process::Child);

impl Running {
    /// `portico serve -c config` from the binary under test, its output discarded.
    pub fn serve(config: &Path) -> Running {
        Running::spawn(
            std::process::Command::new(env!("CARGO_BIN_EXE_portico")),
            config,
        )
    }

    /// [`Running::serve`] with the process limited to one CPU (`taskset -c 0`), where
    /// Portico runs every connection on one thread.
    pub fn serve_on_one_cpu(config: &Path) -> Running {
        let mut taskset = std::process::Command::new("taskset");
        taskset.args(["-c", "0", env!("CARGO_BIN_EXE_portico")]);
        Running::spawn(taskset, config)
    }

    fn spawn(mut command: std::process::Command, config: &Path) -> Running {
        let child = command
            .args(["serve", "-c"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("portico serve starts");
        Running(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `portico check -c config`: its exit code and what it printed (stdout, then stderr).
pub fn portico_check(config: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .expect("portico check runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Polls until `f` returns Some, for at most 30 seconds (a bound, not a timing assertion).
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gave up waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running in-process server and the directory holding its files.
pub struct TestServer {
    pub server: Option<Server>,
    pub dir: PathBuf,
}

impl TestServer {
    /// The address of the first https listener's port on `ip`.
    pub fn addr(&self, ip: &str) -> SocketAddr {
        let rt = self.server.as_ref().expect("running").runtime();
        let port = rt
            .listeners
            .iter()
            .find(|l| l.config.kind == portico::config::ListenerKind::Https)
            .expect("an https listener")
            .config
            .address
            .port;
        SocketAddr::new(ip.parse().expect("ip"), port)
    }

    pub async fn stop(mut self, deadline: Duration) -> bool {
        self.server
            .take()
            .expect("running")
            .shutdown(deadline)
            .await
    }
}

/// Writes `toml` to `dir/portico.toml`, checks it and starts serving it. Panics with the
/// report if the configuration does not build.
pub async fn serve(dir: &Path, toml: &str) -> TestServer {
    let file = dir.join("portico.toml");
    std::fs::write(&file, toml).expect("write config");
    let rt = build(&file, &Shared::new());
    let server = Server::start(rt).await.expect("start server");
    TestServer {
        server: Some(server),
        dir: dir.to_path_buf(),
    }
}

/// Loads `file` and builds a serving runtime from it, as a reload does; panics with the
/// report if either fails.
pub fn build(file: &Path, shared: &Shared) -> runtime::Runtime {
    let (config, report) = Config::load(file);
    let config = config.unwrap_or_else(|| panic!("config does not load:\n{report}"));
    let (rt, report) = runtime::build(config, Mode::Serve, shared);
    rt.unwrap_or_else(|| panic!("runtime does not build:\n{report}"))
}

/// A directory with an index.html saying `text`.
pub fn site_root(dir: &Path, name: &str, text: &str) -> PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("index.html"), text).expect("write index");
    root
}

/// A connection to the site `a.test` that answers `a`, as the bad-input and hardening tests
/// serve it, checked with one request: the good client whose connection must survive what
/// the bad one sends.
pub async fn good_connection(server: &TestServer) -> client::Http {
    let (tls, _) = client::connect(server.addr("127.0.0.1"), &client::Opts::sni("a.test"))
        .await
        .expect("good handshake");
    let mut http = client::Http::over(tls).await;
    assert_eq!(http.get("a.test", "/").await.text(), "a");
    http
}

/// The subject of the certificate served for `name` on `port`, via openssl.
pub fn subject(port: u16, name: &str) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            name,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|c| c.wait_with_output())
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("subject=").map(|s| s.trim().to_string()))
}
