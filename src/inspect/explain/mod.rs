//! `explain HOST`: the resolution of one connection, step by step — the name, the
//! listener the local address selects, the binding, every candidate certificate and why the
//! chosen one won, and what a request with `Host: HOST` would get.
//!
//! Each step calls the server's own code (DESIGN rule 6): `route::Sni::parse`,
//! `Runtime::listener_for`, `Table::resolve_sni`, `Pool::candidates`, `pool::better`,
//! `route::certificate_for` and `Table::route_request`. This module only words the results;
//! it must never decide anything the server would decide differently.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rustls::SignatureScheme;

use super::bindings::{
    acme_pending, alert_name, cert_json, cert_lines, client_auth_json, client_auth_words, fill,
    how_key, short_fingerprint, Json,
};
use crate::config::{Action, ListenerKind, TlsMode};
use crate::names::{host_from_authority, HostName};
use crate::route::{CertFrom, Match, Refusal, Resolved, Sni};
use crate::runtime::Runtime;
use crate::runtime::{Decision, SiteAction};
use crate::tls::load::Cert;
use crate::tls::pool::{better, How};

/// What an RSA-only client offers in `signature_algorithms`.
pub const RSA_ONLY_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
];

/// What a modern client offers: everything rustls verifies (ECDSA, Ed25519, RSA).
pub fn modern_schemes() -> Vec<SignatureScheme> {
    rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .supported_schemes()
}

/// The client being explained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The local address the connection arrives at; default: the first https listener's.
    pub local: Option<SocketAddr>,
    /// The client sends no SNI (HOST is then only the request's `Host`).
    pub no_sni: bool,
    /// The client offers only RSA signature schemes.
    pub rsa_only: bool,
}

/// A certificate that could serve the binding's host, and whether and why it was chosen.
#[derive(Debug)]
pub struct Candidate {
    pub cert: Arc<Cert>,
    /// How it covers the host: `Exact` (a SAN names it) or `Wildcard`.
    pub matched: How,
    pub chosen: bool,
    pub why: String,
}

/// What a request with `Host: HOST` on the connection gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No listener accepts connections on the local address.
    NoListener,
    /// The handshake is refused with this alert; no request is made.
    Refused(Refusal),
    /// Served by this site (index into `Runtime::sites`).
    Served { site: usize },
    /// The client can use none of the binding's certificate variants; rustls fails the
    /// handshake.
    HandshakeFails,
    /// 421 Misdirected Request.
    Misdirected,
    /// An http listener redirects to https on this port (308).
    Redirect { site: usize, port: u16 },
    /// 404 on an http listener.
    NotFound,
    /// 400 on an http listener: `Host` is not a host name.
    BadRequest,
    /// TLS is not terminated: the connection is relayed to this backend.
    Passthrough { backend: String },
}

/// The whole explanation; `*_why` fields are the sentences printed for each step.
#[derive(Debug)]
pub struct Explanation<'a> {
    pub host: String,
    /// Step 1: HOST as the server reads an SNI value.
    pub name: Sni,
    pub name_why: String,
    /// The SNI the client sends.
    pub sni: Option<String>,
    /// Step 2.
    pub local: SocketAddr,
    pub local_why: String,
    pub listener: Option<usize>,
    pub listener_why: String,
    /// Step 3; None without a listener, or on an http listener.
    pub resolved: Option<Result<Resolved<'a>, Refusal>>,
    pub binding_why: String,
    /// Step 4.
    pub how: Option<How>,
    pub internal_pending: bool,
    pub candidates: Vec<Candidate>,
    pub certs_why: String,
    pub for_modern: Option<Arc<Cert>>,
    pub for_rsa_only: Option<Arc<Cert>>,
    /// The RSA-only client can use no certificate variant: its handshake fails.
    pub rsa_only_fails: bool,
    /// The certificate this client (`--rsa-only` or not) is presented.
    pub presented: Option<Arc<Cert>>,
    /// The connection's client-auth policy (the site's, index into `Runtime::client_auth`)
    /// and what it means, in words; empty when the connection is not terminated.
    pub client_auth: Option<usize>,
    pub client_auth_why: String,
    /// Step 5.
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub outcome_why: String,
    /// On a listener with `http3`: what a QUIC connection naming the same SNI gets, in
    /// words (`quic::tls::admit`, the QUIC handshake's own rule); empty otherwise.
    pub http3_why: String,
}

