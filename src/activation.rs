//! systemd socket activation: the service manager binds the listening sockets and passes
//! them from file descriptor 3 on (`LISTEN_FDS`, for the process `LISTEN_PID`); Portico
//! serves on them instead of binding its own.
//!
//! Each inherited socket is matched to a listener address by the address it is bound to
//! (getsockname), so the unit's `ListenStream=` lines and the configuration's listeners need
//! not be in the same order. A TCP socket (`ListenStream=`) serves a listener; a UDP socket
//! (`ListenDatagram=`) serves the QUIC side of an `http3` listener. A listener without a
//! socket is bound as usual; a socket that matches no listener is an error that names it,
//! never silently closed. The matched sockets then take the path a binary upgrade's do
//! (`Server::start_with`). This module never binds anything itself.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use crate::upgrade::Sockets;

/// How many sockets the manager passes.
pub const FDS_ENV: &str = "LISTEN_FDS";
/// The process they are for; a value naming another process (a parent's) is ignored.
pub const PID_ENV: &str = "LISTEN_PID";
/// The names the unit gave them (`FileDescriptorName=`); not used, removed with the others.
pub const NAMES_ENV: &str = "LISTEN_FDNAMES";

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: usize = 3;

/// A socket the manager passed: its descriptor number, for messages, and where it listens.
#[derive(Debug)]
pub struct Inherited {
    pub fd: usize,
    pub addr: SocketAddr,
    pub socket: Passed,
}

/// The two kinds of socket Portico takes.
#[derive(Debug)]
pub enum Passed {
    /// `ListenStream=`: a listener's TCP socket.
    Tcp(TcpListener),
    /// `ListenDatagram=`: an `http3` listener's UDP socket.
    Udp(UdpSocket),
}

impl Passed {
    fn words(&self) -> &'static str {
        match self {
            Passed::Tcp(_) => "TCP",
            Passed::Udp(_) => "UDP",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("{FDS_ENV}={0:?} is not a number of sockets")]
    BadCount(String),
    #[error("file descriptor {fd} passed by the service manager ({FDS_ENV}) is not a TCP or UDP socket: {source}")]
    NotTcp { fd: usize, source: io::Error },
    #[error("the {kind} socket on {addr} passed by the service manager (file descriptor {fd}) matches no listener of the configuration; {wanted}")]
    NoListener {
        fd: usize,
        kind: &'static str,
        addr: SocketAddr,
        wanted: String,
    },
    #[error(
        "the service manager passed two {kind} sockets for {addr} (file descriptors {first} and {second})"
    )]
    Twice {
        kind: &'static str,
        addr: SocketAddr,
        first: usize,
        second: usize,
    },
}

impl ActivationError {
    /// What to change.
    pub fn fix(&self) -> &'static str {
        match self {
            ActivationError::BadCount(_) | ActivationError::NotTcp { .. } => {
                "pass listening TCP sockets (ListenStream= in the .socket unit) and UDP sockets (ListenDatagram=) only"
            }
            ActivationError::NoListener { kind: "UDP", .. } => {
                "give the .socket unit's ListenDatagram= the addresses of the configuration's http3 = true listeners, or set http3 = true on the listener of this address"
            }
            ActivationError::NoListener { .. } => {
                "give the .socket unit's ListenStream= the addresses of the configuration's [[listener]]s, or add a listener for this one"
            }
            ActivationError::Twice { .. } => "list each address once in the .socket unit",
        }
    }
}

/// Takes the sockets passed to this process, and removes the variables from the
/// environment so that a process this one starts (a binary upgrade, which gets its sockets
/// over the control socket) does not take them for its own. None passed: an empty list.
/// Call it before any thread that reads the environment starts.
pub fn take_from_env() -> Result<Vec<Inherited>, ActivationError> {
    let count = std::env::var(FDS_ENV).ok();
    let for_us = std::env::var(PID_ENV)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let taken = match count {
        Some(count) if for_us => take(&count),
        Some(_) => {
            tracing::info!(
                "{FDS_ENV} is set for another process ({PID_ENV}); binding the sockets instead"
            );
            Ok(Vec::new())
        }
        None => Ok(Vec::new()),
    };
    for var in [FDS_ENV, PID_ENV, NAMES_ENV] {
        std::env::remove_var(var);
    }
    taken
}

