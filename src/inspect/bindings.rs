//! `bindings`: every listener x host name -> site and certificate, and how each was chosen,
//! as a table grouped by listener or as JSON.
//!
//! Everything shown is read from a runtime (the one `check` builds, or the one serving) and
//! resolved by `route.rs` itself: rows are the route tables' own bindings, the no-SNI row is
//! `Table::resolve_sni(None)`. Nothing here decides anything (DESIGN rule 6). The certificate
//! formatting used by `explain` lives here too.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::acme::status::{State, Status};
use crate::config::{Diagnostic, ListenerKind, Report, TlsMode, UnknownSni};
use crate::route::{Binding, Refusal};
use crate::runtime::{format_time, Runtime};
use crate::tls::load::Cert;
use crate::tls::pool::How;

use super::page::{NoSuchRow, Page, Shown};

pub use super::json::Json;

/// Output width the human table is wrapped to.
const WIDTH: usize = 100;

/// The stable JSON name of how a certificate was chosen.
pub fn how_key(how: How) -> &'static str {
    match how {
        How::Pinned => "pinned",
        How::Internal => "internal",
        How::Acme => "acme",
        How::Exact => "exact",
        How::Wildcard => "wildcard",
    }
}

/// The calendar date of a unix time (UTC).
pub fn date(unix: i64) -> String {
    let t = format_time(unix);
    t.get(..10).map(str::to_string).unwrap_or(t)
}

/// Validity in words: "expires 2025-09-01 (89 days left)", "expired on ...", "not valid until ...".
pub fn validity(cert: &Cert, now: i64) -> String {
    if now > cert.not_after {
        format!("expired on {}", date(cert.not_after))
    } else if now < cert.not_before {
        format!("not valid until {}", date(cert.not_before))
    } else {
        let days = (cert.not_after - now) / 86_400;
        format!("expires {} ({days} days left)", date(cert.not_after))
    }
}

/// The fingerprint shortened for tables: first and last four bytes.
pub fn short_fingerprint(cert: &Cert) -> String {
    let fp = cert.fingerprint();
    match (fp.get(..11), fp.get(fp.len().saturating_sub(11)..)) {
        (Some(head), Some(tail)) if fp.len() > 23 => format!("{head}…{tail}"),
        _ => fp,
    }
}

/// The JSON object describing one certificate.
pub fn cert_json(cert: &Cert, now: i64) -> Json {
    Json::Obj(vec![
        ("subject", Json::str(&cert.subject)),
        ("issuer", Json::str(&*cert.issuer)),
        (
            "names",
            Json::Arr(cert.names.iter().map(|n| Json::str(n.as_str())).collect()),
        ),
        ("key_type", Json::str(cert.key_type.to_string())),
        ("not_before", Json::str(format_time(cert.not_before))),
        ("not_after", Json::str(format_time(cert.not_after))),
        (
            "days_left",
            Json::Int((cert.not_after - now).div_euclid(86_400)),
        ),
        ("valid_now", Json::Bool(cert.is_valid_at(now))),
        ("sha256", Json::str(cert.fingerprint())),
        ("cert_file", Json::str(cert.cert_file.display().to_string())),
        ("key_file", Json::str(cert.key_file.display().to_string())),
        ("in_memory", Json::Bool(cert.held().is_held())),
    ])
}

