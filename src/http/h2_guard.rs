//! A watch over the HTTP/2 frames of one connection, for two things hyper and h2 leave to
//! the server:
//!
//! - A client that cancels (RST_STREAM) most of the streams it opens, paced so that h2's
//!   burst limit (resets of streams not yet accepted) never trips, is marked *calm*: the
//!   driver stops the connection, and the GOAWAY that h2 then writes leaves with the code
//!   ENHANCE_YOUR_CALM instead of NO_ERROR, as a burst's does.
//! - Trailers that carry a pseudo-header field are malformed (RFC 9113 section 8.1), but h2
//!   drops such fields without a word. The guard holds a trailer block back until it has
//!   arrived whole, looks at its field representations, and when one names a pseudo-header
//!   it clears the frame's END_STREAM flag: h2 treats trailers without END_STREAM as
//!   malformed and resets the stream with PROTOCOL_ERROR, its own answer to a malformed
//!   message. The block is still decoded by h2, so the HPACK state stays in step.
//!
//! It sits between hyper and TLS and reads frame headers (nine bytes each) and trailer
//! blocks only; it never decodes HPACK, never changes a frame's length or order, and holds
//! back at most one trailer block ([`HOLD_LIMIT`] bytes). What it cannot see: a trailer
//! field that refers to a pseudo-header through the dynamic table (knowing that needs the
//! decoder's table, which h2 keeps private; rejecting them belongs in h2 itself).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The client connection preface, which comes before the first frame.
const PREFACE_LEN: usize = 24;
const HEAD_LEN: usize = 9;

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A client is judged once it has reset this many streams: then, if it has reset more than
/// half of the streams it opened, it is told to calm down. A browser leaving a page resets
/// what is still loading, a few dozen streams; an attack that pairs every HEADERS with a
/// RST_STREAM is caught after this many pairs, however slowly it paces them.
pub(crate) const RESETS_JUDGED_AT: u64 = 100;

/// The largest trailer block (frames included) held back to be looked at. A larger one
/// passes unchecked; h2 refuses header lists over `max_header_bytes` anyway.
pub(crate) const HOLD_LIMIT: usize = 64 * 1024 + 16 * HEAD_LEN;

/// What the guard tells the connection's driver.
#[derive(Default)]
pub(crate) struct Watch {
    calm: AtomicBool,
    notify: Notify,
}

impl Watch {
    /// Resolves once the client has been judged abusive.
    pub(crate) async fn calmed(&self) {
        while !self.calm.load(Ordering::Acquire) {
            self.notify.notified().await;
        }
    }

