//! The admin listener: HTTP/1.1 on a Unix socket (the default, `state_dir/admin.sock`, mode
//! 0600) or a TCP address (every request carries the token; TLS off loopback), serving the
//! JSON API under `/api/v1/`, `/metrics` and the dashboard at `/`.
//!
//! It runs beside the serving path and never in it: its own sockets and tasks, a bounded
//! number of connections, heavy work (rendering metrics, counting certificates) on the
//! blocking pool, and state it reads only through the current runtime's `ArcSwap` and the
//! reload history. It changes nothing itself: a reload (or a certificate change) is a
//! [`crate::control::Command`] sent to the serve loop through the control socket's
//! channel, the one reload path. Its failures (a port in use, an unreadable token file) are
//! logged and never stop serving. `auth.rs` judges every request before the router sees
//! it; `api.rs` holds the endpoints, `certificates.rs` the certificate changes; `token.rs`
//! the token file; `dashboard/` the page, its assets, its own endpoints and the sampler
//! behind its charts.

mod api;
mod auth;
mod certificates;
mod dashboard;
mod token;

use std::convert::Infallible;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{self, AdminAddress, Config};
use crate::control::{self, History};
use crate::runtime::{Runtime, Shared};
pub use token::TokenError;

/// At most this many admin connections at once; more are closed on accept. An operator's
/// browser, a Prometheus server and a few scripts need far fewer.
const MAX_CONNECTIONS: usize = 64;
/// For a request's head to arrive, and for a TLS handshake.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoints read: the server's state, and the way to ask the serve loop.
pub struct Context {
    /// The runtime serving now (each install is seen through it).
    pub runtime: Arc<ArcSwap<Runtime>>,
    /// The process's metrics, among what outlives a runtime.
    pub shared: Shared,
    /// The serve loop's command channel, shared with the control socket.
    pub requests: mpsc::Sender<control::Request>,
    /// The reloads so far.
    pub history: History,
    /// When the process started serving, in Unix seconds.
    pub started: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: io::Error },
    #[error("another process answers on the admin socket {} (another Portico with this state_dir?)", path.display())]
    InUse { path: PathBuf },
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The admin listener as the serve loop keeps it: started from the configuration, and
/// following it on every reload.
pub struct Admin {
    ctx: Arc<Context>,
    running: Option<Running>,
    /// Feeds the dashboard's charts for as long as the process serves.
    _sampler: dashboard::Sampler,
}

/// One open admin socket.
struct Running {
    config: config::Admin,
    /// What connections ask of requests; replaced when a reload changes the token, the
    /// hosts or TLS but not the address.
    access: Arc<ArcSwap<Access>>,
    task: Option<JoinHandle<()>>,
    /// The Unix socket's file, removed when the listener stops.
    socket_file: Option<PathBuf>,
}

/// What a connection asks of each request: nothing on a Unix socket, the policy on TCP.
struct Access {
    policy: Option<auth::Policy>,
}

impl Admin {
    /// Opens the admin listener that `config` asks for; a failure is logged and the server
    /// serves without it.
    pub fn start(config: &Config, ctx: Arc<Context>) -> Admin {
        let mut admin = Admin {
            _sampler: dashboard::sampler(ctx.clone()),
            ctx,
            running: None,
        };
        match &config.admin {
            None => tracing::info!("admin listener off ([admin] enabled = false)"),
            Some(a) => match admin.open(a) {
                Ok(r) => admin.running = Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "no admin listener; serving goes on without it")
                }
            },
        }
        admin
    }

    /// Follows a configuration just installed: the same address keeps its socket (the token
    /// file is read again, so replacing it and reloading changes the token); another
    /// address is opened after the old one is closed, and if it cannot be, the old one is
    /// opened again.
    pub async fn follow(&mut self, config: &Config) {
        let wanted = config.admin.as_ref();
        let same = wanted.map(|a| &a.address) == self.running.as_ref().map(|r| &r.config.address);
        if same {
            let (Some(a), Some(r)) = (wanted, self.running.as_mut()) else {
                return;
            };
            match access_for(a) {
                Ok((access, created)) => {
                    let old = r.access.load();
                    let changed = match (&old.policy, &access.policy) {
                        (Some(o), Some(n)) => o.token != n.token || o.tls != n.tls,
                        _ => false,
                    };
                    if changed || created {
                        announce(a, &access);
                    }
                    r.access.store(Arc::new(access));
                    r.config = a.clone();
                }
                Err(e) => {
                    tracing::error!(error = %e, "admin listener: the previous token stays in use")
                }
            }
            return;
        }
        let old = match self.running.take() {
            Some(r) => Some(r.stop().await),
            None => None,
        };
        let Some(a) = wanted else {
            tracing::info!("admin listener off ([admin] enabled = false)");
            return;
        };
        match self.open(a) {
            Ok(r) => self.running = Some(r),
            Err(e) => {
                tracing::error!(error = %e, "admin listener not moved");
                if let Some(old) = old {
                    match self.open(&old) {
                        Ok(r) => self.running = Some(r),
                        Err(e) => {
                            tracing::error!(error = %e, "no admin listener until the next reload")
                        }
                    }
                }
            }
        }
    }

    /// Closes the admin socket now, for a new process (binary upgrade) to open it.
    pub async fn release(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    fn open(&self, a: &config::Admin) -> Result<Running, AdminError> {
        let (access, _) = access_for(a)?;
        let access = Arc::new(ArcSwap::from_pointee(access));
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let (task, socket_file) = match &a.address {
            AdminAddress::Unix(path) => {
                let listener = bind_unix(path)?;
                let task = tokio::spawn(accept_unix(
                    listener,
                    self.ctx.clone(),
                    access.clone(),
                    limit,
                ));
                (task, Some(path.clone()))
            }
            AdminAddress::Tcp(addr) => {
                let listener = bind_tcp(*addr).map_err(|source| AdminError::Bind {
                    address: addr.to_string(),
                    source,
                })?;
                let task = tokio::spawn(accept_tcp(
                    listener,
                    self.ctx.clone(),
                    access.clone(),
                    limit,
                ));
                (task, None)
            }
        };
        announce(a, &access.load());
        Ok(Running {
            config: a.clone(),
            access,
            task: Some(task),
            socket_file,
        })
    }
}