fn listener_label(rt: &Runtime, li: usize) -> String {
    let l = &rt.listeners[li].config;
    format!("listener \"{}\" ({})", l.name, l.address)
}

fn site_label(rt: &Runtime, si: usize) -> String {
    format!(
        "site \"{}\"",
        rt.sites.get(si).map_or("?", |s| s.name.as_str())
    )
}

/// When `name` is not bound on the listener but a wildcard above its parent is (`*.w.example`
/// for `z.x.w.example`): a sentence saying that a wildcard covers exactly one label, naming
/// that binding. Extra wording only: the binding is looked up by its own name with the
/// table's `lookup`, and nothing here decides the resolution.
fn wildcard_hint(rt: &Runtime, li: usize, name: &HostName) -> Option<String> {
    let table = &rt.listeners[li].table;
    name.deeper_wildcards().into_iter().find_map(|w| {
        let r = table.lookup(&w)?;
        let parent = w.as_str().trim_start_matches("*.");
        // The one name of this shape the wildcard does cover: one label, then its parent.
        let prefix = name.as_str().strip_suffix(parent)?.trim_end_matches('.');
        let label = prefix.rsplit('.').next()?;
        let one_up = name.as_str().split_once('.').map(|(_, p)| p)?;
        Some(format!(
            "note: the wildcard binding {w} ({}) does not cover {name}: a wildcard covers exactly one label ({label}.{parent}, not {name}); nginx's server_name {w} also matches deeper names, Portico's bindings (like certificates) do not; bind {name} or *.{one_up} to serve it",
            site_label(rt, r.binding.site),
        ))
    })
}

/// The name as the server reads it, when it is one (not a wildcard, IP literal or junk).
fn sni_name(sni: Option<&str>) -> Option<HostName> {
    match Sni::parse(sni) {
        Sni::Name(n) => Some(n),
        _ => None,
    }
}

/// The default local address: the first https listener's (127.0.0.1 for `*:port`).
fn default_local(rt: &Runtime) -> Option<SocketAddr> {
    let l = rt
        .listeners
        .iter()
        .find(|l| l.config.kind == ListenerKind::Https)
        .or(rt.listeners.first())?;
    let ip = l
        .config
        .address
        .ip
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    Some(SocketAddr::new(ip, l.config.address.port))
}

fn step_name(host: &str, opts: &Options) -> (Sni, String, Option<String>) {
    let name = Sni::parse(Some(host));
    let mut why = match &name {
        Sni::Name(n) if n.as_str() == host => format!("{host} is a normalized host name"),
        Sni::Name(n) => format!(
            "{host} normalizes to {n} (ASCII lowercase, one trailing dot removed, IDNA A-labels)"
        ),
        Sni::IpLiteral => format!(
            "{host} is an IP literal, not a host name: as SNI it counts as no SNI (RFC 6066)"
        ),
        Sni::Wildcard => {
            format!("{host} is a wildcard: no binding matches it as SNI; it is an unknown name")
        }
        Sni::Absent => String::new(),
        Sni::Invalid(e) => {
            format!("{host:?} is not a host name ({e}); as SNI it is an unknown name")
        }
    };
    let sni = if opts.no_sni {
        why += "; the client sends no SNI (--no-sni) and uses it only as the request's Host";
        None
    } else {
        Some(host.to_string())
    };
    (name, why, sni)
}

