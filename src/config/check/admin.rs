//! The `[admin]` table: the admin listener's address, token file, TLS and accepted hosts.
//!
//! The admin listener is on by default, on a Unix socket in `state_dir`. What it must never
//! allow is a token crossing the network in clear text, so a TCP address off loopback
//! without `tls` is an error here, not a warning.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::config::{Admin, AdminAddress, AdminHost};

/// The default address: a Unix socket in `state_dir`.
pub(crate) const DEFAULT_ADDRESS: &str = "unix:admin.sock";
/// The default token file, in `state_dir`.
pub(crate) const DEFAULT_TOKEN_FILE: &str = "admin.token";
/// The longest Unix socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
const MAX_UNIX_PATH: usize = 107;

impl Checker<'_> {
    /// The `[admin]` table, or its defaults when there is none; None when disabled.
    pub(super) fn admin(
        &mut self,
        raw: Option<raw::RawAdmin>,
        state_dir: &Path,
        listeners: &[Listener],
    ) -> Option<Admin> {
        let raw = raw.unwrap_or(raw::RawAdmin {
            enabled: None,
            address: None,
            token_file: None,
            tls: None,
            hosts: None,
            unknown: Unknown::new(),
        });
        unknown_keys(
            self.report,
            "admin",
            &raw.unknown,
            &["enabled", "address", "token_file", "tls", "hosts"],
        );
        if raw.enabled == Some(false) {
            return None;
        }
        let written = raw.address.as_deref().unwrap_or(DEFAULT_ADDRESS);
        let address = match written.strip_prefix("unix:") {
            Some(path) => self.admin_socket(path, state_dir, raw.address.is_some()),
            None => self.admin_tcp(written, listeners),
        };
        let token_file = match raw.token_file.as_deref().unwrap_or(DEFAULT_TOKEN_FILE) {
            "" => {
                self.report.error(
                    "admin.token_file",
                    "the token file's path is empty",
                    Some(format!(
                        "remove token_file to use {DEFAULT_TOKEN_FILE:?} in state_dir, or name a file"
                    )),
                );
                None
            }
            path => Some(state_dir.join(path)),
        };
        let tls = raw.tls.and_then(|t| self.cert_files("admin.tls", t));
        let mut hosts = Vec::new();
        for (i, h) in raw.hosts.iter().flatten().enumerate() {
            match admin_host(h) {
                Some(h) => hosts.push(h),
                None => self.report.error(
                    format!("admin.hosts[{i}]"),
                    format!("{h:?} is not a host name or an IP address"),
                    Some("write the name or address you type in the browser, without a port: \"admin.example.net\" or \"10.0.0.5\"".to_string()),
                ),
            }
        }
        let address = address?;
        match &address {
            AdminAddress::Unix(_) => {
                if tls.is_some() || !hosts.is_empty() {
                    self.report.warning(
                        "admin",
                        "tls and hosts mean nothing on a Unix socket",
                        Some(
                            "remove them, or give a TCP address such as \"127.0.0.1:9900\""
                                .to_string(),
                        ),
                    );
                }
            }
            AdminAddress::Tcp(a) if !address.is_local() && tls.is_none() => {
                self.report.error(
                    "admin.address",
                    format!("{a} is not a loopback address, and the admin listener has no tls: the token and everything the API shows would cross the network unencrypted"),
                    Some("add tls = { cert = \"admin.pem\", key = \"admin.key\" } to [admin], or listen on \"127.0.0.1:PORT\"".to_string()),
                );
            }
            AdminAddress::Tcp(_) => {}
        }
        let tls = tls.filter(|_| !matches!(address, AdminAddress::Unix(_)));
        Some(Admin {
            address,
            token_file: token_file?,
            tls,
            hosts,
        })
    }

    /// A Unix socket path; `explicit` when the file names it (the default's problems are
    /// warnings: an admin listener nobody asked for must not stop a configuration).
    fn admin_socket(
        &mut self,
        path: &str,
        state_dir: &Path,
        explicit: bool,
    ) -> Option<AdminAddress> {
        if path.is_empty() {
            self.report.error(
                "admin.address",
                "\"unix:\" names no socket file",
                Some(format!(
                    "write {DEFAULT_ADDRESS:?} (in state_dir) or \"unix:/run/portico/admin.sock\""
                )),
            );
            return None;
        }
        let path = state_dir.join(path);
        if path == crate::control::socket_path(state_dir) {
            self.report.error(
                "admin.address",
                format!("{} is the control socket's path", path.display()),
                Some(format!(
                    "use another file name, such as {DEFAULT_ADDRESS:?}"
                )),
            );
            return None;
        }
        let len = path.as_os_str().len();
        if len > MAX_UNIX_PATH {
            let message = format!("the socket path {} is {len} bytes long; a Unix socket path has at most {MAX_UNIX_PATH}", path.display());
            let fix = Some("use a shorter state_dir, or set address = \"unix:/run/portico/admin.sock\" (or a TCP address) in [admin]".to_string());
            if explicit {
                self.report.error("admin.address", message, fix);
            } else {
                self.report.warning(
                    "admin",
                    format!("the admin listener is off: {message}"),
                    fix,
                );
            }
            return None;
        }
        Some(AdminAddress::Unix(path))
    }

    fn admin_tcp(&mut self, written: &str, listeners: &[Listener]) -> Option<AdminAddress> {
        let Ok(addr) = written.parse::<SocketAddr>() else {
            self.report.error(
                "admin.address",
                format!("{written:?} is not \"unix:PATH\", \"IP:port\" or \"[v6]:port\""),
                Some(format!(
                    "write {DEFAULT_ADDRESS:?} (the default) or \"127.0.0.1:9900\""
                )),
            );
            return None;
        };
        if addr.port() == 0 {
            self.report.error(
                "admin.address",
                "port 0 is not a port the admin listener can be reached on",
                Some("choose a port, such as \"127.0.0.1:9900\"".to_string()),
            );
            return None;
        }
        let ip = addr.ip().to_canonical();
        for (i, l) in listeners.iter().enumerate() {
            let overlaps = l.address.port == addr.port()
                && (ip.is_unspecified() || l.address.ip.is_none_or(|lip| lip == ip));
            if overlaps {
                self.report.error(
                    "admin.address",
                    format!("{addr} overlaps listener[{i}]'s address {}", l.address),
                    Some("give the admin listener a port no listener uses".to_string()),
                );
            }
        }
        Some(AdminAddress::Tcp(SocketAddr::new(ip, addr.port())))
    }
}

/// A name or address from `hosts`; an IPv6 address may be written with brackets.
fn admin_host(s: &str) -> Option<AdminHost> {
    let bare = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(AdminHost::Ip(ip.to_canonical()));
    }
    match HostName::parse(s) {
        Ok(name) if !name.is_wildcard() => Some(AdminHost::Name(name)),
        _ => None,
    }
}
