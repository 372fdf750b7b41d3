//! Binary upgrade: the running process hands its listening sockets to a new process over the
//! control socket (SCM_RIGHTS), so no connection is refused while the binary changes.
//!
//! The sockets never close during the hand-over: both processes hold them until the old one
//! has stopped accepting, and connections waiting in the kernel's queue are accepted by
//! whichever process accepts next. The UDP sockets of `http3` listeners go the same way;
//! they are one socket in both processes, so until the old process has closed its QUIC
//! connections each datagram goes to whichever process reads first (docs/config.md says
//! what that costs). This module only moves file descriptors; the sequence (spawn, hand
//! over, ready, drain) lives in `cli/serve.rs`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketType,
};

/// The environment variable that tells a new `portico serve` to take its sockets from the
/// control socket at this path instead of binding them.
pub const FROM_ENV: &str = "PORTICO_UPGRADE_FROM";

/// The most sockets one hand-over carries (the kernel's limit per message is 253).
const MAX_SOCKETS: usize = 250;

/// What a handed-over socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A listening TCP socket.
    Tcp,
    /// The UDP socket of `http3` listeners (QUIC).
    Udp,
}

/// On the hand-over line a UDP socket's address has this prefix; a TCP socket's has none,
/// as before UDP sockets were handed over, so that a binary from then still reads a
/// message without UDP sockets (and refuses one with them, which ends that upgrade with
/// nothing changed).
const UDP_PREFIX: &str = "udp/";

/// Sockets taken over (from a binary upgrade or the service manager), by the socket
/// address they serve.
#[derive(Debug, Default)]
pub struct Sockets {
    pub tcp: Vec<(SocketAddr, std::net::TcpListener)>,
    pub udp: Vec<(SocketAddr, std::net::UdpSocket)>,
}

impl Sockets {
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tcp.len() + self.udp.len()
    }
}

/// Sends the sockets, with their kinds and the addresses they were bound for, in one
/// message.
pub fn send_sockets(
    stream: &UnixStream,
    sockets: &[(Kind, SocketAddr, BorrowedFd<'_>)],
) -> io::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many sockets to hand over at once",
        ));
    }
    let line = sockets
        .iter()
        .fold(String::from("sockets"), |mut s, (kind, a, _)| {
            s.push(' ');
            if *kind == Kind::Udp {
                s.push_str(UDP_PREFIX);
            }
            s.push_str(&a.to_string());
            s
        })
        + "\n";
    let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|(_, _, fd)| *fd).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    let sent = rustix::net::sendmsg(
        stream.as_fd(),
        &[IoSlice::new(line.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent != line.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "hand-over message cut short",
        ));
    }
    Ok(())
}

/// Receives what [`send_sockets`] sent: sockets by the address they serve. Each
/// descriptor must be of the kind the line says (the kernel's SO_TYPE), or nothing is
/// taken.
pub fn recv_sockets(stream: &UnixStream) -> io::Result<Sockets> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        stream.as_fd(),
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    let text =
        std::str::from_utf8(&buf[..msg.bytes]).map_err(|_| bad("hand-over message is not text"))?;
    let line = text
        .strip_suffix('\n')
        .ok_or_else(|| bad("hand-over message cut short"))?;
    let mut words = line.split(' ');
    if words.next() != Some("sockets") {
        return Err(bad("not a hand-over message"));
    }
    let addrs: Vec<(Kind, SocketAddr)> = words
        .map(|w| {
            let (kind, addr) = match w.strip_prefix(UDP_PREFIX) {
                Some(addr) => (Kind::Udp, addr),
                None => (Kind::Tcp, w),
            };
            let addr = addr.parse().map_err(|_| bad("bad address in hand-over"))?;
            Ok((kind, addr))
        })
        .collect::<io::Result<_>>()?;
    if addrs.len() != fds.len() {
        return Err(bad("hand-over addresses and sockets do not match"));
    }
    let mut sockets = Sockets::default();
    for ((kind, addr), fd) in addrs.into_iter().zip(fds) {
        let expected = match kind {
            Kind::Tcp => SocketType::STREAM,
            Kind::Udp => SocketType::DGRAM,
        };
        if rustix::net::sockopt::socket_type(&fd)? != expected {
            return Err(bad(
                "a handed-over socket is not of the kind its address says",
            ));
        }
        match kind {
            Kind::Tcp => {
                let listener = std::net::TcpListener::from(fd);
                listener.set_nonblocking(true)?;
                sockets.tcp.push((addr, listener));
            }
            Kind::Udp => {
                let socket = std::net::UdpSocket::from(fd);
                socket.set_nonblocking(true)?;
                sockets.udp.push((addr, socket));
            }
        }
    }
    Ok(sockets)
}

fn bad(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_survive_the_trip() {
        let (a, b) = UnixStream::pair().expect("pair");
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (a1, a2) = (
            l1.local_addr().expect("addr"),
            l2.local_addr().expect("addr"),
        );
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let ua = u.local_addr().expect("addr");
        send_sockets(
            &a,
            &[
                (Kind::Tcp, a1, l1.as_fd()),
                (Kind::Udp, ua, u.as_fd()),
                (Kind::Tcp, a2, l2.as_fd()),
            ],
        )
        .expect("send");
        let got = recv_sockets(&b).expect("recv");
        assert_eq!(
            got.tcp.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            vec![a1, a2]
        );
        assert_eq!(got.udp.len(), 1);
        assert_eq!(got.udp[0].0, ua);
        // The received UDP socket is the same socket: a datagram sent to it is read
        // through the received descriptor.
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        sender.send_to(b"ping", ua).expect("send datagram");
        got.udp[0].1.set_nonblocking(false).expect("blocking");
        let mut buf = [0u8; 8];
        let (n, _) = got.udp[0].1.recv_from(&mut buf).expect("recv datagram");
        assert_eq!(&buf[..n], b"ping");
        let got = got.tcp;
        // The received socket is the same listening socket: a connection to it is accepted
        // through the received descriptor after the original is closed.
        drop(l1);
        let _client = std::net::TcpStream::connect(a1).expect("connect");
        got[0].1.set_nonblocking(false).expect("blocking");
        let (_, peer) = got[0]
            .1
            .accept()
            .expect("accept through the received socket");
        assert!(peer.ip().is_loopback());
    }

    #[test]
    fn a_socket_of_another_kind_than_its_address_says_is_refused() {
        let (a, b) = UnixStream::pair().expect("pair");
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let ua = u.local_addr().expect("addr");
        send_sockets(&a, &[(Kind::Tcp, ua, u.as_fd())]).expect("send");
        assert!(recv_sockets(&b).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        let (a, b) = UnixStream::pair().expect("pair");
        use std::io::Write;
        (&a).write_all(b"hello\n").expect("write");
        assert!(recv_sockets(&b).is_err());
    }
}