fn step_listener(rt: &Runtime, local: SocketAddr) -> (Option<usize>, String) {
    let li = rt.listener_for(local);
    let others: Vec<usize> = (0..rt.listeners.len())
        .filter(|&i| Some(i) != li && rt.listeners[i].config.address.matches(local))
        .collect();
    let why = match li {
        None => {
            format!("no listener accepts connections on {local}: the connection is not accepted")
        }
        Some(i) if rt.listeners[i].config.address.ip.is_some() => {
            let mut w = format!(
                "{local} -> {}: its IP:port matches exactly",
                listener_label(rt, i)
            );
            for o in others {
                let _ = write!(
                    w,
                    "; it beats {} (IP:port beats *:port)",
                    listener_label(rt, o)
                );
            }
            w
        }
        Some(i) => format!(
            "{local} -> {}: it accepts every address on port {}, and no IP:port listener is on {}",
            listener_label(rt, i),
            local.port(),
            local.ip()
        ),
    };
    (li, why)
}

fn step_binding(
    rt: &Runtime,
    li: usize,
    sni: Option<&str>,
    r: &Result<Resolved<'_>, Refusal>,
) -> String {
    let table = &rt.listeners[li].table;
    let listener = listener_label(rt, li);
    let no_sni = table
        .no_sni()
        .map_or("reject".to_string(), |h| h.to_string());
    let hint = sni_name(sni)
        .and_then(|n| wildcard_hint(rt, li, &n))
        .map_or(String::new(), |h| format!("; {h}"));
    match r {
        Ok(r) => {
            let site = site_label(rt, r.binding.site);
            let host = &r.binding.host;
            match r.by {
                Match::Exact => format!("exact binding {host} on {listener} -> {site}"),
                Match::Wildcard => format!("no exact binding; the wildcard binding {host} covers the name -> {site}"),
                Match::NoSni => format!("no SNI: the listener's no_sni host {no_sni} is used -> binding {host}, {site}"),
                Match::UnknownFallback => format!(
                    "{} is not bound on {listener}; unknown_sni = \"no_sni\" serves it like a client without SNI: no_sni host {no_sni} -> binding {host}, {site}{hint}",
                    sni.unwrap_or("the name")
                ),
                Match::CatchAll => format!(
                    "no exact or wildcard binding takes {}; the catch-all binding * on {listener} does, since the pool has a certificate for it -> {site}",
                    r.cert_name()
                ),
            }
        }
        Err(refusal @ Refusal::NoSni) => format!(
            "no SNI and no_sni = \"reject\" on {listener}: the handshake is refused with alert {} ({})",
            alert_name(refusal),
            refusal.alert()
        ),
        Err(refusal @ Refusal::NoCertificate(host)) => {
            let site = table.resolve_sni(sni).ok().map(|r| r.binding.site);
            format!(
                "{host} is bound on {listener}{}, but {}: the handshake is refused with alert {} ({})",
                site.map_or(String::new(), |si| format!(" -> {}", site_label(rt, si))),
                site.and_then(|si| acme_pending(rt, si)).unwrap_or_else(|| "its site has no certificate yet".to_string()),
                alert_name(refusal),
                refusal.alert()
            )
        }
        Err(refusal @ Refusal::UnknownName(raw)) => format!(
            "{} is not bound on {listener} and unknown_sni = \"reject\": the handshake is refused with alert {} ({}){hint}",
            match Sni::parse(Some(raw)) {
                Sni::Name(n) => n.to_string(),
                _ => raw.clone(),
            },
            alert_name(refusal),
            refusal.alert()
        ),
    }
}

/// Why the pool passed over `c` for the binding's host, given the chosen variants.
fn passed_over(c: &Cert, chosen: &[Arc<Cert>], now: i64) -> String {
    match chosen.iter().find(|x| x.key_type == c.key_type) {
        Some(x) if better(x, c, now) && x.is_valid_at(now) && !c.is_valid_at(now) => {
            format!("not valid now; the chosen {} certificate is", c.key_type)
        }
        Some(x) if better(x, c, now) => format!(
            "expires earlier than the chosen {} certificate (SHA-256 {}): the one that expires last wins",
            c.key_type,
            short_fingerprint(x)
        ),
        Some(x) => format!(
            "ties with the chosen {} certificate (SHA-256 {}), which comes first in the pool",
            c.key_type,
            short_fingerprint(x)
        ),
        None => format!(
            "not valid now, and a valid certificate of another key type covers the name: no {} variant is offered",
            c.key_type
        ),
    }
}

