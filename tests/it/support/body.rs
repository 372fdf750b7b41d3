//! Request and response bodies for tests: whole ones, and generated ones that are made as
//! they are read (nothing held in memory).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// The body type test clients and backends send.
pub type TBody = BoxBody<Bytes, io::Error>;

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> TBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// `left` bytes of 'x' in 64 KiB frames, made as they are read.
pub struct Gen {
    pub left: u64,
    /// Whether the length is announced (Content-Length) or not (chunked).
    pub exact: bool,
}

/// `left` bytes of 'x' with their length announced.
pub fn gen(left: u64) -> Gen {
    Gen { left, exact: true }
}

impl Body for Gen {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.left)
        } else {
            SizeHint::default()
        }
    }
}
