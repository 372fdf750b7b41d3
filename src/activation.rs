//! systemd socket activation: the service manager binds the listening sockets and passes
//! them from file descriptor 3 on (`LISTEN_FDS`, for the process `LISTEN_PID`); Portico
//! serves on them instead of binding its own.
//!
//! Each inherited socket is matched to a listener address by the address it is bound to
//! (getsockname), so the unit's `ListenStream=` lines and the configuration's listeners need
//! not be in the same order. A listener without a socket is bound as usual; a socket that
//! matches no listener is an error that names it, never silently closed. The matched
//! sockets then take the path a binary upgrade's do (`Server::start_with`). This module
//! never binds anything itself.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};

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
    pub socket: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("{FDS_ENV}={0:?} is not a number of sockets")]
    BadCount(String),
    #[error("file descriptor {fd} passed by the service manager ({FDS_ENV}) is not a TCP socket: {source}")]
    NotTcp { fd: usize, source: io::Error },
    #[error("the socket on {addr} passed by the service manager (file descriptor {fd}) matches no listener of the configuration; listeners want {wanted}")]
    NoListener {
        fd: usize,
        addr: SocketAddr,
        wanted: String,
    },
    #[error(
        "the service manager passed two sockets for {addr} (file descriptors {first} and {second})"
    )]
    Twice {
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
                "pass listening TCP sockets only (ListenStream= in the .socket unit)"
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
    // listenfd reads the same variables, checks that each descriptor is a TCP socket, and
    // marks it close-on-exec (systemd passes them inheritable).
    let mut fds = listenfd::ListenFd::from_env();
    (0..n)
        .map(|i| {
            let fd = FIRST_FD + i;
            let not_tcp = |source| ActivationError::NotTcp { fd, source };
            let socket = fds
                .take_tcp_listener(i)
                .map_err(not_tcp)?
                .ok_or_else(|| not_tcp(io::Error::other("not passed")))?;
            let addr = socket.local_addr().map_err(not_tcp)?;
            socket.set_nonblocking(true).map_err(not_tcp)?;
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

/// Pairs each inherited socket with the address in `wanted` it serves, the form
/// `Server::start_with` takes. Every socket must serve one, and no address may get two.
pub fn assign(
    inherited: Vec<Inherited>,
    wanted: &[SocketAddr],
) -> Result<Vec<(SocketAddr, TcpListener)>, ActivationError> {
    let mut by_addr: BTreeMap<SocketAddr, Inherited> = BTreeMap::new();
    for socket in inherited {
        let addr = serves(socket.addr);
        if !wanted.contains(&addr) {
            let wanted = wanted
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ActivationError::NoListener {
                fd: socket.fd,
                addr: socket.addr,
                wanted,
            });
        }
        if let Some(first) = by_addr.get(&addr) {
            return Err(ActivationError::Twice {
                addr,
                first: first.fd,
                second: socket.fd,
            });
        }
        by_addr.insert(addr, socket);
    }
    Ok(by_addr
        .into_iter()
        .map(|(addr, s)| (addr, s.socket))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherited(fd: usize, bind: &str) -> Inherited {
        let socket = TcpListener::bind(bind).expect("bind");
        let addr = socket.local_addr().expect("addr");
        Inherited { fd, addr, socket }
    }

    #[test]
    fn sockets_are_matched_by_address_not_order() {
        let a = inherited(3, "127.0.0.1:0");
        let b = inherited(4, "127.0.0.1:0");
        let (a_addr, b_addr) = (a.addr, b.addr);
        let other: SocketAddr = "127.0.0.2:443".parse().expect("addr");
        let got = assign(vec![a, b], &[b_addr, other, a_addr]).expect("assigned");
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
        let got = assign(vec![s], &[star]).expect("assigned");
        assert_eq!(got[0].0, star);
    }

    #[test]
    fn a_socket_for_no_listener_is_an_error_naming_it() {
        let s = inherited(5, "127.0.0.1:0");
        let addr = s.addr;
        let err = assign(vec![s], &["127.0.0.1:1".parse().expect("addr")])
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
        let b = Inherited {
            fd: 4,
            addr: a.addr,
            socket: a.socket.try_clone().expect("clone"),
        };
        let wanted = [SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port)];
        let err = assign(vec![a, b], &wanted).expect_err("twice");
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
