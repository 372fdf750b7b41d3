//! Who may use the admin listener, judged per request before any endpoint runs.
//!
//! On a Unix socket the file's mode (0600) is the authentication and nothing is asked. On
//! TCP, in this order: the `Host` must be the admin address, a loopback name or one of
//! `[admin] hosts` (with the listener's port), which defeats DNS rebinding; a state-changing
//! request (anything but GET, HEAD, OPTIONS) with an `Origin` must come from such a host
//! too, which defeats cross-site requests; and every request carries the token, as
//! `Authorization: Bearer <token>` or as the session cookie that `GET /?token=...` (the
//! sign-in URL) sets. Tokens and cookies are compared in constant time. This module never
//! logs a token.

use std::net::{IpAddr, SocketAddr};

use http::{header, HeaderMap, Method, StatusCode};

use super::token::Token;
use crate::config::AdminHost;
use crate::names::HostName;

/// The session cookie's name.
pub(super) const COOKIE: &str = "portico_admin";

/// What a TCP admin listener asks of a request.
#[derive(Debug)]
pub(super) struct Policy {
    pub(super) address: SocketAddr,
    pub(super) tls: bool,
    pub(super) hosts: Vec<AdminHost>,
    pub(super) token: Token,
}

/// Why a request is refused: the status and a message that says what to do.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    NoHost,
    ForeignHost(String),
    ForeignOrigin(String),
    NoToken,
    WrongToken,
    BadSignIn,
}

impl Refusal {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost => StatusCode::BAD_REQUEST,
            Refusal::ForeignHost(_) | Refusal::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            Refusal::NoToken | Refusal::WrongToken | Refusal::BadSignIn => StatusCode::UNAUTHORIZED,
        }
    }

    pub(super) fn message(&self) -> String {
        match self {
            Refusal::NoHost => "the request has no Host header".to_string(),
            Refusal::ForeignHost(host) => format!("Host {host:?} is not this admin listener (requests must name its address, a loopback name such as localhost, or one of [admin] hosts, with its port; this protects against DNS rebinding)"),
            Refusal::ForeignOrigin(origin) => format!("Origin {origin:?} is not this admin listener: state-changing requests from other sites are refused"),
            Refusal::NoToken => "this admin listener needs the token: send Authorization: Bearer <token> (the token is in [admin] token_file), or open the sign-in URL that portico serve printed".to_string(),
            Refusal::WrongToken => "the token in Authorization: Bearer is wrong (the token is in [admin] token_file)".to_string(),
            Refusal::BadSignIn => "the token in the sign-in URL is wrong (open the URL portico serve printed, or read [admin] token_file)".to_string(),
        }
    }
}

/// What `GET /?token=...` asks for.
pub(super) enum SignIn {
    /// Not a sign-in request.
    No,
    /// The right token: set the cookie (this header value) and send the browser to `/`.
    Yes(String),
}

impl Policy {
    /// Judges a request on TCP. `Ok(SignIn::Yes(cookie))` is a successful sign-in.
    pub(super) fn admit(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<SignIn, Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or(Refusal::NoHost)?;
        if !self.allowed_authority(host, self.default_port()) {
            return Err(Refusal::ForeignHost(host.to_string()));
        }
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            for origin in headers.get_all(header::ORIGIN) {
                let origin = origin.to_str().unwrap_or("");
                if !self.allowed_origin(origin) {
                    return Err(Refusal::ForeignOrigin(origin.to_string()));
                }
            }
        }
        if safe && path == "/" {
            if let Some(offered) = query.and_then(|q| query_value(q, "token")) {
                return if self.token.is(&offered) {
                    Ok(SignIn::Yes(self.cookie()))
                } else {
                    Err(Refusal::BadSignIn)
                };
            }
        }
        self.credentials(headers).map(|()| SignIn::No)
    }

    /// The Set-Cookie value of a successful sign-in: a browser session cookie, never sent to
    /// another site, never readable by scripts.
    fn cookie(&self) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
            self.token.session()
        )
    }

    fn credentials(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().unwrap_or("");
            let (scheme, offered) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(Refusal::NoToken);
            }
            return if self.token.is(offered.trim()) {
                Ok(())
            } else {
                Err(Refusal::WrongToken)
            };
        }
        let signed_in = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && self.token.is_session(value));
        if signed_in {
            Ok(())
        } else {
            Err(Refusal::NoToken)
        }
    }

    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }

    /// Whether an `Origin` (`scheme://host[:port]`) is this listener.
    fn allowed_origin(&self, origin: &str) -> bool {
        let scheme = if self.tls { "https://" } else { "http://" };
        origin
            .strip_prefix(scheme)
            .is_some_and(|authority| self.allowed_authority(authority, self.default_port()))
    }

    /// Whether `host[:port]` names this listener: its port, and its address, a loopback
    /// address or name, or one of `hosts`.
    fn allowed_authority(&self, authority: &str, default_port: u16) -> bool {
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        if port.unwrap_or(default_port) != self.address.port() {
            return false;
        }
        match host {
            Host::Ip(ip) => {
                ip.is_loopback()
                    || (!self.address.ip().is_unspecified() && ip == self.address.ip())
                    || self.hosts.contains(&AdminHost::Ip(ip))
            }
            Host::Name(name) => {
                name.as_str() == "localhost" || self.hosts.contains(&AdminHost::Name(name))
            }
        }
    }
}

