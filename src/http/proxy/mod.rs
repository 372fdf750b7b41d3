//! The `proxy` action: forward a request to one of a site's upstreams and stream the answer
//! back.
//!
//! Bodies are streamed frame by frame both ways, never collected. Connections to upstreams
//! are pooled by hyper-util's client; choosing an upstream takes no lock (`balance.rs`).
//! An https upstream is offered `h2` and `http/1.1` by ALPN and spoken to in whichever it
//! chooses, HTTP/2 requests multiplexed on one connection; upgrades (WebSocket) always go
//! over HTTP/1.1, on connections that offer only that. Cleartext upstreams get HTTP/1.1:
//! there is no h2c. CONNECT is answered 405: a reverse proxy opens no tunnels.
//! Failures say which side failed: the upstream (502, 504), the client (400, 413), or
//! Portico itself (500). This module never decides which site answers: the service has done
//! that, by the 421 rule, before it gets here.

mod balance;
mod body;
mod connector;
mod headers;
pub use headers::ClientCert;
mod health;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use self::balance::{Balancer, InFlight};
use self::body::{BodyState, ReqBody, RespBody, Stopped};
use self::connector::Connector;
pub use self::connector::{RootsError, SYSTEM_BUNDLE};
use super::{text, Body};
use crate::config::{Proxy, Scheme};
use crate::error_text::ErrorChain;
use crate::metrics::UpstreamOutcome;
use crate::runtime::Runtime;

/// Why a site's upstreams cannot be set up (reported by `runtime::build`).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Roots(#[from] RootsError),
    #[error("{0}")]
    Connector(#[from] connector::ConnectError),
    #[error("{0}")]
    Authority(#[from] balance::AuthorityError),
}

/// Why a request could not be proxied; decides the status.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("no upstream answered: {0}")]
    Upstream(#[source] hyper_util::client::legacy::Error),
    #[error("there is no upstream to try")]
    NoUpstream,
    #[error("the upstream sent no response headers within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the client's request body could not be read")]
    ClientBody,
    #[error("the host {0:?} cannot be sent to an upstream")]
    BadHost(String),
    #[error("CONNECT is not forwarded")]
    Connect,
    #[error("cannot make the upstream request: {0}")]
    Internal(#[from] http::Error),
}

impl ProxyError {
    fn response(&self) -> Response<Body> {
        match self {
            ProxyError::Upstream(_) | ProxyError::NoUpstream => text(
                StatusCode::BAD_GATEWAY,
                "502 bad gateway: no upstream server answered\n",
            ),
            ProxyError::Timeout(_) => text(
                StatusCode::GATEWAY_TIMEOUT,
                "504 gateway timeout: the upstream server did not answer in time\n",
            ),
            ProxyError::TooLarge(n) => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("413 content too large: the request body is over {n} bytes\n"),
            ),
            ProxyError::ClientBody => text(
                StatusCode::BAD_REQUEST,
                "400 bad request: the request body could not be read\n",
            ),
            ProxyError::BadHost(_) => text(
                StatusCode::BAD_REQUEST,
                "400 bad request: the Host cannot be forwarded\n",
            ),
            ProxyError::Connect => {
                let mut resp = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "405 method not allowed: CONNECT is not forwarded (this is a reverse proxy)\n",
                );
                resp.headers_mut().insert(
                    header::ALLOW,
                    http::HeaderValue::from_static(
                        "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE",
                    ),
                );
                resp
            }
            ProxyError::Internal(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 internal server error\n",
            ),
        }
    }
}

type Pooled = Client<Connector, ReqBody>;

/// The pooled clients of one upstream. For an https upstream, `auto` offers `h2` and
/// `http/1.1` and speaks what was chosen; `h1` offers only `http/1.1`, for requests that must
/// stay on HTTP/1.1. For an http upstream both are the same HTTP/1.1 client.
struct PeerClients {
    auto: Pooled,
    h1: Pooled,
    https: bool,
}

/// A site's upstreams: their pooled clients, and what is known about each.
pub struct Upstreams {
    config: Proxy,
    /// By upstream, in the balancer's order.
    clients: Vec<PeerClients>,
    balancer: Balancer,
    /// By upstream, in the balancer's order.
    counters: Vec<Arc<crate::metrics::UpstreamCounters>>,
}

/// A pooled client for one upstream's connector, with the site's timeouts.
fn pooled(config: &Proxy, connector: Connector) -> Pooled {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.idle_timeout)
        // The Host header is set here, from the client's request or `host`.
        .set_host(false)
        .build(connector)
}

