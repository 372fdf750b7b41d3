//! The route table: for one listener, host name -> binding (site and certificates), and the
//! resolution of a connection's SNI and of a request's `Host`.
//!
//! This is the one implementation of resolution: the TLS resolver, the HTTP service and the
//! `bindings`/`explain` commands all call it. Lookups are hash lookups into an immutable
//! table; nothing here grows with the number of sites.

use std::collections::HashMap;

use crate::config::UnknownSni;
use crate::names::HostName;
use crate::tls::load::Cert;

/// (listener, host) -> site. On https listeners it carries the certificates for the host.
#[derive(Debug)]
pub struct Binding {
    pub host: HostName,
    /// Index into `Runtime::sites`.
    pub site: usize,
    /// Where the host's certificate comes from at each handshake
    /// (`Runtime::certificate_for`).
    pub certs: CertFrom,
    /// On an http listener: the port of the https listener the host redirects to.
    pub https_port: Option<u16>,
}

/// Where a binding's certificate comes from. Both sources are read at each handshake, so
/// a change of either reaches the host without a new runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFrom {
    /// Nothing to present: an http listener's host, or a passthrough site's (its
    /// certificate lives on its backend).
    Nothing,
    /// The site's own certificate (pinned, local CA, ACME): `Runtime::site_cert`. None
    /// while an ACME order is pending.
    Site,
    /// The pool's best certificate for the host (`tls = "pool"`).
    Pool,
}

/// How a name found its binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Exact,
    Wildcard,
    /// The client sent no SNI (or an IP literal); the listener's `no_sni` host was used.
    NoSni,
    /// The SNI is not bound here; `unknown_sni = "no_sni"` sent it to the `no_sni` host.
    UnknownFallback,
    /// No other binding takes the name; the catch-all site (`hosts = ["*"]`) does.
    CatchAll,
}

/// Why a handshake is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No SNI and `no_sni = "reject"`.
    NoSni,
    /// The name is not bound on this listener and `unknown_sni = "reject"`.
    UnknownName(String),
    /// The name is bound, but its site has no certificate yet (an ACME order is pending).
    NoCertificate(String),
}

impl Refusal {
    /// The TLS alert sent: `unrecognized_name` (112) for an unknown name, `handshake_failure`
    /// (40) for a client without SNI where none is configured.
    pub fn alert(&self) -> u8 {
        match self {
            Refusal::NoSni => 40,
            Refusal::UnknownName(_) | Refusal::NoCertificate(_) => 112,
        }
    }
}

/// What a ClientHello's SNI value means to resolution: a name to look up, no name at all, or
/// a value that no binding can match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// A normalized host name.
    Name(HostName),
    /// The client sent no SNI.
    Absent,
    /// An IP literal: RFC 6066 forbids them, some clients send them anyway; it counts as no SNI.
    IpLiteral,
    /// A wildcard names no host; it is treated as an unknown name.
    Wildcard,
    /// Not a host name at all; treated as an unknown name.
    Invalid(crate::names::NameError),
}

impl Sni {
    pub fn parse(sni: Option<&str>) -> Sni {
        match sni.map(HostName::parse) {
            None => Sni::Absent,
            Some(Err(crate::names::NameError::IpLiteral(_))) => Sni::IpLiteral,
            Some(Err(e)) => Sni::Invalid(e),
            Some(Ok(name)) if name.is_wildcard() => Sni::Wildcard,
            Some(Ok(name)) => Sni::Name(name),
        }
    }
}

/// A successful resolution.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    pub binding: &'a Binding,
    pub by: Match,
    /// The name the client sent, for a name only the catch-all binding takes (its
    /// certificate is the pool's for this name); None otherwise.
    pub name: Option<HostName>,
}

impl Resolved<'_> {
    /// The name whose certificate the connection presents: the binding's host, or the
    /// client's name for the catch-all binding.
    pub fn cert_name(&self) -> &HostName {
        self.name.as_ref().unwrap_or(&self.binding.host)
    }
}

