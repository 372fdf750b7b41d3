//! Choosing among upstreams, end to end: active health checks take an upstream out and put it
//! back; least_conn sends new requests away from an upstream that is holding one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::support::client::send_h1;
use crate::support::{free_port, serve, TestServer};

/// What a test can do to a backend while it runs.
#[derive(Clone)]
struct Control {
    /// `/healthz` answers 200 while true, 503 otherwise.
    healthy: Arc<AtomicBool>,
    /// `/hold` requests report their arrival here (the backend's name)...
    arrived: mpsc::UnboundedSender<&'static str>,
    /// ...and answer once this turns true.
    release: watch::Receiver<bool>,
}

async fn handle(
    name: &'static str,
    control: Control,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = match req.uri().path() {
        "/healthz" if !control.healthy.load(Ordering::SeqCst) => {
            let mut r = Response::new(Full::from("sick"));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
        "/hold" => {
            let _ = control.arrived.send(name);
            let mut release = control.release.clone();
            let _ = release.wait_for(|&r| r).await;
            Response::new(Full::from(name))
        }
        _ => Response::new(Full::from(name)),
    };
    Ok(resp)
}

/// A plain HTTP backend that answers with its name.
async fn backend(name: &'static str, control: Control) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let control = control.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(name, control.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

struct Backends {
    a: SocketAddr,
    b: SocketAddr,
    a_healthy: Arc<AtomicBool>,
    arrived: mpsc::UnboundedReceiver<&'static str>,
    release: watch::Sender<bool>,
}

async fn two_backends() -> Backends {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, release_rx) = watch::channel(false);
    let a_healthy = Arc::new(AtomicBool::new(true));
    let control = |healthy: Arc<AtomicBool>| Control {
        healthy,
        arrived: arrived_tx.clone(),
        release: release_rx.clone(),
    };
    let a = backend("a", control(a_healthy.clone())).await;
    let b = backend("b", control(Arc::new(AtomicBool::new(true)))).await;
    Backends {
        a,
        b,
        a_healthy,
        arrived,
        release,
    }
}

async fn portico(dir: &std::path::Path, proxy: &str) -> TestServer {
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[site]]\nhosts = [\"app.test\"]\ntls = \"internal\"\nproxy = {proxy}\n",
        free_port()
    );
    serve(dir, &toml).await
}

/// GET `path` on a new connection; the status and the name of the backend that answered.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let req = Request::get(path)
        .header("host", "app.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send_h1(addr, "app.test", req).await;
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sends requests until `want` answers come in a row from backends for which `ok` holds;
/// at most 30 s (a bound, not a timing assertion).
async fn until_in_a_row(addr: SocketAddr, want: usize, ok: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut row = 0;
    let mut seen = Vec::new();
    while row < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up; answers: {seen:?}"
        );
        let (status, name) = get(addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        row = if ok(&name) { row + 1 } else { 0 };
        seen.push(name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn active_health_check_takes_an_upstream_out_and_puts_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bk = two_backends().await;
    // max_fails = 0: only the active check can take an upstream out.
    let server = portico(
        dir.path(),
        &format!(
            "{{ upstreams = [\"http://{}\", \"http://{}\"], max_fails = 0, health_check = {{ path = \"/healthz\", interval = \"50ms\" }} }}",
            bk.a, bk.b
        ),
    )
    .await;
    let addr = server.addr("127.0.0.1");

    // Both healthy: round robin alternates, so both answer.
    let mut names: Vec<String> = Vec::new();
    for _ in 0..4 {
        names.push(get(addr, "/").await.1);
    }
    assert!(names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"));

    // a's health path fails (its other paths still answer): a is taken out. Round robin
    // between two would alternate, so ten answers in a row from b mean a is skipped.
    bk.a_healthy.store(false, Ordering::SeqCst);
    until_in_a_row(addr, 10, |n| n == "b").await;

    // a recovers: it is put back, and answers again.
    bk.a_healthy.store(true, Ordering::SeqCst);
    until_in_a_row(addr, 1, |n| n == "a").await;
    let mut names: Vec<String> = Vec::new();
    for _ in 0..4 {
        names.push(get(addr, "/").await.1);
    }
    assert!(
        names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"),
        "{names:?}"
    );
}

#[tokio::test]
async fn least_conn_sends_new_requests_away_from_a_busy_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bk = two_backends().await;
    let server = portico(
        dir.path(),
        &format!(
            "{{ upstreams = [\"http://{}\", \"http://{}\"], lb = \"least_conn\" }}",
            bk.a, bk.b
        ),
    )
    .await;
    let addr = server.addr("127.0.0.1");

    // One request is held by whichever upstream gets it.
    let held = tokio::spawn(get(addr, "/hold"));
    let busy = tokio::time::timeout(Duration::from_secs(30), bk.arrived.recv())
        .await
        .expect("the held request reaches a backend")
        .expect("arrival");
    let idle = if busy == "a" { "b" } else { "a" };

    // While it is held, every new request goes to the other one (round robin would
    // alternate).
    for _ in 0..6 {
        let (status, name) = get(addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(name, idle, "the busy upstream ({busy}) was chosen");
    }

    bk.release.send(true).expect("release");
    let (status, name) = held.await.expect("held request");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(name, busy);
}