fn take(count: &str) -> Result<Vec<Inherited>, ActivationError> {
    let n: usize = count
        .trim()
        .parse()
        .map_err(|_| ActivationError::BadCount(count.to_string()))?;
    // listenfd reads the same variables, checks that each descriptor is a TCP (or UDP)
    // socket, and marks it close-on-exec (systemd passes them inheritable). A descriptor
    // that is not a TCP socket stays in its place, to be tried as a UDP one.
    let mut fds = listenfd::ListenFd::from_env();
    (0..n)
        .map(|i| {
            let fd = FIRST_FD + i;
            let not_tcp = |source| ActivationError::NotTcp { fd, source };
            let socket = match fds.take_tcp_listener(i) {
                Ok(Some(l)) => Passed::Tcp(l),
                Ok(None) => return Err(not_tcp(io::Error::other("not passed"))),
                Err(_) => Passed::Udp(
                    fds.take_udp_socket(i)
                        .map_err(not_tcp)?
                        .ok_or_else(|| not_tcp(io::Error::other("not passed")))?,
                ),
            };
            let addr = match &socket {
                Passed::Tcp(l) => {
                    l.set_nonblocking(true).map_err(not_tcp)?;
                    l.local_addr()
                }
                Passed::Udp(u) => {
                    u.set_nonblocking(true).map_err(not_tcp)?;
                    u.local_addr()
                }
            }
            .map_err(not_tcp)?;
            Ok(Inherited { fd, addr, socket })
        })
        .collect()
}

/// The listener socket address (as `listener::socket_addrs` names it) that a socket bound
/// to `addr` serves: a socket on every address (`0.0.0.0:443` or `[::]:443`) serves
/// `*:443`, which Portico opens as `[::]:443`; others their own address, IPv4-mapped IPv6
/// addresses read as IPv4.
fn serves(addr: SocketAddr) -> SocketAddr {
    let ip = addr.ip().to_canonical();
    if ip.is_unspecified() {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), addr.port())
    } else {
        SocketAddr::new(ip, addr.port())
    }
}

