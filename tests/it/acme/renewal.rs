//! Renewal against Pebble with certificates that live 30 seconds, and an account created
//! with an External Account Binding.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::client::{connect, Http, Opts};

use super::{issue_with, BIN};

/// One request on a new connection: the leaf's serial and the reply, or what went wrong.
async fn request(addr: SocketAddr, host: &str) -> Result<(String, u16, String), String> {
    let (tls, presented) = connect(addr, &Opts::sni(host))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut http = Http::over(tls).await;
    let reply = http
        .try_get(host, "/")
        .await
        .ok_or_else(|| "no response".to_string())?;
    Ok((presented.serial, reply.status.as_u16(), reply.text()))
}

/// `portico certs --json` for the configuration in `dir`.
pub(super) fn certs_json(dir: &Path) -> serde_json::Value {
    let out = std::process::Command::new(BIN)
        .args(["certs", "--json", "-c"])
        .arg(dir.join("portico.toml"))
        .output()
        .expect("run portico certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("certs --json is JSON")
}

/// The `certs --json` entry of the ACME site `site`.
pub(super) fn acme_entry(doc: &serde_json::Value, site: &str) -> serde_json::Value {
    doc["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| c["source"] == "acme" && c["sites"][0] == site)
        .cloned()
        .unwrap_or_else(|| panic!("no acme entry for {site} in {doc:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_swaps_the_certificate_without_a_failed_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = "shop.example.test";
    // Certificates that live 30 seconds are renewed when about 10 are left.
    let (_pebble, ports, _portico) = issue_with(
        dir.path(),
        r#"["tls-alpn-01"]"#,
        &[host],
        r#""externalAccountBindingRequired": false, "certificateValidityPeriod": 30"#,
        "",
    )
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], ports.1));
    let (first, status, body) = request(addr, host).await.expect("first request");
    assert_eq!((status, body.as_str()), (200, "shop"));

    // What an operator sees: an ACME certificate with its planned renewal.
    let start = Instant::now();
    let entry = loop {
        let entry = acme_entry(&certs_json(dir.path()), "shop");
        if entry["next_renewal"].is_string() && entry["certificate"].is_object() {
            break entry;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no planned renewal: {entry:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(entry["names"], serde_json::json!([host]));
    assert_eq!(entry["acme"]["rule"], "one_third", "{entry:#}");
    assert_eq!(entry["acme"]["state"], "waiting", "{entry:#}");
    assert!(entry["certificate"]["not_after"].is_string());

    // Requests on new connections, back to back, until another certificate is served.
    let mut served = 0;
    let mut failures = Vec::new();
    let start = Instant::now();
    let renewed = loop {
        match request(addr, host).await {
            Ok((serial, 200, body)) if body == "shop" => {
                served += 1;
                if serial != first {
                    break serial;
                }
            }
            other => failures.push(format!("{other:?}")),
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "no renewal after {served} requests; portico log:\n{}",
                std::fs::read_to_string(dir.path().join("portico.log")).unwrap_or_default()
            );
        }
    };
    // A few more on the new certificate, to see the swap has settled.
    for _ in 0..20 {
        match request(addr, host).await {
            Ok((serial, 200, _)) if serial == renewed => served += 1,
            other => failures.push(format!("after the swap: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_ne!(renewed, first);
    assert!(served > 20, "{served}");
    let log = std::fs::read_to_string(dir.path().join("portico.log")).expect("log");
    assert!(log.contains("rule=OneThird"), "{log}");
    // Issuance and renewal swap the site's certificate in place: no runtime is built.
    assert!(log.contains("site certificate installed"), "{log}");
    assert!(!log.contains("reloaded"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_created_with_external_account_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Pebble refuses accounts without a binding to one of these keys.
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let (_pebble, _ports, _portico) = issue_with(
        dir.path(),
        r#"["http-01"]"#,
        &["eab.example.test"],
        &format!(
            r#""externalAccountBindingRequired": true, "externalAccountMACKeys": {{"kid-1": "{key}"}}"#
        ),
        &format!("eab_kid = \"kid-1\"\neab_hmac_key = \"{key}\"\n"),
    )
    .await;
    let log = std::fs::read_to_string(dir.path().join("portico.log")).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("ACME account created")
                && l.contains("external_account_binding=true")),
        "{log}"
    );
    // The key is a secret: never logged.
    assert!(!log.contains(key), "{log}");
}