fn step_certificates<'a>(rt: &'a Runtime, r: &Resolved<'a>, now: i64, ex: &mut Explanation<'a>) {
    let b = r.binding;
    let Some(site) = rt.config.sites.get(b.site) else {
        return;
    };
    let site_name = site_label(rt, b.site);
    // The site's own certificate now (None for a pool host: the pool's step below).
    let own = match b.certs {
        CertFrom::Site => rt.certs_of(b),
        CertFrom::Nothing | CertFrom::Pool => None,
    };
    ex.how = own.as_ref().map(|c| c.how);
    match &site.tls {
        TlsMode::Internal if own.is_none() => {
            ex.internal_pending = true;
            ex.how = Some(How::Internal);
            let hosts: Vec<&str> = site.hosts.iter().map(|h| h.as_str()).collect();
            ex.certs_why = format!(
                "internal CA (issued at start): no certificate for {site_name} is stored in {} yet; the local CA issues one for exactly its hosts ({}) when serving starts (check mode issues nothing)",
                rt.config.state_dir.join("internal").display(),
                hosts.join(", ")
            );
        }
        TlsMode::Acme if own.is_none() => {
            ex.certs_why = format!(
                "{site_name}: {}",
                acme_pending(rt, b.site).unwrap_or_default()
            );
        }
        TlsMode::Internal | TlsMode::Pinned(_) | TlsMode::Acme => {
            ex.certs_why = if matches!(site.tls, TlsMode::Pinned(_)) {
                format!("pinned: {site_name} names its certificate (tls = {{ cert, key }}); the pool is not consulted")
            } else if site.tls == TlsMode::Acme {
                format!("ACME: issued for {site_name}'s hosts and stored in state_dir/acme/")
            } else {
                let stored = own
                    .as_ref()
                    .and_then(|c| c.variants.first())
                    .map_or(String::new(), |c| {
                        format!(", stored in {}", c.cert_file.display())
                    });
                format!("internal CA: issued by the local CA for {site_name}'s hosts{stored}; serving reuses it until it is due for renewal")
            };
            for cert in own.iter().flat_map(|c| c.variants.iter()) {
                ex.candidates.push(Candidate {
                    cert: cert.clone(),
                    matched: How::Exact,
                    chosen: true,
                    why: "the site's own certificate".to_string(),
                });
            }
        }
        TlsMode::Pool => {
            let pool = rt.pool();
            // The binding's host, or the client's name for the catch-all binding.
            let host = r.cert_name();
            let choice = pool.best(host, now);
            let chosen: &[Arc<Cert>] = choice.as_ref().map_or(&[], |c| &c.variants);
            ex.how = choice.as_ref().map(|c| c.how);
            let (cands, matched) = pool.candidates(host);
            ex.certs_why = format!(
                "pool: the certificates whose SAN names {} {}; per key type the valid one that expires last wins; variants are offered ECDSA, Ed25519, RSA",
                if matched == How::Exact { "include" } else { "cover by wildcard" },
                host
            );
            for cert in cands {
                let is_chosen = chosen.iter().any(|x| Arc::ptr_eq(x, cert));
                let why = if is_chosen {
                    format!("chosen: the best {} certificate", cert.key_type)
                } else {
                    passed_over(cert, chosen, now)
                };
                ex.candidates.push(Candidate {
                    cert: cert.clone(),
                    matched,
                    chosen: is_chosen,
                    why,
                });
            }
            // Wildcard certificates that also cover the name lose to any exact SAN.
            if matched == How::Exact {
                if let Some(w) = host.parent_wildcard() {
                    for cert in pool.candidates(&w).0 {
                        ex.candidates.push(Candidate {
                            cert: cert.clone(),
                            matched: How::Wildcard,
                            chosen: false,
                            why: format!("covers the name by the wildcard {w}, and an exact SAN beats a wildcard"),
                        });
                    }
                }
            }
        }
    }
    let modern = modern_schemes();
    ex.for_modern = rt.certificate_for(r, &modern);
    ex.for_rsa_only = rt.certificate_for(r, RSA_ONLY_SCHEMES);
    ex.rsa_only_fails = ex
        .for_rsa_only
        .as_ref()
        .is_some_and(|c| !c.can_sign(RSA_ONLY_SCHEMES));
}

