//! The README's quickstart, run as a user would: the real binary and curl.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{quickstart, Running};

#[test]
fn quickstart_serves_three_sites_to_curl() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is required (the .ci/run script installs it)");
    }
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, ports) = quickstart(dir.path());
    let (https, http, admin) = (ports.https, ports.http, ports.admin);

    let check = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("check runs");
    assert!(
        check.status.success(),
        "check: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    let mut child = Running::serve(&config);
    let ca = dir.path().join("state/ca.pem");
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(args)
            .output()
            .expect("curl runs")
    };
    let started = Instant::now();
    loop {
        let out = curl(&[
            "--cacert",
            ca.to_str().expect("utf-8"),
            "--resolve",
            &format!("site1.localhost:{https}:127.0.0.1"),
            &format!("https://site1.localhost:{https}/"),
        ]);
        if out.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not come up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 1..=3 {
        let host = format!("site{i}.localhost");
        let out = curl(&[
            "--cacert",
            ca.to_str().expect("utf-8"),
            "--resolve",
            &format!("{host}:{https}:127.0.0.1"),
            "-w",
            "\n%{http_code} %{http_version}",
            &format!("https://{host}:{https}/"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("Hello from {host}")),
            "{host} page: {text}"
        );
        assert!(text.ends_with("200 2"), "{host} over HTTP/2: {text}");
    }
    // The certificate is the site's own: curl verifies the name against the local CA.
    let out = curl(&[
        "--cacert",
        ca.to_str().expect("utf-8"),
        "-v",
        "--resolve",
        &format!("site2.localhost:{https}:127.0.0.1"),
        &format!("https://site2.localhost:{https}/"),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CN=site2.localhost"));
    // http -> https redirect.
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--resolve",
        &format!("site3.localhost:{http}:127.0.0.1"),
        &format!("http://site3.localhost:{http}/p?q"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("308 https://site3.localhost:{https}/p?q")
    );
    // The README's admin commands: status and metrics on the admin listener, with the token
    // from the state directory.
    let token = std::fs::read_to_string(dir.path().join("state/admin.token")).expect("token");
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let out = curl(&[
        "-H",
        &bearer,
        &format!("http://127.0.0.1:{admin}/api/v1/status"),
    ]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("\"version\""), "status: {status}");
    let readme = std::fs::read_to_string(examples.join("../README.md")).expect("README.md");
    for line in [
        "admin: http://127.0.0.1:9900/?token=",
        "curl -H \"Authorization: Bearer $(cat examples/state/admin.token)\" http://127.0.0.1:9900/api/v1/status",
    ] {
        assert!(readme.contains(line), "the README's quickstart says {line:?}");
    }
    let out = curl(&["-H", &bearer, &format!("http://127.0.0.1:{admin}/metrics")]);
    let metrics = String::from_utf8_lossy(&out.stdout);
    for i in 1..=3 {
        let series =
            format!("portico_http_requests_total{{site=\"site{i}\",code=\"2xx\",protocol=\"h2\"}}");
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }
    // A restart reuses the local CA and the issued certificates.
    let ca_before = std::fs::read(&ca).expect("ca");
    let _ = child.0.kill();
    let _ = child.0.wait();
    child = Running::serve(&config);
    let started = Instant::now();
    loop {
        let out = curl(&[
            "--cacert",
            ca.to_str().expect("utf-8"),
            "--resolve",
            &format!("site3.localhost:{https}:127.0.0.1"),
            &format!("https://site3.localhost:{https}/"),
        ]);
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("site3"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        std::fs::read(&ca).expect("ca"),
        ca_before,
        "the CA is reused across restarts"
    );
    drop(child);
}
