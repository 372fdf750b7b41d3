//! `certs`: every certificate a runtime uses, with its source (a file, the local CA, ACME),
//! the names it covers, its expiry, when it is renewed next and, for ACME, the last error
//! its site's task met, as text or JSON.
//!
//! ACME progress comes from the status files the site tasks write in `state_dir/acme/`,
//! internal certificates from the local CA's files; nothing here writes.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use super::bindings::{acme_pending, acme_progress, cert_json, cert_lines, fill, Json};
use crate::acme::status::{self, Rule, Status};
use crate::config::TlsMode;
use crate::runtime::{format_time, Runtime};
use crate::tls::internal_ca;
use crate::tls::load::Cert;
use crate::tls::pool::Pool;

use super::page::{NoSuchRow, Page, Shown};

/// Where a certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A `[[certificate]]` or a pinned `tls = { cert, key }`: Portico reads it, never renews it.
    File,
    /// Issued by the local CA for a `tls = "internal"` site.
    Internal,
    /// Ordered from the `[acme]` CA for a `tls = "acme"` site.
    Acme,
    /// Stored through the admin API (`state_dir/certificates`): in the pool, never renewed.
    Admin,
}

impl Source {
    pub fn key(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Internal => "internal",
            Source::Acme => "acme",
            Source::Admin => "admin",
        }
    }
}

/// One certificate, or a site still waiting for its first one.
#[derive(Debug)]
pub struct Entry {
    pub source: Source,
    /// The sites that use it (for pool certificates: every site a binding chose it for).
    pub sites: Vec<String>,
    /// The certificate's SAN names, or the site's hosts while it has none.
    pub names: Vec<String>,
    pub cert: Option<Arc<Cert>>,
    /// Why there is no certificate yet.
    pub pending: Option<String>,
    /// When Portico renews it next (unix seconds); None for files.
    pub next_renewal: Option<i64>,
    /// How `next_renewal` was decided, in words.
    pub renewal_rule: Option<String>,
    /// The ACME task's status file, as last written.
    pub acme: Option<Status>,
}

fn rule_text(rule: Rule) -> &'static str {
    match rule {
        Rule::NoCertificate => "no certificate: order now",
        Rule::Ari => "a random time in the CA's ACME Renewal Information window",
        Rule::OneThird => "a third of the lifetime left (less a small random spread)",
        Rule::Retry => "retry after a failed order (exponential backoff)",
    }
}

fn rule_key(rule: Rule) -> &'static str {
    match rule {
        Rule::NoCertificate => "no_certificate",
        Rule::Ari => "ari",
        Rule::OneThird => "one_third",
        Rule::Retry => "retry",
    }
}

/// Every certificate of `rt`: pool certificates in file order, then each site's own
/// (pinned, internal, ACME) in site order.
pub fn collect(rt: &Runtime) -> Vec<Entry> {
    let pool = rt.pool();
    let items = items(rt, &pool);
    entries(rt, &items)
}

/// The form of a certs cursor, in words.
pub const KEY_FORM: &str =
    "pool:FILE for a pool certificate (its certificate file) or site:NAME for a site's own";

/// One row of `certs` before it is built: a pool certificate, or a site (by index into the
/// configuration's sites) with a certificate of its own or waiting for one.
#[derive(Debug, Clone, Copy)]
enum Item<'p> {
    Pool(&'p Arc<Cert>),
    Site(usize),
}

/// Every row in the order shown: the pool by certificate file then key file (its own
/// identity, so the order is total), then the sites that are not `tls = "pool"`. Only
/// references: at a million pool certificates this is one sort of pointers.
fn items<'p>(rt: &Runtime, pool: &'p Pool) -> Vec<Item<'p>> {
    let mut pooled: Vec<&Arc<Cert>> = pool.certs().collect();
    pooled.sort_unstable_by(|a, b| (&a.cert_file, &a.key_file).cmp(&(&b.cert_file, &b.key_file)));
    let sites = rt
        .config
        .sites
        .iter()
        .enumerate()
        .filter(|(_, s)| s.tls != TlsMode::Pool)
        .map(|(si, _)| Item::Site(si));
    pooled.into_iter().map(Item::Pool).chain(sites).collect()
}

