//! A client for the admin listener: one HTTP/1.1 request over TCP, TLS or the Unix socket,
//! with the headers a test chooses; and `portico serve` with its stderr kept (the sign-in
//! URL is printed there).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Running;

/// Where the admin listener is.
#[derive(Clone, Debug)]
pub enum To {
    Tcp(SocketAddr),
    /// TCP with TLS (the certificate is not verified).
    Tls(SocketAddr),
    Unix(PathBuf),
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Waits until the admin listener answers (whatever it answers).
pub async fn up(to: &To) {
    for _ in 0..300 {
        if try_request(to, "GET", "/", &[]).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the admin listener at {to:?} never answered");
}

/// One request on a new connection. `Host` is the address (or `localhost` on the Unix
/// socket) unless `headers` has one.
pub async fn request(to: &To, method: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    try_request(to, method, target, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {target} to {to:?}: {e}"))
}

pub async fn try_request(
    to: &To,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    try_request_body(to, method, target, headers, Bytes::new()).await
}

/// [`request`] with a body.
pub async fn request_body(
    to: &To,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    try_request_body(to, method, target, headers, body.into())
        .await
        .unwrap_or_else(|e| panic!("{method} {target} to {to:?}: {e}"))
}

async fn try_request_body(
    to: &To,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Answer, String> {
    let host = match to {
        To::Tcp(a) | To::Tls(a) => a.to_string(),
        To::Unix(_) => "localhost".to_string(),
    };
    let mut req = http::Request::builder().method(method).uri(target);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req = req.header("host", host);
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    match to {
        To::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a)
                .await
                .map_err(|e| e.to_string())?;
            send(s, req).await
        }
        To::Tls(a) => {
            let s = tokio::net::TcpStream::connect(a)
                .await
                .map_err(|e| e.to_string())?;
            let opts = super::client::Opts::sni("localhost").http1();
            let connector = tokio_rustls::TlsConnector::from(super::client::client_config(&opts));
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let tls = connector
                .connect(name, s)
                .await
                .map_err(|e| e.to_string())?;
            send(tls, req).await
        }
        To::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .map_err(|e| e.to_string())?;
            send(s, req).await
        }
    }
}

/// Sends `req` on `io` (one HTTP/1.1 connection) and reads the answer whole.
pub async fn send<IO>(io: IO, req: http::Request<Full<Bytes>>) -> Result<Answer, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `portico serve -c config` with its stderr collected line by line.
pub struct Logged {
    pub running: Running,
    pub stderr: Arc<Mutex<String>>,
}

impl Logged {
    pub fn serve(config: &Path) -> Logged {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["serve", "-c"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("portico serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr piped");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = collected.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Logged {
            running: Running(child),
            stderr,
        }
    }

    /// The first stderr line starting with `prefix`, waited for.
    /// The first stderr line containing `text`, once there is one.
    pub fn line_containing(&self, text: &str) -> String {
        super::eventually(&format!("a stderr line containing {text:?}"), || {
            let s = self.stderr.lock().expect("lock");
            s.lines().find(|l| l.contains(text)).map(str::to_string)
        })
    }

    pub fn line(&self, prefix: &str) -> String {
        super::eventually(&format!("a stderr line starting with {prefix:?}"), || {
            let s = self.stderr.lock().expect("lock");
            s.lines()
                .find(|l| l.starts_with(prefix))
                .map(str::to_string)
        })
    }
}
