//! The `proxy` action's settings: upstream URLs, load balancing, timeouts, health, forwarded
//! headers. Raw values are checked here into a typed [`Proxy`]; nothing on the request path
//! re-checks them.
//!
//! This module reads only the configuration file: the `ca` file is named here and loaded by
//! `runtime::build`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::check::{parse_duration, unknown_keys, MAX_DURATION};
use super::raw::{RawHealthCheck, RawProxy};
use super::{Cidr, Report};
use crate::names::HostName;

/// How an upstream is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One upstream: `http://host:port` or `https://host:port`; host is an IP or a DNS name
/// resolved at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub scheme: Scheme,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// `host:port`, with brackets for IPv6: what goes into a URI.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

/// How the next upstream is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalance {
    RoundRobin,
    LeastConn,
}

/// An active health check: `GET path` on every upstream every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
}

/// A checked `proxy = { ... }` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub upstreams: Vec<Upstream>,
    /// PEM roots for https upstreams; None means the system bundle.
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and verified in https upstreams' certificates, instead of the
    /// upstream's host.
    pub server_name: Option<HostName>,
    pub lb: LoadBalance,
    pub connect_timeout: Duration,
    /// From sending the request to the upstream's response headers.
    pub response_timeout: Duration,
    /// How long a pooled connection to an upstream may stay unused.
    pub idle_timeout: Duration,
    /// Failures within `fail_timeout` that mark an upstream down; 0 turns this off.
    pub max_fails: u32,
    /// The window for counting failures, and how long an upstream stays down.
    pub fail_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    /// Incoming forwarded headers are kept only from these peers.
    pub trusted_proxies: Vec<Cidr>,
    /// `Host` sent upstream instead of the client's.
    pub host: Option<String>,
    /// Larger request bodies get 413.
    pub max_body_bytes: Option<u64>,
}

pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub(super) const DEFAULT_MAX_FAILS: u32 = 3;
pub(super) const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

const KEYS: &[&str] = &[
    "upstreams",
    "ca",
    "server_name",
    "lb",
    "connect_timeout",
    "response_timeout",
    "idle_timeout",
    "max_fails",
    "fail_timeout",
    "health_check",
    "trusted_proxies",
    "host",
    "max_body_bytes",
];

/// Parses one upstream URL, or says what is wrong with it.
pub(super) fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let (scheme, rest) = if let Some(rest) = s.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = s.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    };
    // A bare trailing "/" is the same as none; anything else after the authority is not.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "{s:?} has a path, query or fragment: an upstream is only scheme://host:port"
        ));
    }
    if rest.contains('@') {
        return Err(format!("{s:?} has user information"));
    }
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{s:?} has an unclosed IPv6 bracket"))?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{s:?}: {host:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{s:?} is not scheme://host:port"))?,
            ),
        };
        (host.to_string(), port)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        if host.parse::<IpAddr>().is_err() {
            match HostName::parse(host) {
                Ok(h) if !h.is_wildcard() => {}
                Ok(_) => return Err(format!("{s:?}: a wildcard is not an upstream host")),
                Err(e) => return Err(format!("{s:?}: {e}")),
            }
        }
        (host.to_string(), port)
    };
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{s:?}: {p:?} is not a port number"))?,
    };
    Ok(Upstream { scheme, host, port })
}

pub(crate) fn duration(
    report: &mut Report,
    at: &str,
    value: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(value) = value else { return default };
    match parse_duration(value) {
        Some(d) if !d.is_zero() && d <= MAX_DURATION => d,
        _ => {
            report.error(
                at,
                format!("{value:?} is not a duration between 1ms and 24h"),
                Some(
                    "write a positive number with a unit: \"500ms\", \"10s\", \"2m\" or \"1h\""
                        .to_string(),
                ),
            );
            default
        }
    }
}