fn action_text(rt: &Runtime, si: usize) -> (String, Option<u16>) {
    match rt.config.sites.get(si).map(|s| &s.action) {
        // The root the runtime opened: canonical and absolute, whatever the file wrote
        // and wherever the command runs.
        Some(Action::Root(p)) => {
            let path = match rt.sites.get(si).map(|s| &s.action) {
                Some(SiteAction::Root(root)) => root.path().to_path_buf(),
                _ => std::path::absolute(p).unwrap_or_else(|_| p.clone()),
            };
            (format!("serves files from {}", path.display()), None)
        }
        Some(Action::Redirect { to, status }) => (
            format!("redirects ({status}) to {to}, keeping path and query"),
            Some(*status),
        ),
        Some(Action::Respond { status, .. }) => (
            format!("responds {status} with its fixed body"),
            Some(*status),
        ),
        Some(Action::Proxy(_)) => ("proxies requests to its upstreams".to_string(), None),
        Some(Action::Passthrough(backend)) => (
            format!("passes TLS through to {backend} (not terminated by Portico)"),
            None,
        ),
        None => (String::new(), None),
    }
}

fn step_client_auth(rt: &Runtime, site: usize, ex: &mut Explanation<'_>) {
    ex.client_auth = rt.sites.get(site).and_then(|s| s.client_auth);
    ex.client_auth_why = match ex.client_auth {
        // Said only where some site asks for client certificates: elsewhere it is noise.
        None if rt.client_auth.is_empty() => String::new(),
        None => format!(
            "{} asks for no client certificate; on this connection, requests for sites that do get 421",
            site_label(rt, site)
        ),
        Some(p) => format!(
            "{}: {}; a session made here resumes only for this site under this policy, and requests on this connection for sites of another policy get 421",
            site_label(rt, site),
            client_auth_words(rt, p)
        ),
    };
}

