//! The request lifecycle on one connection: find the site from `Host`/`:authority` (the 421
//! rule), run its action, write one access log line.
//!
//! A request is served only when the connection's certificate covers its host and the host is
//! bound to a site on the connection's listener; everything else gets 421, so a client can
//! never reach one site through another site's certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{access, static_files, text, Body, RequestBody};
use crate::config::Limits;
use crate::metrics::Protocol;
use crate::names::{authority_host, host_from_authority, is_normal_name, same_authority, HostName};
use crate::runtime::{Runtime, SiteAction};
use crate::tls::client_auth::ClientIdentity;
use crate::tls::load::Cert;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;

/// What a request needs to know about its connection.
pub struct Conn {
    pub runtime: Arc<Runtime>,
    pub listener: usize,
    pub peer: SocketAddr,
    /// The SNI as normalized, if the client sent one.
    pub sni: Option<HostName>,
    /// The certificate presented; None on http listeners.
    pub cert: Option<Arc<Cert>>,
    /// The client-auth policy the connection was established under (an index into
    /// `Runtime::client_auth`); None when no client certificate was asked for.
    pub policy: Option<usize>,
    /// The client certificate verified under `policy`, if the client presented one.
    pub identity: Option<Arc<ClientIdentity>>,
    /// "TLSv1.3", "TLSv1.2" or "-" for plain HTTP.
    pub tls_version: &'static str,
    /// Set once a response switched protocols (101): the connection is a tunnel now, and
    /// its close must not read what the client sends (see `http/linger.rs`).
    pub upgraded: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a request names no usable host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostProblem {
    Missing,
    NotAscii,
    /// An IP literal or a malformed name: never covered by a certificate.
    NotAName,
}

/// A request's host name. Usually the `Host` header or `:authority` is already in normal
/// form (lowercase, no trailing dot), and then it is kept as it came, by a clone of the
/// header's shared bytes: no copy and no allocation per request. Anything else is parsed
/// into a [`HostName`].
pub(super) enum RequestHost {
    /// A `Host` value whose first `usize` bytes (before any port) are the name.
    Header(HeaderValue, usize),
    /// An `:authority` (HTTP/2, or an absolute-form URI), likewise.
    Authority(http::uri::Authority, usize),
    Parsed(HostName),
}

impl RequestHost {
    /// The name in normal form, never a wildcard.
    pub(super) fn as_str(&self) -> &str {
        let raw = match self {
            RequestHost::Header(v, n) => v.as_bytes().get(..*n),
            RequestHost::Authority(a, n) => a.as_str().as_bytes().get(..*n),
            RequestHost::Parsed(name) => return name.as_str(),
        };
        // Checked to be a normal name (ASCII) when made.
        raw.and_then(|r| std::str::from_utf8(r).ok())
            .unwrap_or_default()
    }
}

impl std::fmt::Display for RequestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The request's host: `:authority` (HTTP/2, or an absolute-form URI) wins over `Host`.
fn request_host<B>(req: &Request<B>) -> Result<RequestHost, HostProblem> {
    let raw = match req.uri().authority() {
        Some(a) => {
            if let Some(n) = normal_host_len(a.as_str()) {
                return Ok(RequestHost::Authority(a.clone(), n));
            }
            a.as_str()
        }
        None => {
            let value = req
                .headers()
                .get(header::HOST)
                .ok_or(HostProblem::Missing)?;
            let raw = value.to_str().map_err(|_| HostProblem::NotAscii)?;
            if let Some(n) = normal_host_len(raw) {
                return Ok(RequestHost::Header(value.clone(), n));
            }
            raw
        }
    };
    host_from_authority(raw)
        .map(RequestHost::Parsed)
        .ok_or(HostProblem::NotAName)
}

/// The length of the name in `host[:port]` when that name is already in normal form, as
/// [`host_from_authority`] would return it unchanged.
fn normal_host_len(authority: &str) -> Option<usize> {
    authority_host(authority)
        .filter(|host| is_normal_name(host))
        .map(str::len)
}

pub async fn handle(
    conn: Arc<Conn>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let version = req.version();
    // With the access log filtered out (RUST_LOG=warn and the like), nothing is gathered
    // for it and the body is not wrapped: one allocation and one copy fewer per request.
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        let (mut resp, _, site) = respond(&conn, req).await;
        advertise(&conn, version, &mut resp);
        answered(&conn, site, version, resp.status(), start);
        return Ok(resp);
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (mut resp, host, site) = respond(&conn, req).await;
    advertise(&conn, version, &mut resp);
    answered(&conn, site, version, resp.status(), start);
    let (parts, body) = resp.into_parts();
    let line = access::Line {
        conn,
        start,
        method,
        path,
        version,
        host,
        site,
        status: parts.status,
    };
    // The line is written when the body ends, with the bytes actually sent.
    Ok(Response::from_parts(
        parts,
        BodyExt::boxed(access::Logged::new(body, line)),
    ))
}

/// On a listener with `http3`, every TCP response, whatever answered it (a site's action,
/// a 421, a 400, an upstream, which may have sent its own), says where HTTP/3 is:
/// `Alt-Svc: h3=":PORT"`. The value was made once, by the configuration check.
fn advertise(conn: &Conn, version: http::Version, resp: &mut Response<Body>) {
    if version == http::Version::HTTP_3 {
        return;
    }
    if let Some(alt_svc) = &conn.runtime.listeners[conn.listener].config.alt_svc {
        resp.headers_mut().insert(header::ALT_SVC, alt_svc.clone());
    }
}

/// What follows every answer: the metrics count it (its site's status class and latency to
/// the response head, and the listener's 421s: atomic adds on counters the runtime holds),
/// and a 101 marks the connection a tunnel.
fn answered(
    conn: &Conn,
    site: Option<usize>,
    version: http::Version,
    status: StatusCode,
    start: Instant,
) {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        conn.upgraded
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let rt = &conn.runtime;
    let listener = &rt.listeners[conn.listener].metrics;
    if status == StatusCode::MISDIRECTED_REQUEST {
        listener.misdirected();
    }
    if let Some(site) = site {
        let counters = &rt.sites[site].metrics;
        counters.request(Protocol::of(version), status);
        counters
            .request_seconds
            .as_ref()
            .unwrap_or(&listener.request_seconds)
            .observe(start.elapsed());
    }
}

/// A request head that must not be served, whatever its host: 400 or 431. What hyper and h2
/// already refuse (heads over `max_header_bytes`, more than `max_headers` lines on
/// HTTP/1.1) never gets here.
fn malformed<B>(req: &Request<B>, limits: &Limits, https: bool) -> Option<Response<Body>> {
    let headers = req.headers();
    if matches!(req.version(), http::Version::HTTP_2 | http::Version::HTTP_3) {
        // One limit for every protocol. A `cookie` split into crumbs (RFC 9113 8.2.3) is one
        // field, as it is one line on HTTP/1.1.
        let cookies = headers.get_all(header::COOKIE).iter().count();
        if headers.len() - cookies.saturating_sub(1) > limits.max_headers {
            return Some(text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "431 request header fields too large: more than {} header fields\n",
                    limits.max_headers
                ),
            ));
        }
        // RFC 9113 8.2.1 (and RFC 9114 4.2); HTTP/1.1's parser trims this white space, h2
        // and h3 keep it.
        let padded = |v: &HeaderValue| {
            let b = v.as_bytes();
            matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
        };
        if headers.values().any(padded) {
            return Some(text(
                StatusCode::BAD_REQUEST,
                "400 bad request: a header field value starts or ends with white space\n",
            ));
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        // RFC 9112 3.2: a request with more than one Host is refused, not guessed at.
        return Some(text(
            StatusCode::BAD_REQUEST,
            "400 bad request: more than one Host header\n",
        ));
    }
    if let (Some(authority), Some(host)) = (req.uri().authority(), host) {
        let default_port = if https { 443 } else { 80 };
        let agrees = host
            .to_str()
            .is_ok_and(|h| same_authority(authority.as_str(), h, default_port));
        if !agrees {
            return Some(text(
                StatusCode::BAD_REQUEST,
                "400 bad request: the Host header and the request target name different hosts\n",
            ));
        }
    }
    None
}