    fn set_calm(&self) {
        self.calm.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn is_calm(&self) -> bool {
        self.calm.load(Ordering::Acquire)
    }
}

/// The IO hyper's HTTP/2 server runs over: the TLS stream, watched.
pub(crate) struct H2Guard<IO> {
    io: IO,
    watch: Arc<Watch>,
    read: ReadSide,
    write: WriteSide,
}

impl<IO> H2Guard<IO> {
    pub(crate) fn new(io: IO, watch: Arc<Watch>) -> Self {
        H2Guard {
            io,
            watch,
            read: ReadSide::default(),
            write: WriteSide::default(),
        }
    }
}

/// The client's side of the connection: where the parse stands, and the bytes held back.
struct ReadSide {
    preface_left: usize,
    /// Payload bytes of the current frame still to pass.
    skip_left: usize,
    /// The highest stream a client HEADERS frame opened; a HEADERS frame on a stream at or
    /// below it is a trailer block (or a frame h2 refuses).
    highest_stream: u32,
    streams: u64,
    resets: u64,
    /// Bytes read but not given to hyper yet: an incomplete frame header or trailer block.
    held: BytesMut,
    /// How many bytes at the front of `held` are checked and may go to hyper.
    cleared: usize,
    eof: bool,
}

impl Default for ReadSide {
    fn default() -> Self {
        ReadSide {
            preface_left: PREFACE_LEN,
            skip_left: 0,
            highest_stream: 0,
            streams: 0,
            resets: 0,
            held: BytesMut::new(),
            cleared: 0,
            eof: false,
        }
    }
}

struct Head {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Head {
    fn parse(b: &[u8]) -> Head {
        Head {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

impl ReadSide {
    /// Looks at `data`, the bytes that follow what was scanned before, and returns how many
    /// of them may go to hyper now; the rest (a partial frame header, or a trailer block
    /// not yet whole) must wait for more bytes. May clear END_STREAM in a trailer frame.
    /// Sets `calm` when the client resets too much.
    fn scan(&mut self, data: &mut [u8], watch: &Watch) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(data.len() - pos);
                self.preface_left -= n;
                pos += n;
                continue;
            }
            if self.skip_left > 0 {
                let n = self.skip_left.min(data.len() - pos);
                self.skip_left -= n;
                pos += n;
                continue;
            }
            if data.len() - pos < HEAD_LEN {
                return pos;
            }
            let head = Head::parse(&data[pos..pos + HEAD_LEN]);
            match head.kind {
                HEADERS if head.stream != 0 && head.stream <= self.highest_stream => {
                    match trailer_block(&data[pos..]) {
                        Block::Whole { end, pseudo } => {
                            if pseudo {
                                tracing::debug!(
                                    stream = head.stream,
                                    "HTTP/2 trailers carry a pseudo-header field: malformed"
                                );
                                data[pos + 4] &= !END_STREAM;
                            }
                            pos += end;
                        }
                        Block::Partial { needed } if needed <= HOLD_LIMIT => return pos,
                        Block::Partial { .. } | Block::Odd => {
                            pos += HEAD_LEN;
                            self.skip_left = head.len;
                        }
                    }
                    continue;
                }
                HEADERS if head.stream != 0 => {
                    self.highest_stream = head.stream;
                    self.streams += 1;
                }
                RST_STREAM => {
                    self.resets += 1;
                    if self.resets >= RESETS_JUDGED_AT
                        && self.resets * 2 > self.streams
                        && !watch.is_calm()
                    {
                        tracing::info!(
                            resets = self.resets,
                            streams = self.streams,
                            "HTTP/2 client reset most of its streams: GOAWAY ENHANCE_YOUR_CALM"
                        );
                        watch.set_calm();
                    }
                }
                _ => {}
            }
            pos += HEAD_LEN;
            self.skip_left = head.len;
        }
        pos
    }
}

enum Block {
    /// The block ends `end` bytes in; `pseudo` if a field names a pseudo-header.
    Whole { end: usize, pseudo: bool },
    /// More bytes are needed: the block is at least `needed` bytes long.
    Partial { needed: usize },
    /// Not a well-formed sequence of frames; h2 will say so.
    Odd,
}

/// The trailer block starting at `data[0]`: a HEADERS frame and the CONTINUATION frames up
/// to END_HEADERS.
fn trailer_block(data: &[u8]) -> Block {
    let mut fragment = Vec::new();
    let mut pos = 0;
    let mut first = true;
    loop {
        if data.len() < pos + HEAD_LEN {
            return Block::Partial {
                needed: pos + HEAD_LEN,
            };
        }
        let head = Head::parse(&data[pos..pos + HEAD_LEN]);
        if !first && head.kind != CONTINUATION {
            return Block::Odd;
        }
        let end = pos + HEAD_LEN + head.len;
        if data.len() < end {
            return Block::Partial { needed: end };
        }
        let mut payload = &data[pos + HEAD_LEN..end];
        if first {
            if head.flags & PADDED != 0 {
                let Some((&pad, rest)) = payload.split_first() else {
                    return Block::Odd;
                };
                let Some(kept) = rest.len().checked_sub(usize::from(pad)) else {
                    return Block::Odd;
                };
                payload = &rest[..kept];
            }
            if head.flags & PRIORITY != 0 {
                let Some(rest) = payload.get(5..) else {
                    return Block::Odd;
                };
                payload = rest;
            }
        }
        fragment.extend_from_slice(payload);
        if head.flags & END_HEADERS != 0 {
            return Block::Whole {
                end,
                pseudo: names_pseudo_header(&fragment),
            };
        }
        first = false;
        pos = end;
    }
}

/// Whether a header block names a pseudo-header field by a static-table index (1 to 14 are
/// `:authority` to `:status`) or by a literal name that starts with `:`. Stops at anything
/// it cannot read; h2 decodes the block for real.
fn names_pseudo_header(mut block: &[u8]) -> bool {
    const STATIC_PSEUDO: std::ops::RangeInclusive<u64> = 1..=14;
    while let Some(&first) = block.first() {
        let (name_index, rest) = if first & 0x80 != 0 {
            // Indexed field.
            match integer(block, 7) {
                Some((index, rest)) => {
                    if STATIC_PSEUDO.contains(&index) {
                        return true;
                    }
                    block = rest;
                    continue;
                }
                None => return false,
            }
        } else if first & 0xc0 == 0x40 {
            // Literal with incremental indexing.
            match integer(block, 6) {
                Some(v) => v,
                None => return false,
            }
        } else if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            match integer(block, 5) {
                Some((_, rest)) => {
                    block = rest;
                    continue;
                }
                None => return false,
            }
        } else {
            // Literal without indexing, or never indexed.
            match integer(block, 4) {
                Some(v) => v,
                None => return false,
            }
        };
        let mut rest = rest;
        if name_index == 0 {
            let Some((huffman, name, after)) = string(rest) else {
                return false;
            };
            if starts_with_colon(huffman, name) {
                return true;
            }
            rest = after;
        } else if STATIC_PSEUDO.contains(&name_index) {
            return true;
        }
        let Some((_, _, after)) = string(rest) else {
            return false;
        };
        block = after;
    }
    false
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 section 5.1), and what follows.
fn integer(data: &[u8], prefix: u32) -> Option<(u64, &[u8])> {
    let mask = (1u8 << prefix) - 1;
    let (&first, mut rest) = data.split_first()?;
    let mut value = u64::from(first & mask);
    if value < u64::from(mask) {
        return Some((value, rest));
    }
    let mut shift = 0u32;
    loop {
        let (&b, after) = rest.split_first()?;
        rest = after;
        value = value.checked_add(u64::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some((value, rest));
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
}

/// An HPACK string literal: whether it is Huffman-coded, its octets, and what follows.
fn string(data: &[u8]) -> Option<(bool, &[u8], &[u8])> {
    let huffman = data.first()? & 0x80 != 0;
    let (len, rest) = integer(data, 7)?;
    let len = usize::try_from(len).ok()?;
    (rest.len() >= len).then(|| (huffman, &rest[..len], &rest[len..]))
}

/// Whether a string's first character is `:`. In the HPACK Huffman code `:` is the 7 bits
/// 1011100 (RFC 7541 appendix B), and the code is prefix-free.
fn starts_with_colon(huffman: bool, octets: &[u8]) -> bool {
    match octets.first() {
        Some(&b) if huffman => b >> 1 == 0b101_1100,
        Some(&b) => b == b':',
        None => false,
    }
}

/// Our side: where the frames we write stand, to find the error code of a GOAWAY.
#[derive(Default, Clone, Copy)]
struct WriteSide {
    head: [u8; HEAD_LEN],
    head_len: usize,
    /// Bytes of the current frame's payload already passed, and its length.
    payload_pos: usize,
    payload_len: usize,
    goaway: bool,
}

impl WriteSide {
    /// Moves over `data`; when `patch` is given, pushes the offset in `data` of every byte
    /// of a GOAWAY's error code, with the byte of ENHANCE_YOUR_CALM to put there.
    fn walk(&mut self, data: &[u8], mut patch: Option<&mut Vec<(usize, u8)>>) {
        let mut pos = 0;
        while pos < data.len() {
            if self.head_len < HEAD_LEN {
                let n = (HEAD_LEN - self.head_len).min(data.len() - pos);
                self.head[self.head_len..self.head_len + n].copy_from_slice(&data[pos..pos + n]);
                self.head_len += n;
                pos += n;
                if self.head_len == HEAD_LEN {
                    let head = Head::parse(&self.head);
                    self.payload_pos = 0;
                    self.payload_len = head.len;
                    self.goaway = head.kind == GOAWAY;
                    if head.len == 0 {
                        self.head_len = 0;
                    }
                }
                continue;
            }
            let left = self.payload_len - self.payload_pos;
            let n = left.min(data.len() - pos);
            if self.goaway {
                if let Some(patch) = patch.as_deref_mut() {
                    let code = ENHANCE_YOUR_CALM.to_be_bytes();
                    for i in 0..n {
                        let at = self.payload_pos + i;
                        if (4..8).contains(&at) {
                            patch.push((pos + i, code[at - 4]));
                        }
                    }
                }
            }
            self.payload_pos += n;
            pos += n;
            if self.payload_pos == self.payload_len {
                self.head_len = 0;
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for H2Guard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let side = &mut this.read;
        loop {
            if side.cleared > 0 {
                let n = side.cleared.min(buf.remaining());
                buf.put_slice(&side.held[..n]);
                side.held.advance(n);
                side.cleared -= n;
                return Poll::Ready(Ok(()));
            }
            if side.eof {
                return Poll::Ready(Ok(()));
            }
            if side.held.is_empty() {
                // The usual case: read straight into hyper's buffer and look at it there.
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                let filled = buf.filled().len();
                if filled == before {
                    side.eof = true;
                    return Poll::Ready(Ok(()));
                }
                let new = &mut buf.filled_mut()[before..];
                let ok = side.scan(new, &this.watch);
                if ok == new.len() {
                    return Poll::Ready(Ok(()));
                }
                // Hold back from the first byte that cannot pass yet.
                side.held.extend_from_slice(&new[ok..]);
                buf.set_filled(before + ok);
                if ok > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Bytes are held: read behind them until they can be judged.
            let mut chunk = [0u8; 8 * 1024];
            let mut more = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut more))?;
            if more.filled().is_empty() {
                // The client is gone: what is held passes as it is; h2 sees it end short.
                side.eof = true;
                side.cleared = side.held.len();
                continue;
            }
            side.held.extend_from_slice(more.filled());
            let mut held = std::mem::take(&mut side.held);
            side.cleared = side.scan(&mut held, &this.watch);
            side.held = held;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for H2Guard<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut patch = Vec::new();
        if this.watch.is_calm() {
            let mut ahead = this.write;
            ahead.walk(buf, Some(&mut patch));
        }
        let n = if patch.is_empty() {
            ready!(Pin::new(&mut this.io).poll_write(cx, buf))?
        } else {
            let mut patched = buf.to_vec();
            for (at, b) in patch {
                patched[at] = b;
            }
            ready!(Pin::new(&mut this.io).poll_write(cx, &patched))?
        };
        this.write.walk(&buf[..n], None);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.watch.is_calm() {
            // Rare (a connection being closed): write the slices as one patched buffer.
            let flat: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            return Pin::new(this).poll_write(cx, &flat);
        }
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            this.write.walk(&b[..take], None);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn pseudo_headers_are_seen_by_static_index_and_by_literal_name() {
        let huffman_path = [0x84, 0xb9, 0x58, 0xd3, 0x3f]; // ":path", Huffman-coded
        let huffman_hap = [0x83, 0x9c, 0x75, 0xff]; // "hap"
        for (block, pseudo) in [
            (vec![0x84], true),                         // indexed :path /
            (vec![0x88], true),                         // indexed :status 200
            (vec![0x04, 0x01, b'/'], true),             // literal, name :path
            (vec![0x41, 0x01, b'a'], true),             // incremental, :authority
            (vec![0x00, 0x02, b':', b'x', 0x00], true), // literal new name ":x"
            ([&[0x10][..], &huffman_path, &[0x00]].concat(), true),
            ([&[0x00][..], &huffman_hap, &[0x00]].concat(), false),
            (vec![0x00, 0x01, b'x', 0x01, b'1'], false), // "x: 1"
            (vec![0x0f, 0x28, 0x01, b'1'], false),       // static name 55 (via 4-bit prefix)
            (vec![0xbe], false),                         // dynamic entry 62: unknown
            (vec![0x3f, 0xe1, 0x1f, 0x84], true),        // size update, then :path
            (vec![0x00, 0x05, b'x'], false),             // truncated: no verdict
        ] {
            assert_eq!(names_pseudo_header(&block), pseudo, "{block:02x?}");
        }
    }

    #[test]
    fn hpack_integers_decode_with_their_prefix() {
        assert_eq!(integer(&[0x0a], 5).map(|v| v.0), Some(10));
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], 5).map(|v| v.0), Some(1337));
        assert_eq!(integer(&[0x1f, 0x9a], 5), None);
        assert_eq!(
            integer(
                &[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                5
            ),
            None
        );
    }

    /// The client's bytes: the preface, SETTINGS, a request on stream 1 with a body, and
    /// `trailers` as its trailer block, split over a HEADERS and a CONTINUATION frame.
    fn client_bytes(trailers: &[u8]) -> Vec<u8> {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        out.extend(frame(HEADERS, END_HEADERS, 1, &[0x83, 0x87, 0x84]));
        out.extend(frame(0x0, 0, 1, b"body"));
        let (a, b) = trailers.split_at(trailers.len() / 2);
        out.extend(frame(
            HEADERS,
            END_STREAM | PADDED,
            1,
            &[&[2][..], a, &[0, 0]].concat(),
        ));
        out.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        out.extend(frame(0x6, 0, 0, &[0; 8]));
        out
    }

    /// Feeds `data` to a read side in pieces of `split` bytes, as reads would deliver
    /// them, and returns what hyper would get.
    fn passed(data: &[u8], split: usize) -> Vec<u8> {
        let watch = Watch::default();
        let mut side = ReadSide::default();
        let mut out = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        for piece in data.chunks(split) {
            held.extend_from_slice(piece);
            let ok = side.scan(&mut held, &watch);
            out.extend(held.drain(..ok));
        }
        out.extend(held);
        out
    }

    #[test]
    fn trailer_blocks_lose_end_stream_only_when_they_name_a_pseudo_header_however_split() {
        let clean = client_bytes(&[0x00, 0x01, b'x', 0x01, b'1']);
        let bad = client_bytes(&[0x00, 0x01, b'x', 0x01, b'1', 0x84]);
        let flags_at = bad.len() - (9 + 8) - (9 + 3) - (9 + 1 + 3 + 2) + 4;
        assert_eq!(bad[flags_at], END_STREAM | PADDED);
        for split in 1..=bad.len() {
            assert_eq!(passed(&clean, split), clean, "split {split}");
            let got = passed(&bad, split);
            assert_eq!(got.len(), bad.len(), "split {split}");
            assert_eq!(got[flags_at], PADDED, "split {split}");
            let mut rest = got.clone();
            rest[flags_at] = bad[flags_at];
            assert_eq!(rest, bad, "nothing else changes, split {split}");
        }
    }

    #[test]
    fn resetting_most_streams_makes_the_client_calm_after_a_hundred() {
        let watch = Watch::default();
        let mut side = ReadSide::default();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for i in 0..RESETS_JUDGED_AT as u32 {
            let stream = 2 * i + 1;
            bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, stream, &[0x82]));
            bytes.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
        }
        let cut = bytes.len() - 13;
        let (before, last) = bytes.split_at_mut(cut);
        assert_eq!(side.scan(before, &watch), before.len());
        assert!(!watch.is_calm(), "99 resets are not judged");
        assert_eq!(side.scan(last, &watch), 13);
        assert!(watch.is_calm());

        // A client that completes most of its streams is left alone.
        let watch = Watch::default();
        let mut side = ReadSide::default();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for i in 0..300u32 {
            let stream = 2 * i + 1;
            bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, stream, &[0x82]));
            if i % 3 == 0 {
                bytes.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
            }
        }
        side.scan(&mut bytes, &watch);
        assert!(!watch.is_calm());
    }

    #[test]
    fn goaway_codes_are_found_across_writes() {
        let mut out = frame(0x4, 0, 0, &[]);
        out.extend(frame(0x0, 0, 1, &[0x7; 40]));
        let goaway_at = out.len();
        out.extend(frame(GOAWAY, 0, 0, &[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
        out.extend(frame(0x6, 0, 0, &[0; 8]));
        for split in 1..out.len() {
            let mut side = WriteSide::default();
            let mut patched = out.clone();
            let mut at = 0;
            for piece in out.chunks(split) {
                let mut patch = Vec::new();
                side.walk(piece, Some(&mut patch));
                for (i, b) in patch {
                    patched[at + i] = b;
                }
                at += piece.len();
            }
            let code = &patched[goaway_at + 9 + 4..goaway_at + 9 + 8];
            assert_eq!(code, ENHANCE_YOUR_CALM.to_be_bytes(), "split {split}");
            patched[goaway_at + 9 + 4..goaway_at + 9 + 8].copy_from_slice(&[0; 4]);
            assert_eq!(patched, out, "only the code changes, split {split}");
        }
    }
}
