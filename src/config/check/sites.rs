//! The `[[site]]` tables: names, hosts, listeners, TLS mode and action, and the bindings
//! they make (one site per host and listener).

use super::*;
use crate::config::raw::RawClientAuth;
use crate::config::ClientAuth;

/// Headers a `subject_header` may not name: the client certificate headers of RFC 9440,
/// the forwarded headers, and the ones HTTP itself gives meaning to.
const RESERVED_HEADERS: &[&str] = &[
    "client-cert",
    "client-cert-chain",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
];

impl Checker<'_> {
    pub(super) fn sites(&mut self, raw: Vec<RawSite>, listeners: &[Listener]) -> Vec<Site> {
        let mut out = Vec::with_capacity(raw.len());
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
                    "client_auth",
                ],
            );
            let mut hosts = Vec::new();
            for (j, h) in s.hosts.iter().enumerate() {
                let parsed = if h == "*" {
                    Ok(HostName::catch_all())
                } else {
                    HostName::parse(h)
                };
                match parsed {
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
            let mut on_demand = None;
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
                Some(RawTls::Table(table)) => {
                    let (tls, od) = self.tls_table(&format!("{at}.tls"), *table);
                    on_demand = od;
                    tls
                }
            };
            let action = self.action(&at, &name, &s);
            if on_demand.is_some() && !hosts.iter().any(HostName::is_catch_all) {
                self.report.error(
                    format!("{at}.tls.on_demand"),
                    format!("site {name:?} is not the catch-all site: on_demand orders certificates for names no other site binds, which only hosts = [\"*\"] takes"),
                    Some("put on_demand on a site with hosts = [\"*\"], or use tls = \"acme\" for a site's own names".to_string()),
                );
            }
            if let Some(j) = hosts.iter().position(HostName::is_catch_all) {
                let at = format!("{at}.hosts[{j}]");
                if tls != TlsMode::Pool {
                    self.report.error(
                        &at,
                        "the catch-all host \"*\" takes each name's certificate from the pool; it cannot be combined with another tls mode",
                        Some("remove tls (the pool is the default), or list the site's names instead of \"*\"; to order each name's certificate at its first handshake, write tls = { acme = true, on_demand = { permission = \"http://...\" } }".to_string()),
                    );
                }
                if matches!(action, Some(Action::Passthrough(_))) {
                    self.report.error(
                        &at,
                        "a passthrough site cannot take every name with \"*\"",
                        Some("set the listener's default_passthrough with unknown_sni = \"passthrough\" instead".to_string()),
                    );
                }
            }
            let client_auth = s
                .client_auth
                .as_ref()
                .and_then(|raw| self.client_auth(&format!("{at}.client_auth"), raw));
            if client_auth.is_some() && s.passthrough.is_some() {
                self.report.error(
                    format!("{at}.client_auth"),
                    format!("site {name:?} passes TLS through: its backend terminates TLS, so only the backend can ask for client certificates"),
                    Some("remove client_auth, or terminate TLS here with root, proxy, redirect or respond".to_string()),
                );
            }
            if let Some(action) = action {
                out.push(Site {
                    index: i,
                    name,
                    hosts,
                    listeners: site_listeners,
                    tls,
                    action,
                    client_auth,
                    on_demand: on_demand.map(std::sync::Arc::new),
                });
            }
        }
        out
    }

    /// A `client_auth` table: `ca` is required, paths are relative to the file, and the
    /// subject header must be a header name the proxy does not own.
    fn client_auth(&mut self, at: &str, raw: &RawClientAuth) -> Option<ClientAuth> {
        unknown_keys(
            self.report,
            at,
            &raw.unknown,
            &["ca", "required", "crl", "subject_header"],
        );
        let subject_header = match raw.subject_header.as_deref().map(str::to_ascii_lowercase) {
            None => None,
            Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_err() || h.is_empty() => {
                self.report.error(
                    format!("{at}.subject_header"),
                    format!("{h:?} is not a header name"),
                    Some("use letters, digits and '-', such as \"X-Client-Subject\"".to_string()),
                );
                None
            }
            Some(h) if RESERVED_HEADERS.contains(&h.as_str()) => {
                self.report.error(
                    format!("{at}.subject_header"),
                    format!("{h:?} is a header Portico sets or removes itself"),
                    Some("choose another name, such as \"X-Client-Subject\"".to_string()),
                );
                None
            }
            Some(h) => Some(h),
        };
        let Some(ca) = raw.ca.as_deref() else {
            self.report.error(
                at,
                "client_auth has no ca",
                Some("name the PEM file of the CA that issues client certificates: ca = \"clients-ca.pem\"".to_string()),
            );
            return None;
        };
        Some(ClientAuth {
            ca: self.path(ca),
            required: raw.required.unwrap_or(true),
            crl: raw.crl.iter().flatten().map(|c| self.path(c)).collect(),
            subject_header,
        })
    }

    pub(super) fn action(&mut self, at: &str, name: &str, s: &RawSite) -> Option<Action> {
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
            return crate::config::backend::check_passthrough(
                self.report,
                &format!("{at}.passthrough"),
                raw,
            )
            .map(Action::Passthrough);
        }
        if let Some(raw) = &s.proxy {
            return crate::config::proxy::check_proxy(
                self.report,
                &format!("{at}.proxy"),
                raw,
                &self.base,
            )
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
    pub(super) fn bindings(&mut self, config: &Config) {
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
