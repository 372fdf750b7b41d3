//! The PROXY protocol (versions 1 and 2): the header a load balancer puts before a
//! connection's bytes to say who the client really is.
//!
//! Encoding is for passthrough backends; parsing is for listeners behind an L4 load balancer.
//! Both are pure functions over bytes, with no I/O; the parser never panics and says
//! "need more bytes" for every prefix of a valid header.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// The longest v1 header, CRLF included (the specification's limit).
const V1_MAX: usize = 107;

/// Encodes a v1 header for a TCP connection from `source` to `destination`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (src, dst) = (canonical(source), canonical(destination));
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            format!("PROXY TCP4 {s} {d} {} {}\r\n", src.port(), dst.port())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            format!("PROXY TCP6 {s} {d} {} {}\r\n", src.port(), dst.port())
        }
        // Mixed families cannot be expressed; UNKNOWN tells the receiver to use the socket's.
        _ => "PROXY UNKNOWN\r\n".to_string(),
    }
    .into_bytes()
}

/// Encodes a v2 header (command PROXY, TCP) for a connection from `source` to `destination`.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (src, dst) = (canonical(source), canonical(destination));
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21); // version 2, command PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => {
            out.push(0x00); // UNSPEC: the receiver uses the socket's addresses
            out.extend_from_slice(&0u16.to_be_bytes());
            return out;
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// What a received header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection was proxied for this client, to this address.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The sender speaks for itself (v2 LOCAL, v1 UNKNOWN, or an unsupported family): use the
    /// socket's own addresses.
    Local,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The bytes do not start with either version's signature.
    Missing,
    Malformed(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Missing => f.write_str("no PROXY protocol header"),
            Error::Malformed(what) => write!(f, "malformed PROXY protocol header: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// Parses a header at the start of `buf`. `Ok(None)`: need more bytes. On success, also
/// returns the header's length (the bytes after it belong to the client).
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 { Ok(None) } else { parse_v1(buf) };
    }
    Err(Error::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Error::Malformed("v1 header longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| Error::Malformed("v1 header is not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::Local,
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src
                .parse()
                .map_err(|_| Error::Malformed("bad v1 source address"))?;
            let dst: IpAddr = dst
                .parse()
                .map_err(|_| Error::Malformed("bad v1 destination address"))?;
            if (*proto == "TCP4") != (src.is_ipv4() && dst.is_ipv4())
                || src.is_ipv4() != dst.is_ipv4()
            {
                return Err(Error::Malformed("v1 address family does not match"));
            }
            let port = |p: &str| {
                p.parse::<u16>()
                    .map_err(|_| Error::Malformed("bad v1 port"))
            };
            Header::Proxied {
                source: SocketAddr::new(src, port(sport)?),
                destination: SocketAddr::new(dst, port(dport)?),
            }
        }
        _ => return Err(Error::Malformed("v1 header fields")),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let Some(&[ver_cmd, family, hi, lo]) = buf.get(12..16) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(Error::Malformed("v2 version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = 16 + len;
    let Some(body) = buf.get(16..total) else {
        return Ok(None);
    };
    let header = match (ver_cmd & 0x0F, family) {
        (0x0, _) => Header::Local,
        (0x1, 0x11) if len >= 12 => {
            let ip = |b: &[u8]| IpAddr::from([b[0], b[1], b[2], b[3]]);
            Header::Proxied {
                source: SocketAddr::new(ip(&body[0..4]), u16::from_be_bytes([body[8], body[9]])),
                destination: SocketAddr::new(
                    ip(&body[4..8]),
                    u16::from_be_bytes([body[10], body[11]]),
                ),
            }
        }
        (0x1, 0x21) if len >= 36 => {
            let ip = |b: &[u8]| {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                IpAddr::from(a)
            };
            Header::Proxied {
                source: SocketAddr::new(ip(&body[0..16]), u16::from_be_bytes([body[32], body[33]])),
                destination: SocketAddr::new(
                    ip(&body[16..32]),
                    u16::from_be_bytes([body[34], body[35]]),
                ),
            }
        }
        (0x1, 0x11 | 0x21) => return Err(Error::Malformed("v2 address block too short")),
        // UDP, Unix sockets and UNSPEC carry no TCP client address.
        (0x1, _) => Header::Local,
        _ => return Err(Error::Malformed("v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Some((header, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn v1_and_v2_round_trip_for_both_families() {
        for (src, dst) in [
            ("192.0.2.1:5000", "127.0.0.1:443"),
            ("[2001:db8::1]:5000", "[::1]:443"),
        ] {
            let (src, dst) = (addr(src), addr(dst));
            for bytes in [encode_v1(src, dst), encode_v2(src, dst)] {
                let mut with_data = bytes.clone();
                with_data.extend_from_slice(b"\x16\x03\x01");
                assert_eq!(
                    parse(&with_data),
                    Ok(Some((
                        Header::Proxied {
                            source: src,
                            destination: dst
                        },
                        bytes.len()
                    )))
                );
                for cut in 0..bytes.len() {
                    assert_eq!(
                        parse(&bytes[..cut]),
                        Ok(None),
                        "prefix of {cut} bytes needs more"
                    );
                }
            }
        }
        assert_eq!(
            encode_v1(addr("192.0.2.1:5000"), addr("127.0.0.1:443")),
            b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 443\r\n"
        );
        assert_eq!(
            encode_v2(addr("192.0.2.1:5000"), addr("127.0.0.1:443")).len(),
            28
        );
        // A v4-mapped v6 address is written as IPv4.
        assert!(encode_v1(addr("[::ffff:192.0.2.1]:1"), addr("127.0.0.1:2"))
            .starts_with(b"PROXY TCP4 192.0.2.1"));
    }

    #[test]
    fn local_and_unknown() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nrest"),
            Ok(Some((Header::Local, 15)))
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(parse(&local), Ok(Some((Header::Local, 16))));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(Error::Missing));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::Missing));
        assert!(parse(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n").is_err());
        assert!(parse(b"PROXY TCP9 a b c d\r\n").is_err());
        assert!(parse(&[b"PROXY ".as_slice(), &[b'x'; 200]].concat()).is_err());
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(parse(&short).is_err());
        let mut v3 = V2_SIGNATURE.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0x00, 0x00]);
        assert!(parse(&v3).is_err());
        // A deterministic sweep of mutated headers: no input panics.
        let base = encode_v2(addr("[2001:db8::1]:5000"), addr("[::1]:443"));
        let mut x: u32 = 0x9E37_79B9;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut b = base.clone();
            let i = (x as usize) % b.len();
            b[i] = (x >> 8) as u8;
            b.truncate(((x >> 16) as usize) % (b.len() + 1));
            let _ = parse(&b);
        }
    }
}
