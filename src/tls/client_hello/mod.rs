//! A pure parser for the TLS ClientHello, the first message a client sends.
//!
//! Portico reads the ClientHello before it decides anything about a connection: the SNI
//! host name picks the site and certificate, ALPN and the signature schemes tune what is
//! offered, and a passthrough site gets the untouched bytes replayed to its backend. This
//! module only looks at bytes the caller has already read; it never does I/O, never
//! allocates more than the hello it is given needs, and never panics on any input, because
//! everything it sees comes straight from an unauthenticated peer. It does not normalize
//! or judge host names either: that is the one job of the names module.
//!
//! The input is the connection's bytes from its first byte on: TLS records (RFC 8446 §5.1)
//! carrying one handshake message that may be fragmented over several records (§5.1
//! allows it and some clients do it for large hellos), the ClientHello itself (§4.1.2,
//! RFC 5246 §7.4.1.2), and the extensions Portico cares about (RFC 6066 §3, RFC 7301,
//! RFC 8446 §4.2.1 and §4.2.3).

use std::fmt;

/// The largest ClientHello handshake message accepted, its 4-byte header included.
///
/// Real hellos are a few hundred bytes, and about 2 KiB with a post-quantum key share; the
/// limit only exists so that a peer cannot make us buffer up to the 16 MiB the length
/// field allows.
pub const MAX_HELLO_LEN: usize = 64 * 1024;

/// The largest TLSPlaintext fragment (RFC 8446 §5.1). A ClientHello is never encrypted, so
/// the larger TLSCiphertext allowance does not apply.
const MAX_RECORD_LEN: usize = 1 << 14;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;

const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;

const EXT_SERVER_NAME: u16 = 0;
const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const SERVER_NAME_TYPE_HOST_NAME: u8 = 0;

/// What Portico needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// SNI host_name as sent (ASCII, not normalized). None when there is no server_name
    /// extension, or when it names no host_name.
    pub server_name: Option<String>,
    /// ALPN protocol names offered, in client order.
    pub alpn: Vec<Vec<u8>>,
    /// signature_algorithms extension values (TLS SignatureScheme u16 codes), in client order.
    pub signature_schemes: Vec<u16>,
    /// supported_versions extension values, if present.
    pub supported_versions: Vec<u16>,
}

/// Why the bytes are not a ClientHello Portico accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// The first byte is not a handshake record (0x16): plain HTTP, SSLv2 or anything else.
    NotTls,
    /// The first handshake message is not a ClientHello.
    NotClientHello,
    /// The bytes break the TLS syntax; the text says where.
    Malformed(&'static str),
    /// The ClientHello would be larger than [`MAX_HELLO_LEN`].
    TooLarge,
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::NotTls => f.write_str("not TLS: the first byte is not a handshake record"),
            HelloError::NotClientHello => {
                f.write_str("the first handshake message is not a ClientHello")
            }
            HelloError::Malformed(what) => write!(f, "malformed ClientHello: {what}"),
            HelloError::TooLarge => {
                write!(f, "ClientHello larger than {MAX_HELLO_LEN} bytes")
            }
        }
    }
}

impl std::error::Error for HelloError {}

/// Parses the ClientHello at the start of a connection.
///
/// `buf` holds everything read so far from the connection, starting at its first byte.
/// Returns `Ok(None)` while more bytes are needed; every prefix of a valid hello gives
/// `Ok(None)`. An error is returned as soon as the bytes seen prove the stream invalid.
/// Bytes after the ClientHello are ignored.
pub fn parse(buf: &[u8]) -> Result<Option<Hello>, HelloError> {
    HelloParser::new().feed(buf)
}

/// The incremental form of [`parse`], for callers that read a connection piece by piece.
///
/// Calling [`parse`] again on a growing buffer redoes the record walk each time, which a
/// peer trickling tiny records could turn into quadratic work; this keeps the records
/// already folded in, so the total work stays linear in the bytes read.
#[derive(Debug, Default)]
pub struct HelloParser {
    /// How many bytes of the buffer are whole records already folded into `message`.
    consumed: usize,
    /// The handshake message reassembled so far from the records' fragments.
    message: Vec<u8>,
    /// The final answer, kept so that a caller who feeds again gets the same one.
    outcome: Option<Result<Hello, HelloError>>,
}