/// Words joined by ", " after `first`, wrapped to `WIDTH` columns; continuation lines start with
/// `indent` spaces.
pub fn wrap(first: &str, words: &[&str], indent: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_string();
    if words.is_empty() {
        line.push_str(" (none)");
    }
    let mut fresh = false;
    for (i, w) in words.iter().enumerate() {
        let piece = if i + 1 < words.len() {
            format!("{w},")
        } else {
            w.to_string()
        };
        if !fresh && line.chars().count() + 1 + piece.chars().count() > WIDTH {
            lines.push(std::mem::replace(&mut line, " ".repeat(indent)));
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(&piece);
        fresh = false;
    }
    lines.push(line);
    lines
}

/// `text` after `prefix`, wrapped at spaces to `WIDTH` columns; continuation lines start with
/// `indent` spaces.
pub fn fill(prefix: &str, text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut line = prefix.to_string();
    let mut fresh = false;
    for word in text.split(' ') {
        if !fresh && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    out.push_str(&line);
    out
}

/// Three lines (or more, when the SAN list wraps) describing a certificate, each starting
/// with `indent` spaces.
pub fn cert_lines(cert: &Cert, now: i64, indent: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    let inner = indent + 7;
    let mut lines = vec![
        format!(
            "{pad}{:<6} {}  issued by {}",
            cert.key_type.to_string(),
            cert.subject,
            cert.issuer
        ),
        format!(
            "{pad}       {}  SHA-256 {}",
            validity(cert, now),
            short_fingerprint(cert)
        ),
    ];
    let names: Vec<&str> = cert.names.iter().map(|n| n.as_str()).collect();
    lines.extend(wrap(&format!("{pad}       SANs:"), &names, inner + 6));
    lines
}

/// What a site's ACME task last reported, in words: "no order tried yet", "ordering since
/// ...", "last order failed ... (N attempts): ...; next try ...". Shared by `bindings`,
/// `explain` and `certs`.
pub fn acme_progress(status: Option<&Status>) -> String {
    let Some(st) = status else {
        return "no order tried yet (no status file: the server has not run this site's task)"
            .to_string();
    };
    let mut out = match (st.state, st.last_attempt) {
        (State::Ordering, Some(at)) => format!("an order is in progress since {}", format_time(at)),
        (State::Ordering, None) => "an order is in progress".to_string(),
        (State::Locked, _) => match &st.held_by {
            Some(node) => format!("fleet node {node} is ordering; this node waits for its certificate"),
            None => "another process or fleet node holds the order lock (an upgrade in progress, or a fleet)".to_string(),
        },
        _ => String::new(),
    };
    if let Some(e) = &st.last_error {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let attempts = match st.attempts {
            1 => "1 failed attempt".to_string(),
            n => format!("{n} failed attempts"),
        };
        out.push_str(&format!(
            "last order failed {} ({attempts}): {}",
            format_time(e.at),
            e.message
        ));
    }
    if let Some(next) = st.next_renewal {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&format!("next try {}", format_time(next)));
    }
    if out.is_empty() {
        out.push_str("waiting");
    }
    out
}

/// Why an ACME site's names have no certificate, with what its task last reported; None when
/// the site (index into the configuration's sites) is not an ACME site waiting for its first
/// certificate. The one wording of "pending" for `bindings`, `explain` and `certs`.
pub fn acme_pending(rt: &Runtime, si: usize) -> Option<String> {
    let site = rt.config.sites.get(si)?;
    let waiting = site.tls == TlsMode::Acme && rt.site_cert(si).is_none();
    waiting.then(|| {
        let status = crate::acme::home(&rt.config)
            .and_then(|home| crate::acme::status::read(&home, &site.name));
        format!(
            "ACME certificate pending: none issued yet, so the names are refused at the handshake (unrecognized_name, 112) until one is; {}",
            acme_progress(status.as_ref())
        )
    })
}

/// One row: a binding of a host on a listener, or the listener's answer to clients without SNI.
#[derive(Debug)]
pub struct Row<'a> {
    /// The bound host, or None for the no-SNI row.
    pub host: Option<&'a str>,
    /// The binding that serves the row (for the no-SNI row, the `no_sni` host's binding).
    pub binding: Option<&'a Binding>,
    pub site: Option<&'a str>,
    /// How the certificates were chosen; None on http listeners and for refusals.
    pub how: Option<How>,
    /// Every certificate variant the server may present, best first.
    pub certs: Vec<Arc<Cert>>,
    /// An internal site in check mode: the local CA issues its certificate at start.
    pub internal_pending: bool,
    /// An ACME site without its first certificate: why, and what its task last did.
    pub acme_pending: Option<String>,
    pub refused: Option<Refusal>,
    /// On http listeners: the https port bound hosts are redirected to.
    pub https_port: Option<u16>,
    /// On https listeners, the site's client-auth policy (index into `Runtime::client_auth`).
    pub client_auth: Option<usize>,
    pub warnings: Vec<&'a Diagnostic>,
}