enum Host {
    Ip(IpAddr),
    Name(HostName),
}

/// `host[:port]` with an IPv6 literal in brackets; None when it is neither a name nor an
/// address, or the port is not a number.
fn split_authority(s: &str) -> Option<(Host, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (Host::Ip(ip.parse::<IpAddr>().ok()?), port)
    } else {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(HostName::parse(host).ok()?),
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    let host = match host {
        Host::Ip(ip) => Host::Ip(ip.to_canonical()),
        name => name,
    };
    Some((host, port))
}

/// The percent-decoded value of `key` in a query string.
pub(super) fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(address: &str, hosts: &[AdminHost]) -> Policy {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        std::fs::write(&path, "0123456789abcdef0123").expect("write");
        let (token, _) = super::super::token::load_or_create(&path).expect("token");
        Policy {
            address: address.parse().expect("address"),
            tls: false,
            hosts: hosts.to_vec(),
            token,
        }
    }

    #[test]
    fn hosts_that_name_the_listener_and_hosts_that_do_not() {
        let p = policy(
            "127.0.0.1:9900",
            &[AdminHost::Name(
                HostName::parse("admin.test").expect("name"),
            )],
        );
        for ok in [
            "127.0.0.1:9900",
            "localhost:9900",
            "LOCALHOST.:9900",
            "[::1]:9900",
            "127.0.0.2:9900",
            "admin.test:9900",
        ] {
            assert!(p.allowed_authority(ok, 80), "{ok} refused");
        }
        for foreign in [
            "evil.test:9900",
            "localhost:9901",
            "localhost",
            "127.0.0.1",
            "10.0.0.1:9900",
            "[::1]",
            "localhost:99x",
            "",
            "[::1:9900",
        ] {
            assert!(!p.allowed_authority(foreign, 80), "{foreign} allowed");
        }
        assert!(p.allowed_origin("http://localhost:9900"));
        assert!(!p.allowed_origin("https://localhost:9900"));
        assert!(!p.allowed_origin("null"));
        assert!(!p.allowed_origin("http://evil.test:9900"));
    }

    #[test]
    fn sign_in_and_credentials() {
        let p = policy("127.0.0.1:9900", &[]);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9900".parse().expect("value"));
        let get = Method::GET;
        assert_eq!(
            p.admit(&get, "/metrics", None, &h).err(),
            Some(Refusal::NoToken)
        );
        assert_eq!(
            p.admit(&get, "/", Some("token=wrong"), &h).err(),
            Some(Refusal::BadSignIn)
        );
        let Ok(SignIn::Yes(cookie)) = p.admit(&get, "/", Some("token=0123456789abcdef0123"), &h)
        else {
            panic!("sign-in refused");
        };
        assert!(cookie.contains("HttpOnly; SameSite=Strict; Path=/"));
        assert!(!cookie.contains("Secure"));
        let session = cookie.split(';').next().expect("pair");
        h.insert(
            header::COOKIE,
            format!("a=b; {session}").parse().expect("value"),
        );
        assert!(matches!(
            p.admit(&get, "/metrics", None, &h),
            Ok(SignIn::No)
        ));
        h.insert(
            header::AUTHORIZATION,
            "bearer 0123456789abcdef0123".parse().expect("value"),
        );
        assert!(matches!(
            p.admit(&Method::POST, "/x", None, &h),
            Ok(SignIn::No)
        ));
        h.insert(header::ORIGIN, "http://evil.test".parse().expect("value"));
        assert!(matches!(
            p.admit(&Method::POST, "/x", None, &h),
            Err(Refusal::ForeignOrigin(_))
        ));
        assert!(matches!(p.admit(&get, "/x", None, &h), Ok(SignIn::No)));
    }
}