impl HelloParser {
    /// A parser that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses what `buf` holds so far, with the same answers as [`parse`] on `buf`.
    ///
    /// `buf` must be the buffer given last time, grown at its end; the parser remembers how
    /// much of it was already looked at. Once a hello or an error has been returned, every
    /// later call returns it again.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Option<Hello>, HelloError> {
        if let Some(outcome) = &self.outcome {
            return outcome.clone().map(Some);
        }
        let result = self.advance(buf);
        match &result {
            Ok(Some(hello)) => self.outcome = Some(Ok(hello.clone())),
            Err(err) => self.outcome = Some(Err(err.clone())),
            Ok(None) => {}
        }
        result
    }

    fn advance(&mut self, buf: &[u8]) -> Result<Option<Hello>, HelloError> {
        loop {
            let rest = buf.get(self.consumed..).unwrap_or_default();
            let Some(len) = check_record_header(rest, self.consumed == 0)? else {
                return Ok(None);
            };
            let Some(fragment) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
                // The record is still arriving; its first bytes may already show that the
                // message is not a ClientHello or is too large, so look without keeping them.
                let partial = rest.get(RECORD_HEADER_LEN..).unwrap_or_default();
                self.check_message_header(partial)?;
                return Ok(None);
            };
            self.message.extend_from_slice(fragment);
            self.consumed += RECORD_HEADER_LEN + len;
            if let Some(total) = self.check_message_header(&[])? {
                if let Some(body) = self.message.get(HANDSHAKE_HEADER_LEN..total) {
                    return parse_body(body).map(Some);
                }
            }
        }
    }

    /// Checks the handshake header formed by the reassembled bytes followed by `extra`, and
    /// returns the whole message's length once the header is complete.
    fn check_message_header(&self, extra: &[u8]) -> Result<Option<usize>, HelloError> {
        let mut head = self.message.iter().chain(extra).copied();
        let Some(msg_type) = head.next() else {
            return Ok(None);
        };
        if msg_type != HANDSHAKE_TYPE_CLIENT_HELLO {
            return Err(HelloError::NotClientHello);
        }
        let (Some(a), Some(b), Some(c)) = (head.next(), head.next(), head.next()) else {
            return Ok(None);
        };
        let body_len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        let total = HANDSHAKE_HEADER_LEN + body_len;
        if total > MAX_HELLO_LEN {
            return Err(HelloError::TooLarge);
        }
        Ok(Some(total))
    }
}

/// Checks the record header at the start of `rest`, as far as it has arrived, and returns
/// the fragment length once all five header bytes are there.
fn check_record_header(rest: &[u8], first: bool) -> Result<Option<usize>, HelloError> {
    let Some(&content_type) = rest.first() else {
        return Ok(None);
    };
    if content_type != CONTENT_TYPE_HANDSHAKE {
        // Handshake records may not be interleaved with other content (RFC 8446 §5.1), and
        // the ClientHello is the client's whole first flight.
        return Err(if first {
            HelloError::NotTls
        } else {
            HelloError::Malformed("a non-handshake record inside the ClientHello")
        });
    }
    if let Some(&major) = rest.get(1) {
        // Every TLS and SSL 3 record version is 3.x; the minor varies between clients.
        if major != 3 {
            return Err(HelloError::Malformed("record version is not 3.x"));
        }
    }
    let (Some(&hi), Some(&lo)) = (rest.get(3), rest.get(4)) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 {
        return Err(HelloError::Malformed("empty handshake record"));
    }
    if len > MAX_RECORD_LEN {
        return Err(HelloError::Malformed("record longer than 2^14 bytes"));
    }
    Ok(Some(len))
}