impl Upstreams {
    /// Loads the roots for https upstreams (the `ca` file or the system bundle) and makes the
    /// clients, two per https upstream. Starts nothing; see
    /// [`Upstreams::start_health_checks`].
    pub fn new(
        config: &Proxy,
        counters: impl Fn(&str) -> Arc<crate::metrics::UpstreamCounters>,
    ) -> Result<Upstreams, BuildError> {
        let tls = if config.upstreams.iter().any(|u| u.scheme == Scheme::Https) {
            let base = connector::client_config(config.ca.as_deref())?;
            Some((
                connector::with_alpn(&base, connector::ALPN_H2_H1),
                connector::with_alpn(&base, connector::ALPN_H1),
            ))
        } else {
            None
        };
        let server_name = config.server_name.as_ref().map(|n| n.as_str());
        let connector = |u, tls| Connector::new(u, tls, server_name, config.connect_timeout);
        let clients = config
            .upstreams
            .iter()
            .map(|u| {
                Ok(match (u.scheme, &tls) {
                    (Scheme::Https, Some((auto, h1))) => PeerClients {
                        auto: pooled(config, connector(u, Some(auto.clone()))?),
                        h1: pooled(config, connector(u, Some(h1.clone()))?),
                        https: true,
                    },
                    _ => {
                        let client = pooled(config, connector(u, None)?);
                        PeerClients {
                            auto: client.clone(),
                            h1: client,
                            https: false,
                        }
                    }
                })
            })
            .collect::<Result<Vec<_>, connector::ConnectError>>()?;
        let balancer = Balancer::new(
            &config.upstreams,
            config.lb,
            config.max_fails,
            config.fail_timeout,
        )?;
        let counters = config
            .upstreams
            .iter()
            .map(|u| counters(&u.to_string()))
            .collect();
        Ok(Upstreams {
            config: config.clone(),
            clients,
            balancer,
            counters,
        })
    }

    /// The counters of each upstream, in the configuration's order.
    pub fn counters(&self) -> &[Arc<crate::metrics::UpstreamCounters>] {
        &self.counters
    }

    /// Whether upstream `i` is chosen for requests now (health check and passive health).
    pub fn is_up(&self, i: usize) -> bool {
        self.balancer.is_up(i)
    }

    /// The client for upstream `i` and the authority of the request URI. The URI's authority
    /// names the pool and, over HTTP/2, is sent as `:authority`, which must be the host the
    /// upstream should see (RFC 9113 8.3.1): so on a client that may speak HTTP/2 it is
    /// `host`, and connections are pooled per upstream and host. HTTP/1.1-only clients
    /// send `Host` as a header and pool per upstream.
    fn route(
        &self,
        i: usize,
        host: Option<&str>,
        http1_only: bool,
    ) -> Result<(&Pooled, Authority), ProxyError> {
        let clients = &self.clients[i];
        let peer = &self.balancer.peers[i];
        if http1_only || !clients.https {
            return Ok((&clients.h1, peer.authority.clone()));
        }
        let authority = match host {
            Some(h) => Authority::try_from(h).map_err(|_| ProxyError::BadHost(h.to_string()))?,
            None => peer.authority.clone(),
        };
        Ok((&clients.auto, authority))
    }

    /// Starts the active health checks, if configured and inside a tokio runtime. The task
    /// holds only a weak reference: it ends when the runtime holding these upstreams is
    /// dropped.
    pub fn start_health_checks(self: &Arc<Self>) {
        health::spawn(self);
    }

    /// Forwards `req` from `client` (the real client address) and returns the upstream's
    /// response, or a 4xx/5xx that says which side failed. `runtime` is the connection's
    /// runtime: an upgraded connection (WebSocket) it starts is closed once that runtime is
    /// replaced and the drain deadline has passed, like any other long-lived connection.
    ///
    /// `cert` is what the upstream is told of the client's certificate: RFC 9440
    /// `Client-Cert` and `Client-Cert-Chain` (and the site's subject header) when the
    /// connection's certificate was verified; whatever the client sent under those names is
    /// removed in every case.
    pub async fn forward(
        &self,
        client: SocketAddr,
        cert: headers::ClientCert<'_>,
        req: Request<crate::http::RequestBody>,
        runtime: Arc<Runtime>,
    ) -> Response<Body> {
        match self.try_forward(client, cert, req, runtime).await {
            Ok(resp) => resp,
            Err(e) => {
                match &e {
                    ProxyError::TooLarge(_)
                    | ProxyError::ClientBody
                    | ProxyError::BadHost(_)
                    | ProxyError::Connect => {
                        tracing::debug!(error = %ErrorChain(&e), "proxy: client side failed")
                    }
                    _ => tracing::warn!(error = %ErrorChain(&e), "proxy failed"),
                }
                e.response()
            }
        }
    }

