//! The log's buffered output: every access log line of a server stopped by SIGTERM is
//! written, and a stderr that does not keep up costs access log lines (counted), never a
//! request.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::admin::{request, To};
use crate::support::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_portico");

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[site]]\nhosts = [\"log.test\"]\ntls = \"internal\"\nrespond = {{ body = \"ok\" }}\n"
        ),
    )
    .expect("write");
    config
}

fn serve(config: &Path) -> Child {
    Command::new(BIN)
        .args(["serve", "-c"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("portico serve starts")
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `h2load` (HTTP/2 over TLS, certificates not verified) with `requests` requests; its
/// count of succeeded requests.
fn h2load(port: u16, requests: u32, clients: u32) -> (u64, String) {
    let out = Command::new("h2load")
        .args([
            "-n",
            &requests.to_string(),
            "-c",
            &clients.to_string(),
            "-m",
            "16",
            "--connect-to",
            &format!("127.0.0.1:{port}"),
            &format!("https://log.test:{port}/"),
        ])
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let succeeded = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| {
            l.split(',')
                .find(|p| p.trim().ends_with("succeeded"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    (succeeded, text)
}

fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {pid}");
}

fn access_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(" INFO access: request "))
        .count()
}

#[test]
fn every_access_log_line_is_written_when_sigterm_stops_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = serve(&config(dir.path(), port));
    wait_listening(port);
    let (ok, out) = h2load(port, 300, 2);
    assert_eq!(ok, 300, "{out}");
    // At once: the lines are still in the buffer, which is written every second.
    sigterm(&child);
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut log)
        .expect("read stderr");
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(access_lines(&log), 300, "{log}");
    assert!(log.contains("draining"), "{log}");
}

#[test]
fn a_stderr_that_does_not_keep_up_costs_access_log_lines_never_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = serve(&config(dir.path(), port));
    // Nobody reads stderr for now: once the pipe (64 KiB) and the buffer (4 MiB, about
    // 15,000 lines) are full, the server can write no more.
    let mut stderr = child.stderr.take().expect("piped");
    wait_listening(port);
    let (ok, out) = h2load(port, 30_000, 4);
    assert_eq!(ok, 30_000, "every request was answered\n{out}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let socket = To::Unix(dir.path().join("state/admin.sock"));
    let metrics = rt.block_on(request(&socket, "GET", "/metrics", &[]));
    assert_eq!(metrics.status, 200);
    let dropped: u64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("portico_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped-lines counter\n{}", metrics.body));
    assert!(
        (5_000..30_000).contains(&dropped),
        "dropped {dropped} of 30,000 lines"
    );

    // Read again: the writer catches up and says how many it dropped.
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    std::thread::sleep(Duration::from_secs(2));
    sigterm(&child);
    let status = child.wait().expect("exits");
    let log = reader.join().expect("reader");
    assert!(status.success(), "{status:?}");
    assert!(
        log.contains("access log lines dropped"),
        "the log says lines were dropped\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    let written = access_lines(&log) as u64;
    assert_eq!(
        written + dropped,
        30_000,
        "every line is written or counted as dropped"
    );
}
