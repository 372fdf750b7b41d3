//! What one wake-up of a terminated connection writes leaves in one write.
//!
//! [`Gather`] sits between TLS and the TCP socket and keeps the bytes written while
//! [`Flushed`] polls the connection's future, up to 16 KiB; when that poll ends, before the
//! task sleeps, [`Flushed`] sends them. Nothing waits for a timer or for more data: a write
//! only moves to the end of the poll that made it. Each write to a loopback or LAN socket
//! costs a pass through the kernel's TCP stack, so this is what it saves:
//!
//! - HTTP/2: h2 writes every DATA frame of 256 bytes or more on its own (it chains the
//!   payload instead of copying it and flushes before the next frame), so ten streams
//!   answered in one wake-up were ten `writev` calls. They are now one.
//! - A TLS 1.3 handshake followed by a request: the session ticket, the response and the
//!   closing alert were three writes after the server's flight; they are now one when the
//!   request came with the client's Finished.
//!
//! Writes made outside [`Flushed`]'s poll (an upgraded connection, which another task
//! takes over) go straight through. [`Gather`] and [`Flushed`] share the socket behind a
//! mutex that only the connection's task takes, so it is not contended.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most kept back; a TLS record of 16 KiB of plaintext is a little more, so a large
/// response's records go straight through, without a copy.
const LIMIT: usize = 16 * 1024;

/// The buffer a connection keeps between polls: enough for a small response and its TLS
/// record, so HTTP/1.1 keep-alive does not allocate for every response.
const RETAIN: usize = 4 * 1024;

struct State<T> {
    io: T,
    /// Written by the connection, not yet handed to `io`.
    kept: Vec<u8>,
    /// How much of `kept` `io` has already taken.
    sent: usize,
    /// The connection asked for a flush that `io` has not had yet.
    flush_owed: bool,
    /// A write failed after the connection's poll: its next read or write reports it.
    failed: Option<io::Error>,
    /// Inside [`Flushed`]'s poll, which sends what is kept when it ends. Outside it (an
    /// upgraded connection moved to another task, say) writes go straight through.
    gathering: bool,
}

impl<T: AsyncWrite + Unpin> State<T> {
    /// Hands the kept bytes to `io`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.kept.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.kept[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // A small buffer is kept for the next poll; a large one is freed, so that an idle
        // connection (there may be many) holds little.
        if self.kept.capacity() > RETAIN {
            self.kept = Vec::new();
        } else {
            self.kept.clear();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Hands the kept bytes to `io` and flushes it if the connection asked to.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        if self.flush_owed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush_owed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes; `true` when they should bypass `kept` altogether.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if self.gathering && self.kept.len() + len <= LIMIT {
            let need = self.kept.len() + len;
            if need > self.kept.capacity() {
                // A small first write gets the small buffer; more goes straight to the limit,
                // rather than doubling (and copying) its way there.
                let size = if self.kept.capacity() == 0 {
                    RETAIN.max(len)
                } else {
                    LIMIT
                };
                self.kept.reserve_exact(size - self.kept.len());
            }
            return Poll::Ready(Ok(false));
        }
        ready!(self.poll_send(cx))?;
        Poll::Ready(Ok(!self.gathering || len >= LIMIT))
    }
}

type Shared<T> = Arc<Mutex<State<T>>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    // Nothing panics while holding the lock; should it ever, the state is still consistent
    // between calls, so carry on with it.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The socket as TLS, above it, sees it.
pub(crate) struct Gather<T>(Shared<T>);

/// The handle [`Flushed`] uses to send what [`Gather`] kept.
pub(crate) struct Sender<T>(Shared<T>);