async fn respond(
    conn: &Conn,
    req: Request<RequestBody>,
) -> (Response<Body>, Option<RequestHost>, Option<usize>) {
    if let Some(resp) = malformed(&req, &conn.runtime.config.limits, conn.cert.is_some()) {
        return (resp, None, None);
    }
    // ACME HTTP-01: answered on plain listeners for any host, before the redirect to https.
    if conn.cert.is_none() && req.method() == http::Method::GET {
        if let Some(token) = req
            .uri()
            .path()
            .strip_prefix("/.well-known/acme-challenge/")
        {
            if let Some(key_authorization) = conn.runtime.challenges.http(token) {
                let mut resp = text(StatusCode::OK, key_authorization);
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return (resp, request_host(&req).ok(), None);
            }
        }
    }
    let host = match request_host(&req) {
        Ok(h) => h,
        Err(HostProblem::NotAName) if conn.cert.is_some() => {
            // An IP literal or junk can never be covered by a certificate.
            return (
                text(
                    StatusCode::MISDIRECTED_REQUEST,
                    "421 misdirected request: the host is not served on this connection\n",
                ),
                None,
                None,
            );
        }
        Err(why) => {
            let why = match why {
                HostProblem::Missing => "missing Host header",
                HostProblem::NotAscii => "Host header is not ASCII",
                HostProblem::NotAName => "Host is not a host name",
            };
            return (
                text(StatusCode::BAD_REQUEST, format!("400 bad request: {why}\n")),
                None,
                None,
            );
        }
    };
    let rt = &conn.runtime;
    let listener = &rt.listeners[conn.listener];
    let Some(resolved) = listener
        .table
        .route_request(host.as_str(), conn.cert.as_deref())
    else {
        let resp = if conn.cert.is_some() {
            text(
                StatusCode::MISDIRECTED_REQUEST,
                format!("421 misdirected request: {host} is not served on this connection\n"),
            )
        } else {
            text(
                StatusCode::NOT_FOUND,
                format!("404 not found: no site for {host}\n"),
            )
        };
        return (resp, Some(host), None);
    };
    let site_index = resolved.binding.site;
    // A connection verified (or not) under one client-auth policy never carries requests
    // for a site of another, even when the certificate covers both names (HTTP/2
    // coalescing): the client was never asked for that site's certificate.
    if conn.cert.is_some() && !rt.same_policy(site_index, conn.policy) {
        return (
            text(
                StatusCode::MISDIRECTED_REQUEST,
                format!("421 misdirected request: {host} asks for other client certificates than this connection was made with\n"),
            ),
            Some(host),
            None,
        );
    }
    let site = &rt.sites[site_index];
    let name = Some(site_index);
    if conn.cert.is_none() {
        // Plain http listeners redirect bound hosts to https.
        let Some(port) = resolved.binding.https_port else {
            return (
                text(
                    StatusCode::NOT_FOUND,
                    format!("404 not found: {host} is not served over https\n"),
                ),
                Some(host),
                name,
            );
        };
        let authority = if port == 443 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        return (
            redirect(
                StatusCode::PERMANENT_REDIRECT,
                &format!("https://{authority}{pq}"),
            ),
            Some(host),
            name,
        );
    }
    let resp = match &site.action {
        SiteAction::Root(root) => {
            static_files::serve(root, req.method(), req.uri().path(), req.headers()).await
        }
        SiteAction::Redirect { to, status } => {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            redirect(*status, &format!("{to}{pq}"))
        }
        SiteAction::Respond {
            status,
            body,
            content_type,
        } => {
            let mut resp = text(*status, body.clone());
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
            resp
        }
        // Boxed: forwarding is by far the largest state machine here, and HTTP/2 moves each
        // request's future several times when it spawns the stream's task.
        SiteAction::Proxy(upstreams) => {
            let cert = crate::http::proxy::ClientCert {
                identity: conn.identity.as_deref(),
                subject_header: site.subject_header.as_ref(),
            };
            Box::pin(upstreams.forward(conn.peer, cert, req, conn.runtime.clone())).await
        }
        // A passthrough site's TLS ends at its backend; a connection Portico terminated can
        // never carry its requests.
        SiteAction::Passthrough(_) => text(
            StatusCode::MISDIRECTED_REQUEST,
            format!("421 misdirected request: {host} is not served on this connection\n"),
        ),
    };
    (resp, Some(host), name)
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = text(status, format!("{} {location}\n", status.as_u16()));
    match HeaderValue::from_str(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}
