//! The service manager's readiness protocol (`sd_notify`): one datagram per state change to
//! the Unix socket named by `$NOTIFY_SOCKET`, as systemd's `Type=notify` services send them.
//!
//! `READY=1` once every listener is bound and the first runtime installed; `RELOADING=1`
//! (with `MONOTONIC_USEC`, which systemd 253 and later want to match the reload with the
//! `READY=1` that ends it) and `READY=1` around every reload; `STOPPING=1` when the drain
//! starts. Without `$NOTIFY_SOCKET` every call does nothing. A failed send is logged and
//! never stops the server: the manager's bookkeeping is not worth a connection.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// The environment variable naming the manager's socket.
pub const SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Where notifications go: the manager's socket, when there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    /// The variable's value, for the process a binary upgrade starts.
    raw: Option<std::ffi::OsString>,
}

#[derive(Debug)]
enum Target {
    Path(PathBuf),
    /// A Linux abstract socket (`@name` in the variable).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and removes it from the environment, so that no process this
    /// one starts (a binary upgrade) talks to the manager in this one's name. Call it before
    /// any thread that reads the environment starts.
    pub fn from_env() -> Notifier {
        let raw = std::env::var_os(SOCKET_ENV);
        let target = raw.as_ref().and_then(|v| {
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str());
            match bytes.first() {
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(Target::Path(PathBuf::from(v))),
                // Relative paths and other forms are not part of the protocol.
                _ => None,
            }
        });
        std::env::remove_var(SOCKET_ENV);
        Notifier { target, raw }
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier {
            target: None,
            raw: None,
        }
    }

    /// `$NOTIFY_SOCKET` as this process was given it: a binary upgrade hands it to the new
    /// process, which the manager follows once told its pid ([`Notifier::main_pid`]).
    pub fn socket_env(&self) -> Option<&std::ffi::OsStr> {
        self.raw.as_deref()
    }

    /// Every listener is bound and the runtime installed (again, after a reload).
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// A reload starts; [`Notifier::ready`] ends it, whether it succeeded or not.
    pub fn reloading(&self) {
        let message = match monotonic_usec() {
            Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"),
            None => "RELOADING=1\nSTATUS=reloading".to_string(),
        };
        self.send(&message);
    }

    /// The drain starts: the server stops accepting and exits once it is done.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }

    /// The process that serves from now on, when it is not this one (a binary upgrade):
    /// the manager follows it as the service's main process.
    pub fn main_pid(&self, pid: u32) {
        self.send(&format!("MAINPID={pid}"));
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(e) = send_to(target, message) {
            tracing::warn!(error = %e, message, "cannot notify the service manager");
        }
    }
}

fn send_to(target: &Target, message: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let sent = match target {
        Target::Path(path) => socket.send_to(message.as_bytes(), path)?,
        Target::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)?
        }
    };
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification cut short",
        ));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times on.
fn monotonic_usec() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u64::try_from(t.tv_nsec).ok()?;
    secs.checked_mul(1_000_000)?.checked_add(nanos / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn each_state_is_one_datagram() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let manager = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            target: Some(Target::Path(path)),
            raw: None,
        };
        notifier.ready();
        assert!(received(&manager).starts_with("READY=1\n"));
        notifier.reloading();
        let reloading = received(&manager);
        let usec = reloading
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .expect("MONOTONIC_USEC");
        assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
        assert!(usec.parse::<u64>().expect("a number") > 0);
        notifier.stopping();
        assert!(received(&manager).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn abstract_sockets_are_reached() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("portico-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let manager = UnixDatagram::bind_addr(&addr).expect("bind");
        let notifier = Notifier {
            target: Some(Target::Abstract(name.into_bytes())),
            raw: None,
        };
        notifier.stopping();
        assert!(received(&manager).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        Notifier::none().ready();
        // A socket that is gone is logged, never an error for the caller.
        let notifier = Notifier {
            target: Some(Target::Path(PathBuf::from("/nonexistent/notify.sock"))),
            raw: None,
        };
        notifier.reloading();
    }
}