/// Wraps `io`; give the [`Gather`] to the connection and the [`Sender`] to [`Flushed::new`].
pub(crate) fn gather<T>(io: T) -> (Gather<T>, Sender<T>) {
    let shared = Arc::new(Mutex::new(State {
        io,
        kept: Vec::new(),
        sent: 0,
        flush_owed: false,
        failed: None,
        gathering: false,
    }));
    (Gather(shared.clone()), Sender(shared))
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Gather<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = lock(&self.0);
        if let Some(e) = st.failed.take() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut st.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gather<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = lock(&self.0);
        if ready!(st.poll_room(cx, data.len()))? {
            return Pin::new(&mut st.io).poll_write(cx, data);
        }
        st.kept.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let mut st = lock(&self.0);
        if ready!(st.poll_room(cx, len))? {
            return Pin::new(&mut st.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            st.kept.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Owed until the poll ends, when [`Flushed`] pays it.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = lock(&self.0);
        if let Some(e) = st.failed.take() {
            return Poll::Ready(Err(e));
        }
        st.flush_owed = true;
        if st.gathering {
            return Poll::Ready(Ok(()));
        }
        st.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = lock(&self.0);
        ready!(st.poll_flush(cx))?;
        Pin::new(&mut st.io).poll_shutdown(cx)
    }
}

/// A connection future that sends what its [`Gather`] kept each time it has been polled.
pub(crate) struct Flushed<C, T> {
    conn: C,
    sender: Sender<T>,
}

impl<C, T> Flushed<C, T> {
    pub(crate) fn new(conn: C, sender: Sender<T>) -> Flushed<C, T> {
        Flushed { conn, sender }
    }
}

impl<C, T> Future for Flushed<C, T>
where
    C: Future + Unpin,
    T: AsyncWrite + Unpin,
{
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        lock(&this.sender.0).gathering = true;
        let polled = Pin::new(&mut this.conn).poll(cx);
        let mut st = lock(&this.sender.0);
        st.gathering = false;
        let sent = st.poll_flush(cx);
        if polled.is_ready() {
            // The connection is over. A graceful end already sent everything (its shutdown
            // goes through `Gather`, which then writes for real); after a drop at the drain
            // deadline, what the socket does not take now goes with the connection, as it
            // did before this module: waiting for a client that stopped reading would hold
            // the connection, and its descriptor, for ever.
            return polled;
        }
        if let Poll::Ready(Err(e)) = sent {
            // The connection learns of it from its next read or write, right away.
            st.failed = Some(e);
            cx.waker().wake_by_ref();
        }
        // On Pending, `io` wakes the task when it can take more.
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes made in one poll reach the peer only when the poll ends, as one.
    #[tokio::test]
    async fn writes_of_one_poll_leave_together_when_it_ends() {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let (mut io, sender) = gather(ours);
        let mut step = 0;
        let conn = poll_fn(move |cx| {
            step += 1;
            match step {
                1 => {
                    for part in [&b"one "[..], b"two ", b"three"] {
                        assert!(Pin::new(&mut io).poll_write(cx, part).is_ready());
                        assert!(Pin::new(&mut io).poll_flush(cx).is_ready());
                    }
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                _ => Poll::Ready(step),
            }
        });
        let mut flushed = Flushed::new(Box::pin(conn), sender);
        let mut got = vec![0; 64];
        // Nothing is handed over while the connection's poll runs, everything after it.
        assert!(poll_fn(|cx| Poll::Ready(Pin::new(&mut flushed).poll(cx)))
            .await
            .is_pending());
        let n = theirs.read(&mut got).await.expect("read");
        assert_eq!(&got[..n], b"one two three");
        assert_eq!(flushed.await, 2);
    }

    /// A write larger than the limit goes straight through, after what was kept before it.
    #[tokio::test]
    async fn a_large_write_follows_what_was_kept() {
        let (ours, mut theirs) = tokio::io::duplex(4 * LIMIT);
        let (mut io, sender) = gather(ours);
        let big = vec![b'x'; LIMIT + 1];
        let expect: Vec<u8> = b"head".iter().chain(&big).copied().collect();
        let conn = Box::pin(async move {
            io.write_all(b"head").await?;
            io.write_all(&big).await?;
            io.shutdown().await
        });
        Flushed::new(conn, sender).await.expect("all written");
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, expect);
    }

    /// Outside the poll of a `Flushed` (an upgraded connection moved to another task),
    /// writes are not kept: nothing would send them.
    #[tokio::test]
    async fn writes_outside_flushed_go_straight_through() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let (mut io, _sender) = gather(ours);
        io.write_all(b"direct").await.expect("write");
        let mut got = [0; 6];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            theirs.read_exact(&mut got),
        )
        .await
        .expect("the bytes arrive without any flush")
        .expect("read");
        assert_eq!(&got, b"direct");
    }

    /// A connection that ends while its client has stopped reading ends at once: what the
    /// socket cannot take is dropped with it, not waited for.
    #[tokio::test]
    async fn an_ended_connection_does_not_wait_for_a_client_that_stopped_reading() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (mut io, sender) = gather(ours);
        let conn = poll_fn(move |cx| {
            // Kept (under the limit), more than the pipe holds, and the connection ends.
            assert!(Pin::new(&mut io).poll_write(cx, &[7; 1000]).is_ready());
            Poll::Ready(())
        });
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            Flushed::new(Box::pin(conn), sender),
        )
        .await
        .expect("the connection ends without waiting for the client");
    }

    /// When the peer has gone, the connection hears of it from its next read.
    #[tokio::test]
    async fn a_failed_send_reaches_the_connection() {
        let (ours, theirs) = tokio::io::duplex(1024);
        drop(theirs);
        let (mut io, sender) = gather(ours);
        let conn = Box::pin(async move {
            io.write_all(b"lost").await?;
            io.flush().await?;
            // The poll ends here: the send fails and the error waits for the next call.
            tokio::task::yield_now().await;
            let mut b = [0; 4];
            io.read(&mut b).await.map(|_| ())
        });
        let err = Flushed::new(conn, sender)
            .await
            .expect_err("the peer is gone");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