/// One listener's bindings.
#[derive(Debug, Default)]
pub struct Table {
    /// Exact hosts.
    exact: HashMap<HostName, Binding>,
    /// Wildcard hosts, keyed by what follows `*.` (`*.example.com` under `example.com`), so
    /// a name's wildcard is found by slicing the name, without building a string.
    wildcard: HashMap<Box<str>, Binding>,
    /// The catch-all binding (`hosts = ["*"]`): names no other binding takes.
    any: Option<Binding>,
    /// The binding key used for clients without SNI.
    no_sni: Option<HostName>,
    unknown_sni: Option<UnknownSni>,
}

impl Table {
    pub fn new(
        bindings: HashMap<HostName, Binding>,
        no_sni: Option<HostName>,
        unknown_sni: UnknownSni,
    ) -> Table {
        let mut exact = HashMap::with_capacity(bindings.len());
        let mut wildcard = HashMap::new();
        let mut any = None;
        for (host, binding) in bindings {
            if host.is_catch_all() {
                any = Some(binding);
                continue;
            }
            match host.as_str().strip_prefix("*.") {
                Some(parent) => {
                    wildcard.insert(parent.into(), binding);
                }
                None => {
                    exact.insert(host, binding);
                }
            }
        }
        Table {
            exact,
            wildcard,
            any,
            no_sni,
            unknown_sni: Some(unknown_sni),
        }
    }

    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain(&self.any)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.any.is_some())
    }

    /// The catch-all binding for `name`, when there is one.
    fn catch_all(&self, name: Option<HostName>) -> Option<Resolved<'_>> {
        self.any.as_ref().map(|binding| Resolved {
            binding,
            by: Match::CatchAll,
            name,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The binding for a host: an exact binding beats a wildcard one. A wildcard host
    /// (`*.example.com`) finds its own binding only.
    pub fn lookup(&self, host: &HostName) -> Option<Resolved<'_>> {
        match host.as_str().strip_prefix("*.") {
            Some(parent) => self.wildcard.get(parent).map(|b| Resolved {
                binding: b,
                by: Match::Wildcard,
                name: None,
            }),
            None => self.lookup_str(host.as_str()),
        }
    }

    /// [`Table::lookup`] for a name already in normal form, without allocating: the exact
    /// name, then the wildcard one label up.
    fn lookup_str(&self, name: &str) -> Option<Resolved<'_>> {
        if let Some(b) = self.exact.get(name) {
            return Some(Resolved {
                binding: b,
                by: Match::Exact,
                name: None,
            });
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).map(|b| Resolved {
            binding: b,
            by: Match::Wildcard,
            name: None,
        })
    }

    fn no_sni_binding(&self, by: Match) -> Option<Resolved<'_>> {
        let host = self.no_sni.as_ref()?;
        self.lookup(host).map(|r| Resolved {
            binding: r.binding,
            by,
            name: None,
        })
    }

    /// The host whose binding serves clients without SNI (`no_sni`), if any.
    pub fn no_sni(&self) -> Option<&HostName> {
        self.no_sni.as_ref()
    }

    /// What a client naming a host not bound here gets (`unknown_sni`).
    pub fn unknown_sni(&self) -> UnknownSni {
        self.unknown_sni.unwrap_or(UnknownSni::Reject)
    }

    /// Resolves a ClientHello's SNI as sent. Names are normalized here; an IP literal counts
    /// as no SNI (RFC 6066 forbids them, and some clients send them anyway).
    pub fn resolve_sni(&self, sni: Option<&str>) -> Result<Resolved<'_>, Refusal> {
        // The common case, a name already in normal form (lowercase ASCII letters, digits,
        // '-', '.', no trailing dot) that is bound here, needs no allocation: such a string
        // equals its normalized form, and a key is always a valid host name, so a hit is
        // exactly what the full path below would find. Anything else (a miss, an IP
        // literal, upper case, Unicode) takes the full path.
        if let Some(raw) = sni.filter(|s| is_normal_form(s)) {
            if let Some(r) = self.lookup_str(raw) {
                return Ok(r);
            }
        }
        let name = match Sni::parse(sni) {
            Sni::Absent | Sni::IpLiteral => {
                return self.no_sni_binding(Match::NoSni).ok_or(Refusal::NoSni)
            }
            Sni::Name(name) => Some(name),
            Sni::Wildcard | Sni::Invalid(_) => None,
        };
        if let Some(r) = name.as_ref().and_then(|n| self.lookup(n)) {
            return Ok(r);
        }
        if let Some(r) = name.and_then(|n| self.catch_all(Some(n))) {
            return Ok(r);
        }
        self.unknown(sni)
    }

    /// What a name no binding takes gets: the `no_sni` host's binding with `unknown_sni =
    /// "no_sni"`, else a refusal (`unrecognized_name`).
    pub fn unknown(&self, sni: Option<&str>) -> Result<Resolved<'_>, Refusal> {
        match self.unknown_sni() {
            UnknownSni::NoSni => self.no_sni_binding(Match::UnknownFallback),
            _ => None,
        }
        .ok_or_else(|| Refusal::UnknownName(sni.unwrap_or_default().to_string()))
    }

    /// The site a request with this `Host` goes to on a connection that presented `cert`:
    /// only when the certificate covers the host and the host is bound here (DESIGN rule 5).
    /// Checking coverage, not equality with the SNI, keeps HTTP/2 coalescing working.
    ///
    /// `host` is a name in normal form and not a wildcard (a parsed request host's
    /// `as_str`, or a `Host` that [`crate::names::is_normal_name`] accepts as it is).
    pub fn route_request(&self, host: &str, cert: Option<&Cert>) -> Option<Resolved<'_>> {
        if let Some(cert) = cert {
            if !cert.covers_name(host) {
                return None;
            }
        }
        self.lookup_str(host).or_else(|| self.catch_all(None))
    }
}

