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

/// Kills a process that is not this test's child when dropped.
struct Kill(u32);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.0.to_string())
            .stderr(Stdio::null())
            .status();
    }
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

/// The system calls a filter line's groups stand for, `@group`s expanded, as this
/// machine's systemd defines them.
fn syscalls(groups: &[&str], into: &mut std::collections::BTreeSet<String>) {
    for group in groups {
        if !group.starts_with('@') {
            into.insert(group.to_string());
            continue;
        }
        let out = Command::new("systemd-analyze")
            .args(["syscall-filter", group])
            .output()
            .expect("systemd-analyze runs");
        assert!(
            out.status.success(),
            "systemd-analyze syscall-filter {group}"
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The first line names the group; then comments and members, groups among them.
        let members: Vec<&str> = text
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        syscalls(&members, into);
    }
}

/// The unit's `SystemCallFilter=` lines: what they allow, and what `~` lines take away.
fn unit_filter() -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/debian/portico.service");
    let text = std::fs::read_to_string(unit).expect("the unit");
    let (mut allowed, mut denied) = Default::default();
    for value in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SystemCallFilter="))
    {
        match value.strip_prefix('~') {
            Some(deny) => syscalls(&deny.split_whitespace().collect::<Vec<_>>(), &mut denied),
            None => syscalls(&value.split_whitespace().collect::<Vec<_>>(), &mut allowed),
        }
    }
    (allowed, denied)
}

/// The unit's system call filter against what Portico really calls: a server traced
/// with strace through a start, https and http requests, a proxied one, a reload, an
/// `--live` question and a drain calls nothing the filter refuses.
#[test]
fn the_units_system_call_filter_allows_what_portico_calls() {
    let (allowed, denied) = unit_filter();
    assert!(allowed.contains("accept4") && denied.contains("setrlimit"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, http) = (free_port(), free_port());
    let config = dir.path().join("portico.toml");
    crate::support::site_root(dir.path(), "site", "traced");
    std::fs::write(
        &config,
        format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n[[listener]]\naddress = \"127.0.0.1:{http}\"\nkind = \"http\"\n[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nroot = \"site\"\n[[site]]\nname = \"b\"\nhosts = [\"b.test\"]\ntls = \"internal\"\nproxy = {{ upstreams = [\"http://127.0.0.1:{}\"] }}\n", free_port()),
    )
    .expect("write config");
    let trace = dir.path().join("trace");
    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args([BIN, "serve", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Running(strace.spawn().expect("strace starts"));
    let ca = dir.path().join("state/ca.pem");
    assert_eq!(
        eventually("served under strace", || curl(&ca, "a.test", port)),
        "traced"
    );
    // A proxied request to an upstream that is not there (502), and a plain http one.
    let _ = curl(&ca, "b.test", port);
    let _ = std::net::TcpStream::connect(("127.0.0.1", http)).map(|mut s| {
        use std::io::{Read, Write};
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
        let _ = s.read_to_end(&mut Vec::new());
    });
    assert!(reload(&config).status.success());
    let live = Command::new(BIN)
        .args(["certs", "--live", "-c"])
        .arg(&config)
        .output()
        .expect("certs --live runs");
    assert!(live.status.success(), "{live:?}");
    // SIGTERM to Portico itself (strace would detach): the pid of the trace's first line.
    let text = std::fs::read_to_string(&trace).expect("the trace");
    let pid: u32 = text
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the traced process's pid");
    let _portico = Kill(pid);
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let status = eventually("exit after SIGTERM", || child.0.try_wait().expect("wait"));
    assert!(status.success(), "{status:?}");

    let text = std::fs::read_to_string(&trace).expect("the trace");
    let called: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            // "PID name(args) = result"; resumed and signal lines have no name there.
            let rest = l.split_once(' ')?.1.trim_start();
            let name = &rest[..rest.find('(')?];
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_string())
        })
        .collect();
    assert!(
        called.contains("accept4") && called.contains("epoll_wait"),
        "{called:?}"
    );
    let refused: Vec<&String> = called
        .iter()
        .filter(|c| !allowed.contains(*c) || denied.contains(*c))
        .collect();
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter refuses system calls Portico makes: {refused:?}"
    );
}