/// One listener and its rows, sorted by host name.
#[derive(Debug)]
pub struct ListenerView<'a> {
    pub name: &'a str,
    pub address: String,
    pub kind: ListenerKind,
    pub unknown_sni: UnknownSni,
    /// Where unknown names go with `unknown_sni = "passthrough"`.
    pub default_passthrough: Option<String>,
    pub no_sni_host: Option<&'a str>,
    /// https only.
    pub no_sni: Option<Row<'a>>,
    pub rows: Vec<Row<'a>>,
}

/// The `site[N].hosts[M]` diagnostic path of a binding.
fn binding_path(rt: &Runtime, b: &Binding) -> Option<String> {
    let site = rt.config.sites.get(b.site)?;
    let hi = site.hosts.iter().position(|h| *h == b.host)?;
    Some(format!("site[{}].hosts[{hi}]", site.index))
}

/// Whether a host's warning concerns its row on the listener at `address`: not when it names
/// other listeners' addresses only (a shadowing warning concerns the listeners it names).
fn concerns(d: &Diagnostic, address: &str, all: &[String]) -> bool {
    d.message.contains(address) || !all.iter().any(|a| d.message.contains(a.as_str()))
}

/// What a row needs to know about its listener: kind, address, and every listener's address.
struct On<'x> {
    kind: ListenerKind,
    address: &'x str,
    all: &'x [String],
}

fn row<'a>(rt: &'a Runtime, on: &On<'_>, b: &'a Binding, warnings: &[&'a Diagnostic]) -> Row<'a> {
    let kind = on.kind;
    let path = binding_path(rt, b);
    let choice = rt.certs_of(b);
    let internal_pending = kind == ListenerKind::Https
        && choice.is_none()
        && rt
            .config
            .sites
            .get(b.site)
            .is_some_and(|s| s.tls == TlsMode::Internal);
    Row {
        host: Some(b.host.as_str()),
        binding: Some(b),
        site: rt.sites.get(b.site).map(|s| s.name.as_str()),
        how: choice
            .as_ref()
            .map(|c| c.how)
            .or(internal_pending.then_some(How::Internal)),
        certs: choice
            .iter()
            .flat_map(|c| c.variants.iter().cloned())
            .collect(),
        internal_pending,
        acme_pending: (kind == ListenerKind::Https && choice.is_none())
            .then(|| acme_pending(rt, b.site))
            .flatten(),
        refused: None,
        https_port: b.https_port,
        client_auth: (kind == ListenerKind::Https)
            .then(|| rt.sites.get(b.site).and_then(|s| s.client_auth))
            .flatten(),
        warnings: warnings
            .iter()
            .copied()
            .filter(|d| path.as_deref() == Some(d.path.as_str()))
            .filter(|d| concerns(d, on.address, on.all))
            .collect(),
    }
}

/// Every listener's bindings, and the warnings that concern no row.
pub fn collect<'a>(
    rt: &'a Runtime,
    report: &'a Report,
) -> (Vec<ListenerView<'a>>, Vec<&'a Diagnostic>) {
    collect_where(rt, report, |_| true)
}

