//! The server's life as an operator sees it: unreadable keys refuse to start, SIGHUP
//! reloads (a broken reload changes nothing), SIGTERM drains, requests in flight finish.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{connect, Opts};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{eventually, free_port, serve, site_root, Running};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs portico as an unprivileged user when the tests run as root (root reads any file).
fn portico_unprivileged(args: &[&str]) -> Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("portico runs")
}

#[test]
fn unreadable_key_is_an_error_never_a_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    let pki = Pki::new(&dir.path().join("pki"));
    std::fs::set_permissions(
        dir.path().join("pki"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod pki");
    let (good_cert, good_key) = pki.leaf("good", &["good.test"], Key::Ecdsa, Validity::Current);
    let (cert, key) = pki.leaf("locked", &["locked.test"], Key::Ecdsa, Validity::Current);
    for f in [&good_cert, &good_key, &cert] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).expect("chmod key");
    let toml = format!(
        "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{}\"\n[[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n[[site]]\nname = \"good\"\nhosts = [\"good.test\"]\nrespond = {{ body = \"good\" }}\n[[site]]\nname = \"locked\"\nhosts = [\"locked.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nrespond = {{ body = \"locked\" }}\n",
        free_port(),
        good_cert.display(),
        good_key.display(),
        cert.display(),
        key.display()
    );
    let config = dir.path().join("portico.toml");
    std::fs::write(&config, toml).expect("write");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let out = portico_unprivileged(&["check", "-c", config.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "check fails:\n{stdout}");
    assert!(
        stdout.contains("site[1].tls") && stdout.contains("permission denied"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&key.display().to_string()),
        "the message names the key file:\n{stdout}"
    );

    let out = portico_unprivileged(&["serve", "-c", config.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "serve refuses to start:\n{stderr}"
    );
    assert!(stderr.contains("not serving"), "{stderr}");
}

#[tokio::test]
async fn request_in_flight_finishes_during_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = site_root(dir.path(), "files", "index");
    let size = 32 * 1024 * 1024;
    std::fs::write(root.join("big.bin"), vec![7u8; size]).expect("write big file");
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[site]]\nhosts = [\"files.test\"]\ntls = \"internal\"\nroot = \"files\"\n",
        free_port()
    );
    let server = serve(dir.path(), &toml).await;
    let (mut tls, _) = connect(server.addr("127.0.0.1"), &Opts::sni("files.test").http1())
        .await
        .expect("handshake");
    tls.write_all(b"GET /big.bin HTTP/1.1\r\nHost: files.test\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = tls.read(&mut buf).await.expect("first bytes");
    assert!(got > 0);
    let stopping = tokio::spawn(server.stop(Duration::from_secs(30)));
    loop {
        match tls.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("the response was cut: {e} after {got} bytes"),
        }
    }
    assert!(
        got > size,
        "the whole body arrived during the drain ({got} bytes)"
    );
    assert!(
        stopping.await.expect("join"),
        "the drain finished before its deadline"
    );
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {}", child.id())])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

pub(crate) fn curl(ca: &std::path::Path, host: &str, port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            &format!("https://{host}:{port}/"),
        ])
        .output()
        .expect("curl runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn sighup_reloads_broken_reload_changes_nothing_sigterm_drains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("portico.toml");
    let write = |sites: &str| {
        std::fs::write(
            &config,
            format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n{sites}"),
        )
        .expect("write config");
    };
    write("[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = { body = \"one\" }\n");
    let mut child = Running::serve(&config);
    let ca = dir.path().join("state/ca.pem");
    assert_eq!(
        eventually("first start", || curl(&ca, "a.test", port)),
        "one"
    );

    write("[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = { body = \"two\" }\n[[site]]\nname = \"b\"\nhosts = [\"b.test\"]\ntls = \"internal\"\nrespond = { body = \"bee\" }\n");
    signal(&child.0, "HUP");
    eventually("reload applied", || {
        curl(&ca, "a.test", port).filter(|b| b == "two")
    });
    assert_eq!(
        curl(&ca, "b.test", port).as_deref(),
        Some("bee"),
        "an added site is served after the reload"
    );

    write("[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\nrespond = { body = \"three\" }\nroot = \"missing\"\n");
    signal(&child.0, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        curl(&ca, "a.test", port).as_deref(),
        Some("two"),
        "a failed reload keeps the old configuration"
    );
    assert_eq!(curl(&ca, "b.test", port).as_deref(), Some("bee"));

    signal(&child.0, "TERM");
    let status = eventually("exit after SIGTERM", || child.0.try_wait().expect("wait"));
    assert!(status.success(), "SIGTERM drains and exits 0: {status:?}");
}