/// Checks a `proxy = { ... }` table at `at` (`site[N].proxy`). `base` resolves `ca`.
pub(super) fn check_proxy(
    report: &mut Report,
    at: &str,
    raw: &RawProxy,
    base: &std::path::Path,
) -> Option<Proxy> {
    let errors_before = report.errors().count();
    unknown_keys(report, at, &raw.unknown, KEYS);
    let mut upstreams = Vec::new();
    match &raw.upstreams {
        None => report.error(
            at,
            "proxy has no upstreams",
            Some("add upstreams = [\"http://127.0.0.1:3000\"]".to_string()),
        ),
        Some(list) if list.is_empty() => report.error(
            format!("{at}.upstreams"),
            "the list of upstreams is empty",
            Some("name at least one upstream, such as \"http://127.0.0.1:3000\"".to_string()),
        ),
        Some(list) => {
            for (i, u) in list.iter().enumerate() {
                match parse_upstream(u) {
                    Ok(up) if upstreams.contains(&up) => report.warning(
                        format!("{at}.upstreams[{i}]"),
                        format!("{up} is listed twice"),
                        Some("remove the duplicate".to_string()),
                    ),
                    Ok(up) => upstreams.push(up),
                    Err(e) => report.error(
                        format!("{at}.upstreams[{i}]"),
                        e,
                        Some(
                            "write \"http://127.0.0.1:3000\", \"https://[2001:db8::7]:8443\" or \"https://app.internal\""
                                .to_string(),
                        ),
                    ),
                }
            }
        }
    }
    let any_https = upstreams.iter().any(|u| u.scheme == Scheme::Https);
    let ca = raw.ca.as_deref().map(|c| base.join(c));
    let server_name = raw
        .server_name
        .as_deref()
        .and_then(|n| match HostName::parse(n) {
            Ok(h) if !h.is_wildcard() => Some(h),
            Ok(_) => {
                report.error(
                    format!("{at}.server_name"),
                    format!("{n:?} is a wildcard"),
                    Some("name the host the upstreams' certificates are issued for".to_string()),
                );
                None
            }
            Err(e) => {
                report.error(
                    format!("{at}.server_name"),
                    format!("{n:?}: {e}"),
                    Some("write a DNS name such as \"app.internal\"".to_string()),
                );
                None
            }
        });
    if !any_https && !upstreams.is_empty() {
        for (key, set) in [
            ("ca", raw.ca.is_some()),
            ("server_name", raw.server_name.is_some()),
        ] {
            if set {
                report.warning(
                    format!("{at}.{key}"),
                    format!("{key} is used only for https:// upstreams, and there are none"),
                    Some(format!("remove {key}, or use https:// upstreams")),
                );
            }
        }
    }
    let lb = match raw.lb.as_deref() {
        None | Some("round_robin") => LoadBalance::RoundRobin,
        Some("least_conn") => LoadBalance::LeastConn,
        Some(other) => {
            report.error(
                format!("{at}.lb"),
                format!("unknown load balancing {other:?}"),
                Some("use \"round_robin\" or \"least_conn\"".to_string()),
            );
            LoadBalance::RoundRobin
        }
    };
    let connect_timeout = duration(
        report,
        &format!("{at}.connect_timeout"),
        raw.connect_timeout.as_deref(),
        DEFAULT_CONNECT_TIMEOUT,
    );
    let response_timeout = duration(
        report,
        &format!("{at}.response_timeout"),
        raw.response_timeout.as_deref(),
        DEFAULT_RESPONSE_TIMEOUT,
    );
    let idle_timeout = duration(
        report,
        &format!("{at}.idle_timeout"),
        raw.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
    );
    let fail_timeout = duration(
        report,
        &format!("{at}.fail_timeout"),
        raw.fail_timeout.as_deref(),
        DEFAULT_FAIL_TIMEOUT,
    );
    let max_fails = match raw.max_fails {
        None => DEFAULT_MAX_FAILS,
        Some(n) => match u32::try_from(n) {
            Ok(n) if n <= 1000 => n,
            _ => {
                report.error(
                    format!("{at}.max_fails"),
                    format!("{n} is not between 0 and 1000"),
                    Some("use a small count such as 3; 0 turns passive health off".to_string()),
                );
                DEFAULT_MAX_FAILS
            }
        },
    };
    let health_check = raw
        .health_check
        .as_ref()
        .and_then(|h| check_health(report, &format!("{at}.health_check"), h));
    let mut trusted_proxies = Vec::new();
    for (i, c) in raw.trusted_proxies.iter().flatten().enumerate() {
        match Cidr::parse(c) {
            Some(c) => trusted_proxies.push(c),
            None => report.error(
                format!("{at}.trusted_proxies[{i}]"),
                format!("{c:?} is not an IP address or range"),
                Some("write \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\"".to_string()),
            ),
        }
    }
    let host = raw.host.as_deref().and_then(|h| {
        // A host name or IP, with an optional port; the value goes into a header as is.
        let ok = http::HeaderValue::from_str(h).is_ok()
            && (crate::names::host_from_authority(h).is_some()
                || h.parse::<std::net::SocketAddr>().is_ok()
                || h.parse::<IpAddr>().is_ok());
        if ok {
            Some(h.to_string())
        } else {
            report.error(
                format!("{at}.host"),
                format!("{h:?} is not a host or host:port"),
                Some("write host = \"app.internal\" or \"app.internal:8080\"".to_string()),
            );
            None
        }
    });
    let max_body_bytes = match raw.max_body_bytes {
        None => None,
        Some(n) => match u64::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                report.error(
                    format!("{at}.max_body_bytes"),
                    format!("{n} is negative"),
                    Some("use a size in bytes, such as 10485760 for 10 MiB".to_string()),
                );
                None
            }
        },
    };
    if report.errors().count() > errors_before || upstreams.is_empty() {
        return None;
    }
    Some(Proxy {
        upstreams,
        ca,
        server_name,
        lb,
        connect_timeout,
        response_timeout,
        idle_timeout,
        max_fails,
        fail_timeout,
        health_check,
        trusted_proxies,
        host,
        max_body_bytes,
    })
}