/// [`collect`] with only the rows of the bindings `keep` takes (a page of sites: the other
/// rows are never built, which is most of the cost at 100,000 sites).
pub fn collect_where<'a>(
    rt: &'a Runtime,
    report: &'a Report,
    keep: impl Fn(&Binding) -> bool,
) -> (Vec<ListenerView<'a>>, Vec<&'a Diagnostic>) {
    let warnings: Vec<&Diagnostic> = report.warnings().collect();
    let all = addresses(rt);
    let mut views = Vec::with_capacity(rt.listeners.len());
    for (l, address) in rt.listeners.iter().zip(&all) {
        let on = On {
            kind: l.config.kind,
            address,
            all: &all,
        };
        let mut rows: Vec<Row<'_>> = l
            .table
            .bindings()
            .filter(|b| keep(b))
            .map(|b| row(rt, &on, b, &warnings))
            .collect();
        rows.sort_by(|a, b| a.host.cmp(&b.host));
        views.push(view(rt, l, &on, rows));
    }
    let attached = |d: &&Diagnostic| {
        views.iter().any(|v| {
            v.rows
                .iter()
                .chain(&v.no_sni)
                .any(|r| r.warnings.iter().any(|w| std::ptr::eq(*w, *d)))
        })
    };
    let rest = warnings.iter().copied().filter(|d| !attached(d)).collect();
    (views, rest)
}

/// The form of a bindings cursor, in words.
pub const KEY_FORM: &str = "LISTENER/HOST";

/// A bindings row's key: its listener's name and its host. A host name holds no `/`, so the
/// last `/` splits it again whatever the listener is called.
pub fn row_key(listener: &str, host: &str) -> String {
    format!("{listener}/{host}")
}

/// One page of the bindings.
#[derive(Debug)]
pub struct Paged<'a> {
    /// The listeners this page shows, each with only this page's rows (a listener with no
    /// bindings at all is shown on the page its place in the order falls on).
    pub views: Vec<ListenerView<'a>>,
    /// The warnings that concern no row of any page.
    pub rest: Vec<&'a Diagnostic>,
    pub shown: Shown,
}

/// The rows of `page`, in the order [`collect`] gives them (listeners in file order, hosts
/// sorted within each): only these rows are built, so a page of 1,000 costs 1,000 rows
/// and one sort of references, whatever the number of sites. An `after` that names no
/// binding is an error, not an empty page: the asker then knows to start again.
pub fn collect_page<'a>(
    rt: &'a Runtime,
    report: &'a Report,
    page: &Page,
) -> Result<Paged<'a>, NoSuchRow> {
    let sorted: Vec<Vec<&Binding>> = rt
        .listeners
        .iter()
        .map(|l| {
            let mut bs: Vec<&Binding> = l.table.bindings().collect();
            // A listener binds a host once, so this order is total.
            bs.sort_unstable_by(|a, b| a.host.as_str().cmp(b.host.as_str()));
            bs
        })
        .collect();
    let total: usize = sorted.iter().map(Vec::len).sum();
    let after = match &page.after {
        None => None,
        Some(key) => Some(position(rt, &sorted, key).ok_or_else(|| NoSuchRow {
            what: "bindings",
            key: key.clone(),
            form: KEY_FORM,
        })?),
    };
    let window = page.window(after, total);
    let warnings: Vec<&Diagnostic> = report.warnings().collect();
    let all = addresses(rt);
    let mut views = Vec::new();
    let mut next = None;
    let mut offset = 0;
    for ((l, bs), address) in rt.listeners.iter().zip(&sorted).zip(&all) {
        let on = On {
            kind: l.config.kind,
            address,
            all: &all,
        };
        let here = offset..offset + bs.len();
        offset = here.end;
        let from = window.start.max(here.start);
        let to = window.end.min(here.end);
        if from < to {
            let mine = &bs[from - here.start..to - here.start];
            let rows = mine.iter().map(|b| row(rt, &on, b, &warnings)).collect();
            if to == window.end && window.end < total {
                next = mine
                    .last()
                    .map(|b| row_key(&l.config.name, b.host.as_str()));
            }
            views.push(view(rt, l, &on, rows));
        } else if bs.is_empty() && shows_empty(&window, here.start, total) {
            views.push(view(rt, l, &on, Vec::new()));
        }
    }
    let rest = unattached(rt, &sorted, &all, &warnings);
    Ok(Paged {
        views,
        rest,
        shown: Shown {
            rows: window.len(),
            total,
            next,
        },
    })
}

