//! Backends that receive raw TLS (passthrough) and the PROXY protocol settings around them:
//! the typed values and their checks.

use std::fmt;
use std::net::IpAddr;

use super::raw::RawPassthrough;
use super::Report;

/// Which PROXY protocol header Portico sends before the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// A TCP backend: `host:port`, where host is an IP or a DNS name resolved at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub host: String,
    pub port: u16,
    pub proxy_protocol: Option<ProxyProtocol>,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An address range, `10.0.0.0/8` or `::1/128`; a bare IP is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().ok()?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses `host:port` or `[v6]:port`.
fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host.to_string(), port)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.is_empty() || host.contains(':') {
            return None;
        }
        if host.parse::<IpAddr>().is_err() {
            crate::names::HostName::parse(host)
                .ok()
                .filter(|h| !h.is_wildcard())?;
        }
        (host.to_string(), port)
    };
    let port = port.parse::<u16>().ok().filter(|&p| p != 0)?;
    Some((host, port))
}

/// Checks a `{ backend = "host:port", proxy_protocol = "v1" | "v2" }` table.
pub(super) fn check_passthrough(
    report: &mut Report,
    at: &str,
    raw: &RawPassthrough,
) -> Option<Backend> {
    super::check::unknown_keys(report, at, &raw.unknown, &["backend", "proxy_protocol"]);
    let proxy_protocol = match raw.proxy_protocol.as_deref() {
        None => None,
        Some("v1") => Some(ProxyProtocol::V1),
        Some("v2") => Some(ProxyProtocol::V2),
        Some(other) => {
            report.error(
                format!("{at}.proxy_protocol"),
                format!("unknown PROXY protocol version {other:?}"),
                Some("use \"v1\" or \"v2\"".to_string()),
            );
            return None;
        }
    };
    let Some(backend) = raw.backend.as_deref() else {
        report.error(
            at,
            "no backend",
            Some("add backend = \"127.0.0.1:9443\"".to_string()),
        );
        return None;
    };
    let Some((host, port)) = parse_host_port(backend) else {
        report.error(
            format!("{at}.backend"),
            format!("{backend:?} is not \"host:port\""),
            Some(
                "write \"10.0.0.7:443\", \"[2001:db8::7]:443\" or \"backend.internal:443\""
                    .to_string(),
            ),
        );
        return None;
    };
    Some(Backend {
        host,
        port,
        proxy_protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let net = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(
            net.contains("::ffff:10.1.0.9".parse().expect("ip")),
            "mapped v4 counts as v4"
        );
        let one = Cidr::parse("::1").expect("cidr");
        assert_eq!(one.prefix, 128);
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains("192.0.2.1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn host_port() {
        assert_eq!(
            parse_host_port("127.0.0.1:9443"),
            Some(("127.0.0.1".into(), 9443))
        );
        assert_eq!(parse_host_port("[::1]:9443"), Some(("::1".into(), 9443)));
        assert_eq!(
            parse_host_port("backend.internal:443"),
            Some(("backend.internal".into(), 443))
        );
        assert_eq!(parse_host_port("::1:443"), None);
        assert_eq!(parse_host_port("host:0"), None);
        assert_eq!(parse_host_port("host"), None);
        assert_eq!(parse_host_port("*.x.test:443"), None);
    }
}