fn check_health(report: &mut Report, at: &str, raw: &RawHealthCheck) -> Option<HealthCheck> {
    unknown_keys(report, at, &raw.unknown, &["path", "interval"]);
    let path = raw.path.clone().unwrap_or_else(|| "/".to_string());
    let path_ok = path.starts_with('/')
        && !path.contains('#')
        && http::uri::PathAndQuery::try_from(path.as_str()).is_ok();
    if !path_ok {
        report.error(
            format!("{at}.path"),
            format!("{path:?} is not a request path"),
            Some("write path = \"/healthz\"".to_string()),
        );
    }
    let interval = duration(
        report,
        &format!("{at}.interval"),
        raw.interval.as_deref(),
        DEFAULT_HEALTH_INTERVAL,
    );
    path_ok.then_some(HealthCheck { path, interval })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = parse_upstream("http://127.0.0.1:3000").expect("ok");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Http, "127.0.0.1", 3000)
        );
        let u = parse_upstream("https://[::1]:8443/").expect("ok");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Https, "::1", 8443)
        );
        assert_eq!(u.authority(), "[::1]:8443");
        assert_eq!(
            parse_upstream("https://app.internal").expect("ok").port,
            443
        );
        assert_eq!(parse_upstream("http://app.internal").expect("ok").port, 80);
        for bad in [
            "ftp://x:1",
            "127.0.0.1:3000",
            "http://x:1/api",
            "http://x:1?q",
            "http://x:0",
            "http://x:99999",
            "http://:80",
            "http://u@x:1",
            "http://[::1:80",
            "http://*.x.test:80",
            "http://a b:80",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad} should be refused");
        }
    }
}