/// Whether a page shows a listener without bindings whose place in the order is `at` (the
/// position its first row would have): the page holding the row after it, or the last page
/// when none follows (an empty page asked for after the last row shows nothing).
fn shows_empty(window: &std::ops::Range<usize>, at: usize, total: usize) -> bool {
    window.contains(&at)
        || (at == total && window.end == total && (!window.is_empty() || total == 0))
}

/// The position, in the order of [`collect_page`], of the row whose key is `key`.
fn position(rt: &Runtime, sorted: &[Vec<&Binding>], key: &str) -> Option<usize> {
    let (name, host) = key.rsplit_once('/')?;
    let li = rt.listeners.iter().position(|l| l.config.name == name)?;
    let before: usize = sorted.get(..li)?.iter().map(Vec::len).sum();
    let at = sorted
        .get(li)?
        .binary_search_by(|b| b.host.as_str().cmp(host))
        .ok()?;
    Some(before + at)
}

/// The warnings no row would show, whichever page it is on: one pass over every binding's
/// diagnostic path, skipped when there are no warnings (always, for a running server).
fn unattached<'a>(
    rt: &Runtime,
    sorted: &[Vec<&Binding>],
    all: &[String],
    warnings: &[&'a Diagnostic],
) -> Vec<&'a Diagnostic> {
    let mut attached = vec![false; warnings.len()];
    if !warnings.is_empty() {
        for (bs, address) in sorted.iter().zip(all) {
            for b in bs {
                let Some(path) = binding_path(rt, b) else {
                    continue;
                };
                for (seen, d) in attached.iter_mut().zip(warnings) {
                    *seen = *seen || (d.path == path && concerns(d, address, all));
                }
            }
        }
    }
    warnings
        .iter()
        .zip(attached)
        .filter(|(_, seen)| !seen)
        .map(|(d, _)| *d)
        .collect()
}

/// Every listener's address as text, in listener order.
fn addresses(rt: &Runtime) -> Vec<String> {
    rt.listeners
        .iter()
        .map(|l| l.config.address.to_string())
        .collect()
}

/// A listener with `rows`, and its answer to clients without SNI.
fn view<'a>(
    rt: &'a Runtime,
    l: &'a crate::runtime::ListenerRt,
    on: &On<'_>,
    rows: Vec<Row<'a>>,
) -> ListenerView<'a> {
    let kind = on.kind;
    let no_sni = (kind == ListenerKind::Https).then(|| match l.table.resolve_sni(None) {
        // The binding's own row shows its warnings.
        Ok(r) => Row {
            host: None,
            warnings: Vec::new(),
            ..row(rt, on, r.binding, &[])
        },
        Err(refusal) => Row {
            host: None,
            binding: None,
            site: None,
            how: None,
            certs: Vec::new(),
            internal_pending: false,
            acme_pending: None,
            refused: Some(refusal),
            https_port: None,
            client_auth: None,
            warnings: Vec::new(),
        },
    });
    ListenerView {
        name: &l.config.name,
        address: on.address.to_string(),
        kind,
        unknown_sni: l.table.unknown_sni(),
        default_passthrough: l.config.default_passthrough.as_ref().map(|b| b.to_string()),
        no_sni_host: l.table.no_sni().map(|h| h.as_str()),
        no_sni,
        rows,
    }
}

/// The `unknown_sni` value as written in the configuration file.
pub fn unknown_sni_key(u: UnknownSni) -> String {
    match u {
        UnknownSni::Reject => "reject",
        UnknownSni::NoSni => "no_sni",
        UnknownSni::Passthrough => "passthrough",
    }
    .to_string()
}

/// A site's client-auth policy in words, for `bindings` and `explain`: "client
/// certificates required (policy 1): trusts CN=... (file); CRL: file".
pub fn client_auth_words(rt: &Runtime, policy: usize) -> String {
    let Some(p) = rt.client_auth.get(policy) else {
        return String::new();
    };
    let mut out = format!(
        "client certificates {} (policy {}): trusts {} ({})",
        if p.config.required {
            "required"
        } else {
            "asked for, not required"
        },
        policy + 1,
        p.trusted.join("; "),
        p.config.ca.display()
    );
    if !p.config.crl.is_empty() {
        let crls: Vec<String> = p
            .config
            .crl
            .iter()
            .map(|c| c.display().to_string())
            .collect();
        let _ = write!(out, "; CRL: {}", crls.join(", "));
    }
    out
}

