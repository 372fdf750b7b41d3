//! The checks that need only the file: raw serde values -> typed [`Config`] values, with
//! every problem recorded in the [`Report`] (with its path) instead of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, RawConfig, RawListener, RawSite, RawTls, Unknown};
use super::{
    Acme, Action, CertDir, CertFiles, Challenge, Config, Eab, Limits, ListenAddr, Listener,
    ListenerKind, LogFormat, NoSni, Report, Site, TlsMode, UnknownSni,
};
use crate::names::HostName;

mod acme;
mod admin;
mod cluster;
mod on_demand;
mod sites;

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
        let fix = match closest(key, known) {
            Some(near) => format!(
                "did you mean {near:?}? known keys here: {}",
                known.join(", ")
            ),
            None => format!("known keys here: {}", known.join(", ")),
        };
        report.error(at, format!("unknown key {key:?}"), Some(fix));
    }
}

/// The known key a misspelt `key` was most likely meant to be: the nearest by edit
/// distance, if it is near enough (one edit per three letters, at least one), the first
/// such key on a tie.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// The number of single-character insertions, deletions, substitutions and swaps of two
/// neighbours that turn `a` into `b` (optimal string alignment distance), ignoring ASCII
/// case. Keys are short: the quadratic table is nothing.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Three rows of the table: two back (for swaps), the previous one, and this one.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
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
/// The largest `limits.max_headers`: hyper keeps room for that many header lines per
/// HTTP/1.1 request it parses.
pub(crate) const MAX_HEADERS: usize = 1000;
/// The largest `limits.max_concurrent_streams`.
const MAX_STREAMS: u32 = 10_000;

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
                "metrics",
                "admin",
                "log",
                "cluster",
            ],
        );
        let state_dir = self.path(raw.state_dir.as_deref().unwrap_or("state"));
        let limits = self.limits(raw.limits);
        let listeners = self.listeners(raw.listener, &limits);
        // Not collected from `raw.certificate.into_iter()`: that would reuse the raw
        // vector's larger allocation for as long as the configuration lives.
        let mut certificates = Vec::with_capacity(raw.certificate.len());
        let mut certificate_dirs = Vec::new();
        for (i, c) in raw.certificate.into_iter().enumerate() {
            match self.pool_certificate(i, c) {
                Some(PoolEntry::Files(f)) => certificates.push(f),
                Some(PoolEntry::Dir(d)) => certificate_dirs.push(d),
                None => {}
            }
        }
        let sites = self.sites(raw.site, &listeners);
        let acme = raw.acme.and_then(|a| self.acme(a));
        let per_site_histograms = raw.metrics.and_then(|m| {
            unknown_keys(self.report, "metrics", &m.unknown, &["per_site_histograms"]);
            m.per_site_histograms
        });
        let admin = self.admin(raw.admin, &state_dir, &listeners);
        let log_format = self.log(raw.log);
        let cluster = raw.cluster.and_then(|c| self.cluster(c));
        if acme.is_none() {
            for s in sites.iter().filter(|s| s.on_demand.is_some()) {
                self.report.error(
                    format!("site[{}].tls.on_demand", s.index),
                    format!(
                        "site {:?} orders certificates on demand, but there is no [acme] table",
                        s.name
                    ),
                    Some(
                        "add [acme] with directory = \"https://...\" (the ACME CA's directory URL)"
                            .to_string(),
                    ),
                );
            }
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
            certificate_dirs,
            sites,
            limits,
            acme,
            per_site_histograms,
            admin,
            log_format,
            cluster,
        };
        self.bindings(&config);
        config
    }

    fn log(&mut self, raw: Option<raw::RawLog>) -> LogFormat {
        let Some(raw) = raw else {
            return LogFormat::Text;
        };
        unknown_keys(self.report, "log", &raw.unknown, &["format"]);
        match raw.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.report.error(
                    "log.format",
                    format!("unknown log format {other:?}"),
                    Some("set format = \"text\" (the default) or \"json\"".to_string()),
                );
                LogFormat::Text
            }
        }
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
                "max_headers",
                "max_connections",
                "certificate_cache",
                "max_concurrent_streams",
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
        if let Some(n) = raw.max_headers {
            match usize::try_from(n) {
                Ok(n) if (1..=MAX_HEADERS).contains(&n) => limits.max_headers = n,
                _ => self.report.error(
                    "limits.max_headers",
                    format!("{n} is not between 1 and {MAX_HEADERS}"),
                    Some("use a number of header fields between 1 and 1000".to_string()),
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
        if let Some(n) = raw.certificate_cache {
            match usize::try_from(n) {
                Ok(n) if n >= 1 => limits.certificate_cache = n,
                _ => self.report.error(
                    "limits.certificate_cache",
                    format!("{n} is not a number of certificates of 1 or more"),
                    Some("use how many certificates may stay in memory, e.g. 100000".to_string()),
                ),
            }
        }
        if let Some(n) = raw.max_concurrent_streams {
            match u32::try_from(n) {
                Ok(n) if (1..=MAX_STREAMS).contains(&n) => limits.max_concurrent_streams = n,
                _ => self.report.error(
                    "limits.max_concurrent_streams",
                    format!("{n} is not between 1 and {MAX_STREAMS}"),
                    Some("use a number of requests per connection such as 250".to_string()),
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
                    "http3",
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
            let http3 = l.http3.unwrap_or(false);
            if http3 && kind == ListenerKind::Http {
                self.report.error(
                    format!("{at}.http3"),
                    "http3 needs TLS: an http listener cannot serve HTTP/3",
                    Some(
                        "put http3 = true on the https listener of this port's sites, or remove it"
                            .to_string(),
                    ),
                );
            }
            let alt_svc = match (http3 && kind == ListenerKind::Https, address) {
                (true, Some(a)) => {
                    http::HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", a.port)).ok()
                }
                _ => None,
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
                http3: alt_svc.is_some(),
                alt_svc,
            });
        }
        out
    }

    /// A `[[certificate]]` table: `cert` and `key`, or `dir` alone.
    fn pool_certificate(&mut self, i: usize, raw: raw::RawPoolCertificate) -> Option<PoolEntry> {
        let at = format!("certificate[{i}]");
        unknown_keys(self.report, &at, &raw.unknown, &["cert", "key", "dir"]);
        match (raw.dir, raw.cert, raw.key) {
            (Some(dir), None, None) => {
                if dir.is_empty() {
                    self.report.error(
                        format!("{at}.dir"),
                        "the directory is empty".to_string(),
                        Some("name the directory holding NAME.pem and NAME.key pairs".to_string()),
                    );
                    return None;
                }
                Some(PoolEntry::Dir(CertDir {
                    path: self.path(&dir),
                    index: i,
                }))
            }
            (Some(_), _, _) => {
                self.report.error(
                    &at,
                    "dir cannot be combined with cert or key".to_string(),
                    Some("use one [[certificate]] table for the directory and another for the pair of files".to_string()),
                );
                None
            }
            (None, None, None) => {
                self.report.error(
                    &at,
                    "a certificate needs cert and key, or dir".to_string(),
                    Some("give cert = \"chain.pem\" and key = \"key.pem\", or dir = \"certs\" for a directory of NAME.pem + NAME.key pairs".to_string()),
                );
                None
            }
            (None, cert, key) => self
                .cert_files(
                    &at,
                    raw::RawCertificate {
                        cert,
                        key,
                        unknown: Default::default(),
                    },
                )
                .map(PoolEntry::Files),
        }
    }

    fn cert_files(&mut self, at: &str, raw: raw::RawCertificate) -> Option<CertFiles> {
        unknown_keys(self.report, at, &raw.unknown, &["cert", "key"]);
        match (raw.cert, raw.key) {
            (Some(cert), Some(key)) => Some(CertFiles::new(self.path(&cert), self.path(&key))),
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
}

/// What one `[[certificate]]` table adds to the pool.
enum PoolEntry {
    Files(CertFiles),
    Dir(CertDir),
}

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance};

    #[test]
    fn edit_distance_counts_insertions_deletions_substitutions_and_swaps() {
        assert_eq!(edit_distance("root", "root"), 0);
        assert_eq!(edit_distance("rooot", "root"), 1);
        assert_eq!(edit_distance("rot", "root"), 1);
        assert_eq!(edit_distance("raot", "root"), 1);
        assert_eq!(edit_distance("roto", "root"), 1);
        assert_eq!(edit_distance("Root", "root"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_key_suggestion_only_for_a_near_miss() {
        let known = ["name", "hosts", "listeners", "tls", "root", "proxy"];
        assert_eq!(closest("rooot", &known), Some("root"));
        assert_eq!(closest("host", &known), Some("hosts"));
        assert_eq!(closest("listners", &known), Some("listeners"));
        assert_eq!(closest("colour", &known), None);
        assert_eq!(closest("x", &known), None);
    }
}
