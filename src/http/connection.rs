//! Driving one HTTP connection: HTTP/1.1 or HTTP/2 (chosen by ALPN before we get here) with
//! the header deadline, the header size and count limits, the idle timeout, and a graceful
//! stop when the server drains.
//!
//! A graceful stop never cuts a response in flight: HTTP/1.1 finishes the current exchange
//! and closes, HTTP/2 sends GOAWAY and lets open streams complete. A request is in flight
//! from its head to the end of its response body. Once stopped, a connection with nothing
//! in flight is closed after `CLOSE_GRACE`: it does not wait out the drain deadline for a
//! client that never answers the GOAWAY.
//!
//! HTTP/2 gets the same deadline as HTTP/1.1's header deadline for its preface and first
//! request, and runs over `H2Guard` (`h2_guard.rs`), which tells the driver when a client
//! resets most of the streams it opens.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::h2_guard::{H2Guard, Watch};
use super::linger::Linger;
use super::service::{self, Conn};
use super::Body;

/// Requests in flight and the time of the last one's end, for the idle timeout: on every
/// HTTP connection, HTTP/3's too (`quic/h3.rs`).
pub(crate) struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    served: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// Called when a response has been sent, or its stream dropped.
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// After a reload: resolves once the connection has answered a request and has none in
    /// flight, or has had no request at all for `grace`. A connection accepted just before
    /// the reload thus still serves the request its client is sending, instead of being
    /// closed under it.
    async fn done_after_retire(&self, grace: Duration) {
        let retired_at = Instant::now();
        let served_before = self.served.load(Ordering::Relaxed);
        loop {
            let idle = self.in_flight.load(Ordering::Relaxed) == 0;
            let served_since = self.served.load(Ordering::Relaxed) > served_before;
            let was_used = served_before > 0;
            if idle && (served_since || (was_used && retired_at.elapsed() >= grace / 4)) {
                return;
            }
            if idle && retired_at.elapsed() >= grace {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resolves `within` after the start if no request has begun by then; never otherwise.
    async fn no_request_within(&self, within: Duration) {
        tokio::time::sleep_until(self.start + within).await;
        if self.in_flight.load(Ordering::Relaxed) > 0 || self.served.load(Ordering::Relaxed) > 0 {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once nothing has been in flight for `quiet` in a row.
    pub(crate) async fn quiet_for(&self, quiet: Duration) {
        let mut since = Instant::now();
        loop {
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = last + idle;
            if self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.max(Instant::now() + Duration::from_millis(100))).await;
        }
    }
}

/// How long a connection of a replaced runtime waits for a request before it closes.
const RETIRE_GRACE: Duration = Duration::from_secs(1);

/// After a graceful stop, a connection with nothing in flight for this long is closed: time
/// for the GOAWAY (or the last response) to leave and for a request already on its way to
/// arrive, not for a client that never answers.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// hyper's HTTP/1.1 header count limit when none is set (`DEFAULT_MAX_HEADERS` in its
/// parser), which is also `limits.max_headers`' default.
const HYPER_MAX_HEADERS: usize = 100;

/// A request in flight: from its head until its response body has been sent or dropped.
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(crate) fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until it ends.
pub struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a connection was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Draining, a reload, or idle: requests in flight get the drain deadline.
    Graceful,
    /// HTTP/2: no request within the header deadline.
    NoRequest,
    /// HTTP/2: the client resets most of its streams.
    Calm,
}

/// The part of hyper's connection types this module needs.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn stop(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn stop(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn stop(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn stop(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs `served` until it ends, stopping it gracefully when idle too long or when the server
/// drains; and for HTTP/2 (`h2`) when no request came within the header deadline or the
/// client was judged abusive.
async fn drive<C: Graceful>(
    served: C,
    conn: &Conn,
    activity: &Activity,
    shutdown: &mut watch::Receiver<bool>,
    h2: Option<&Watch>,
) {
    let limits = &conn.runtime.config.limits;
    tokio::pin!(served);
    let stop = tokio::select! {
        r = served.as_mut() => return log_end(r.err()),
        // Draining: like a reload, but for good. A connection accepted just before still
        // serves the request its client is sending.
        _ = async {
            shutting_down(shutdown).await;
            activity.done_after_retire(RETIRE_GRACE).await;
        } => Stop::Graceful,
        // A reload replaced this connection's runtime: new requests belong on a new
        // connection, which will see the new certificates and sites.
        _ = async {
            conn.runtime.retired().await;
            activity.done_after_retire(RETIRE_GRACE).await;
        } => Stop::Graceful,
        _ = activity.idle_for(limits.idle_timeout) => Stop::Graceful,
        // HTTP/1.1's header deadline is hyper's; HTTP/2 would otherwise wait for its
        // preface and first request until the idle timeout.
        _ = async {
            match h2 {
                Some(_) => activity.no_request_within(limits.header_timeout).await,
                None => std::future::pending().await,
            }
        } => Stop::NoRequest,
        _ = async {
            match h2 {
                Some(watch) => watch.calmed().await,
                None => std::future::pending().await,
            }
        } => Stop::Calm,
    };
    if stop != Stop::Graceful {
        tracing::debug!(peer = %conn.peer, why = ?stop, "closing an HTTP/2 connection");
    }
    served.as_mut().stop();
    // Requests in flight get the drain deadline; a connection with none is closed once its
    // GOAWAY has had time to leave. An abusive or silent client gets only that time.
    let deadline = match stop {
        Stop::Graceful => limits.drain_timeout,
        Stop::NoRequest | Stop::Calm => CLOSE_GRACE,
    };
    tokio::select! {
        r = served => log_end(r.err()),
        _ = activity.quiet_for(CLOSE_GRACE) => {
            tracing::debug!("stopped with nothing in flight; closing the connection")
        }
        _ = tokio::time::sleep(deadline) => {
            tracing::debug!("drain deadline reached; closing the connection")
        }
    }
}

macro_rules! counted_service {
    ($conn:expr, $activity:expr, $wrap:path) => {{
        let conn: Arc<Conn> = $conn;
        let activity: Arc<Activity> = $activity;
        service_fn(move |req| {
            let conn = conn.clone();
            // Dropped with the future if the client cancels before the response is ready.
            let in_flight = InFlight::start(&activity);
            $wrap(async move {
                let req = req.map(super::RequestBody::Hyper);
                let resp = service::handle(conn, req).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            })
        })
    }};
}

/// HTTP/1.1 polls a request's future where it is.
fn in_place<F>(f: F) -> F {
    f
}

pub async fn serve_http1<IO>(conn: Arc<Conn>, io: IO, mut shutdown: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = conn.runtime.config.limits.clone();
    let activity = Arc::new(Activity::new());
    let svc = counted_service!(conn.clone(), activity.clone(), in_place);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The head as parsed (request line, header lines, the empty line) against the
        // limit, exactly; the buffer only has to hold that much.
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    // hyper's own limit is 100 header lines, kept in an uninitialised array on the stack;
    // any explicit limit makes it fill a vector of that size for every request (about 2,000
    // instructions, 7% of a keep-alive request), so the default is left to hyper.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.max_headers(limits.max_headers);
    }
    let io = TokioIo::new(Linger::new(io, conn.upgraded.clone()));
    // Upgrades (WebSocket through the proxy) take the connection over once the response
    // to the upgrade request is sent; the proxy then joins it to the upstream's.
    drive(
        builder.serve_connection(io, svc).with_upgrades(),
        &conn,
        &activity,
        &mut shutdown,
        None,
    )
    .await;
}

pub async fn serve_h2<IO>(conn: Arc<Conn>, io: IO, mut shutdown: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = conn.runtime.config.limits.clone();
    let activity = Arc::new(Activity::new());
    // Boxed: hyper spawns a task per stream and moves the request's future several times
    // on the way (into the stream state, the task cell, the output); moving a pointer
    // instead of the whole state machine saves more than the allocation costs.
    let svc = counted_service!(conn.clone(), activity.clone(), Box::pin);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams);
    let watch = Arc::new(Watch::default());
    let io = TokioIo::new(H2Guard::new(io, watch.clone()));
    drive(
        builder.serve_connection(io, svc),
        &conn,
        &activity,
        &mut shutdown,
        Some(&watch),
    )
    .await;
}

/// Resolves when the server starts draining. A dropped sender counts as draining too.
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn log_end(err: Option<hyper::Error>) {
    if let Some(e) = err {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
