//! HTTP/3 across the server's life, with the real binary: `portico upgrade` hands the UDP
//! socket to the new process, `portico reload` keeps it, and systemd socket activation
//! passes it (`ListenDatagram=`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http3::{connect, connect_trusting, H3};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{free_port, Running};

const BIN: &str = env!("CARGO_BIN_EXE_portico");
const HOST: &str = "up.example.test";

/// A configuration with one `http3` listener on 127.0.0.1 and one site with a certificate
/// of the test PKI.
struct Setup {
    dir: tempfile::TempDir,
    pki: Pki,
    config: PathBuf,
    port: u16,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(&dir.path().join("pki"));
        let (cert, key) = pki.leaf("up", &[HOST], Key::Ecdsa, Validity::Current);
        let port = free_port();
        let config = dir.path().join("portico.toml");
        std::fs::write(
            &config,
            format!(
                "[[listener]]\naddress = \"127.0.0.1:{port}\"\nhttp3 = true\n[[site]]\nname = \"up\"\nhosts = [\"{HOST}\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nrespond = {{ body = \"up\" }}\n",
                cert.display(),
                key.display()
            ),
        )
        .expect("write config");
        Setup {
            dir,
            pki,
            config,
            port,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Waits until HTTP/3 answers and the control socket is there.
    async fn until_serving(&self) {
        let start = Instant::now();
        loop {
            if self.state().join("portico.sock").exists() {
                if let Ok(mut h3) = connect(self.addr(), HOST, &self.pki).await {
                    if h3.try_get(HOST, "/").await.is_ok_and(|r| r.status == 200) {
                        return;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the server did not start serving HTTP/3"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `portico COMMAND -c FILE`, off the test's threads: whether it exited 0, and its
    /// output.
    async fn portico(&self, command: &'static str) -> (bool, String) {
        let config = self.config.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args([command, "-c"])
                .arg(config)
                .stdin(Stdio::null())
                .output()
                .expect("portico runs")
        })
        .await
        .expect("join");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The pid the admin API's status names: the process serving now.
    fn admin_pid(&self) -> Option<u32> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "--unix-socket"])
            .arg(self.state().join("admin.sock"))
            .arg("http://localhost/api/v1/status")
            .output()
            .ok()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        status["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }
}

/// Bounded HTTP/3 load: `clients` tasks, each sending up to `each` GET requests one after
/// another on a connection of its own, opening a new one when the server stops taking
/// requests on it (GOAWAY, H3_NO_ERROR: the request is sent again there, and counted as
/// retried). Anything else is a failed request.
struct Load {
    ok: Arc<AtomicUsize>,
    retried: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, pki: &Pki, clients: usize, each: usize) -> Load {
        let load = Load {
            ok: Arc::default(),
            retried: Arc::default(),
            failed: Arc::default(),
            errors: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        let root = pki.root_der();
        let tasks = (0..clients)
            .map(|_| {
                let (ok, retried, failed) =
                    (load.ok.clone(), load.retried.clone(), load.failed.clone());
                let (errors, stop, root) = (load.errors.clone(), load.stop.clone(), root.clone());
                tokio::spawn(async move {
                    let mut conn: Option<H3> = None;
                    let mut sent = 0;
                    while sent < each && !stop.load(Ordering::Relaxed) {
                        let h3 = match &mut conn {
                            Some(h3) => h3,
                            None => match connect_trusting(addr, HOST, root.clone()).await {
                                Ok(h3) => conn.insert(h3),
                                Err(e) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                    errors.lock().expect("errors").push(format!("connect: {e}"));
                                    sent += 1;
                                    continue;
                                }
                            },
                        };
                        match h3.try_get(HOST, "/").await {
                            Ok(r) if r.status == 200 && r.text() == "up" => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                sent += 1;
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors
                                    .lock()
                                    .expect("errors")
                                    .push(format!("status {}", r.status));
                                sent += 1;
                            }
                            Err(e) if e.retry => {
                                retried.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().expect("errors").push(e.why);
                                sent += 1;
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    /// Waits for every client to finish its requests (or to stop, once asked).
    async fn finish(self, stop: bool) -> Load {
        self.stop.store(stop, Ordering::Relaxed);
        let tasks = self.tasks;
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("the load finishes")
                .expect("load task");
        }
        Load {
            tasks: Vec::new(),
            ..self
        }
    }

    fn report(&self) -> String {
        format!(
            "ok {}, retried on a new connection {}, failed {}: {:?}",
            self.ok.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.errors.lock().expect("errors")
        )
    }
}

/// Waits until the connection has ended, and says how.
async fn ended(h3: &mut H3, within: Duration) -> String {
    tokio::time::timeout(within, h3.closed.wait_for(Option::is_some))
        .await
        .expect("the connection ends")
        .expect("the driver reports")
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_http3_server_serves_http3_from_the_new_process() {
    let s = Setup::new();
    let mut old = Running::serve(&s.config);
    s.until_serving().await;
    let old_pid = old.0.id();
    assert_eq!(
        crate::support::eventually("the admin status", || s.admin_pid()),
        old_pid
    );
    // A connection to the old process, idle when the upgrade comes.
    let mut kept = connect(s.addr(), HOST, &s.pki)
        .await
        .expect("QUIC handshake");
    assert_eq!(kept.try_get(HOST, "/").await.expect("reply").status, 200);
    let load = Load::start(s.addr(), &s.pki, 2, 400);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (upgraded, text) = s.portico("upgrade").await;
    assert!(upgraded, "upgrade: {text}");
    let new_pid: u32 = text
        .split_whitespace()
        .skip_while(|w| *w != "process")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    assert_ne!(new_pid, old_pid);
    // Not this test's child: stopped by its pid when the test ends, however it ends.
    let _new = Stop(new_pid);
    // The old process drains: its idle QUIC connection gets GOAWAY and a clean close.
    assert_eq!(
        ended(&mut kept, Duration::from_secs(20)).await,
        "H3_NO_ERROR"
    );
    let retry = kept.try_get(HOST, "/").await.err().expect("closed");
    assert!(retry.retry, "{retry:?}");
    let exited = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if let Some(status) = old.0.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the old process did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("join");
    assert!(
        exited.success(),
        "the old process exits cleanly: {exited:?}"
    );

    // Only the new process holds the UDP socket now: new connections are its own.
    for _ in 0..10 {
        let mut h3 = connect(s.addr(), HOST, &s.pki)
            .await
            .expect("QUIC handshake");
        let r = h3.try_get(HOST, "/").await.expect("reply");
        assert_eq!((r.status.as_u16(), r.text()), (200, "up".to_string()));
    }
    let load = load.finish(true).await;
    let pid_now = crate::support::eventually("the new admin status", || s.admin_pid());
    assert_eq!(pid_now, new_pid, "the new process answers");
    assert!(load.ok.load(Ordering::Relaxed) > 0, "{}", load.report());
    assert_eq!(
        load.failed.load(Ordering::Relaxed),
        0,
        "no HTTP/3 request failed across the upgrade: {}",
        load.report()
    );
}

/// Sends SIGTERM to a process this test did not start, when dropped, and waits a while for
/// it to be gone.
struct Stop(u32);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
        let start = Instant::now();
        while Path::new(&format!("/proc/{}", self.0)).exists()
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reloads_under_http3_load_fail_no_request() {
    let s = Setup::new();
    let _server = Running::serve(&s.config);
    s.until_serving().await;
    // Open across both reloads, idle.
    let mut kept = connect(s.addr(), HOST, &s.pki)
        .await
        .expect("QUIC handshake");
    assert_eq!(kept.try_get(HOST, "/").await.expect("reply").status, 200);
    // 200 requests over 4 connections.
    let load = Load::start(s.addr(), &s.pki, 4, 50);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (ok, text) = s.portico("reload").await;
        assert!(ok && text.contains("OK reloaded"), "{text}");
    }
    let load = load.finish(false).await;
    assert_eq!(load.ok.load(Ordering::Relaxed), 200, "{}", load.report());
    assert_eq!(load.failed.load(Ordering::Relaxed), 0, "{}", load.report());
    // The connection of the replaced configuration got GOAWAY and closed cleanly once
    // nothing was in flight; a request on it is one the client may send again, and its
    // next connection is served.
    assert_eq!(
        ended(&mut kept, Duration::from_secs(20)).await,
        "H3_NO_ERROR"
    );
    let retry = kept.try_get(HOST, "/").await.err().expect("closed");
    assert!(retry.retry, "{retry:?}");
    let mut next = connect(s.addr(), HOST, &s.pki)
        .await
        .expect("QUIC handshake");
    assert_eq!(next.try_get(HOST, "/").await.expect("reply").text(), "up");
}

#[test]
fn socket_activation_passes_the_http3_listeners_udp_socket() {
    let s = Setup::new();
    // `-d`: systemd-socket-activate binds a datagram socket (ListenDatagram=) and passes it
    // as descriptor 3 once a datagram arrives; Portico binds the listener's TCP socket
    // itself. Binding the UDP port again would fail (no SO_REUSEADDR), so HTTP/3 answering
    // means the passed socket serves.
    let child = Command::new("systemd-socket-activate")
        .args([
            "-d",
            "-l",
            &format!("127.0.0.1:{}", s.port),
            BIN,
            "serve",
            "-c",
        ])
        .arg(&s.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate starts");
    let _child = Running(child);
    let wake = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    crate::support::eventually("the datagram socket is bound", || {
        wake.send_to(b"wake up", s.addr()).ok()?;
        // A TCP connection is refused until Portico runs and binds its own socket.
        std::net::TcpStream::connect(s.addr()).ok()
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(s.until_serving());
}