/// A row's cursor.
fn key(rt: &Runtime, item: Item<'_>) -> String {
    match item {
        Item::Pool(cert) => format!("pool:{}", cert.cert_file.display()),
        Item::Site(si) => format!(
            "site:{}",
            rt.config.sites.get(si).map_or("", |s| s.name.as_str())
        ),
    }
}

/// Whether two rows are one pool certificate file (with two key files: two rows).
fn same_file(a: Item<'_>, b: Item<'_>) -> bool {
    matches!((a, b), (Item::Pool(a), Item::Pool(b)) if a.cert_file == b.cert_file)
}

/// The position of the row whose key is `key`; for a pool file that pairs with two key
/// files, the last of its rows (pages never split them, see [`collect_page`]). Compares
/// paths and names as they are, formatting nothing.
fn position(rt: &Runtime, items: &[Item<'_>], key: &str) -> Option<usize> {
    if let Some(file) = key.strip_prefix("pool:") {
        let file = Path::new(file);
        items
            .iter()
            .rposition(|i| matches!(i, Item::Pool(c) if *c.cert_file == *file))
    } else if let Some(name) = key.strip_prefix("site:") {
        let si = rt.config.sites.iter().position(|s| s.name == name)?;
        items
            .iter()
            .position(|i| matches!(i, Item::Site(s) if *s == si))
    } else {
        None
    }
}

/// The entries of `page`, in the order of [`collect`], with what the page came to. Only
/// the page's entries are built (names, sites, status files read). An `after` that names
/// no row is an error.
pub fn collect_page(rt: &Runtime, page: &Page) -> Result<(Vec<Entry>, Shown), NoSuchRow> {
    let pool = rt.pool();
    let items = items(rt, &pool);
    let after = match &page.after {
        None => None,
        Some(k) => Some(position(rt, &items, k).ok_or_else(|| NoSuchRow {
            what: "certs",
            key: k.clone(),
            form: KEY_FORM,
        })?),
    };
    let mut window = page.window(after, items.len());
    // A cursor names a certificate file, so the rows of one file (a chain paired with two
    // key files) stay on one page, however the limit falls.
    while window.end < items.len() && window.end > window.start {
        match (items.get(window.end - 1), items.get(window.end)) {
            (Some(&a), Some(&b)) if same_file(a, b) => window.end += 1,
            _ => break,
        }
    }
    let next =
        (window.end < items.len() && !window.is_empty()).then(|| key(rt, items[window.end - 1]));
    let shown = items.get(window).unwrap_or_default();
    let shown_count = shown.len();
    Ok((
        entries(rt, shown),
        Shown {
            rows: shown_count,
            total: items.len(),
            next,
        },
    ))
}

/// The entries of `items`.
fn entries(rt: &Runtime, items: &[Item<'_>]) -> Vec<Entry> {
    let names = |c: &Cert| c.names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    // The sites each pool certificate shown serves now, from one pass over the bindings.
    let mut serving: std::collections::HashMap<*const Cert, Vec<String>> = items
        .iter()
        .filter_map(|i| match i {
            Item::Pool(c) => Some((Arc::as_ptr(c), Vec::new())),
            Item::Site(_) => None,
        })
        .collect();
    if !serving.is_empty() {
        for b in rt.listeners.iter().flat_map(|l| l.table.bindings()) {
            let (Some(choice), Some(site)) = (rt.certs_of(b), rt.sites.get(b.site)) else {
                continue;
            };
            for v in choice.variants.iter() {
                let Some(sites) = serving.get_mut(&Arc::as_ptr(v)) else {
                    continue;
                };
                if !sites.contains(&site.name) {
                    sites.push(site.name.clone());
                }
            }
        }
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match *item {
            Item::Pool(cert) => {
                let sites = serving.remove(&Arc::as_ptr(cert)).unwrap_or_default();
                out.push(Entry {
                    source: if rt.is_stored(cert) {
                        Source::Admin
                    } else {
                        Source::File
                    },
                    sites,
                    names: names(cert),
                    cert: Some(cert.clone()),
                    pending: None,
                    next_renewal: None,
                    renewal_rule: None,
                    acme: None,
                });
            }
            Item::Site(si) => out.extend(site_entry(rt, si)),
        }
    }
    out
}

/// The entry of a site with a certificate of its own (None for a pool site).
fn site_entry(rt: &Runtime, si: usize) -> Option<Entry> {
    let names = |c: &Cert| c.names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let state_dir = &rt.config.state_dir;
    let site = rt.config.sites.get(si)?;
    let loaded = rt.site_cert(si);
    let hosts: Vec<String> = site.hosts.iter().map(|h| h.to_string()).collect();
    Some(match &site.tls {
        TlsMode::Pool => return None,
        TlsMode::Pinned(_) => Entry {
            source: Source::File,
            sites: vec![site.name.clone()],
            names: loaded.as_deref().map_or(hosts, names),
            cert: loaded,
            pending: None,
            next_renewal: None,
            renewal_rule: None,
            acme: None,
        },
        TlsMode::Internal => {
            // Check mode does not open the local CA: read the leaf it stored, if any.
            let (cert_file, key_file) = internal_ca::leaf_paths(state_dir, &site.name);
            let cert = loaded.or_else(|| {
                crate::tls::load::load(&cert_file, &key_file)
                    .ok()
                    .map(Arc::new)
            });
            let renew = internal_ca::RENEW_BEFORE.whole_seconds();
            Entry {
                source: Source::Internal,
                sites: vec![site.name.clone()],
                names: cert.as_deref().map_or(hosts, names),
                pending: cert
                    .is_none()
                    .then(|| "the local CA issues it when the server starts".to_string()),
                next_renewal: cert.as_ref().map(|c| c.not_after - renew),
                renewal_rule: Some(format!(
                    "{} days before expiry (the local CA's rule)",
                    renew / 86_400
                )),
                cert,
                acme: None,
            }
        }
        TlsMode::Acme => {
            let st = crate::acme::home(&rt.config).and_then(|h| status::read(&h, &site.name));
            Entry {
                source: Source::Acme,
                sites: vec![site.name.clone()],
                names: loaded.as_deref().map_or(hosts, names),
                pending: acme_pending(rt, si),
                next_renewal: st.as_ref().and_then(|s| s.next_renewal),
                renewal_rule: st.as_ref().map(|s| rule_text(s.rule).to_string()),
                cert: loaded,
                acme: st,
            }
        }
    })
}

/// The text report.
pub fn human(entries: &[Entry], now: i64) -> String {
    let mut out = String::new();
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let sites: Vec<String> = e.sites.iter().map(|s| format!("\"{s}\"")).collect();
        let used = match sites.len() {
            0 => "not used by any site".to_string(),
            1 => format!("site {}", sites.join(", ")),
            _ => format!("sites {}", sites.join(", ")),
        };
        let _ = writeln!(out, "{}  {used}", e.source.key());
        match &e.cert {
            Some(cert) => {
                for line in cert_lines(cert, now, 2) {
                    let _ = writeln!(out, "{line}");
                }
                let _ = writeln!(out, "         file: {}", cert.cert_file.display());
            }
            None => {
                let _ = writeln!(out, "  no certificate  hosts: {}", e.names.join(", "));
            }
        }
        if let Some(p) = &e.pending {
            let _ = writeln!(out, "{}", fill("  pending:", p, 4));
        }
        match (e.source, e.next_renewal) {
            (Source::File, _) => {
                let _ = writeln!(
                    out,
                    "  renewal: not by Portico (replace the files; they are reloaded when they change)"
                );
            }
            (Source::Admin, _) => {
                let _ = writeln!(
                    out,
                    "  renewal: not by Portico (replace it with PUT /api/v1/certificates/NAME)"
                );
            }
            (_, Some(at)) => {
                let why = e.renewal_rule.as_deref().unwrap_or("");
                let _ = writeln!(
                    out,
                    "{}",
                    fill(
                        "  next renewal:",
                        &format!("{} ({why})", format_time(at)),
                        4
                    )
                );
            }
            (_, None) => {
                let _ = writeln!(
                    out,
                    "  next renewal: unknown (the server has not planned it yet)"
                );
            }
        }
        if let Some(st) = &e.acme {
            if let Some(w) = st.ari_window {
                let _ = writeln!(
                    out,
                    "  ARI window: {} to {}",
                    format_time(w.start),
                    format_time(w.end)
                );
            }
            if let Some(node) = &st.issued_by {
                let _ = writeln!(out, "  fleet: issued by node {node}");
            }
            if let (status::State::Locked, Some(node)) = (st.state, &st.held_by) {
                let _ = writeln!(out, "  fleet: node {node} is ordering; this node waits");
            }
            // A pending entry already says what the task did.
            if e.pending.is_none() && (st.last_error.is_some() || st.attempts > 0) {
                let _ = writeln!(
                    out,
                    "{}",
                    fill("  last error:", &acme_progress(Some(st)), 4)
                );
            }
            if let Some(problem) = st.last_error.as_ref().and_then(|l| l.problem.as_ref()) {
                let text = format!(
                    "{} (HTTP {}): {}",
                    problem.kind.as_deref().unwrap_or("?"),
                    problem.status.map_or("?".to_string(), |s| s.to_string()),
                    problem.detail.as_deref().unwrap_or("")
                );
                let _ = writeln!(out, "{}", fill("  ACME problem:", &text, 4));
                for sub in &problem.subproblems {
                    let _ = writeln!(out, "{}", fill("    -", sub, 6));
                }
            }
        }
    }
    if entries.is_empty() {
        out.push_str("no certificates\n");
    }
    out
}

fn acme_json(st: &Status) -> Json {
    let time = |t: Option<i64>| Json::opt_str(t.map(format_time));
    let last_error = st.last_error.as_ref().map_or(Json::Null, |e| {
        let problem = e.problem.as_ref().map_or(Json::Null, |p| {
            Json::Obj(vec![
                ("type", Json::opt_str(p.kind.as_deref())),
                ("detail", Json::opt_str(p.detail.as_deref())),
                (
                    "status",
                    p.status.map_or(Json::Null, |s| Json::Int(s.into())),
                ),
                (
                    "subproblems",
                    Json::Arr(p.subproblems.iter().map(Json::str).collect()),
                ),
            ])
        });
        Json::Obj(vec![
            ("at", Json::str(format_time(e.at))),
            ("message", Json::str(&e.message)),
            ("problem", problem),
        ])
    });
    let state = match st.state {
        status::State::Waiting => "waiting",
        status::State::Ordering => "ordering",
        status::State::Backoff => "backoff",
        status::State::Locked => "locked",
    };
    Json::Obj(vec![
        ("state", Json::str(state)),
        ("rule", Json::str(rule_key(st.rule))),
        (
            "ari_window",
            st.ari_window.map_or(Json::Null, |w| {
                Json::Obj(vec![
                    ("start", Json::str(format_time(w.start))),
                    ("end", Json::str(format_time(w.end))),
                ])
            }),
        ),
        ("attempts", Json::Int(st.attempts.into())),
        ("last_attempt", time(st.last_attempt)),
        ("last_success", time(st.last_success)),
        ("last_error", last_error),
        ("updated", Json::str(format_time(st.updated))),
        ("issued_by", Json::opt_str(st.issued_by.as_deref())),
        ("held_by", Json::opt_str(st.held_by.as_deref())),
    ])
}

/// The JSON document (schema in docs/cli.md).
pub fn json(entries: &[Entry], config: &Path, now: i64) -> Json {
    let certs = entries
        .iter()
        .map(|e| {
            Json::Obj(vec![
                ("source", Json::str(e.source.key())),
                ("sites", Json::Arr(e.sites.iter().map(Json::str).collect())),
                ("names", Json::Arr(e.names.iter().map(Json::str).collect())),
                (
                    "certificate",
                    e.cert.as_ref().map_or(Json::Null, |c| cert_json(c, now)),
                ),
                ("pending", Json::opt_str(e.pending.as_deref())),
                (
                    "next_renewal",
                    Json::opt_str(e.next_renewal.map(format_time)),
                ),
                ("renewal_rule", Json::opt_str(e.renewal_rule.as_deref())),
                ("acme", e.acme.as_ref().map_or(Json::Null, acme_json)),
            ])
        })
        .collect();
    Json::Obj(vec![
        ("version", Json::Int(1)),
        ("config", Json::str(config.display().to_string())),
        ("now", Json::str(format_time(now))),
        ("certificates", Json::Arr(certs)),
    ])
}
