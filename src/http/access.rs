//! The access log: one line (target `access`, message `request`) per request, written when
//! the response body has ended or was dropped, with the body bytes actually sent.
//!
//! Counting frames rather than reading `Content-Length` gives the right figure for chunked
//! and streamed (proxied) responses, for HEAD (nothing sent), and for a client that went
//! away halfway. Writing the line must never fail or block the response: it only formats.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use http_body::{Frame, SizeHint};

use super::service::{Conn, RequestHost};
use crate::names::HostName;

/// What one access log line says, gathered while the request is handled.
pub(super) struct Line {
    pub(super) conn: Arc<Conn>,
    pub(super) start: Instant,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) version: Version,
    pub(super) host: Option<RequestHost>,
    /// The site's index in the connection's runtime.
    pub(super) site: Option<usize>,
    pub(super) status: StatusCode,
}

impl Line {
    fn write(&self, bytes: u64, complete: bool) {
        let conn = &self.conn;
        if crate::logging::json() {
            return self.write_json(bytes, complete);
        }
        tracing::info!(
            target: "access",
            listener = %conn.runtime.listeners[conn.listener].config.name,
            site = self.site.and_then(|i| conn.runtime.sites.get(i)).map_or("-", |s| s.name.as_str()),
            peer = %conn.peer,
            sni = conn.sni.as_ref().map(HostName::as_str).unwrap_or("-"),
            host = self.host.as_ref().map(RequestHost::as_str).unwrap_or("-"),
            method = %self.method,
            path = %self.path,
            version = ?self.version,
            status = self.status.as_u16(),
            bytes,
            complete,
            duration_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX),
            tls = conn.tls_version,
            client_subject = conn.identity.as_ref().map(|c| c.subject.as_str()),
            client_sha256 = conn.identity.as_ref().map(|c| c.fingerprint.as_str()),
            "request"
        );
    }

    /// The same line under the JSON field names (docs/config.md, `[log]`): Caddy's where it
    /// has one, absent values left out rather than written as `-`, the duration in seconds.
    fn write_json(&self, bytes: u64, complete: bool) {
        let conn = &self.conn;
        tracing::info!(
            target: "access",
            listener = conn.runtime.listeners[conn.listener].config.name.as_str(),
            site = self.site.and_then(|i| conn.runtime.sites.get(i)).map(|s| s.name.as_str()),
            client_ip = %conn.peer.ip(),
            client_port = conn.peer.port(),
            sni = conn.sni.as_ref().map(HostName::as_str),
            host = self.host.as_ref().map(RequestHost::as_str),
            method = self.method.as_str(),
            path = self.path.as_str(),
            proto = proto(self.version),
            status = self.status.as_u16(),
            bytes,
            complete,
            duration = self.start.elapsed().as_secs_f64(),
            tls_version = (conn.tls_version != "-").then_some(conn.tls_version),
            client_subject = conn.identity.as_ref().map(|c| c.subject.as_str()),
            client_sha256 = conn.identity.as_ref().map(|c| c.fingerprint.as_str()),
            "request"
        );
    }
}

/// The protocol as Caddy (and Go's `Request.Proto`) writes it.
fn proto(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

/// A response body that counts the data bytes it yields and writes the access log line once:
/// at its end, or when dropped before it (`complete = false`).
pub(super) struct Logged<B: http_body::Body> {
    inner: B,
    sent: u64,
    line: Option<Line>,
}

impl<B: http_body::Body> Logged<B> {
    pub(super) fn new(inner: B, line: Line) -> Logged<B> {
        Logged {
            inner,
            sent: 0,
            line: Some(line),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(line) = self.line.take() {
            line.write(self.sent, complete);
        }
    }
}

impl<B: http_body::Body> Drop for Logged<B> {
    fn drop(&mut self) {
        // Dropped before its end was seen. Nothing was cut short when the body was empty (a
        // 204, a 304, a 101) or is never sent (HEAD); otherwise the client went away.
        let complete = self.inner.is_end_stream()
            || self.line.as_ref().is_some_and(|l| l.method == Method::HEAD);
        self.finish(complete);
    }
}

impl<B> http_body::Body for Logged<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent = this.sent.saturating_add(data.len() as u64);
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