/// The JSON object of a site's client-auth policy (schema in docs/cli.md).
pub fn client_auth_json(rt: &Runtime, policy: Option<usize>, site: Option<usize>) -> Json {
    let Some(p) = policy.and_then(|i| rt.client_auth.get(i)) else {
        return Json::Null;
    };
    let subject_header = site
        .and_then(|s| rt.sites.get(s))
        .and_then(|s| s.subject_header.as_ref())
        .map(|h| h.as_str());
    Json::Obj(vec![
        ("policy", Json::Int(policy.map_or(0, |i| i as i64 + 1))),
        ("required", Json::Bool(p.config.required)),
        ("ca_file", Json::str(p.config.ca.display().to_string())),
        (
            "trusted",
            Json::Arr(p.trusted.iter().map(Json::str).collect()),
        ),
        (
            "crl_files",
            Json::Arr(
                p.config
                    .crl
                    .iter()
                    .map(|c| Json::str(c.display().to_string()))
                    .collect(),
            ),
        ),
        ("subject_header", Json::opt_str(subject_header)),
    ])
}

/// The alert name and code a refusal sends.
pub fn alert_name(refusal: &Refusal) -> &'static str {
    match refusal.alert() {
        112 => "unrecognized_name",
        40 => "handshake_failure",
        _ => "alert",
    }
}

fn how_text(row: &Row<'_>) -> String {
    match (row.internal_pending, row.how) {
        (true, _) => "internal CA (issued at start)".to_string(),
        (false, None) if row.acme_pending.is_some() => "ACME (pending)".to_string(),
        (false, Some(how)) => how.to_string(),
        (false, None) => String::new(),
    }
}

fn human_row(rt: &Runtime, out: &mut String, row: &Row<'_>, view: &ListenerView<'_>, now: i64) {
    let site = row
        .site
        .map(|s| format!("site \"{s}\""))
        .unwrap_or_default();
    let head = match (row.host, &row.refused) {
        (_, Some(refusal)) => {
            format!(
                "  (no SNI) -> refused: {} ({})",
                alert_name(refusal),
                refusal.alert()
            )
        }
        (None, None) => format!(
            "  (no SNI) -> {site} via no_sni = {} · {}",
            view.no_sni_host.unwrap_or("?"),
            how_text(row)
        ),
        (Some(host), None) if view.kind == ListenerKind::Http => match row.https_port {
            Some(port) => format!("  {host} -> {site} · redirect to https port {port}"),
            None => format!("  {host} -> {site} · 404 (the site has no https listener)"),
        },
        (Some(host), None) => format!("  {host} -> {site} · {}", how_text(row)),
    };
    let _ = writeln!(out, "{head}");
    if let Some(policy) = row.client_auth {
        let _ = writeln!(out, "{}", fill("   ", &client_auth_words(rt, policy), 6));
    }
    if let Some(pending) = &row.acme_pending {
        let _ = writeln!(out, "{}", fill("    !", pending, 6));
    }
    for cert in &row.certs {
        for line in cert_lines(cert, now, 4) {
            let _ = writeln!(out, "{line}");
        }
    }
    for w in &row.warnings {
        let _ = writeln!(out, "{}", fill("    ! warning:", &w.message, 6));
    }
}

