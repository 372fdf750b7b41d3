//! Portico under a service manager, without one running: the test is the manager. It
//! reads the readiness notifications (`NOTIFY_SOCKET`) of a real `portico serve`, and
//! passes it listening sockets the way systemd does (`LISTEN_FDS`, through
//! `systemd-socket-activate`, which binds, sets the variables and execs).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::lifecycle::{curl, signal};
use crate::support::{eventually, free_port, Running};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

/// A configuration with one https listener on `port` and a site `a.test` answering `body`.
fn write_config(config: &Path, port: u16, body: &str) {
    std::fs::write(
        config,
        format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = {{ body = \"{body}\" }}\n"),
    )
    .expect("write config");
}

/// The service manager's end: a datagram socket the server is told about.
struct Manager {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let socket = UnixDatagram::bind(path).expect("bind the notification socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Manager {
            socket,
            seen: Vec::new(),
        }
    }

    /// The next notification; fails the test after 30 seconds without one.
    fn next(&mut self) -> String {
        let mut buf = [0u8; 1024];
        let n = self.socket.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no notification within 30 s ({e}); seen so far: {:?}",
                self.seen
            )
        });
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.seen.push(message.clone());
        message
    }

    /// The next notification, which must say `state` (its first line).
    fn expect(&mut self, state: &str) -> String {
        let message = self.next();
        assert_eq!(
            message.lines().next(),
            Some(state),
            "expected {state}; seen: {:?}",
            self.seen
        );
        message
    }

    /// RELOADING=1 with the monotonic time systemd 253+ wants, then READY=1.
    fn expect_reload(&mut self) {
        let reloading = self.expect("RELOADING=1");
        let usec = reloading
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
        assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{reloading:?}");
        self.expect("READY=1");
    }
}

/// A directory with a configuration of one site answering `body`, and its port.
fn one_site(body: &str) -> (tempfile::TempDir, u16, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("portico.toml");
    write_config(&config, port, body);
    (dir, port, config)
}

/// `portico serve -c config` told to notify the manager at `dir/notify.sock`.
fn serve_notifying(dir: &Path, config: &Path) -> (Manager, Running) {
    let socket = dir.join("notify.sock");
    let manager = Manager::bind(&socket);
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(config)
        .env("NOTIFY_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("portico serve starts");
    (manager, Running(child))
}

fn reload(config: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["reload", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("portico reload runs")
}

#[test]
fn notify_ready_once_listening_reloading_around_reloads_stopping_at_drain() {
    let (dir, port, config) = one_site("one");
    let (mut manager, mut child) = serve_notifying(dir.path(), &config);

    manager.expect("READY=1");
    // Ready means ready: the first request after READY=1 is served, without a retry.
    let ca = dir.path().join("state/ca.pem");
    assert_eq!(
        curl(&ca, "a.test", port).as_deref(),
        Some("one"),
        "served at READY=1"
    );

    // `portico reload` (what ExecReload runs) goes through the control socket.
    write_config(&config, port, "two");
    let out = reload(&config);
    assert!(out.status.success(), "reload: {out:?}");
    manager.expect_reload();
    assert_eq!(curl(&ca, "a.test", port).as_deref(), Some("two"));

    // SIGHUP; and a reload that fails ends in READY=1 too: the old configuration serves.
    write_config(&config, port, "three");
    signal(&child.0, "HUP");
    manager.expect_reload();
    std::fs::write(&config, "[[listener]]\naddress = \"nowhere\"\n").expect("break config");
    let out = reload(&config);
    assert_eq!(out.status.code(), Some(1), "a broken reload fails: {out:?}");
    manager.expect_reload();
    assert_eq!(curl(&ca, "a.test", port).as_deref(), Some("three"));

    signal(&child.0, "TERM");
    manager.expect("STOPPING=1");
    let status = eventually("exit after SIGTERM", || child.0.try_wait().expect("wait"));
    assert!(status.success(), "{status:?}");
}

#[test]
fn notify_an_upgrade_names_the_new_main_process_instead_of_stopping() {
    let (dir, port, config) = one_site("one");
    let (mut manager, _old) = serve_notifying(dir.path(), &config);
    manager.expect("READY=1");

    let out = Command::new(BIN)
        .args(["upgrade", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("portico upgrade runs");
    assert!(out.status.success(), "upgrade: {out:?}");
    // The old process names the new one; the new one says it is ready (either first).
    let (mut main_pid, mut ready) = (None, false);
    while main_pid.is_none() || !ready {
        let message = manager.next();
        assert!(
            !message.starts_with("STOPPING=1"),
            "an upgrade is no stop: {:?}",
            manager.seen
        );
        if let Some(pid) = message.strip_prefix("MAINPID=") {
            main_pid = Some(pid.trim().parse::<u32>().expect("a pid"));
        }
        ready |= message.starts_with("READY=1");
    }
    let pid = main_pid.expect("MAINPID");
    // Stopped at the end whatever happens: the new process is not this test's child.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _new = Kill(pid);
    let ca = dir.path().join("state/ca.pem");
    assert_eq!(curl(&ca, "a.test", port).as_deref(), Some("one"));
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    manager.expect("STOPPING=1");
}

/// `systemd-socket-activate -l 127.0.0.1:PORT portico serve -c FILE`: it binds, waits for
/// the first connection, sets LISTEN_FDS=1 and LISTEN_PID and execs portico with the
/// socket as descriptor 3.
fn socket_activated(listen: u16, config: &Path) -> Command {
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["-l", &format!("127.0.0.1:{listen}"), BIN, "serve", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// Connects once to wake a socket-activated server: the connection waits in the socket's
/// queue until the server accepts it.
fn wake(port: u16) {
    eventually("the socket is listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

#[test]
fn socket_activation_serves_on_the_socket_it_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("portico.toml");
    write_config(&config, port, "activated");
    let mut command = socket_activated(port, &config);
    command.stderr(Stdio::null());
    let _child = Running(command.spawn().expect("systemd-socket-activate starts"));
    wake(port);
    // Portico could not bind 127.0.0.1:PORT itself: the inherited socket holds it.
    let ca = dir.path().join("state/ca.pem");
    assert_eq!(
        eventually("served on the inherited socket", || curl(
            &ca, "a.test", port
        )),
        "activated"
    );
}

#[test]
fn socket_activation_refuses_a_socket_no_listener_wants_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, other) = (free_port(), free_port());
    let config = dir.path().join("portico.toml");
    write_config(&config, port, "never");
    let mut command = socket_activated(other, &config);
    command.stderr(Stdio::piped());
    let mut child = Running(command.spawn().expect("systemd-socket-activate starts"));
    wake(other);
    let status = eventually("portico refuses to start", || {
        child.0.try_wait().expect("wait")
    });
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut stderr = String::new();
    use std::io::Read;
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains(&format!("127.0.0.1:{other}")) && stderr.contains("matches no listener"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "and says what the listeners want: {stderr}"
    );
}
