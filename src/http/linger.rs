//! Lingering close for HTTP/1.1 (what nginx calls `lingering_close`).
//!
//! When the server closes a connection while the client is still sending (a 431 for a head
//! over the limit, a 413, a request refused before its body was read), closing the socket
//! with unread bytes in it makes the kernel send a reset, and a reset can destroy the
//! response in the client's receive buffer before the client reads it. So the close first
//! shuts down our side (TLS close_notify and FIN after the response), then reads and
//! discards what the client still sends until it closes, pauses for [`PAUSE`], or
//! [`TOTAL`] or [`MAX_DISCARD`] bytes have gone by; only then is the socket closed.
//!
//! A connection that switched protocols (101, a WebSocket through the proxy) is a tunnel:
//! another task reads it, and its close only shuts down our side, reading nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Reading stops when the client sends nothing for this long.
pub(crate) const PAUSE: Duration = Duration::from_millis(500);
/// And in any case after this long,
pub(crate) const TOTAL: Duration = Duration::from_secs(2);
/// or this many bytes.
pub(crate) const MAX_DISCARD: usize = 1024 * 1024;

enum State {
    Open,
    Draining {
        until: Instant,
        pause: Pin<Box<Sleep>>,
        discarded: usize,
    },
    Closed,
}

pub(crate) struct Linger<IO> {
    io: IO,
    state: State,
    /// Set when the connection became a tunnel.
    upgraded: Arc<AtomicBool>,
}

impl<IO> Linger<IO> {
    pub(crate) fn new(io: IO, upgraded: Arc<AtomicBool>) -> Self {
        Linger {
            io,
            state: State::Open,
            upgraded,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Linger<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Open => {
                    ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
                    if this.upgraded.load(Ordering::Relaxed) {
                        this.state = State::Closed;
                        continue;
                    }
                    let now = Instant::now();
                    this.state = State::Draining {
                        until: now + TOTAL,
                        pause: Box::pin(tokio::time::sleep_until(now + PAUSE)),
                        discarded: 0,
                    };
                }
                State::Draining {
                    until,
                    pause,
                    discarded,
                } => {
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            *discarded += buf.filled().len();
                            if *discarded >= MAX_DISCARD || Instant::now() >= *until {
                                this.state = State::Closed;
                            } else {
                                let next = (Instant::now() + PAUSE).min(*until);
                                pause.as_mut().reset(next);
                            }
                        }
                        // The client closed, or the connection broke: nothing to wait for.
                        Poll::Ready(_) => this.state = State::Closed,
                        Poll::Pending => {
                            ready!(pause.as_mut().poll(cx));
                            this.state = State::Closed;
                        }
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_close_reads_and_discards_what_the_client_still_sends() {
        let (ours, mut client) = tokio::io::duplex(64 * 1024);
        let mut linger = Linger::new(ours, Arc::default());
        client.write_all(b"more of a head").await.expect("write");
        drop(client);
        linger.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        linger.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty(), "the close read what was sent: {rest:?}");
    }

    #[tokio::test]
    async fn a_tunnel_close_reads_nothing() {
        let (ours, mut client) = tokio::io::duplex(64 * 1024);
        let upgraded = Arc::new(AtomicBool::new(true));
        let mut linger = Linger::new(ours, upgraded);
        client.write_all(b"for the upstream").await.expect("write");
        drop(client);
        linger.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        linger.read_to_end(&mut rest).await.expect("read");
        assert_eq!(
            rest, b"for the upstream",
            "the tunnel's other direction gets it"
        );
    }
}
