//! The checks that need only the file: raw serde values -> typed [`Config`] values, with
//! every problem recorded in the [`Report`] (with its path) instead of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, RawConfig, RawListener, RawSite, RawTls, Unknown};
use super::{
    Acme, Action, CertFiles, Challenge, Config, Eab, Limits, ListenAddr, Listener, ListenerKind,
    NoSni, Report, Site, TlsMode, UnknownSni,
};
use crate::names::HostName;

pub(super) struct Checker<'r> {
    pub(super) base: PathBuf,
    pub(super) report: &'r mut Report,
}

pub(super) fn unknown_keys(report: &mut Report, path: &str, unknown: &Unknown, known: &[&str]) {
    for key in unknown.keys() {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        report.error(
            at,
            format!("unknown key {key:?}"),
            Some(format!("known keys here: {}", known.join(", "))),
        );
    }
}

pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// The longest accepted limit duration.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The most connections a listener may be allowed.
pub const MAX_CONNECTIONS: usize = 10_000_000;

impl Checker<'_> {
    fn path(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    pub(super) fn check(mut self, raw: RawConfig, file: &Path) -> Config {
        unknown_keys(
            self.report,
            "",
            &raw.unknown,
            &[
                "state_dir",
                "listener",
                "certificate",
                "site",
                "limits",
                "acme",
            ],
        );
        let state_dir = self.path(raw.state_dir.as_deref().unwrap_or("state"));
        let limits = self.limits(raw.limits);
        let listeners = self.listeners(raw.listener, &limits);
        let certificates = raw
            .certificate
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| self.cert_files(&format!("certificate[{i}]"), c))
            .collect();
        let sites = self.sites(raw.site, &listeners);
        let acme = raw.acme.and_then(|a| self.acme(a));
        if acme.is_none() {
            for s in sites.iter().filter(|s| s.tls == TlsMode::Acme) {
                self.report.error(
                    format!("site[{}].tls", s.index),
                    format!(
                        "site {:?} wants an ACME certificate, but there is no [acme] table",
                        s.name
                    ),
                    Some(
                        "add [acme] with directory = \"https://...\" (the ACME CA's directory URL)"
                            .to_string(),
                    ),
                );
            }
        }
        let config = Config {
            file: file.to_path_buf(),
            state_dir,
            listeners,
            certificates,
            sites,
            limits,
            acme,
        };
        self.bindings(&config);
        config
    }

    fn limits(&mut self, raw: Option<raw::RawLimits>) -> Limits {
        let mut limits = Limits::default();
        let Some(raw) = raw else { return limits };
        unknown_keys(
            self.report,
            "limits",
            &raw.unknown,
            &[
                "handshake_timeout",
                "header_timeout",
                "idle_timeout",
                "drain_timeout",
                "max_header_bytes",
                "max_connections",
            ],
        );
        for (key, value, slot) in [
            (
                "handshake_timeout",
                raw.handshake_timeout,
                &mut limits.handshake_timeout,
            ),
            (
                "header_timeout",
                raw.header_timeout,
                &mut limits.header_timeout,
            ),
            ("idle_timeout", raw.idle_timeout, &mut limits.idle_timeout),
            (
                "drain_timeout",
                raw.drain_timeout,
                &mut limits.drain_timeout,
            ),
        ] {
            let Some(value) = value else { continue };
            match parse_duration(&value) {
                // A day is far beyond any sensible limit, and the cap keeps deadline
                // arithmetic (now + limit) from overflowing.
                Some(d) if !d.is_zero() && d <= MAX_DURATION => *slot = d,
                _ => self.report.error(
                    format!("limits.{key}"),
                    format!("{value:?} is not a duration between 1ms and 24h"),
                    Some(
                        "write a positive number with a unit: \"500ms\", \"10s\", \"2m\" or \"1h\""
                            .to_string(),
                    ),
                ),
            }
        }
        if let Some(n) = raw.max_header_bytes {
            match usize::try_from(n) {
                // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
                Ok(n) if (8192..=1024 * 1024).contains(&n) => limits.max_header_bytes = n,
                _ => self.report.error(
                    "limits.max_header_bytes",
                    format!("{n} is out of range"),
                    Some("use a size between 8192 and 1048576 bytes".to_string()),
                ),
            }
        }
        if let Some(n) = raw.max_connections {
            match usize::try_from(n) {
                Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => limits.max_connections = n,
                _ => self.report.error(
                    "limits.max_connections",
                    format!("{n} is not between 1 and {MAX_CONNECTIONS}"),
                    Some("use a number of connections of 1 or more".to_string()),
                ),
            }
        }
        limits
    }

    fn listeners(&mut self, raw: Vec<RawListener>, limits: &Limits) -> Vec<Listener> {
        let mut out = Vec::new();
        let mut by_addr: HashMap<ListenAddr, usize> = HashMap::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        if raw.is_empty() {
            self.report.error(
                "listener",
                "no listener is configured",
                Some("add a [[listener]] with address = \"*:443\"".to_string()),
            );
        }
        for (i, l) in raw.into_iter().enumerate() {
            let at = format!("listener[{i}]");
            unknown_keys(
                self.report,
                &at,
                &l.unknown,
                &[
                    "name",
                    "address",
                    "kind",
                    "no_sni",
                    "unknown_sni",
                    "alpn",
                    "max_connections",
                    "default_passthrough",
                    "proxy_protocol_from",
                ],
            );
            let address = match l.address.as_deref().map(ListenAddr::parse) {
                Some(Ok(a)) => Some(a),
                Some(Err(e)) => {
                    self.report.error(
                        format!("{at}.address"),
                        e,
                        Some("write \"127.0.0.1:8443\", \"[::1]:8443\" or \"*:8443\"".to_string()),
                    );
                    None
                }
                None => {
                    self.report.error(
                        &at,
                        "the listener has no address",
                        Some("add address = \"*:443\"".to_string()),
                    );
                    None
                }
            };
            let mut address_taken = false;
            if let Some(a) = address {
                if let Some(j) = by_addr.insert(a, i) {
                    address_taken = true;
                    self.report.error(format!("{at}.address"), format!("address {a} is already used by listener[{j}]"), Some("give each listener its own address; put several sites on one listener instead".to_string()));
                }
            }
            let kind = match l.kind.as_deref() {
                None | Some("https") => ListenerKind::Https,
                Some("http") => ListenerKind::Http,
                Some(other) => {
                    self.report.error(
                        format!("{at}.kind"),
                        format!("unknown kind {other:?}"),
                        Some("use \"https\" or \"http\"".to_string()),
                    );
                    ListenerKind::Https
                }
            };
            let name = l
                .name
                .clone()
                .unwrap_or_else(|| address.map(|a| a.to_string()).unwrap_or_else(|| at.clone()));
            // A name defaulted from an address already reported as taken is the same problem.
            if let Some(j) = by_name
                .insert(name.clone(), i)
                .filter(|_| !address_taken || l.name.is_some())
            {
                self.report.error(
                    format!("{at}.name"),
                    format!("name {name:?} is already used by listener[{j}]"),
                    Some("give each listener a unique name".to_string()),
                );
            }
            let no_sni = match l.no_sni.as_deref() {
                None | Some("reject") => NoSni::Reject,
                Some(host) => match HostName::parse(host) {
                    Ok(h) if !h.is_wildcard() => NoSni::Host(h),
                    Ok(_) => {
                        self.report.error(
                            format!("{at}.no_sni"),
                            format!("{host:?} is a wildcard"),
                            Some("name one host, or \"reject\"".to_string()),
                        );
                        NoSni::Reject
                    }
                    Err(e) => {
                        self.report.error(
                            format!("{at}.no_sni"),
                            format!("{host:?}: {e}"),
                            Some("name one host bound on this listener, or \"reject\"".to_string()),
                        );
                        NoSni::Reject
                    }
                },
            };
            let unknown_sni = match l.unknown_sni.as_deref() {
                None | Some("reject") => UnknownSni::Reject,
                Some("no_sni") => UnknownSni::NoSni,
                Some("passthrough") => UnknownSni::Passthrough,
                Some(other) => {
                    self.report.error(
                        format!("{at}.unknown_sni"),
                        format!("unknown value {other:?}"),
                        Some("use \"reject\", \"no_sni\" or \"passthrough\"".to_string()),
                    );
                    UnknownSni::Reject
                }
            };
            if unknown_sni == UnknownSni::NoSni && no_sni == NoSni::Reject {
                self.report.error(
                    format!("{at}.unknown_sni"),
                    "unknown_sni = \"no_sni\" needs a no_sni host on this listener",
                    Some("set no_sni = \"HOST\" or unknown_sni = \"reject\"".to_string()),
                );
            }
            let default_passthrough = l.default_passthrough.as_ref().and_then(|raw| {
                super::backend::check_passthrough(
                    self.report,
                    &format!("{at}.default_passthrough"),
                    raw,
                )
            });
            if unknown_sni == UnknownSni::Passthrough && l.default_passthrough.is_none() {
                self.report.error(
                    format!("{at}.unknown_sni"),
                    "unknown_sni = \"passthrough\" needs default_passthrough on this listener",
                    Some("add default_passthrough = { backend = \"host:port\" }".to_string()),
                );
            }
            if l.default_passthrough.is_some() && unknown_sni != UnknownSni::Passthrough {
                self.report.warning(
                    format!("{at}.default_passthrough"),
                    "default_passthrough is used only with unknown_sni = \"passthrough\"",
                    Some(
                        "set unknown_sni = \"passthrough\", or remove default_passthrough"
                            .to_string(),
                    ),
                );
            }
            let mut proxy_protocol_from = Vec::new();
            for (j, source) in l.proxy_protocol_from.iter().flatten().enumerate() {
                match super::Cidr::parse(source) {
                    Some(c) => proxy_protocol_from.push(c),
                    None => self.report.error(
                        format!("{at}.proxy_protocol_from[{j}]"),
                        format!("{source:?} is not an IP address or range"),
                        Some("write \"10.0.0.5\", \"10.0.0.0/8\" or \"2001:db8::/32\"".to_string()),
                    ),
                }
            }
            if kind == ListenerKind::Http
                && (l.no_sni.is_some()
                    || l.unknown_sni.is_some()
                    || l.alpn.is_some()
                    || l.default_passthrough.is_some())
            {
                self.report.warning(
                    &at,
                    "no_sni, unknown_sni, default_passthrough and alpn mean nothing on an http listener",
                    Some("remove them".to_string()),
                );
            }
            let alpn = match l.alpn {
                None => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                Some(list) => {
                    for (j, p) in list.iter().enumerate() {
                        if p != "h2" && p != "http/1.1" {
                            self.report.error(
                                format!("{at}.alpn[{j}]"),
                                format!("unsupported protocol {p:?}"),
                                Some("use \"h2\" and/or \"http/1.1\"".to_string()),
                            );
                        }
                    }
                    if list.is_empty() {
                        self.report.error(
                            format!("{at}.alpn"),
                            "the list is empty",
                            Some("use [\"h2\", \"http/1.1\"]".to_string()),
                        );
                    }
                    list.into_iter().map(String::into_bytes).collect()
                }
            };
            let max_connections = match l.max_connections {
                None => limits.max_connections,
                Some(n) => match usize::try_from(n) {
                    Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => n,
                    _ => {
                        self.report.error(
                            format!("{at}.max_connections"),
                            format!("{n} is not between 1 and {MAX_CONNECTIONS}"),
                            Some("use a number of connections of 1 or more, or remove it to use limits.max_connections".to_string()),
                        );
                        limits.max_connections
                    }
                },
            };
            // Keep the index aligned with the file even when the address is bad, so later
            // paths stay right; a config with errors never serves anyway.
            out.push(Listener {
                name,
                address: address.unwrap_or(ListenAddr { ip: None, port: 0 }),
                kind,
                no_sni,
                unknown_sni,
                alpn,
                max_connections,
                default_passthrough,
                proxy_protocol_from,
            });
        }
        out
    }

    /// The `[acme]` table; None (with errors reported) when it cannot be used.
    fn acme(&mut self, raw: raw::RawAcme) -> Option<Acme> {
        unknown_keys(
            self.report,
            "acme",
            &raw.unknown,
            &[
                "directory",
                "email",
                "ca",
                "challenges",
                "eab_kid",
                "eab_hmac_key",
            ],
        );
        let eab = self.eab(raw.eab_kid, raw.eab_hmac_key);
        let directory = match raw.directory {
            Some(d) if d.starts_with("https://") => Some(d),
            Some(d) => {
                self.report.error(
                    "acme.directory",
                    format!("{d:?} is not an https:// URL"),
                    Some("give the CA's ACME v2 directory URL, such as \"https://acme-v02.api.letsencrypt.org/directory\"".to_string()),
                );
                None
            }
            None => {
                self.report.error(
                    "acme.directory",
                    "directory is missing",
                    Some("give the CA's ACME v2 directory URL, such as \"https://acme-v02.api.letsencrypt.org/directory\"".to_string()),
                );
                None
            }
        };
        if let Some(email) = &raw.email {
            if !email.contains('@') || email.contains(char::is_whitespace) {
                self.report.error(
                    "acme.email",
                    format!("{email:?} is not an email address"),
                    Some(
                        "write an address such as \"ops@example.com\", or remove email".to_string(),
                    ),
                );
            }
        }
        let mut challenges = Vec::new();
        match raw.challenges {
            None => challenges = vec![Challenge::TlsAlpn01, Challenge::Http01],
            Some(list) => {
                for (i, c) in list.iter().enumerate() {
                    let c = match c.as_str() {
                        "tls-alpn-01" => Challenge::TlsAlpn01,
                        "http-01" => Challenge::Http01,
                        other => {
                            self.report.error(
                                format!("acme.challenges[{i}]"),
                                format!("unknown challenge type {other:?}"),
                                Some("use \"tls-alpn-01\" and/or \"http-01\"".to_string()),
                            );
                            continue;
                        }
                    };
                    if !challenges.contains(&c) {
                        challenges.push(c);
                    }
                }
                if list.is_empty() {
                    self.report.error(
                        "acme.challenges",
                        "no challenge type is allowed",
                        Some("list at least one of \"tls-alpn-01\", \"http-01\", or remove challenges".to_string()),
                    );
                }
            }
        }
        Some(Acme {
            directory: directory?,
            email: raw.email,
            ca: raw.ca.map(|c| self.path(&c)),
            challenges,
            eab: eab?,
        })
    }

    /// `eab_kid` and `eab_hmac_key`: both or neither; the key is base64url (padding
    /// optional, as CAs hand it out either way). `Some(None)` is "no binding";
    /// None means an error was reported.
    fn eab(&mut self, kid: Option<String>, key: Option<String>) -> Option<Option<Eab>> {
        use base64::Engine as _;
        let fix =
            "give both eab_kid and eab_hmac_key, as the CA's account page shows them, or neither";
        match (kid, key) {
            (None, None) => Some(None),
            (Some(_), None) => {
                self.report.error(
                    "acme.eab_hmac_key",
                    "eab_kid is set but eab_hmac_key is missing: External Account Binding needs both",
                    Some(fix.to_string()),
                );
                None
            }
            (None, Some(_)) => {
                self.report.error(
                    "acme.eab_kid",
                    "eab_hmac_key is set but eab_kid is missing: External Account Binding needs both",
                    Some(fix.to_string()),
                );
                None
            }
            (Some(kid), Some(key)) => {
                let mut ok = true;
                if kid.trim().is_empty() {
                    self.report
                        .error("acme.eab_kid", "eab_kid is empty", Some(fix.to_string()));
                    ok = false;
                }
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim().trim_end_matches('='));
                let hmac_key = match decoded {
                    Ok(k) if !k.is_empty() => Some(k),
                    Ok(_) => {
                        self.report.error(
                            "acme.eab_hmac_key",
                            "eab_hmac_key is empty",
                            Some(fix.to_string()),
                        );
                        None
                    }
                    Err(e) => {
                        self.report.error(
                            "acme.eab_hmac_key",
                            format!("eab_hmac_key is not base64url: {e}"),
                            Some("copy the HMAC key exactly as the CA shows it (base64url: letters, digits, '-' and '_')".to_string()),
                        );
                        None
                    }
                };
                match (ok, hmac_key) {
                    (true, Some(hmac_key)) => Some(Some(Eab { kid, hmac_key })),
                    _ => None,
                }
            }
        }
    }

    fn cert_files(&mut self, at: &str, raw: raw::RawCertificate) -> Option<CertFiles> {
        unknown_keys(self.report, at, &raw.unknown, &["cert", "key"]);
        match (raw.cert, raw.key) {
            (Some(cert), Some(key)) => Some(CertFiles {
                cert: self.path(&cert),
                key: self.path(&key),
            }),
            (cert, key) => {
                let missing = if cert.is_none() { "cert" } else { "key" };
                let _ = key;
                self.report.error(
                    at,
                    format!("{missing} is missing"),
                    Some("give both cert = \"chain.pem\" and key = \"key.pem\"".to_string()),
                );
                None
            }
        }
    }

    fn sites(&mut self, raw: Vec<RawSite>, listeners: &[Listener]) -> Vec<Site> {
        let mut out = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, mut s) in raw.into_iter().enumerate() {
            let at = format!("site[{i}]");
            unknown_keys(
                self.report,
                &at,
                &s.unknown,
                &[
                    "name",
                    "hosts",
                    "listeners",
                    "tls",
                    "root",
                    "proxy",
                    "passthrough",
                    "redirect",
                    "respond",
                ],
            );
            let mut hosts = Vec::new();
            for (j, h) in s.hosts.iter().enumerate() {
                match HostName::parse(h) {
                    Ok(name) if hosts.contains(&name) => self.report.warning(
                        format!("{at}.hosts[{j}]"),
                        format!("{name} is listed twice"),
                        Some("remove the duplicate".to_string()),
                    ),
                    Ok(name) => hosts.push(name),
                    Err(e) => self.report.error(
                        format!("{at}.hosts[{j}]"),
                        format!("{h:?}: {e}"),
                        Some(
                            "write a DNS name such as \"www.example.com\" or \"*.example.com\""
                                .to_string(),
                        ),
                    ),
                }
            }
            if s.hosts.is_empty() {
                self.report.error(
                    format!("{at}.hosts"),
                    "the site has no hosts",
                    Some("add hosts = [\"www.example.com\"]".to_string()),
                );
            }
            let name = s.name.clone().unwrap_or_else(|| {
                hosts
                    .first()
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| at.clone())
            });
            if let Some(j) = names.insert(name.clone(), i) {
                self.report.error(
                    format!("{at}.name"),
                    format!("name {name:?} is already used by site[{j}]"),
                    Some("give each site a unique name".to_string()),
                );
            }
            let site_listeners = match &s.listeners {
                None => (0..listeners.len()).collect(),
                Some(list) => {
                    let mut idx = Vec::new();
                    for (j, l) in list.iter().enumerate() {
                        let found = listeners.iter().position(|x| &x.name == l).or_else(|| {
                            let addr = ListenAddr::parse(l).ok()?;
                            listeners.iter().position(|x| x.address == addr)
                        });
                        match found {
                            Some(k) if !idx.contains(&k) => idx.push(k),
                            Some(_) => {}
                            None => self.report.error(
                                format!("{at}.listeners[{j}]"),
                                format!("no listener is named {l:?}"),
                                Some(format!(
                                    "use a listener's name or address: {}",
                                    listeners
                                        .iter()
                                        .map(|l| format!("{:?}", l.name))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )),
                            ),
                        }
                    }
                    if list.is_empty() {
                        self.report.warning(format!("{at}.listeners"), format!("site {name:?} is bound to no listener and will never be served"), Some("list at least one listener, or remove `listeners` to bind it to all".to_string()));
                    }
                    idx
                }
            };
            let tls = match s.tls.take() {
                None => TlsMode::Pool,
                Some(RawTls::Mode(m)) if m == "pool" => TlsMode::Pool,
                Some(RawTls::Mode(m)) if m == "internal" => TlsMode::Internal,
                Some(RawTls::Mode(m)) if m == "acme" => TlsMode::Acme,
                Some(RawTls::Mode(m)) => {
                    self.report.error(
                        format!("{at}.tls"),
                        format!("unknown value {m:?}"),
                        Some(
                            "use \"pool\", \"internal\", \"acme\" or { cert = \"...\", key = \"...\" }"
                                .to_string(),
                        ),
                    );
                    TlsMode::Pool
                }
                Some(RawTls::Files(files)) => self
                    .cert_files(&format!("{at}.tls"), files)
                    .map(TlsMode::Pinned)
                    .unwrap_or(TlsMode::Pool),
            };
            let action = self.action(&at, &name, &s);
            if let Some(action) = action {
                out.push(Site {
                    index: i,
                    name,
                    hosts,
                    listeners: site_listeners,
                    tls,
                    action,
                });
            }
        }
        out
    }

    fn action(&mut self, at: &str, name: &str, s: &RawSite) -> Option<Action> {
        let given: Vec<&str> = [
            ("root", s.root.is_some()),
            ("proxy", s.proxy.is_some()),
            ("passthrough", s.passthrough.is_some()),
            ("redirect", s.redirect.is_some()),
            ("respond", s.respond.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        match given.as_slice() {
            [] => {
                self.report.error(
                    at,
                    format!("site {name:?} has no action"),
                    Some(
                        "give exactly one of root, proxy, passthrough, redirect or respond"
                            .to_string(),
                    ),
                );
                return None;
            }
            [_] => {}
            many => {
                self.report.error(
                    at,
                    format!(
                        "site {name:?} has {} actions: {}",
                        many.len(),
                        many.join(", ")
                    ),
                    Some("keep exactly one of them".to_string()),
                );
                return None;
            }
        }
        if let Some(root) = &s.root {
            return Some(Action::Root(self.path(root)));
        }
        if let Some(raw) = &s.passthrough {
            return super::backend::check_passthrough(
                self.report,
                &format!("{at}.passthrough"),
                raw,
            )
            .map(Action::Passthrough);
        }
        if let Some(raw) = &s.proxy {
            return super::proxy::check_proxy(self.report, &format!("{at}.proxy"), raw, &self.base)
                .map(Action::Proxy);
        }
        if let Some(r) = &s.redirect {
            unknown_keys(
                self.report,
                &format!("{at}.redirect"),
                &r.unknown,
                &["to", "status"],
            );
            let to = match &r.to {
                Some(to)
                    if (to.starts_with("https://") || to.starts_with("http://"))
                        && !to.contains(['?', '#'])
                        && to.parse::<http::Uri>().is_ok() =>
                {
                    to.trim_end_matches('/').to_string()
                }
                Some(to) => {
                    self.report.error(
                        format!("{at}.redirect.to"),
                        format!("{to:?} is not an absolute http(s) URL without a query"),
                        Some("write to = \"https://www.example.com\" or \"https://www.example.com/base\"; the request's path and query are appended".to_string()),
                    );
                    return None;
                }
                None => {
                    self.report.error(
                        format!("{at}.redirect"),
                        "redirect has no `to`",
                        Some("add to = \"https://www.example.com\"".to_string()),
                    );
                    return None;
                }
            };
            let status = r.status.unwrap_or(308);
            if ![301, 302, 303, 307, 308].contains(&status) {
                self.report.error(
                    format!("{at}.redirect.status"),
                    format!("{status} is not a redirect status"),
                    Some("use 301, 302, 303, 307 or 308".to_string()),
                );
                return None;
            }
            return Some(Action::Redirect {
                to,
                status: status as u16,
            });
        }
        if let Some(r) = &s.respond {
            unknown_keys(
                self.report,
                &format!("{at}.respond"),
                &r.unknown,
                &["status", "body", "content_type"],
            );
            let status = r.status.unwrap_or(200);
            if !(200..=599).contains(&status) {
                self.report.error(
                    format!("{at}.respond.status"),
                    format!("{status} is not a final HTTP status"),
                    Some("use a status between 200 and 599".to_string()),
                );
                return None;
            }
            let content_type = r
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=utf-8".to_string());
            if http::HeaderValue::from_str(&content_type).is_err() {
                self.report.error(
                    format!("{at}.respond.content_type"),
                    format!("{content_type:?} is not a valid header value"),
                    Some("use visible ASCII such as \"text/html; charset=utf-8\"".to_string()),
                );
                return None;
            }
            return Some(Action::Respond {
                status: status as u16,
                body: r.body.clone().unwrap_or_default(),
                content_type,
            });
        }
        None
    }

    /// Checks that need every site and listener: a host claimed twice on one listener,
    /// `no_sni` naming an unbound host, and hosts a specific-IP listener hides.
    fn bindings(&mut self, config: &Config) {
        // (listener, host) -> (site index, host index)
        let mut bound: BTreeMap<(usize, &HostName), (usize, usize)> = BTreeMap::new();
        for (si, site) in config.sites.iter().enumerate() {
            for &li in &site.listeners {
                for (hi, host) in site.hosts.iter().enumerate() {
                    if let Some(&(other, _)) = bound.get(&(li, host)) {
                        if other != si {
                            let l = &config.listeners[li];
                            self.report.error(
                                format!("site[{}].hosts[{hi}]", site.index),
                                format!("host {host} is claimed by site {:?} (site[{}]) and site {:?} (site[{}]) on listener {:?} ({})", config.sites[other].name, config.sites[other].index, site.name, site.index, l.name, l.address),
                                Some("a host may belong to one site per listener: remove it from one site, or bind the sites to different listeners".to_string()),
                            );
                        }
                    } else {
                        bound.insert((li, host), (si, hi));
                    }
                }
            }
        }
        let is_bound = |li: usize, host: &HostName| {
            bound.contains_key(&(li, host))
                || host
                    .parent_wildcard()
                    .is_some_and(|w| bound.contains_key(&(li, &w)))
        };
        for (li, l) in config.listeners.iter().enumerate() {
            if let NoSni::Host(h) = &l.no_sni {
                if l.kind == ListenerKind::Https && !is_bound(li, h) {
                    self.report.error(
                        format!("listener[{li}].no_sni"),
                        format!("{h} is not bound to any site on listener {:?}", l.name),
                        Some(
                            "name a host of a site bound to this listener, or \"reject\""
                                .to_string(),
                        ),
                    );
                }
            }
        }
        // A connection to IP:port is handled by the IP:port listener if there is one, so a
        // host bound only on *:port is unreachable for clients that connect to that IP.
        for (wi, w) in config.listeners.iter().enumerate() {
            if w.address.ip.is_some() {
                continue;
            }
            for (si, l) in config.listeners.iter().enumerate() {
                if l.address.ip.is_none() || l.address.port != w.address.port || l.kind != w.kind {
                    continue;
                }
                for (&(li, host), &(site, hi)) in &bound {
                    if li != wi {
                        continue;
                    }
                    if !is_bound(si, host) {
                        self.report.warning(
                            format!("site[{}].hosts[{hi}]", config.sites[site].index),
                            format!("host {host} is bound on {} but not on {}: clients connecting to {} will not reach site {:?}", w.address, l.address, l.address, config.sites[site].name),
                            Some(format!("bind the site to listener {:?} too, if those clients should reach it", l.name)),
                        );
                    }
                }
            }
        }
    }
}
