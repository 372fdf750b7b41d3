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