impl Running {
    /// Stops accepting and waits until the socket is closed; returns the configuration.
    async fn stop(mut self) -> config::Admin {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(path) = self.socket_file.take() {
            let _ = std::fs::remove_file(path);
        }
        self.config.clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(path) = self.socket_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The access policy for `a`; on TCP this reads (or creates) the token file. The flag says
/// whether the file was just created.
fn access_for(a: &config::Admin) -> Result<(Access, bool), AdminError> {
    match &a.address {
        AdminAddress::Unix(_) => Ok((Access { policy: None }, false)),
        AdminAddress::Tcp(address) => {
            let (token, created) = token::load_or_create(&a.token_file)?;
            let policy = auth::Policy {
                address: *address,
                tls: a.tls.is_some(),
                hosts: a.hosts.clone(),
                token,
            };
            Ok((
                Access {
                    policy: Some(policy),
                },
                created,
            ))
        }
    }
}

/// Says where the admin listener is. On TCP the sign-in URL, token included, goes to
/// stderr (as Jupyter prints its token URL), whatever the log filter; the log line itself
/// never holds the token.
fn announce(a: &config::Admin, access: &Access) {
    match (&a.address, &access.policy) {
        (AdminAddress::Unix(path), _) => tracing::info!(
            socket = %path.display(),
            "admin listener (try: curl --unix-socket {} http://localhost/api/v1/status)",
            path.display()
        ),
        (AdminAddress::Tcp(addr), Some(policy)) => {
            let scheme = if policy.tls { "https" } else { "http" };
            let host = if addr.ip().is_unspecified() {
                match a.hosts.first() {
                    Some(config::AdminHost::Name(n)) => n.to_string(),
                    Some(config::AdminHost::Ip(std::net::IpAddr::V6(ip))) => format!("[{ip}]"),
                    Some(config::AdminHost::Ip(ip)) => ip.to_string(),
                    None => "127.0.0.1".to_string(),
                }
            } else {
                match addr.ip() {
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                }
            };
            tracing::info!(address = %addr, token_file = %a.token_file.display(), "admin listener");
            eprintln!(
                "admin: {scheme}://{host}:{}/?token={}",
                addr.port(),
                policy.token.secret()
            );
        }
        (AdminAddress::Tcp(_), None) => {}
    }
}

fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A new process taking over (binary upgrade) binds while the old one's connections
    // may still be in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Binds the socket under a temporary name, makes it 0600, then renames it into place, so
/// the file is never reachable with looser permissions.
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, AdminError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| AdminError::Bind {
        address: format!("unix:{}", path.display()),
        source,
    };
    if let Some(dir) = path.parent() {
        crate::state::private_dir(dir).map_err(err)?;
    }
    if path.exists() {
        // One that answers belongs to a live process; one that does not is left from a
        // crash.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AdminError::InUse {
                path: path.to_path_buf(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let bound = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        listener.set_nonblocking(true)?;
        tokio::net::UnixListener::from_std(listener)
    })();
    if bound.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    bound.map_err(err)
}

/// What both accept loops do with an accepted connection: a failed accept waits a little
/// before the next (a full descriptor table, say); a connection over the limit is closed.
async fn admitted<S>(
    accepted: std::io::Result<S>,
    limit: &Arc<Semaphore>,
) -> Option<(S, tokio::sync::OwnedSemaphorePermit)> {
    let stream = match accepted {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "admin accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            return None;
        }
    };
    let Ok(permit) = limit.clone().try_acquire_owned() else {
        tracing::debug!("admin connection refused: {MAX_CONNECTIONS} open already");
        return None;
    };
    Some((stream, permit))
}