/// Parses a complete ClientHello body (the handshake message after its 4-byte header).
fn parse_body(body: &[u8]) -> Result<Hello, HelloError> {
    let mut r = Reader::new(body);
    r.u16("truncated legacy_version")?;
    r.take(32, "truncated random")?;
    if r.vec8("truncated legacy_session_id")?.len() > 32 {
        return Err(HelloError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let suites = r.vec16("truncated cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher_suites is empty or odd"));
    }
    if r.vec8("truncated legacy_compression_methods")?.is_empty() {
        return Err(HelloError::Malformed("legacy_compression_methods is empty"));
    }

    let mut hello = Hello {
        server_name: None,
        alpn: Vec::new(),
        signature_schemes: Vec::new(),
        supported_versions: Vec::new(),
    };
    // A TLS 1.2 hello may end here: the extensions block is optional (RFC 5246 §7.4.1.2).
    if r.is_empty() {
        return Ok(hello);
    }
    let mut extensions = Reader::new(r.vec16("truncated extensions")?);
    r.end("bytes after the extensions")?;

    let mut seen = Vec::new();
    while !extensions.is_empty() {
        let ext_type = extensions.u16("truncated extension type")?;
        let data = extensions.vec16("truncated extension data")?;
        seen.push(ext_type);
        match ext_type {
            EXT_SERVER_NAME => hello.server_name = parse_server_name(data)?,
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            EXT_SIGNATURE_ALGORITHMS => {
                let mut r = Reader::new(data);
                hello.signature_schemes = u16_list(r.vec16("truncated signature_algorithms")?)
                    .ok_or(HelloError::Malformed(
                        "signature_algorithms is empty or odd",
                    ))?;
                r.end("bytes after signature_algorithms")?;
            }
            EXT_SUPPORTED_VERSIONS => {
                let mut r = Reader::new(data);
                hello.supported_versions = u16_list(r.vec8("truncated supported_versions")?)
                    .ok_or(HelloError::Malformed("supported_versions is empty or odd"))?;
                r.end("bytes after supported_versions")?;
            }
            _ => {}
        }
    }
    // RFC 8446 §4.2 forbids two extensions of one type; which one a server honours would
    // otherwise be up to the implementation, and Portico and the backend might differ.
    seen.sort_unstable();
    if seen.windows(2).any(|pair| matches!(pair, [a, b] if a == b)) {
        return Err(HelloError::Malformed("duplicate extension"));
    }
    Ok(hello)
}

/// Parses server_name extension data (RFC 6066 §3) and returns its host_name.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader::new(data);
    let mut list = Reader::new(r.vec16("truncated server_name list")?);
    r.end("bytes after the server_name list")?;
    if list.is_empty() {
        return Err(HelloError::Malformed("empty server_name list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8("truncated server name type")?;
        let name = list.vec16("truncated server name")?;
        // Only host_name is defined; other types are skipped as RFC 6066 lets them be added.
        if name_type != SERVER_NAME_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err(HelloError::Malformed("more than one host_name"));
        }
        if name.is_empty() {
            return Err(HelloError::Malformed("empty host_name"));
        }
        // The name ends up in logs and error messages verbatim, so nothing but printable
        // ASCII gets through; spaces and control bytes can never be part of a DNS name.
        if !name.iter().all(u8::is_ascii_graphic) {
            return Err(HelloError::Malformed("host_name is not printable ASCII"));
        }
        host = Some(name.iter().map(|&b| char::from(b)).collect());
    }
    Ok(host)
}

/// Parses application_layer_protocol_negotiation extension data (RFC 7301 §3.1).
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, HelloError> {
    let mut r = Reader::new(data);
    let mut list = Reader::new(r.vec16("truncated ALPN list")?);
    r.end("bytes after the ALPN list")?;
    if list.is_empty() {
        return Err(HelloError::Malformed("empty ALPN list"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.vec8("truncated ALPN protocol name")?;
        if name.is_empty() {
            return Err(HelloError::Malformed("empty ALPN protocol name"));
        }
        protocols.push(name.to_vec());
    }
    Ok(protocols)
}

/// Splits a non-empty, even-length byte string into big-endian u16 values.
fn u16_list(bytes: &[u8]) -> Option<Vec<u16>> {
    if bytes.is_empty() || bytes.len() % 2 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .map(|pair| match pair {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                // chunks_exact(2) yields nothing else.
                _ => 0,
            })
            .collect(),
    )
}

/// A cursor over TLS wire syntax that fails, instead of panicking, on any overrun.
///
/// Each method takes the message to report when the bytes run out, so that an error
/// names the field that was cut short.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn end(&self, what: &'static str) -> Result<(), HelloError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(HelloError::Malformed(what))
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(HelloError::Malformed(what))?;
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        match self.take(1, what)? {
            [b] => Ok(*b),
            _ => Err(HelloError::Malformed(what)),
        }
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        match self.take(2, what)? {
            [hi, lo] => Ok(u16::from_be_bytes([*hi, *lo])),
            _ => Err(HelloError::Malformed(what)),
        }
    }

    /// A byte string with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what)
    }

    /// A byte string with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }
}

#[cfg(test)]
mod tests;
