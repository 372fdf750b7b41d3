//! A tiny ACME CA on loopback for what Pebble 2.4 cannot give: ACME Renewal Information
//! (RFC 9773) and malformed answers. It implements only what Portico reaches with a stored
//! account: the directory, nonces, renewal information, and a newOrder that answers with
//! broken JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use portico::acme::status::{self, Rule, State};

use crate::support::client::{connect, Opts};
use crate::support::free_port;
use crate::support::pki::{acceptor, Key, Pki, Validity};

use super::{portico, wait_port};

/// What the fake CA saw, in order: "ARI <certificate id>", "ORDER <payload JSON>".
type Seen = Arc<Mutex<Vec<String>>>;

struct FakeCa {
    base: String,
    seen: Seen,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCa {
    fn drop(&mut self) {
        self._task.abort();
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    base: String,
    window: (i64, i64),
    seen: Seen,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let nonce = format!("nonce-{}", seen.lock().map(|s| s.len()).unwrap_or(0));
    let json = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("replay-nonce", nonce.as_str())
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    let response = if path == "/dir" {
        json(
            200,
            format!(
                r#"{{"newNonce": "{base}/nonce", "newAccount": "{base}/account", "newOrder": "{base}/order", "revokeCert": "{base}/revoke", "keyChange": "{base}/key", "renewalInfo": "{base}/ari"}}"#
            ),
        )
    } else if path == "/nonce" {
        json(200, String::new())
    } else if let Some(id) = path.strip_prefix("/ari/") {
        seen.lock().expect("seen").push(format!("ARI {id}"));
        let mut r = json(
            200,
            format!(
                r#"{{"suggestedWindow": {{"start": "{}", "end": "{}"}}}}"#,
                portico::runtime::format_time(window.0),
                portico::runtime::format_time(window.1)
            ),
        );
        r.headers_mut()
            .insert("retry-after", "21600".parse().expect("header"));
        r
    } else if path == "/order" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let jws: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let payload = jws["payload"]
            .as_str()
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .unwrap_or_default();
        seen.lock()
            .expect("seen")
            .push(format!("ORDER {}", String::from_utf8_lossy(&payload)));
        // Cut off in the middle: not JSON.
        json(
            201,
            r#"{"status": "pending", "identifiers": [{"type": "dns", "#.to_string(),
        )
    } else {
        json(
            404,
            r#"{"type": "urn:ietf:params:acme:error:malformed", "detail": "not here"}"#.to_string(),
        )
    };
    Ok(response)
}

/// Starts the CA suggesting `window` (unix seconds) for every certificate. Its TLS
/// certificate is signed by `pki`'s root.
async fn start(pki: &Pki, window: (i64, i64)) -> FakeCa {
    let (cert, key) = pki.leaf(
        "fake-ca",
        &["localhost", "127.0.0.1"],
        Key::Ecdsa,
        Validity::Current,
    );
    let tls = acceptor(&cert, &key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let base = format!("https://127.0.0.1:{}", addr.port());
    let seen: Seen = Arc::default();
    let (b, s) = (base.clone(), seen.clone());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, base, seen) = (tls.clone(), b.clone(), s.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    answer(req, base.clone(), window, seen.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    FakeCa {
        base,
        seen,
        _task: task,
    }
}

/// A configuration with one ACME site, `shop`, whose certificate (with an Authority Key
/// Identifier, as ARI needs) and account are already stored. Returns the https port and
/// the stored certificate's serial.
fn setup(dir: &Path, pki: &Pki, ca: &FakeCa) -> (u16, PathBuf) {
    let state = portico::acme::directory_home(&dir.join("state"), &format!("{}/dir", ca.base));
    std::fs::create_dir_all(&state).expect("mkdir");
    let (cert, key) = pki.leaf(
        "shop",
        &["shop.example.test"],
        Key::Ecdsa,
        Validity::Current,
    );
    std::fs::copy(&cert, state.join("shop.pem")).expect("copy");
    std::fs::copy(&key, state.join("shop.key")).expect("copy");
    let account_key = rcgen::KeyPair::generate().expect("account key");
    std::fs::write(
        state.join("account.json"),
        format!(
            r#"{{"id": "{}/account/1", "key_pkcs8": "{}", "directory": "{}/dir"}}"#,
            ca.base,
            b64(&account_key.serialize_der()),
            ca.base
        ),
    )
    .expect("write account");
    let port = free_port();
    std::fs::write(
        dir.join("portico.toml"),
        format!(
            "state_dir = \"state\"\n[acme]\ndirectory = \"{}/dir\"\nca = \"{}\"\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n[[site]]\nname = \"shop\"\nhosts = [\"shop.example.test\"]\ntls = \"acme\"\nrespond = {{ body = \"shop\" }}\n",
            ca.base,
            pki.root_file().display()
        ),
    )
    .expect("write config");
    (port, state.join("shop.pem"))
}

/// Polls the site's status file until `done` says so (at most 60 s).
async fn status_until(dir: &Path, done: impl Fn(&status::Status) -> bool) -> status::Status {
    let start = Instant::now();
    loop {
        if let Some(st) = status::read(&super::acme_home(dir), "shop") {
            if done(&st) {
                return st;
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "status never got there: {:?}\nportico log:\n{}",
                status::read(&super::acme_home(dir), "shop"),
                std::fs::read_to_string(dir.join("portico.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The serial of the certificate served for shop.example.test.
async fn served_serial(port: u16) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (_, presented) = connect(addr, &Opts::sni("shop.example.test"))
        .await
        .expect("the stored certificate is served");
    presented.serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_time_is_picked_inside_the_ari_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let now = portico::runtime::unix_now();
    let window = (now + 10 * 86_400, now + 12 * 86_400);
    let ca = start(&pki, window).await;
    let (port, _) = setup(dir.path(), &pki, &ca);
    let _portico = portico(dir.path(), "portico.log");
    wait_port(port, "portico");
    let st = status_until(dir.path(), |s| s.rule == Rule::Ari).await;
    assert_eq!(st.state, State::Waiting);
    let w = st.ari_window.expect("the window is recorded");
    assert_eq!((w.start, w.end), window);
    let next = st.next_renewal.expect("a planned renewal");
    assert!(
        (window.0..=window.1).contains(&next),
        "{next} not in {window:?}"
    );
    let seen = ca.seen.lock().expect("seen").clone();
    assert!(
        seen.iter()
            .any(|s| s.starts_with("ARI ") && s.contains('.')),
        "the CA was asked about the certificate by its ARI identifier: {seen:?}"
    );
    assert!(!seen.iter().any(|s| s.starts_with("ORDER")), "{seen:?}");
    served_serial(port).await;
}

/// A CA that revokes a certificate moves its ARI window into the past: Portico orders a
/// replacement at once. This CA then answers the order with broken JSON: the failure is
/// recorded with backoff, and the stored certificate keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificate_is_reordered_and_a_malformed_answer_is_handled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let now = portico::runtime::unix_now();
    let ca = start(&pki, (now - 2 * 86_400, now - 86_400)).await;
    let (port, stored) = setup(dir.path(), &pki, &ca);
    let before = std::fs::read(&stored).expect("stored");
    let _portico = portico(dir.path(), "portico.log");
    wait_port(port, "portico");
    let serial = served_serial(port).await;
    let st = status_until(dir.path(), |s| s.attempts >= 1).await;
    assert_eq!(st.state, State::Backoff);
    assert_eq!(st.rule, Rule::Retry);
    let error = st.last_error.expect("the failure is recorded");
    assert!(error.message.contains("JSON"), "{}", error.message);
    assert!(st.next_renewal.is_some_and(|t| t > error.at));
    // The replacement order named the certificate it replaces (RFC 9773 section 5).
    let seen = ca.seen.lock().expect("seen").clone();
    let id = seen
        .iter()
        .find_map(|s| s.strip_prefix("ARI "))
        .expect("asked for renewal information")
        .to_string();
    let order = seen
        .iter()
        .find_map(|s| s.strip_prefix("ORDER "))
        .expect("ordered");
    assert!(order.contains(&format!("\"replaces\":\"{id}\"")), "{order}");
    // Nothing changed for clients: the stored certificate is still served.
    assert_eq!(served_serial(port).await, serial);
    assert_eq!(std::fs::read(&stored).expect("stored"), before);
    // And the operator sees it.
    let doc = super::renewal::certs_json(dir.path());
    let entry = super::renewal::acme_entry(&doc, "shop");
    assert_eq!(entry["acme"]["state"], "backoff", "{entry:#}");
    assert!(entry["acme"]["last_error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("JSON")));
    assert!(entry["certificate"].is_object());
}

/// `[acme] ca` names a root that did not sign the CA's TLS certificate (here: another test
/// PKI's root, of the same name, so rustls says `BadSignature`). hyper says only
/// `client error (Connect)`; the log line and the status file must carry the cause down to
/// rustls' verdict, which is what the operator can fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_certificate_that_does_not_verify_is_named_as_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let other = Pki::new(&dir.path().join("other"));
    let ca = start(&pki, (0, 0)).await;
    let port = free_port();
    // No stored account or certificate: the task orders at once and must first reach the
    // directory.
    std::fs::write(
        dir.path().join("portico.toml"),
        format!(
            "state_dir = \"state\"\n[acme]\ndirectory = \"{}/dir\"\nca = \"{}\"\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n[[site]]\nname = \"shop\"\nhosts = [\"shop.example.test\"]\ntls = \"acme\"\nrespond = {{ body = \"shop\" }}\n",
            ca.base,
            other.root_file().display()
        ),
    )
    .expect("write config");
    let _portico = portico(dir.path(), "portico.log");
    wait_port(port, "portico");
    let st = status_until(dir.path(), |s| s.attempts >= 1).await;
    let message = st.last_error.expect("the failure is recorded").message;
    assert!(
        message.contains("client error (Connect): invalid peer certificate: BadSignature"),
        "the status names the verification failure: {message}\n{}",
        std::fs::read_to_string(dir.path().join("portico.log")).unwrap_or_default()
    );
    let log = std::fs::read_to_string(dir.path().join("portico.log")).expect("log");
    let line = log
        .lines()
        .find(|l| l.contains("ACME order failed"))
        .unwrap_or_else(|| panic!("no failed order in the log:\n{log}"));
    assert!(
        line.contains("invalid peer certificate: BadSignature"),
        "{line}"
    );
    assert_eq!(
        line.matches("client error (Connect)").count(),
        1,
        "each cause said once: {line}"
    );
}
