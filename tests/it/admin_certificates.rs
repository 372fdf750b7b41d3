//! `PUT` and `DELETE /api/v1/certificates/{name}` through the real binary: a certificate put
//! over the Unix admin socket is served at once and after a restart, a bad one (a key that is
//! not the leaf's) and a removal that would leave a host uncovered change nothing, on disk
//! or on the wire; on TCP the token and the Origin check apply; `portico check` judges the
//! stored files and writes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::admin::{request, request_body, up, Answer, Logged, To};
use crate::support::client::{connect, get, Opts};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{eventually, free_port};

/// An https listener, a site `app` for `app.x.test` from the pool, the wildcard
/// `*.x.test` in the pool, and `extra` appended.
fn write_config(dir: &Path, pki: &Pki, https: u16, extra: &str) -> PathBuf {
    let file = dir.join("portico.toml");
    let pool = pki.pool(&[("wildcard", &["*.x.test"])]);
    std::fs::write(
        &file,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{https}\"\n{pool}[[site]]\nname = \"app\"\nhosts = [\"app.x.test\"]\nrespond = {{ body = \"app\" }}\n{extra}"
        ),
    )
    .expect("write config");
    file
}

/// A leaf made by the test PKI, as one PEM body: chain (leaf, intermediate) then key.
fn body(pki: &Pki, stem: &str, sans: &[&str]) -> String {
    let (cert, key) = pki.leaf(stem, sans, Key::Ecdsa, Validity::Current);
    read(&cert) + &read(&key)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The serial number of the first certificate in a PEM text, in hex as the probe gives it.
fn serial(pem: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("a cert");
    let (_, x) = x509_parser::parse_x509_certificate(&der).expect("parse");
    x.raw_serial_as_string()
}

/// The subject and serial presented to a client asking for `sni`.
async fn served(https: u16, sni: &str) -> (String, String) {
    let addr = format!("127.0.0.1:{https}").parse().expect("addr");
    let (_, presented) = connect(addr, &Opts::sni(sni))
        .await
        .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"));
    (presented.subject, presented.serial)
}

/// A temporary directory with a test PKI and the configuration of [`write_config`].
struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    https: u16,
    config: PathBuf,
    state: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let https = free_port();
    let config = write_config(dir.path(), &pki, https, "");
    let state = dir.path().join("state");
    Setup {
        _dir: dir,
        pki,
        https,
        config,
        state,
    }
}

/// Starts `portico serve` and waits for its admin socket.
async fn start(config: &Path, state: &Path) -> (Logged, To) {
    let server = Logged::serve(config);
    let socket = state.join("admin.sock");
    eventually("the admin socket", || socket.exists().then_some(()));
    let to = To::Unix(socket);
    up(&to).await;
    (server, to)
}

fn assert_status(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{a:?}");
}

/// Whether some error diagnostic of an outcome's JSON says `text`.
fn has_error(outcome: &serde_json::Value, text: &str) -> bool {
    outcome["diagnostics"].as_array().is_some_and(|d| {
        d.iter().any(|d| {
            d["severity"] == "error" && d["message"].as_str().is_some_and(|m| m.contains(text))
        })
    })
}

/// The two stored files' contents, None for a missing one.
fn stored(state: &Path, name: &str) -> (Option<String>, Option<String>) {
    let dir = state.join("certificates");
    let get = |f: String| std::fs::read_to_string(dir.join(f)).ok();
    (get(format!("{name}.pem")), get(format!("{name}.key")))
}