fn step_request(rt: &Runtime, li: usize, ex: &mut Explanation<'_>) {
    let hint =
        |host: &HostName| wildcard_hint(rt, li, host).map_or(String::new(), |h| format!("; {h}"));
    let mut done = |outcome, status: Option<u16>, why: String| {
        (ex.outcome, ex.status, ex.outcome_why) = (outcome, status, why);
    };
    let table = &rt.listeners[li].table;
    let listener = listener_label(rt, li);
    let https = rt.listeners[li].config.kind == ListenerKind::Https;
    let Some(host) = host_from_authority(&ex.host) else {
        let why = format!("{} is not a host name", ex.host);
        return match https {
            true => done(
                Outcome::Misdirected,
                Some(421),
                why + ", so no certificate covers it",
            ),
            false => done(Outcome::BadRequest, Some(400), why),
        };
    };
    if !https {
        let Some(r) = table.route_request(host.as_str(), None) else {
            return done(
                Outcome::NotFound,
                Some(404),
                format!("{host} is not bound on {listener}{}", hint(&host)),
            );
        };
        let (site, label) = (r.binding.site, site_label(rt, r.binding.site));
        return match r.binding.https_port {
            Some(port) => done(
                Outcome::Redirect { site, port },
                Some(308),
                format!(
                    "{host} is bound to {label} on {listener}: redirected to https port {port}"
                ),
            ),
            None => done(
                Outcome::NotFound,
                Some(404),
                format!("{label} has no https listener"),
            ),
        };
    }
    // An internal certificate does not exist yet in check mode; it will cover exactly the
    // site's hosts, so coverage is judged against them with the one matching function.
    let (covered, cert, cert_desc) = match (ex.internal_pending, ex.presented.as_deref()) {
        (true, _) => {
            let resolved = ex.resolved.as_ref().and_then(|r| r.as_ref().ok());
            let site = resolved.and_then(|r| rt.config.sites.get(r.binding.site));
            let covered = site.is_some_and(|s| s.hosts.iter().any(|h| h.covers(&host)));
            (
                covered,
                None,
                "the internal certificate (it covers the site's hosts)".to_string(),
            )
        }
        (false, Some(c)) => {
            let names: Vec<&str> = c.names.iter().map(|n| n.as_str()).collect();
            let desc = format!("the certificate presented (SANs: {})", names.join(", "));
            (c.covers(&host), Some(c), desc)
        }
        (false, None) => (true, None, "no certificate".to_string()),
    };
    let routed = covered
        .then(|| table.route_request(host.as_str(), cert))
        .flatten();
    match routed {
        Some(r) if !rt.same_policy(r.binding.site, ex.client_auth) => done(
            Outcome::Misdirected,
            Some(421),
            format!(
                "{host} is bound to {}, whose client certificates differ from this connection's: {cert_desc} covers it, but the connection was made under another client-auth policy",
                site_label(rt, r.binding.site)
            ),
        ),
        Some(r) => {
            let (action, status) = action_text(rt, r.binding.site);
            let by = match r.by {
                Match::Wildcard => format!(" (by the wildcard binding {})", r.binding.host),
                _ => String::new(),
            };
            let label = site_label(rt, r.binding.site);
            let why =
                format!("served by {label}{by}: {cert_desc} covers {host}; the site {action}");
            done(
                Outcome::Served {
                    site: r.binding.site,
                },
                status,
                why,
            )
        }
        None if !covered => done(
            Outcome::Misdirected,
            Some(421),
            format!("{cert_desc} does not cover {host}"),
        ),
        None => done(
            Outcome::Misdirected,
            Some(421),
            format!("{host} is not bound on {listener}{}", hint(&host)),
        ),
    }
}