/// Pairs each inherited socket with the address it serves, the form `Server::start_with`
/// takes: a TCP socket with one in `tcp` (`listener::socket_addrs`), a UDP socket with one
/// in `udp` (`quic::socket_addrs`). Every socket must serve one, and no address may get two
/// of a kind.
pub fn assign(
    inherited: Vec<Inherited>,
    tcp: &[SocketAddr],
    udp: &[SocketAddr],
) -> Result<Sockets, ActivationError> {
    let mut by_addr: BTreeMap<(bool, SocketAddr), Inherited> = BTreeMap::new();
    for socket in inherited {
        let addr = serves(socket.addr);
        let is_udp = matches!(socket.socket, Passed::Udp(_));
        let (wanted, what) = if is_udp {
            (udp, "http3 listeners want UDP on")
        } else {
            (tcp, "listeners want")
        };
        if !wanted.contains(&addr) {
            let list = wanted
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let wanted = if list.is_empty() {
                format!("no {what} any address")
            } else {
                format!("{what} {list}")
            };
            return Err(ActivationError::NoListener {
                fd: socket.fd,
                kind: socket.socket.words(),
                addr: socket.addr,
                wanted,
            });
        }
        if let Some(first) = by_addr.get(&(is_udp, addr)) {
            return Err(ActivationError::Twice {
                kind: socket.socket.words(),
                addr,
                first: first.fd,
                second: socket.fd,
            });
        }
        by_addr.insert((is_udp, addr), socket);
    }
    let mut out = Sockets::default();
    for ((_, addr), s) in by_addr {
        match s.socket {
            Passed::Tcp(l) => out.tcp.push((addr, l)),
            Passed::Udp(u) => out.udp.push((addr, u)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherited(fd: usize, bind: &str) -> Inherited {
        let socket = TcpListener::bind(bind).expect("bind");
        let addr = socket.local_addr().expect("addr");
        Inherited {
            fd,
            addr,
            socket: Passed::Tcp(socket),
        }
    }

    fn inherited_udp(fd: usize, bind: &str) -> Inherited {
        let socket = UdpSocket::bind(bind).expect("bind");
        let addr = socket.local_addr().expect("addr");
        Inherited {
            fd,
            addr,
            socket: Passed::Udp(socket),
        }
    }

    #[test]
    fn sockets_are_matched_by_address_not_order() {
        let a = inherited(3, "127.0.0.1:0");
        let b = inherited(4, "127.0.0.1:0");
        let (a_addr, b_addr) = (a.addr, b.addr);
        let other: SocketAddr = "127.0.0.2:443".parse().expect("addr");
        let got = assign(vec![a, b], &[b_addr, other, a_addr], &[])
            .expect("assigned")
            .tcp;
        let mut addrs: Vec<SocketAddr> = got.iter().map(|(w, _)| *w).collect();
        addrs.sort();
        let mut expected = vec![a_addr, b_addr];
        expected.sort();
        assert_eq!(addrs, expected, "the unmatched listener is left to bind");
        for (wanted, socket) in &got {
            assert_eq!(socket.local_addr().expect("addr"), *wanted);
        }
    }

    #[test]
    fn a_socket_on_every_address_serves_the_star_listener() {
        let s = inherited(3, "0.0.0.0:0");
        let port = s.addr.port();
        let star = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let got = assign(vec![s], &[star], &[]).expect("assigned");
        assert_eq!(got.tcp[0].0, star);
    }

    #[test]
    fn a_datagram_socket_serves_the_http3_listener_of_its_address() {
        // systemd's ListenDatagram=PORT and ListenStream=PORT: one port, both kinds.
        let t = inherited(3, "127.0.0.1:0");
        let port = t.addr.port();
        let u = inherited_udp(4, &format!("127.0.0.1:{port}"));
        let addr = t.addr;
        let got = assign(vec![u, t], &[addr], &[addr]).expect("assigned");
        assert_eq!(got.tcp.len(), 1);
        assert_eq!(got.udp.len(), 1);
        assert_eq!(got.udp[0].0, addr);
        assert_eq!(got.udp[0].1.local_addr().expect("addr"), addr);
    }

    #[test]
    fn a_datagram_socket_without_an_http3_listener_is_an_error_naming_it() {
        let u = inherited_udp(3, "127.0.0.1:0");
        let addr = u.addr;
        // The TCP listener of the address does not take a UDP socket.
        let err = assign(vec![u], &[addr], &[]).expect_err("no http3 listener");
        let text = err.to_string();
        assert!(
            text.contains("UDP socket") && text.contains(&addr.to_string()),
            "{text}"
        );
        assert!(err.fix().contains("http3"), "{}", err.fix());
    }

    #[test]
    fn a_socket_for_no_listener_is_an_error_naming_it() {
        let s = inherited(5, "127.0.0.1:0");
        let addr = s.addr;
        let err = assign(vec![s], &["127.0.0.1:1".parse().expect("addr")], &[])
            .expect_err("no listener wants it");
        let text = err.to_string();
        assert!(
            text.contains(&addr.to_string()) && text.contains("descriptor 5"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1:1"), "{text}");
    }

    #[test]
    fn two_sockets_for_one_address_are_an_error() {
        let a = inherited(3, "127.0.0.1:0");
        let port = a.addr.port();
        // A second socket that reads as the same address: the same one, duplicated.
        let Passed::Tcp(socket) = &a.socket else {
            unreachable!("a TCP socket")
        };
        let b = Inherited {
            fd: 4,
            addr: a.addr,
            socket: Passed::Tcp(socket.try_clone().expect("clone")),
        };
        let wanted = [SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)];
        let err = assign(vec![a, b], &wanted, &[]).expect_err("twice");
        assert!(
            matches!(
                err,
                ActivationError::Twice {
                    first: 3,
                    second: 4,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_count_that_is_not_a_number_is_an_error() {
        assert!(matches!(take("two"), Err(ActivationError::BadCount(_))));
    }
}
