//! Metrics: known traffic, then a scrape that shows exactly it; the text is accepted by
//! `promtool check metrics` (Debian's prometheus package, installed by scripts/test).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::client::{connect, Http, Opts};
use crate::support::{free_port, serve, TestServer};

const SITES: &str = "[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = { body = \"a\" }\n[[site]]\nname = \"b\"\nhosts = [\"b.test\"]\ntls = \"internal\"\nrespond = { body = \"b\" }\n";

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:{}\"\n{SITES}",
        free_port()
    );
    let server = serve(dir.path(), &toml).await;
    (dir, server)
}

fn scrape(server: &TestServer) -> String {
    let rt = server.server.as_ref().expect("running").runtime();
    rt.metrics.render(&rt)
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn known_traffic_gives_exactly_those_counters() {
    let (_dir, server) = server().await;
    let addr = server.addr("127.0.0.1");
    // Three requests to site a, then a request for b on a's connection: 421.
    let (tls, _) = connect(addr, &Opts::sni("a.test"))
        .await
        .expect("handshake");
    let mut http = Http::over(tls).await;
    for _ in 0..3 {
        assert_eq!(http.get("a.test", "/").await.status, 200);
    }
    assert_eq!(http.get("b.test", "/").await.status, 421);
    // An unknown name and a client without SNI are refused.
    assert!(connect(addr, &Opts::sni("nope.test")).await.is_err());
    assert!(connect(addr, &Opts::no_sni()).await.is_err());

    let text = scrape(&server);
    let expect = [
        (
            r#"portico_http_requests_total{site="a",code="2xx",protocol="h2"}"#,
            3.0,
        ),
        (r#"portico_http_misdirected_total{listener="main"}"#, 1.0),
        (
            r#"portico_tls_handshakes_total{listener="main",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"portico_tls_handshakes_total{listener="main",outcome="refused_unknown_sni"}"#,
            1.0,
        ),
        (
            r#"portico_tls_handshakes_total{listener="main",outcome="refused_no_sni"}"#,
            1.0,
        ),
        (
            r#"portico_connections_total{listener="main",protocol="h2"}"#,
            1.0,
        ),
        (
            r#"portico_connections_total{listener="main",protocol="none"}"#,
            2.0,
        ),
        (
            r#"portico_http_request_duration_seconds_count{site="a"}"#,
            3.0,
        ),
        (
            r#"portico_tls_handshake_duration_seconds_count{listener="main"}"#,
            1.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
    }
    for absent in [
        r#"portico_http_requests_total{site="b""#,
        r#"portico_tls_handshakes_total{listener="main",outcome="failed"}"#,
    ] {
        assert!(
            !text.contains(absent),
            "{absent} is zero, so not rendered:\n{text}"
        );
    }
    // Two internal certificates in use; the soonest expiry is the earlier of them.
    let not_after: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("portico_certificate_not_after_seconds{"))
        .filter(|l| l.contains(r#"source="internal""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(not_after.len(), 2, "{text}");
    let soonest = value(&text, "portico_certificate_soonest_expiry_seconds");
    assert_eq!(soonest, not_after.iter().copied().reduce(f64::min));
    // Counted by source, and by how soon they expire, whatever the number of series.
    assert_eq!(
        value(&text, r#"portico_certificates{source="internal"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"portico_certificates{source="file"}"#),
        Some(0.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    for days in [7.0, 14.0, 30.0] {
        let within = not_after
            .iter()
            .filter(|t| **t - now < days * 86400.0)
            .count();
        let series = format!(r#"portico_certificates_expiring{{days="{days}"}}"#);
        assert_eq!(
            value(&text, &series),
            Some(within as f64),
            "{series} in:\n{text}"
        );
    }
    assert!(value(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
    assert!(value(&text, "portico_config_loaded_timestamp_seconds").is_some());

    // The connection ended: nothing is open any more.
    drop(http);
    let open = r#"portico_connections_open{listener="main"}"#;
    for _ in 0..300 {
        if value(&scrape(&server), open) == Some(0.0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the connection is still counted open:\n{}", scrape(&server));
}

#[tokio::test]
async fn counters_survive_a_reload_for_sites_that_stay() {
    // As the serve loop does it: one Shared for every runtime, install, then `installed`.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("portico.toml");
    let listener = format!(
        "[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:{}\"\n",
        free_port()
    );
    std::fs::write(&file, format!("{listener}{SITES}")).expect("write");
    let shared = portico::runtime::Shared::new();
    let mut server = portico::listener::Server::start(crate::support::build(&file, &shared))
        .await
        .expect("start");
    shared.metrics.installed(&server.runtime());
    let addr = server.runtime().listeners[0].config.address.port;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], addr));
    for host in ["a.test", "b.test"] {
        let (tls, _) = connect(addr, &Opts::sni(host)).await.expect("handshake");
        assert_eq!(Http::over(tls).await.get(host, "/").await.status, 200);
    }
    // Site b goes away, c comes.
    let c = "[[site]]\nname = \"c\"\nhosts = [\"c.test\"]\ntls = \"internal\"\nrespond = { body = \"c\" }\n";
    let a_only = SITES.split("[[site]]").nth(1).expect("site a");
    std::fs::write(&file, format!("{listener}[[site]]{a_only}{c}")).expect("write");
    server
        .install(crate::support::build(&file, &shared))
        .expect("install");
    shared.metrics.installed(&server.runtime());
    let (tls, _) = connect(addr, &Opts::sni("a.test"))
        .await
        .expect("handshake");
    assert_eq!(Http::over(tls).await.get("a.test", "/").await.status, 200);
    let rt = server.runtime();
    let text = rt.metrics.render(&rt);
    let series = |site: &str| {
        format!(r#"portico_http_requests_total{{site="{site}",code="2xx",protocol="h2"}}"#)
    };
    assert_eq!(value(&text, &series("a")), Some(2.0), "{text}");
    assert_eq!(
        value(&text, &series("b")),
        None,
        "a removed site's series goes: {text}"
    );
    assert_eq!(
        value(
            &text,
            r#"portico_tls_handshakes_total{listener="main",outcome="ok"}"#
        ),
        Some(3.0),
        "{text}"
    );
    server.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let (_dir, server) = server().await;
    let addr = server.addr("127.0.0.1");
    let (tls, _) = connect(addr, &Opts::sni("a.test"))
        .await
        .expect("handshake");
    let mut http = Http::over(tls).await;
    assert_eq!(http.get("a.test", "/").await.status, 200);
    let text = scrape(&server);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn upstream_requests_are_counted_by_outcome_with_health() {
    // A live upstream that answers every request, and an address where nothing listens.
    let live = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let live_addr = live.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = live.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"up")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:{}\"\n[[site]]\nname = \"app\"\nhosts = [\"app.test\"]\ntls = \"internal\"\nproxy = {{ upstreams = [\"http://{live_addr}\", \"http://{dead_addr}\"] }}\n",
        free_port()
    );
    let server = serve(dir.path(), &toml).await;
    let (tls, _) = connect(server.addr("127.0.0.1"), &Opts::sni("app.test"))
        .await
        .expect("handshake");
    let mut http = Http::over(tls).await;
    for _ in 0..4 {
        // A GET that meets the dead upstream is tried again on the live one.
        assert_eq!(http.get("app.test", "/").await.status, 200);
    }
    let text = scrape(&server);
    let series = |up: &std::net::SocketAddr, what: &str| {
        format!(r#"portico_upstream_{what}{{site="app",upstream="http://{up}""#)
    };
    let ok = format!("{},outcome=\"ok\"}}", series(&live_addr, "requests_total"));
    assert_eq!(value(&text, &ok), Some(4.0), "{text}");
    let failed = format!(
        "{},outcome=\"failed\"}}",
        series(&dead_addr, "requests_total")
    );
    assert!(value(&text, &failed).is_some_and(|n| n >= 1.0), "{text}");
    let healthy = |up| format!("{}}}", series(up, "healthy"));
    assert_eq!(value(&text, &healthy(&live_addr)), Some(1.0), "{text}");
    assert_eq!(
        value(&text, &healthy(&dead_addr)),
        Some(0.0),
        "marked down: {text}"
    );
}