#[tokio::test]
async fn a_put_certificate_serves_survives_a_restart_and_a_delete_falls_back() {
    let s = setup();
    let (server, to) = start(&s.config, &s.state).await;
    let (pki, https, config, state) = (&s.pki, s.https, &s.config, &s.state);
    let path = "/api/v1/certificates/app";

    // At start the wildcard covers the host.
    let (subject, _) = served(https, "app.x.test").await;
    assert!(subject.contains("wildcard"), "{subject}");

    // Create: 201, served at once, stored privately.
    let first = body(pki, "app-one", &["app.x.test"]);
    let put = request_body(&to, "PUT", path, &[], first.clone()).await;
    assert_status(&put, 201);
    let outcome = put.json();
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert_eq!(outcome["reason"], "admin PUT certificates/app");
    // The pool was patched, not rebuilt.
    assert_eq!(
        outcome["summary"], "certificate pool: 1 added, 0 replaced, 0 removed",
        "{outcome}"
    );
    let (subject, presented) = served(https, "app.x.test").await;
    assert!(subject.contains("app-one"), "{subject}");
    assert_eq!(presented, serial(&first));
    let store = state.join("certificates");
    assert_eq!(
        std::fs::metadata(&store).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    for f in ["app.pem", "app.key"] {
        let mode = std::fs::metadata(store.join(f))
            .expect(f)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let (pem, key) = stored(state, "app");
    assert!(pem
        .as_deref()
        .is_some_and(|p| p.matches("BEGIN CERTIFICATE").count() == 2 && !p.contains("PRIVATE")));
    assert!(key
        .as_deref()
        .is_some_and(|k| k.contains("PRIVATE KEY") && !k.contains("CERTIFICATE")));

    // A key that is not the leaf's: 422 with the report, nothing changed anywhere.
    let before = stored(state, "app");
    let (other_cert, _) = pki.leaf("app-two", &["app.x.test"], Key::Ecdsa, Validity::Current);
    let (_, stray_key) = pki.leaf("stray", &["stray.x.test"], Key::Ecdsa, Validity::Current);
    let bad = read(&other_cert) + &read(&stray_key);
    let refused = request_body(&to, "PUT", path, &[], bad).await;
    assert_status(&refused, 422);
    let r = refused.json();
    assert_eq!(r["ok"], false, "{r}");
    assert!(has_error(&r, "does not match the certificate"), "{r}");
    assert_eq!(
        stored(state, "app"),
        before,
        "the files on disk are unchanged"
    );
    assert!(!store.join("app.pem.prev").exists() && !store.join("app.key.prev").exists());
    assert_eq!(served(https, "app.x.test").await.1, serial(&first));
    // An expired certificate is refused the same way.
    let (old_cert, old_key) = pki.leaf("app-old", &["app.x.test"], Key::Ecdsa, Validity::Expired);
    let refused = request_body(&to, "PUT", path, &[], read(&old_cert) + &read(&old_key)).await;
    assert_status(&refused, 422);
    assert!(has_error(&refused.json(), "expired"), "{refused:?}");
    assert_eq!(stored(state, "app"), before);

    // Replace: 200, the new one is served.
    let third = body(pki, "app-three", &["app.x.test"]);
    let put = request_body(&to, "PUT", path, &[], third.clone()).await;
    assert_status(&put, 200);
    assert_eq!(served(https, "app.x.test").await.1, serial(&third));

    // Each change was a reload: in the history, the counter, and the stored certificate
    // shows its source.
    let status = request(&to, "GET", "/api/v1/status", &[]).await.json();
    assert_eq!(
        status["last_reload"]["reason"],
        "admin PUT certificates/app"
    );
    let metrics = request(&to, "GET", "/metrics", &[]).await.body;
    assert!(
        metrics.contains("portico_reloads_total{outcome=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portico_reloads_total{outcome=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portico_certificate_not_after_seconds")
                && l.contains("source=\"admin\"")
                && l.contains("app-three")),
        "{metrics}"
    );
    let certs = request(&to, "GET", "/api/v1/certs", &[]).await.json();
    let sources: Vec<_> = certs["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| c["source"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        sources.contains(&"admin".to_string()) && sources.contains(&"file".to_string()),
        "{certs}"
    );

    // A restart with the same state_dir serves it again.
    drop(server);
    let (server, to) = start(config, state).await;
    assert_eq!(served(https, "app.x.test").await.1, serial(&third));

    // `portico certs` (check mode, nothing running needed) names the source too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["certs", "--json", "-c"])
        .arg(config)
        .output()
        .expect("portico certs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"admin\""), "{text}");

    // Delete: 200, back to the wildcard, the files gone; again: 404.
    let del = request(&to, "DELETE", path, &[]).await;
    assert_status(&del, 200);
    assert_eq!(del.json()["reason"], "admin DELETE certificates/app");
    assert!(served(https, "app.x.test").await.0.contains("wildcard"));
    assert_eq!(stored(state, "app"), (None, None));
    let again = request(&to, "DELETE", path, &[]).await;
    assert_status(&again, 404);
    assert!(again.json()["error"].is_string());
    drop(server);
}

#[tokio::test]
async fn a_delete_that_leaves_a_host_without_a_certificate_changes_nothing() {
    let s = setup();
    let (_server, to) = start(&s.config, &s.state).await;
    let (pki, https, config, state) = (&s.pki, s.https, &s.config, &s.state);

    // Only the stored certificate covers only.y.test, which a site then binds.
    let y = body(pki, "only-y", &["only.y.test"]);
    let put = request_body(&to, "PUT", "/api/v1/certificates/y", &[], y.clone()).await;
    assert_status(&put, 201);
    let more = "[[site]]\nname = \"y\"\nhosts = [\"only.y.test\"]\nrespond = { body = \"y\" }\n";
    let text = read(config) + more;
    std::fs::write(config, text).expect("write config");
    let reload = request(&to, "POST", "/api/v1/reload", &[]).await;
    assert_status(&reload, 200);
    let before = stored(state, "y");

    let del = request(&to, "DELETE", "/api/v1/certificates/y", &[]).await;
    assert_status(&del, 409);
    let r = del.json();
    assert_eq!(r["ok"], false);
    assert!(
        has_error(&r, "no certificate in the pool covers host only.y.test"),
        "{r}"
    );
    assert_eq!(stored(state, "y"), before, "the files are put back");
    let addr = format!("127.0.0.1:{https}").parse().expect("addr");
    let (presented, reply) = get(addr, &Opts::sni("only.y.test"), "only.y.test", "/").await;
    assert_eq!(presented.serial, serial(&y));
    assert_eq!(reply.text(), "y");
}

