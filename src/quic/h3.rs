//! HTTP/3 on one established QUIC connection: each request stream becomes an
//! `http::Request` for the service every TCP connection uses (`http::service::handle`),
//! and its response goes back on the stream. Bodies are streamed frame by frame both ways.
//!
//! The connection's lifetime follows the TCP one's (`http/connection.rs`): a graceful stop
//! (drain, the runtime retired by a reload, idle) sends GOAWAY, lets the requests in flight
//! finish within `drain_timeout`, and closes with H3_NO_ERROR. A bad request stream is
//! that stream's problem: h3 resets it (or closes the connection on a connection error);
//! nothing here panics on what a client sends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::connection::{Activity, InFlight, CLOSE_GRACE};
use crate::http::service::{self, Conn};
use crate::http::{BodyError, RequestBody};

type Server = h3::server::Connection<h3_quinn::Connection, Bytes>;
type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;
type RecvHalf = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// H3_NO_ERROR (RFC 9114 8.1): the code of a connection closed on purpose.
const H3_NO_ERROR: u32 = 0x100;

/// Serves one request stream in a task of its own, counted in flight until it is done.
fn spawn_request(conn: &Arc<Conn>, resolver: Resolver, activity: &Arc<Activity>) {
    let in_flight = InFlight::start(activity);
    let conn = conn.clone();
    // Boxed, as on HTTP/2: the service's future is large and tokio moves it.
    tokio::spawn(Box::pin(async move {
        request(conn, resolver).await;
        drop(in_flight);
    }));
}

/// Serves HTTP/3 on `quic` until the client closes it or Portico stops it.
pub(super) async fn serve(
    conn: Arc<Conn>,
    quic: quinn::Connection,
    mut shutdown: watch::Receiver<bool>,
    deadline: Instant,
) {
    let limits = conn.runtime.config.limits.clone();
    let mut builder = h3::server::builder();
    builder.max_field_section_size(limits.max_header_bytes as u64);
    // The control streams' SETTINGS belong to the handshake's deadline.
    let mut h3: Server = match tokio::time::timeout_at(
        deadline,
        builder.build(h3_quinn::Connection::new(quic.clone())),
    )
    .await
    {
        Ok(Ok(h3)) => h3,
        Ok(Err(e)) => {
            tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 connection setup failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "HTTP/3 connection setup timed out");
            quic.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"timeout");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let stopped = loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => spawn_request(&conn, resolver, &activity),
                // The client sent GOAWAY and its requests are done, or it closed.
                Ok(None) => break false,
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 connection ended");
                    break false;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break true,
            _ = conn.runtime.retired() => break true,
            _ = activity.idle_for(limits.idle_timeout) => break true,
        }
    };
    if stopped {
        // GOAWAY: the requests accepted so far and one the client may be sending finish;
        // later ones are refused with H3_REQUEST_REJECTED and retried elsewhere.
        let _ = h3.shutdown(1).await;
        let until = Instant::now() + limits.drain_timeout;
        loop {
            tokio::select! {
                accepted = h3.accept() => match accepted {
                    Ok(Some(resolver)) => spawn_request(&conn, resolver, &activity),
                    _ => break,
                },
                _ = activity.quiet_for(CLOSE_GRACE) => break,
                _ = tokio::time::sleep_until(until) => {
                    tracing::debug!(peer = %conn.peer, "drain deadline reached; closing the HTTP/3 connection");
                    break;
                }
            }
        }
    }
    // CONNECTION_CLOSE with H3_NO_ERROR (also what dropping `h3` sends).
    quic.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"");
}

/// One request stream: its head (within `header_timeout`), the service, the response.
async fn request(conn: Arc<Conn>, resolver: Resolver) {
    let header_timeout = conn.runtime.config.limits.header_timeout;
    let (req, stream) = match tokio::time::timeout(header_timeout, resolver.resolve_request()).await
    {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            // Malformed heads, too large heads (h3 answered 431), resets.
            tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 request refused");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "no HTTP/3 request head within header_timeout");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let length = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = RequestBody::Stream(H3Body::new(recv, length).await.boxed_unsync());
    let req = req.map(|()| body);
    let Ok(resp) = service::handle(conn.clone(), req).await;
    let (parts, mut body) = resp.into_parts();
    if let Err(e) = send
        .send_response(http::Response::from_parts(parts, ()))
        .await
    {
        tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 response head not sent");
        return;
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // The body broke (an upstream went away): the client must not take a cut
                // body for a whole one.
                tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 response body failed");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        let sent = match frame.into_data() {
            Ok(data) if data.is_empty() => Ok(()),
            Ok(data) => send.send_data(data).await,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => send.send_trailers(trailers).await,
                Err(_) => Ok(()),
            },
        };
        if let Err(e) = sent {
            tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 response body not sent");
            return;
        }
    }
    if let Err(e) = send.finish().await {
        tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 response not finished");
    }
}

/// A request body read from an HTTP/3 stream: DATA frames, then trailers.
struct H3Body {
    recv: RecvHalf,
    /// A first chunk read while looking whether the body is empty.
    first: Option<Bytes>,
    state: Reading,
    /// What is left of `content-length`, when the client sent one.
    remaining: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Data,
    Trailers,
    Done,
}

impl H3Body {
    /// Polls the stream once: a request whose stream ended with its head (a GET, mostly)
    /// is known to have no body, so the proxy sends none and may retry it.
    async fn new(mut recv: RecvHalf, length: Option<u64>) -> H3Body {
        let peeked = std::future::poll_fn(|cx| Poll::Ready(poll_data(&mut recv, cx))).await;
        let mut body = H3Body {
            recv,
            first: None,
            state: Reading::Data,
            remaining: length,
        };
        match peeked {
            Poll::Ready(Ok(Some(data))) => body.first = Some(data),
            // Trailers without data are possible, but a stream that ended is the usual case;
            // the trailers are still polled before the body says it is done.
            Poll::Ready(Ok(None)) => body.state = Reading::Trailers,
            Poll::Ready(Err(_)) | Poll::Pending => {}
        }
        if body.state == Reading::Trailers {
            let trailers =
                std::future::poll_fn(|cx| Poll::Ready(body.recv.poll_recv_trailers(cx))).await;
            if let Poll::Ready(Ok(None)) = trailers {
                body.state = Reading::Done;
            }
        }
        body
    }
}

fn poll_data(recv: &mut RecvHalf, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
    match recv.poll_recv_data(cx) {
        Poll::Ready(Ok(Some(mut buf))) => Poll::Ready(Ok(Some(buf.copy_to_bytes(buf.remaining())))),
        Poll::Ready(Ok(None)) => Poll::Ready(Ok(None)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(Box::new(e))),
        Poll::Pending => Poll::Pending,
    }
}

impl http_body::Body for H3Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(data) = this.first.take() {
            this.count(data.len());
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        loop {
            match this.state {
                Reading::Done => return Poll::Ready(None),
                Reading::Data => match std::task::ready!(poll_data(&mut this.recv, cx)) {
                    Ok(Some(data)) => {
                        this.count(data.len());
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(None) => this.state = Reading::Trailers,
                    Err(e) => {
                        this.state = Reading::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Reading::Trailers => {
                    let trailers = std::task::ready!(this.recv.poll_recv_trailers(cx));
                    this.state = Reading::Done;
                    return match trailers {
                        Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                        Ok(None) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == Reading::Done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            return SizeHint::with_exact(0);
        }
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl H3Body {
    fn count(&mut self, n: usize) {
        if let Some(left) = self.remaining.as_mut() {
            *left = left.saturating_sub(n as u64);
        }
    }
}
