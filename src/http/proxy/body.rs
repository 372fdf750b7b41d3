//! Bodies streamed through the proxy, frame by frame, never collected whole: the request body
//! with its size limit, and the response body that keeps its upstream counted as busy.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::balance::InFlight;
use crate::http::{BodyError, RequestBody};

/// Why the request body stopped, as seen from the proxy: decides 413 and 400 over 502.
#[derive(Debug, Clone, Default)]
pub(super) struct BodyState(Arc<AtomicU8>);

const FINE: u8 = 0;
const TOO_LARGE: u8 = 1;
const CLIENT_FAILED: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    Fine,
    TooLarge,
    ClientFailed,
}

impl BodyState {
    pub(super) fn get(&self) -> Stopped {
        match self.0.load(Ordering::Relaxed) {
            TOO_LARGE => Stopped::TooLarge,
            CLIENT_FAILED => Stopped::ClientFailed,
            _ => Stopped::Fine,
        }
    }

    fn set(&self, v: u8) {
        let _ = self
            .0
            .compare_exchange(FINE, v, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The request body's own error, so the upstream client reports it as a body error.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReqBodyError {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body from the client failed: {0}")]
    Client(#[source] BodyError),
}

/// The client's request body on its way upstream.
pub(super) struct ReqBody {
    inner: Option<RequestBody>,
    limit: Option<u64>,
    seen: u64,
    state: BodyState,
}

impl ReqBody {
    pub(super) fn new(inner: RequestBody, limit: Option<u64>, state: BodyState) -> ReqBody {
        ReqBody {
            inner: Some(inner),
            limit,
            seen: 0,
            state,
        }
    }

    pub(super) fn empty() -> ReqBody {
        ReqBody {
            inner: None,
            limit: None,
            seen: 0,
            state: BodyState::default(),
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = ReqBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReqBodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if let Some(limit) = this.limit.filter(|&l| this.seen > l) {
                        this.state.set(TOO_LARGE);
                        this.inner = None;
                        return Poll::Ready(Some(Err(ReqBodyError::TooLarge(limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.set(CLIENT_FAILED);
                this.inner = None;
                Poll::Ready(Some(Err(ReqBodyError::Client(e))))
            }
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The upstream's response body on its way to the client; the upstream counts as busy until
/// it is done or dropped.
pub(super) struct RespBody {
    inner: Incoming,
    _in_flight: InFlight,
}

impl RespBody {
    pub(super) fn new(inner: Incoming, in_flight: InFlight) -> RespBody {
        RespBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(|e| std::io::Error::other(UpstreamBodyError(e)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reading the response body from the upstream failed (the client's response is cut).
#[derive(Debug, thiserror::Error)]
#[error("reading the response body from the upstream failed: {0}")]
pub(super) struct UpstreamBodyError(#[source] hyper::Error);