    async fn try_forward(
        &self,
        client: SocketAddr,
        cert: headers::ClientCert<'_>,
        mut req: Request<crate::http::RequestBody>,
        runtime: Arc<Runtime>,
    ) -> Result<Response<Body>, ProxyError> {
        // A reverse proxy opens no tunnels to arbitrary authorities (nginx answers 405 too);
        // the upstream is chosen by the site, not by the request target.
        if req.method() == Method::CONNECT {
            return Err(ProxyError::Connect);
        }
        let limit = self.config.max_body_bytes;
        if let (Some(limit), Some(len)) = (limit, content_length(req.headers())) {
            if len > limit {
                return Err(ProxyError::TooLarge(limit));
            }
        }
        let upgrade = req.version() == Version::HTTP_11
            && req.headers().contains_key(header::UPGRADE)
            && headers::connection_has(req.headers(), "upgrade");
        // HTTP/2 has no Upgrade.
        let http1_only = upgrade;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let method = parts.method;
        // Shared bytes: each try's URI takes it without copying or parsing it again.
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut headers = parts.headers;
        // The host the client asked for, by the rule the service routed by: `:authority`
        // (HTTP/2, or an absolute-form target) wins over `Host`.
        let asked_host = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        let te_trailers = headers::te_has_trailers(&headers);
        headers::remove_hop_by_hop(&mut headers, upgrade);
        headers::set_client_cert(&mut headers, &cert);
        if te_trailers {
            // The one TE value allowed over HTTP/2, which gRPC servers require; trailers are
            // passed through both ways. (Kept as Go's ReverseProxy does.)
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let trusted = self
            .config
            .trusted_proxies
            .iter()
            .any(|c| c.contains(client.ip()));
        headers::add_forwarded(
            &mut headers,
            &headers::Forward {
                client: client.ip(),
                proto: "https",
                host: asked_host.as_deref(),
                trusted,
            },
        );
        let host = self.config.host.as_deref().or(asked_host.as_deref());
        match host.map(HeaderValue::from_str) {
            Some(Ok(v)) => {
                headers.insert(header::HOST, v);
            }
            _ => {
                headers.remove(header::HOST);
            }
        }

        let state = BodyState::default();
        let mut body = Some(ReqBody::new(body, limit, state.clone()));
        // Only a request without a body can be sent again: a body is streamed, not kept.
        let retryable =
            is_idempotent(&method) && body.as_ref().is_some_and(http_body::Body::is_end_stream);
        let mut tried = Vec::new();
        loop {
            let Some(i) = self.balancer.pick(&tried) else {
                // Only after every upstream was tried; each failed try returned its own
                // error or continued, so this is reached only without upstreams.
                return Err(ProxyError::NoUpstream);
            };
            tried.push(i);
            let peer = self.balancer.peers[i].clone();
            let (client, authority) = self.route(i, host, http1_only)?;
            let uri = Uri::builder()
                .scheme(peer.scheme.clone())
                .authority(authority)
                .path_and_query(path_and_query.clone())
                .build()?;
            // HTTP/1.1 whatever the client spoke: the pooled client sends it as HTTP/2 on a
            // connection that negotiated h2 (an absolute URI's version is not looked at
            // there), and a request marked HTTP/2 would be refused on an HTTP/1.1 one.
            let mut up_req = Request::builder()
                .method(method.clone())
                .uri(uri)
                .version(Version::HTTP_11)
                .body(body.take().unwrap_or_else(ReqBody::empty))?;
            // Kept for another try only when one can follow (see below).
            let may_retry = retryable && tried.len() < self.balancer.peers.len();
            *up_req.headers_mut() = if may_retry {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let in_flight = self.balancer.start(i);
            let mut request = Finished::new(client.request(up_req), self.config.response_timeout);
            let sent = tokio::time::timeout(self.config.response_timeout, &mut request).await;
            if sent.is_err() {
                // The upstream is slow: nothing is gained by waiting for it in the background.
                request.abandon();
            }
            let outcome = match &sent {
                Ok(Ok(_)) => UpstreamOutcome::Ok,
                Ok(Err(_)) => UpstreamOutcome::Failed,
                Err(_) => UpstreamOutcome::Timeout,
            };
            if let Some(c) = self.counters.get(i) {
                c.sent(outcome);
            }
            match sent {
                Ok(Ok(resp)) => return Ok(self.respond(resp, in_flight, client_upgrade, runtime)),
                Ok(Err(e)) => {
                    match state.get() {
                        Stopped::TooLarge => {
                            return Err(ProxyError::TooLarge(limit.unwrap_or_default()))
                        }
                        Stopped::ClientFailed => return Err(ProxyError::ClientBody),
                        Stopped::Fine => {}
                    }
                    self.balancer.failed(i);
                    if e.is_connect() && may_retry {
                        tracing::warn!(upstream = %peer.upstream, error = %ErrorChain(&e), "proxy: upstream cannot be reached; trying another");
                        continue;
                    }
                    tracing::warn!(upstream = %peer.upstream, "proxy: upstream failed");
                    return Err(ProxyError::Upstream(e));
                }
                Err(_) => {
                    self.balancer.failed(i);
                    tracing::warn!(upstream = %peer.upstream, "proxy: upstream timed out");
                    return Err(ProxyError::Timeout(self.config.response_timeout));
                }
            }
        }
    }

    /// The client's response: hop-by-hop headers removed, the body streamed; on 101, the two
    /// upgraded connections joined.
    fn respond(
        &self,
        mut resp: Response<Incoming>,
        in_flight: InFlight,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        runtime: Arc<Runtime>,
    ) -> Response<Body> {
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            if let Some(client_side) = client_upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client_side, upstream_side, in_flight, runtime));
                let (mut parts, _) = resp.into_parts();
                headers::remove_hop_by_hop(&mut parts.headers, true);
                return Response::from_parts(parts, super::empty());
            }
        }
        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers, false);
        Response::from_parts(parts, RespBody::new(body, in_flight).boxed())
    }
}

