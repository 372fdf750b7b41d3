//! A real Prometheus (Debian's prometheus package, installed by scripts/test) scrapes the
//! admin listener's /metrics with the token, and answers a PromQL query for what Portico
//! reported.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, Running};

/// One HTTP/1.1 GET on loopback (the connection closed after it); the body, if the status is 200.
fn get(port: u16, target: &str, bearer: Option<&str>) -> Option<String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tcp,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    if !status.starts_with("HTTP/1.1 200") {
        return None;
    }
    // Prometheus answers its API chunked; the admin listener with a length.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some(dechunk(body));
    }
    Some(body.to_string())
}

/// The body of a chunked HTTP/1.1 message.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `f` every 200 ms for at most 60 s.
fn within_a_minute<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[test]
fn prometheus_scrapes_the_admin_listener_and_answers_promql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (https, admin, prom) = (free_port(), free_port(), free_port());
    let config = dir.path().join("portico.toml");
    write(
        &config,
        &format!(
            "state_dir = \"state\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
             [[listener]]\naddress = \"127.0.0.1:{https}\"\n\
             [[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = {{ body = \"a\" }}\n"
        ),
    );
    let _portico = Running::serve(&config);
    let token_file = dir.path().join("state/admin.token");
    let token = within_a_minute("the admin token file", || {
        let t = std::fs::read_to_string(&token_file).ok()?;
        (!t.trim().is_empty()).then(|| t.trim().to_string())
    });
    let metrics = within_a_minute("the admin listener answers /metrics", || {
        get(admin, "/metrics", Some(&token))
    });
    let soonest: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portico_certificate_soonest_expiry_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no soonest expiry in:\n{metrics}"));

    let prometheus_yml = dir.path().join("prometheus.yml");
    write(
        &prometheus_yml,
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: portico\n    metrics_path: /metrics\n\
             \x20   authorization:\n      type: Bearer\n      credentials_file: {}\n\
             \x20   static_configs:\n      - targets: [\"127.0.0.1:{admin}\"]\n",
            token_file.display()
        ),
    );
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", prometheus_yml.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus; scripts/test installs it)");
    let _prometheus = Running(child);
    let query = "/api/v1/query?query=portico_certificate_soonest_expiry_seconds";
    let answer = within_a_minute("Prometheus has scraped Portico", || {
        let body = get(prom, query, None)?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = json["data"]["result"].as_array()?.first()?.clone();
        Some(result)
    });
    assert_eq!(answer["metric"]["job"], "portico", "{answer}");
    let value: f64 = answer["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {answer}"));
    assert_eq!(value, soonest, "Prometheus holds what Portico reported");
    // The scrape itself succeeded (up == 1), with the token.
    let up = within_a_minute("up", || {
        let body = get(prom, "/api/v1/query?query=up", None)?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"].as_array()?.first()?["value"][1]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(up, "1");
}