/// The human table.
pub fn human(rt: &Runtime, views: &[ListenerView<'_>], rest: &[&Diagnostic], now: i64) -> String {
    let mut out = String::new();
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match v.kind {
            ListenerKind::Https => {
                let unknown = match v.unknown_sni {
                    UnknownSni::Reject => "reject (alert unrecognized_name, 112)".to_string(),
                    UnknownSni::NoSni => "no_sni (served like a client without SNI)".to_string(),
                    UnknownSni::Passthrough => match &v.default_passthrough {
                        Some(b) => format!("passthrough to {b}"),
                        None => "passthrough".to_string(),
                    },
                };
                let _ = writeln!(
                    out,
                    "listener \"{}\"  {}  https  unknown SNI: {unknown}",
                    v.name, v.address
                );
            }
            ListenerKind::Http => {
                let _ = writeln!(
                    out,
                    "listener \"{}\"  {}  http (redirects bound hosts to https)",
                    v.name, v.address
                );
            }
        }
        if v.rows.is_empty() {
            let _ = writeln!(out, "  (no hosts bound)");
        }
        for row in v.rows.iter().chain(&v.no_sni) {
            human_row(rt, &mut out, row, v, now);
        }
    }
    if !rest.is_empty() {
        out.push('\n');
        for d in rest {
            let _ = writeln!(out, "{d}");
        }
    }
    out
}

fn diag_json(d: &Diagnostic) -> Json {
    Json::Obj(vec![
        ("path", Json::str(&d.path)),
        ("message", Json::str(&d.message)),
        ("fix", Json::opt_str(d.fix.as_deref())),
    ])
}

fn row_json(rt: &Runtime, row: &Row<'_>, now: i64) -> Json {
    Json::Obj(vec![
        ("host", Json::opt_str(row.host)),
        (
            "binding",
            Json::opt_str(row.binding.map(|b| b.host.as_str())),
        ),
        ("site", Json::opt_str(row.site)),
        ("how", Json::opt_str(row.how.map(how_key))),
        ("internal_pending", Json::Bool(row.internal_pending)),
        ("acme_pending", Json::opt_str(row.acme_pending.as_deref())),
        (
            "certificates",
            Json::Arr(row.certs.iter().map(|c| cert_json(c, now)).collect()),
        ),
        (
            "https_port",
            row.https_port.map_or(Json::Null, |p| Json::Int(p.into())),
        ),
        (
            "client_auth",
            client_auth_json(rt, row.client_auth, row.binding.map(|b| b.site)),
        ),
        (
            "refused",
            row.refused.as_ref().map_or(Json::Null, |r| {
                Json::Obj(vec![
                    ("alert", Json::str(alert_name(r))),
                    ("code", Json::Int(r.alert().into())),
                ])
            }),
        ),
        (
            "warnings",
            Json::Arr(row.warnings.iter().map(|d| diag_json(d)).collect()),
        ),
    ])
}

/// The JSON document (schema in docs/cli.md).
pub fn json(
    rt: &Runtime,
    views: &[ListenerView<'_>],
    rest: &[&Diagnostic],
    config: &Path,
    now: i64,
) -> Json {
    let listeners = views
        .iter()
        .map(|v| {
            Json::Obj(vec![
                ("name", Json::str(v.name)),
                ("address", Json::str(&v.address)),
                (
                    "kind",
                    Json::str(if v.kind == ListenerKind::Https {
                        "https"
                    } else {
                        "http"
                    }),
                ),
                (
                    "unknown_sni",
                    match v.kind {
                        ListenerKind::Http => Json::Null,
                        ListenerKind::Https => Json::str(unknown_sni_key(v.unknown_sni)),
                    },
                ),
                ("no_sni_host", Json::opt_str(v.no_sni_host)),
                (
                    "no_sni",
                    v.no_sni
                        .as_ref()
                        .map_or(Json::Null, |r| row_json(rt, r, now)),
                ),
                (
                    "bindings",
                    Json::Arr(v.rows.iter().map(|r| row_json(rt, r, now)).collect()),
                ),
            ])
        })
        .collect();
    Json::Obj(vec![
        ("version", Json::Int(1)),
        ("config", Json::str(config.display().to_string())),
        ("now", Json::str(format_time(now))),
        ("listeners", Json::Arr(listeners)),
        (
            "warnings",
            Json::Arr(rest.iter().map(|d| diag_json(d)).collect()),
        ),
    ])
}