/// An upstream request that is finished even when the client goes away first (an HTTP/2
/// stream reset, a closed connection): dropped while pending, it goes on in a task of its
/// own until the upstream's answer has been read, so the connection it is using, or
/// dialling, goes back to the pool. Dropping it instead would close that connection, and
/// a client that cancels every request would cost an upstream connection (and a socket
/// in TIME_WAIT) per request. Bounded: the answer must come within the site's response
/// timeout, and at most [`FINISH_DISCARD`] bytes of body are read and discarded.
struct Finished {
    request: Option<hyper_util::client::legacy::ResponseFuture>,
    deadline: std::time::Duration,
}

/// The most body bytes read and discarded from an answer nobody waits for; a larger body
/// closes its connection instead.
const FINISH_DISCARD: u64 = 1024 * 1024;

impl Finished {
    fn new(
        request: hyper_util::client::legacy::ResponseFuture,
        deadline: std::time::Duration,
    ) -> Finished {
        Finished {
            request: Some(request),
            deadline,
        }
    }

    /// Drop the request for good: its connection closes.
    fn abandon(mut self) {
        self.request = None;
    }
}

impl std::future::Future for Finished {
    type Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(request) = self.request.as_mut() else {
            return std::task::Poll::Pending;
        };
        let out = std::task::ready!(std::pin::Pin::new(request).poll(cx));
        self.request = None;
        std::task::Poll::Ready(out)
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        // Outside a tokio runtime (never on the request path) there is nothing to spawn on.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let deadline = self.deadline;
        handle.spawn(async move {
            let finish = async {
                let Ok(resp) = request.await else { return };
                let mut body = resp.into_body();
                let mut discarded = 0u64;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(data) = frame.data_ref() {
                        discarded += data.len() as u64;
                        if discarded > FINISH_DISCARD {
                            return;
                        }
                    }
                }
            };
            if tokio::time::timeout(deadline, finish).await.is_err() {
                tracing::debug!("proxy: the answer to a cancelled request did not come in time");
            }
        });
    }
}

/// Joins the client's and the upstream's upgraded connections until either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    _in_flight: InFlight,
    runtime: Arc<Runtime>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %ErrorChain(&e), "proxy: upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let drain = runtime.config.limits.drain_timeout;
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(error = %ErrorChain(&e), "proxy: upgraded connection ended with an error");
            }
        }
        _ = async {
            runtime.retired().await;
            tokio::time::sleep(drain).await;
        } => tracing::debug!("proxy: closing an upgraded connection after a reload's drain deadline"),
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_idempotent(m: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(m)
}
