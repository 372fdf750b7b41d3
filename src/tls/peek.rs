//! TEMPORARY placeholder while the real module is written; replaced before commit.
use super::client_hello::{parse, Hello, HelloError};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub enum PeekError {
    Io(std::io::Error),
    Timeout,
    Closed,
    Hello(HelloError),
}
impl std::fmt::Display for PeekError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

pub async fn read_client_hello<IO: AsyncRead + Unpin>(
    io: &mut IO,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<(Hello, Vec<u8>), PeekError> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Err(_) => return Err(PeekError::Timeout),
            Ok(Err(e)) => return Err(PeekError::Io(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(PeekError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > limit {
            return Err(PeekError::Hello(HelloError::TooLarge));
        }
        if let Some(h) = parse(&buf).map_err(PeekError::Hello)? {
            return Ok((h, buf));
        }
    }
}
pub struct PrefixedIo<IO> {
    prefix: Vec<u8>,
    pos: usize,
    inner: IO,
}
impl<IO> PrefixedIo<IO> {
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        PrefixedIo {
            prefix,
            pos: 0,
            inner,
        }
    }
}
impl<IO: AsyncRead + Unpin> AsyncRead for PrefixedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let p = self.pos;
            buf.put_slice(&self.prefix[p..p + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
impl<IO: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
