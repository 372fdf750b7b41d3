//! Binary upgrade: the running process hands its listening sockets to a new process over the
//! control socket (SCM_RIGHTS), so no connection is refused while the binary changes.
//!
//! The sockets never close during the hand-over: both processes hold them until the old one
//! has stopped accepting, and connections waiting in the kernel's queue are accepted by
//! whichever process accepts next. This module only moves file descriptors; the sequence
//! (spawn, hand over, ready, drain) lives in `cli/serve.rs`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The environment variable that tells a new `portico serve` to take its sockets from the
/// control socket at this path instead of binding them.
pub const FROM_ENV: &str = "PORTICO_UPGRADE_FROM";

/// The most sockets one hand-over carries (the kernel's limit per message is 253).
const MAX_SOCKETS: usize = 250;

/// Sends the listening sockets, with the addresses they were bound for, in one message.
pub fn send_sockets(
    stream: &UnixStream,
    sockets: &[(SocketAddr, BorrowedFd<'_>)],
) -> io::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many sockets to hand over at once",
        ));
    }
    let line = sockets
        .iter()
        .fold(String::from("sockets"), |mut s, (a, _)| {
            s.push(' ');
            s.push_str(&a.to_string());
            s
        })
        + "\n";
    let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|(_, fd)| *fd).collect();
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

/// Receives what [`send_sockets`] sent: listening sockets by the address they serve.
pub fn recv_sockets(stream: &UnixStream) -> io::Result<Vec<(SocketAddr, std::net::TcpListener)>> {
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
    let addrs: Vec<SocketAddr> = words
        .map(|w| w.parse().map_err(|_| bad("bad address in hand-over")))
        .collect::<io::Result<_>>()?;
    if addrs.len() != fds.len() {
        return Err(bad("hand-over addresses and sockets do not match"));
    }
    addrs
        .into_iter()
        .zip(fds)
        .map(|(a, fd)| {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            Ok((a, listener))
        })
        .collect()
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
        send_sockets(&a, &[(a1, l1.as_fd()), (a2, l2.as_fd())]).expect("send");
        let got = recv_sockets(&b).expect("recv");
        assert_eq!(
            got.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            vec![a1, a2]
        );
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
    fn garbage_is_an_error() {
        let (a, b) = UnixStream::pair().expect("pair");
        use std::io::Write;
        (&a).write_all(b"hello\n").expect("write");
        assert!(recv_sockets(&b).is_err());
    }
}