#[tokio::test]
async fn malformed_requests_are_refused_before_the_serve_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let config = write_config(dir.path(), &pki, free_port(), "");
    let state = dir.path().join("state");
    let (_server, to) = start(&config, &state).await;
    let good = body(&pki, "app-one", &["app.x.test"]);

    for name in ["Upper", ".hidden", "a%2Fb", &"x".repeat(65)] {
        let a = request_body(
            &to,
            "PUT",
            &format!("/api/v1/certificates/{name}"),
            &[],
            good.clone(),
        )
        .await;
        assert_status(&a, 400);
        assert!(
            a.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("a-z")),
            "{a:?}"
        );
    }
    let a = request_body(&to, "PUT", "/api/v1/certificates/app", &[], "not pem").await;
    assert_status(&a, 400);
    let (cert, _) = pki.leaf("nokey", &["app.x.test"], Key::Ecdsa, Validity::Current);
    let a = request_body(&to, "PUT", "/api/v1/certificates/app", &[], read(&cert)).await;
    assert_status(&a, 400);
    assert!(a.body.contains("no private key"), "{a:?}");
    let a = request(&to, "GET", "/api/v1/certificates/app", &[]).await;
    assert_status(&a, 405);
    assert_eq!(a.header("allow"), Some("PUT, DELETE"));

    // A declared length over 1 MiB is refused before a byte of the body is read.
    let mut s = tokio::net::UnixStream::connect(state.join("admin.sock"))
        .await
        .expect("connect");
    s.write_all(b"PUT /api/v1/certificates/app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2000000\r\n\r\n")
        .await
        .expect("write");
    let mut head = vec![0; 64];
    let n = s.read(&mut head).await.expect("read");
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Nothing reached the store.
    assert!(!state.join("certificates").exists());
}

#[tokio::test]
async fn on_tcp_a_certificate_change_needs_the_token_and_this_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let port = free_port();
    let https = free_port();
    let config = write_config(
        dir.path(),
        &pki,
        https,
        &format!("[admin]\naddress = \"127.0.0.1:{port}\"\n"),
    );
    let _server = Logged::serve(&config);
    let to = To::Tcp(format!("127.0.0.1:{port}").parse().expect("addr"));
    up(&to).await;
    let token = read(&dir.path().join("state/admin.token"));
    let bearer = format!("Bearer {}", token.trim());
    let good = body(&pki, "app-one", &["app.x.test"]);
    let path = "/api/v1/certificates/app";

    let a = request_body(&to, "PUT", path, &[], good.clone()).await;
    assert_status(&a, 401);
    let foreign = [
        ("authorization", bearer.as_str()),
        ("origin", "http://evil.example"),
    ];
    let a = request_body(&to, "PUT", path, &foreign, good.clone()).await;
    assert_status(&a, 403);
    let a = request(&to, "DELETE", path, &foreign).await;
    assert_status(&a, 403);
    assert!(!dir.path().join("state/certificates/app.pem").exists());
    let own = format!("http://127.0.0.1:{port}");
    let ok = [("authorization", bearer.as_str()), ("origin", own.as_str())];
    let a = request_body(&to, "PUT", path, &ok, good.clone()).await;
    assert_status(&a, 201);
    assert_eq!(served(https, "app.x.test").await.1, serial(&good));
}

#[test]
fn check_judges_the_stored_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let config = write_config(dir.path(), &pki, free_port(), "");
    let store = dir.path().join("state/certificates");
    std::fs::create_dir_all(&store).expect("mkdir");
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["check", "-c"])
            .arg(&config)
            .output()
            .expect("portico check")
    };
    // A pair whose key is another certificate's, and half a pair.
    let (cert, _) = pki.leaf("app-one", &["app.x.test"], Key::Ecdsa, Validity::Current);
    let (_, key) = pki.leaf("stray", &["stray.x.test"], Key::Ecdsa, Validity::Current);
    std::fs::copy(&cert, store.join("app.pem")).expect("copy");
    std::fs::copy(&key, store.join("app.key")).expect("copy");
    std::fs::copy(&cert, store.join("half.pem")).expect("copy");
    let out = check();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&store.join("app.key").display().to_string()),
        "{text}"
    );
    assert!(text.contains("does not match"), "{text}");
    assert!(
        text.contains(&store.join("half.pem").display().to_string()),
        "{text}"
    );
    // Fixed, check passes, and writes nothing.
    std::fs::remove_file(store.join("half.pem")).expect("rm");
    let (good_cert, good_key) =
        pki.leaf("app-good", &["app.x.test"], Key::Ecdsa, Validity::Current);
    std::fs::copy(&good_cert, store.join("app.pem")).expect("copy");
    std::fs::copy(&good_key, store.join("app.key")).expect("copy");
    let out = check();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut left: Vec<_> = std::fs::read_dir(&store)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["app.key", "app.pem"]);
}