/// Whether `s` is already what `HostName::parse` would make of it, as far as a lookup can
/// tell: non-empty lowercase ASCII letters, digits, '-', '_' and '.', not ending in '.'.
fn is_normal_form(s: &str) -> bool {
    !s.is_empty()
        && !s.ends_with('.')
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut bindings = HashMap::new();
        for (i, host) in [
            "a.x.test",
            "*.x.test",
            "x.test",
            "*.b.x.test",
            "xn--bcher-kva.example",
        ]
        .iter()
        .enumerate()
        {
            let host = HostName::parse(host).expect("host");
            bindings.insert(
                host.clone(),
                Binding {
                    host,
                    site: i,
                    certs: CertFrom::Nothing,
                    https_port: None,
                },
            );
        }
        Table::new(bindings, HostName::parse("x.test").ok(), UnknownSni::Reject)
    }

    /// The allocation-free path gives what full normalization gives, for every kind of input.
    #[test]
    fn resolve_sni_fast_path_agrees_with_normalization() {
        let t = table();
        let cases: &[(&str, Option<(usize, Match)>)] = &[
            ("a.x.test", Some((0, Match::Exact))),
            ("A.X.TEST", Some((0, Match::Exact))),
            ("a.x.test.", Some((0, Match::Exact))),
            ("z.x.test", Some((1, Match::Wildcard))),
            ("x.test", Some((2, Match::Exact))),
            ("q.b.x.test", Some((3, Match::Wildcard))),
            ("b.x.test", Some((1, Match::Wildcard))),
            ("q.z.x.test", None),
            ("bücher.example", Some((4, Match::Exact))),
            ("test", None),
            ("a..x.test", None),
            ("*.x.test", None),
            ("127.0.0.1", Some((2, Match::NoSni))),
            ("", None),
        ];
        for (sni, want) in cases {
            let got = t
                .resolve_sni(Some(sni))
                .ok()
                .map(|r| (r.binding.site, r.by));
            assert_eq!(got, *want, "sni {sni:?}");
            if let (Ok(name), Some((_, Match::Exact | Match::Wildcard))) =
                (HostName::parse(sni), want)
            {
                let slow = t.lookup(&name).map(|r| (r.binding.site, r.by));
                assert_eq!(slow, *want, "lookup {sni:?}");
            }
        }
        let wild = HostName::parse("*.x.test").expect("wildcard");
        assert_eq!(t.lookup(&wild).map(|r| r.binding.site), Some(1));
        assert_eq!(t.len(), 5);
    }
}
