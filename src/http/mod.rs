//! HTTP: the request lifecycle on a terminated connection (`service`), static files, and the
//! small responses Portico makes itself.

mod access;
pub mod connection;
mod h2_guard;
pub(crate) mod linger;
pub mod proxy;
pub mod service;
pub mod static_files;

/// The response body type used everywhere: a boxed stream of bytes.
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// An error reading a request body, whatever the protocol.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as the service takes it: hyper's own (HTTP/1.1 and HTTP/2, no
/// indirection on that path) or a stream from another protocol (HTTP/3, `quic/`), boxed.
/// Both are streamed frame by frame, never collected.
pub enum RequestBody {
    Hyper(hyper::body::Incoming),
    Stream(http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>),
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Hyper(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BodyError),
            RequestBody::Stream(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::Stream(b) => b.size_hint(),
        }
    }
}

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// A short text/plain response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let body = body.into();
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}