/// Explains the connection `opts` describes for `host` on `rt`, at `now` (unix seconds).
pub fn explain<'a>(rt: &'a Runtime, host: &str, opts: &Options, now: i64) -> Explanation<'a> {
    let (name, name_why, sni) = step_name(host, opts);
    let (local, local_why) = match (opts.local, default_local(rt)) {
        (Some(l), _) => (l, "given with --local".to_string()),
        (None, Some(l)) => (
            l,
            "the first https listener's address (choose another with --local)".to_string(),
        ),
        (None, None) => (
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            "no listener".to_string(),
        ),
    };
    let (listener, listener_why) = step_listener(rt, local);
    let mut ex = Explanation {
        host: host.to_string(),
        name,
        name_why,
        sni,
        local,
        local_why,
        listener,
        listener_why,
        resolved: None,
        binding_why: String::new(),
        how: None,
        internal_pending: false,
        candidates: Vec::new(),
        certs_why: String::new(),
        for_modern: None,
        for_rsa_only: None,
        rsa_only_fails: false,
        presented: None,
        client_auth: None,
        client_auth_why: String::new(),
        outcome: Outcome::NoListener,
        status: None,
        outcome_why: "no request: nothing accepts the connection".to_string(),
        http3_why: String::new(),
    };
    let Some(li) = listener else {
        return ex;
    };
    if rt.listeners[li].config.kind == ListenerKind::Http {
        ex.binding_why =
            "an http listener: no TLS and no SNI; requests are routed by Host only".to_string();
        step_request(rt, li, &mut ex);
        return ex;
    }
    if rt.listeners[li].config.http3 {
        ex.http3_why = match crate::quic::tls::admit(rt, li, ex.sni.as_deref()) {
            Ok(_) => {
                "HTTP/3 (QUIC, the same port over UDP): the same certificate and site as over TCP"
                    .to_string()
            }
            Err(why) => format!("HTTP/3 (QUIC, the same port over UDP): {}", why.words(rt)),
        };
    }
    if let Decision::Passthrough { backend, resolved } = rt.decide(li, ex.sni.as_deref()) {
        ex.binding_why = match &resolved {
            Some(r) => step_binding(rt, li, ex.sni.as_deref(), &Ok(r.clone())),
            None => format!(
                "{} is not bound on {}; unknown_sni = \"passthrough\" relays it to the listener's default backend {backend}",
                ex.sni.as_deref().unwrap_or("the name"),
                listener_label(rt, li)
            ),
        };
        ex.resolved = resolved.map(Ok);
        ex.certs_why = "none in Portico: the backend presents its own certificate".to_string();
        ex.outcome = Outcome::Passthrough {
            backend: backend.to_string(),
        };
        ex.outcome_why = format!(
            "no request reaches Portico: the connection is relayed untouched to {backend} (passthrough)"
        );
        return ex;
    }
    let mut on_demand = None;
    let resolved = match rt.decide(li, ex.sni.as_deref()) {
        // Bound, but refused: the site's ACME certificate does not exist yet.
        Decision::Refuse(refusal @ Refusal::NoCertificate(_)) => Err(refusal),
        // The catch-all site orders it on demand: refused until the pool has it.
        Decision::OnDemand { site, name } => {
            on_demand = Some(on_demand_words(rt, site, &name));
            Err(Refusal::UnknownName(name.to_string()))
        }
        _ => rt.listeners[li].table.resolve_sni(ex.sni.as_deref()),
    };
    ex.binding_why = step_binding(rt, li, ex.sni.as_deref(), &resolved);
    match &resolved {
        Ok(r) => {
            step_certificates(rt, r, now, &mut ex);
            step_client_auth(rt, r.binding.site, &mut ex);
            ex.presented = if opts.rsa_only {
                ex.for_rsa_only.clone()
            } else {
                ex.for_modern.clone()
            };
            ex.resolved = Some(resolved);
            if opts.rsa_only && ex.rsa_only_fails {
                ex.outcome = Outcome::HandshakeFails;
                ex.outcome_why = "no request: the handshake fails, since this client can use no certificate variant".to_string();
            } else {
                step_request(rt, li, &mut ex);
            }
        }
        Err(refusal) => {
            ex.outcome = Outcome::Refused(refusal.clone());
            ex.outcome_why = match on_demand {
                Some(words) => words,
                None => format!(
                    "no request: the handshake is refused with alert {} ({})",
                    alert_name(refusal),
                    refusal.alert()
                ),
            };
            ex.resolved = Some(resolved);
        }
    }
    ex
}

/// What an on-demand name's handshake would meet now, from the permission cache and the
/// orders of the runtime asked (the running server's, with `--live`).
fn on_demand_words(rt: &Runtime, site: usize, name: &HostName) -> String {
    use crate::acme::on_demand::Standing;
    let wait = rt.config.sites[site]
        .on_demand
        .as_ref()
        .map_or(0, |od| od.wait.as_millis());
    let site_name = &rt.config.sites[site].name;
    let state = match rt.on_demand.standing(name) {
        Standing::Unknown => "the permission endpoint would be asked, and if it allows the name a certificate ordered on demand".to_string(),
        Standing::Asking => "the permission endpoint is being asked now".to_string(),
        Standing::Refused => "the permission endpoint refused it (cached): no order, refused with alert unrecognized_name (112)".to_string(),
        Standing::Allowed => "the permission endpoint allowed it (cached); a certificate would be ordered on demand".to_string(),
        Standing::Queued => "allowed; its order is queued (max_orders, orders_per_hour)".to_string(),
        Standing::Ordering => "allowed; its certificate is being ordered now (pending)".to_string(),
        Standing::BackingOff(s) => format!("allowed, but its last order failed: backing off, the next order in {s}s at the earliest"),
    };
    format!("no certificate in the pool yet; site {site_name:?} orders on demand: {state}. A handshake waits up to {wait}ms for it, then is refused with alert unrecognized_name (112), the order going on")
}

mod render;

pub use render::{human, json};