async fn accept_unix(
    listener: tokio::net::UnixListener,
    ctx: Arc<Context>,
    access: Arc<ArcSwap<Access>>,
    limit: Arc<Semaphore>,
) {
    loop {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        let Some((stream, permit)) = admitted(accepted, &limit).await else {
            continue;
        };
        let (ctx, access) = (ctx.clone(), access.load_full());
        tokio::spawn(async move {
            serve_http(stream, ctx, access).await;
            drop(permit);
        });
    }
}

async fn accept_tcp(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    access: Arc<ArcSwap<Access>>,
    limit: Arc<Semaphore>,
) {
    loop {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        let Some((stream, permit)) = admitted(accepted, &limit).await else {
            continue;
        };
        let (ctx, access) = (ctx.clone(), access.load_full());
        let tls = access.policy.as_ref().is_some_and(|p| p.tls);
        tokio::spawn(async move {
            if tls {
                // The certificate is the runtime's: a reload that replaced it is used by
                // the next connection.
                let Some(config) = ctx.runtime.load().admin_tls.clone() else {
                    return;
                };
                let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                match tokio::time::timeout(HEAD_TIMEOUT, accept).await {
                    Ok(Ok(tls)) => serve_http(tls, ctx, access).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "admin TLS handshake failed"),
                    Err(_) => tracing::debug!("admin TLS handshake timed out"),
                }
            } else {
                serve_http(stream, ctx, access).await;
            }
            drop(permit);
        });
    }
}

async fn serve_http<IO>(io: IO, ctx: Arc<Context>, access: Arc<Access>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (ctx, access) = (ctx.clone(), access.clone());
        async move { Ok::<_, Infallible>(handle(req, &ctx, &access).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

type Body = Full<Bytes>;

/// Judges the request, then routes it.
async fn handle(req: Request<Incoming>, ctx: &Context, access: &Access) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if let Some(policy) = &access.policy {
        match policy.admit(&method, &path, req.uri().query(), req.headers()) {
            Ok(auth::SignIn::No) => {}
            Ok(auth::SignIn::Yes(cookie)) => return signed_in(&cookie),
            Err(refusal) => {
                let mut r = problem(&path, refusal.status(), &refusal.message());
                if refusal.status() == StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"portico admin\""),
                    );
                }
                return r;
            }
        }
    }
    let query = req.uri().query().map(str::to_string);
    route(&method, &path, query.as_deref(), req.into_body(), ctx).await
}

/// The endpoints, by path and method.
async fn route(
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: Incoming,
    ctx: &Context,
) -> Response<Body> {
    let get = matches!(*method, Method::GET | Method::HEAD);
    if let Some(r) = dashboard::route(get, path, query, ctx).await {
        return r;
    }
    match path {
        p if p == "/api/v1/certificates" || p.starts_with("/api/v1/certificates/") => {
            certificates::answer(method, p, body, ctx).await
        }
        "/" if get => dashboard::page(),
        "/metrics" if get => api::metrics(ctx).await,
        "/api/v1/status" if get => api::status(ctx).await,
        "/api/v1/bindings" if get => api::bindings(ctx, query.unwrap_or("")).await,
        "/api/v1/certs" if get => api::certs(ctx, query.unwrap_or("")).await,
        "/api/v1/explain" if get => api::explain(ctx, query.unwrap_or("")).await,
        "/api/v1/reload" if *method == Method::POST => api::reload(ctx).await,
        "/" | "/metrics" | "/api/v1/status" | "/api/v1/bindings" | "/api/v1/certs"
        | "/api/v1/explain" => not_allowed(path, "GET, HEAD"),
        "/api/v1/reload" => not_allowed(path, "POST"),
        _ => problem(
            path,
            StatusCode::NOT_FOUND,
            &format!("no such admin endpoint: {path} (see docs/admin.md)"),
        ),
    }
}

/// A response with the headers every admin answer carries: never cached, never sniffed.
fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// An error answer: `{"error": message}` under `/api/`, the message as text elsewhere.
fn problem(path: &str, status: StatusCode, message: &str) -> Response<Body> {
    if path.starts_with("/api/") {
        let body = crate::inspect::json::Json::Obj(vec![(
            "error",
            crate::inspect::json::Json::str(message),
        )]);
        response(status, JSON, body.pretty())
    } else {
        response(status, TEXT, format!("{message}\n"))
    }
}

fn not_allowed(path: &str, allow: &'static str) -> Response<Body> {
    let mut r = problem(
        path,
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{path} answers {allow} only"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The answer to a good sign-in: the cookie, and the browser sent on to `/` (which also
/// takes the token out of the address bar and the history).
fn signed_in(cookie: &str) -> Response<Body> {
    let Ok(value) = HeaderValue::try_from(cookie) else {
        // The token's characters are checked when it is read, so this does not happen.
        return response(
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            "cannot set the session cookie\n",
        );
    };
    let mut r = response(StatusCode::SEE_OTHER, TEXT, "signed in\n");
    let h = r.headers_mut();
    h.insert(header::SET_COOKIE, value);
    h.insert(header::LOCATION, HeaderValue::from_static("/"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}
