//! The dashboard: the page at `/`, its script and style (embedded in the binary, no build
//! step, nothing loaded from elsewhere), the JSON endpoints only it needs, and the sampler
//! that feeds its charts.
//!
//! The page is static; everything it shows comes from the API as JSON: the existing
//! `status` and these, paged and searched on the server so that a configuration of 100,000
//! sites sends a browser one page at a time: `GET /api/v1/sites`, `GET /api/v1/expiry`,
//! `GET /api/v1/series` (the ring of [`crate::metrics::samples`]) and `GET
//! /api/v1/reloads`. Whatever grows with the number of sites runs on the blocking pool.
//! The script builds the page with DOM calls and `textContent`, never from HTML strings,
//! and the Content-Security-Policy allows nothing but this listener's own script and
//! style.

use std::sync::Arc;

use http::{header, HeaderValue, StatusCode};
use tokio::task::JoinHandle;

use super::api::{json_off_loop, outcome_json};
use super::auth::query_value;
use super::{problem, response, Body, Context};
use crate::config::{Action, ListenerKind, TlsMode};
use crate::inspect::certs::{Entry, Source};
use crate::inspect::json::Json;
use crate::metrics::samples::{self, Sample};
use crate::runtime::{format_time, unix_now, Runtime};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// The page may run its own script and style and talk to this listener, nothing else; no
/// other site may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Certificates with fewer days left than this are marked.
const SOON_DAYS: i64 = 14;
/// Rows per page when the query does not say.
const DEFAULT_LIMIT: usize = 50;
/// The most rows one answer holds.
const MAX_LIMIT: usize = 500;
/// The longest search text.
const MAX_QUERY: usize = 256;
/// The expiry timeline's bars are this many days wide, at most [`TIMELINE_BARS`] of them.
const BAR_DAYS: i64 = 7;
const TIMELINE_BARS: usize = 53;

/// FNV-1a over the assets, computed at compile time: the assets' URLs carry it, so a
/// browser may keep them for a year and still loads new ones after an upgrade.
const fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}
const ASSETS_KEY: u64 = fnv(
    fnv(0xcbf2_9ce4_8422_2325, SCRIPT.as_bytes()),
    STYLE.as_bytes(),
);

/// `GET /`: the page, its asset URLs keyed by [`ASSETS_KEY`].
pub(super) fn page() -> http::Response<Body> {
    let mut r = response(StatusCode::OK, "text/html; charset=utf-8", html());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn html() -> String {
    PAGE.replace("ASSETS_KEY", &format!("{ASSETS_KEY:016x}"))
}

/// The script or the style, cached for a year: their URL changes with their content.
fn asset(content_type: &'static str, body: &'static str) -> http::Response<Body> {
    let mut r = response(StatusCode::OK, content_type, body);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    r
}

/// The dashboard's paths besides `/`; None for any other path. `get` is whether the method
/// is GET or HEAD, the only ones these answer.
pub(super) async fn route(
    get: bool,
    path: &str,
    query: Option<&str>,
    ctx: &Context,
) -> Option<http::Response<Body>> {
    let query = query.unwrap_or("");
    let known = matches!(
        path,
        "/assets/dashboard.js"
            | "/assets/dashboard.css"
            | "/api/v1/sites"
            | "/api/v1/expiry"
            | "/api/v1/series"
            | "/api/v1/reloads"
    );
    if !known {
        return None;
    }
    if !get {
        return Some(super::not_allowed(path, "GET, HEAD"));
    }
    Some(match path {
        "/assets/dashboard.js" => asset("text/javascript; charset=utf-8", SCRIPT),
        "/assets/dashboard.css" => asset("text/css; charset=utf-8", STYLE),
        "/api/v1/sites" => sites(ctx, query).await,
        "/api/v1/expiry" => expiry(ctx, query).await,
        "/api/v1/series" => series(ctx).await,
        _ => reloads(ctx).await,
    })
}

/// What to show of a long list: the rows matching `q`, from `offset`, at most `limit`.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    /// Lowercase; empty matches everything.
    q: String,
    offset: usize,
    limit: usize,
}

impl Page {
    /// Reads `q`, `offset` and `limit`; a message for the 400 answer when one is wrong.
    fn parse(query: &str) -> Result<Page, String> {
        let q = query_value(query, "q").unwrap_or_default();
        if q.chars().count() > MAX_QUERY {
            return Err(format!(
                "q is longer than {MAX_QUERY} characters: search for part of a name"
            ));
        }
        let number = |key: &str, default: usize| match query_value(query, key) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().map_err(|_| {
                format!("{key} must be a whole number of rows, 0 or more (got {v:?})")
            }),
        };
        let offset = number("offset", 0)?;
        let limit = number("limit", DEFAULT_LIMIT)?;
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(format!("limit must be 1 to {MAX_LIMIT} (got {limit})"));
        }
        Ok(Page {
            q: q.to_ascii_lowercase(),
            offset,
            limit,
        })
    }

    fn matches(&self, text: &str) -> bool {
        self.q.is_empty() || contains_ignoring_case(text, &self.q)
    }

    fn envelope(&self, total: usize) -> Vec<(&'static str, Json)> {
        vec![
            ("q", Json::str(&self.q)),
            ("offset", Json::Int(self.offset as i64)),
            ("limit", Json::Int(self.limit as i64)),
            ("total", Json::Int(total as i64)),
        ]
    }
}

/// Whether `hay` holds `needle` (already lowercase), ASCII case ignored, without
/// allocating: run for every host of every site on each search.
fn contains_ignoring_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

fn bad_request(path: &str, message: &str) -> http::Response<Body> {
    problem(path, StatusCode::BAD_REQUEST, message)
}

fn action_key(a: &Action) -> &'static str {
    match a {
        Action::Root(_) => "root",
        Action::Redirect { .. } => "redirect",
        Action::Respond { .. } => "respond",
        Action::Passthrough(_) => "passthrough",
        Action::Proxy(_) => "proxy",
    }
}

fn tls_key(t: &TlsMode) -> &'static str {
    match t {
        TlsMode::Pool => "pool",
        TlsMode::Pinned(_) => "pinned",
        TlsMode::Internal => "internal",
        TlsMode::Acme => "acme",
    }
}

/// `GET /api/v1/sites?q=&offset=&limit=`: the sites whose name or a host contains `q`, in
/// configuration order, with their bindings as `portico bindings` computes them.
async fn sites(ctx: &Context, query: &str) -> http::Response<Body> {
    const PATH: &str = "/api/v1/sites";
    let page = match Page::parse(query) {
        Ok(p) => p,
        Err(message) => return bad_request(PATH, &message),
    };
    let rt = ctx.runtime.load_full();
    json_off_loop(PATH, move || sites_json(&rt, &page, unix_now())).await
}

fn sites_json(rt: &Runtime, page: &Page, now: i64) -> Json {
    let matching: Vec<usize> = rt
        .config
        .sites
        .iter()
        .enumerate()
        .filter(|(_, s)| page.matches(&s.name) || s.hosts.iter().any(|h| page.matches(h.as_str())))
        .map(|(i, _)| i)
        .collect();
    let shown: Vec<usize> = matching
        .iter()
        .copied()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    // The bindings of the sites shown, from the same rows `portico bindings` prints.
    let report = crate::config::Report::default();
    let mut bindings: std::collections::HashMap<usize, Vec<Json>> =
        shown.iter().map(|&i| (i, Vec::new())).collect();
    let (views, _) =
        crate::inspect::bindings::collect_where(rt, &report, |b| bindings.contains_key(&b.site));
    for view in &views {
        for row in &view.rows {
            let (Some(b), Some(host)) = (row.binding, row.host) else {
                continue;
            };
            let Some(list) = bindings.get_mut(&b.site) else {
                continue;
            };
            let how = row.how.map(crate::inspect::bindings::how_key);
            list.push(Json::Obj(vec![
                ("listener", Json::str(view.name)),
                ("address", Json::str(&view.address)),
                (
                    "kind",
                    Json::str(match view.kind {
                        ListenerKind::Https => "https",
                        ListenerKind::Http => "http",
                    }),
                ),
                ("host", Json::str(host)),
                ("how", Json::opt_str(how)),
                (
                    "certificate",
                    row.certs
                        .first()
                        .map_or(Json::Null, |c| crate::inspect::bindings::cert_json(c, now)),
                ),
                ("pending", Json::opt_str(row.acme_pending.as_deref())),
            ]));
        }
    }
    let items = shown
        .iter()
        .filter_map(|&i| {
            let site = rt.config.sites.get(i)?;
            // In listener order, hosts sorted within each (the views' order).
            let list = bindings.remove(&i).unwrap_or_default();
            Some(Json::Obj(vec![
                ("name", Json::str(&site.name)),
                (
                    "hosts",
                    Json::Arr(site.hosts.iter().map(|h| Json::str(h.as_str())).collect()),
                ),
                ("action", Json::str(action_key(&site.action))),
                ("tls", Json::str(tls_key(&site.tls))),
                ("bindings", Json::Arr(list)),
            ]))
        })
        .collect();
    let mut obj = page.envelope(matching.len());
    obj.push(("sites", Json::Arr(items)));
    Json::Obj(obj)
}

/// `GET /api/v1/expiry?q=&offset=&limit=&source=`: every certificate, soonest expiry first
/// (sites still waiting for one before all), with counts and a timeline of the matching
/// ones; each entry as `portico certs --json` prints it.
async fn expiry(ctx: &Context, query: &str) -> http::Response<Body> {
    const PATH: &str = "/api/v1/expiry";
    let page = match Page::parse(query) {
        Ok(p) => p,
        Err(message) => return bad_request(PATH, &message),
    };
    let source = match query_value(query, "source").as_deref() {
        None | Some("") => None,
        Some("file") => Some(Source::File),
        Some("internal") => Some(Source::Internal),
        Some("acme") => Some(Source::Acme),
        Some(other) => {
            return bad_request(
                PATH,
                &format!("source must be file, internal or acme (got {other:?})"),
            )
        }
    };
    let rt = ctx.runtime.load_full();
    json_off_loop(PATH, move || {
        let entries = crate::inspect::certs::collect(&rt);
        expiry_json(entries, &rt.config.file, &page, source, unix_now())
    })
    .await
}

fn entry_matches(e: &Entry, page: &Page) -> bool {
    e.names.iter().any(|n| page.matches(n))
        || e.sites.iter().any(|s| page.matches(s))
        || e.cert.as_ref().is_some_and(|c| page.matches(&c.subject))
}

fn expiry_json(
    entries: Vec<Entry>,
    file: &std::path::Path,
    page: &Page,
    source: Option<Source>,
    now: i64,
) -> Json {
    let mut matching: Vec<Entry> = entries
        .into_iter()
        .filter(|e| source.is_none_or(|s| e.source == s) && entry_matches(e, page))
        .collect();
    // Waiting for a first certificate sorts before any expiry (None before Some).
    matching.sort_by_key(|e| e.cert.as_ref().map(|c| c.not_after));
    let days_left = |e: &Entry| {
        e.cert
            .as_ref()
            .map(|c| (c.not_after - now).div_euclid(86_400))
    };
    let (mut expired, mut soon, mut pending, mut later) = (0, 0, 0, 0);
    let mut bars = Vec::new();
    for e in &matching {
        match days_left(e) {
            None => pending += 1,
            Some(d) if d < 0 => expired += 1,
            Some(d) => {
                if d < SOON_DAYS {
                    soon += 1;
                }
                match usize::try_from(d / BAR_DAYS) {
                    Ok(i) if i < TIMELINE_BARS => {
                        if bars.len() <= i {
                            bars.resize(i + 1, 0);
                        }
                        bars[i] += 1;
                    }
                    _ => later += 1,
                }
            }
        }
    }
    let total = matching.len();
    let shown: Vec<Entry> = matching
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    // The entries exactly as `portico certs --json` (and /api/v1/certs) write them.
    let certificates = match crate::inspect::certs::json(&shown, file, now) {
        Json::Obj(fields) => fields
            .into_iter()
            .find(|(k, _)| *k == "certificates")
            .map_or(Json::Arr(Vec::new()), |(_, v)| v),
        _ => Json::Arr(Vec::new()),
    };
    let mut obj = page.envelope(total);
    obj.extend([
        ("now", Json::str(format_time(now))),
        ("soon_days", Json::Int(SOON_DAYS)),
        ("expired", Json::Int(expired)),
        ("soon", Json::Int(soon)),
        ("pending", Json::Int(pending)),
        (
            "timeline",
            Json::Obj(vec![
                ("bar_days", Json::Int(BAR_DAYS)),
                ("bars", Json::Arr(bars.into_iter().map(Json::Int).collect())),
                ("later", Json::Int(later)),
            ]),
        ),
        ("certificates", certificates),
    ]);
    Json::Obj(obj)
}

/// `GET /api/v1/series`: the samples of the last 15 minutes and the interval under way.
async fn series(ctx: &Context) -> http::Response<Body> {
    let rt = ctx.runtime.load_full();
    let metrics = ctx.shared.metrics.clone();
    json_off_loop("/api/v1/series", move || {
        let (kept, current) = metrics.samples.read(&rt, unix_now());
        Json::Obj(vec![
            (
                "interval_seconds",
                Json::Int(samples::INTERVAL.as_secs() as i64),
            ),
            ("kept", Json::Int(samples::KEPT as i64)),
            ("top_sites", Json::Int(samples::TOP_SITES as i64)),
            (
                "outcomes",
                Json::Arr(samples::outcomes().map(Json::str).collect()),
            ),
            ("samples", Json::Arr(kept.iter().map(sample_json).collect())),
            ("current", sample_json(&current)),
        ])
    })
    .await
}

fn sample_json(s: &Sample) -> Json {
    Json::Obj(vec![
        ("at", Json::str(format_time(s.at))),
        (
            "milliseconds",
            Json::Int((s.seconds * 1000.0).round() as i64),
        ),
        (
            "handshakes",
            Json::Arr(
                s.listeners
                    .iter()
                    .map(|l| {
                        Json::Obj(vec![
                            ("listener", Json::str(&l.name)),
                            (
                                "counts",
                                Json::Arr(
                                    l.handshakes.iter().map(|&n| Json::Int(n as i64)).collect(),
                                ),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "requests",
            Json::Arr(
                s.sites
                    .iter()
                    .map(|(site, n)| {
                        Json::Obj(vec![
                            ("site", Json::str(site)),
                            ("count", Json::Int(*n as i64)),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("other_requests", Json::Int(s.other_requests as i64)),
        ("other_sites", Json::Int(s.other_sites as i64)),
    ])
}

/// `GET /api/v1/reloads`: every reload kept (the last 32), newest first, each with its
/// report.
async fn reloads(ctx: &Context) -> http::Response<Body> {
    let history = ctx.history.all();
    json_off_loop("/api/v1/reloads", move || {
        Json::Obj(vec![(
            "reloads",
            Json::Arr(history.iter().map(outcome_json).collect()),
        )])
    })
    .await
}

/// The sampler's task, stopped when dropped.
pub(super) struct Sampler(JoinHandle<()>);

impl Drop for Sampler {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the sampler: one sample now (so the charts have a point from the start), then
/// one every [`samples::INTERVAL`], each on the blocking pool since it walks every site.
pub(super) fn sampler(ctx: Arc<Context>) -> Sampler {
    Sampler(tokio::spawn(async move {
        let mut every = tokio::time::interval(samples::INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let rt = ctx.runtime.load_full();
            let metrics = ctx.shared.metrics.clone();
            let taken =
                tokio::task::spawn_blocking(move || metrics.samples.take(&rt, unix_now())).await;
            if let Err(e) = taken {
                tracing::warn!(error = %e, "dashboard sample failed");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_parameters_are_checked() {
        assert_eq!(
            Page::parse(""),
            Ok(Page {
                q: String::new(),
                offset: 0,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(
            Page::parse("q=Site%32&offset=100&limit=500"),
            Ok(Page {
                q: "site2".to_string(),
                offset: 100,
                limit: 500
            })
        );
        for (query, says) in [
            ("offset=-1", "offset must be a whole number"),
            ("offset=1e3", "offset must be a whole number"),
            (
                "offset=99999999999999999999999",
                "offset must be a whole number",
            ),
            ("limit=0", "limit must be 1 to 500"),
            ("limit=501", "limit must be 1 to 500"),
            ("limit=ten", "limit must be a whole number"),
        ] {
            let e = Page::parse(query).expect_err(query);
            assert!(e.contains(says), "{query}: {e}");
        }
        let long = format!("q={}", "a".repeat(MAX_QUERY + 1));
        assert!(Page::parse(&long).is_err());
    }

    #[test]
    fn search_ignores_ascii_case_and_matches_substrings() {
        assert!(contains_ignoring_case("Shop.Example.TEST", "example.test"));
        assert!(contains_ignoring_case("a", ""));
        assert!(!contains_ignoring_case("site1", "site12"));
        // Not ASCII: compared byte for byte, and never split inside a character.
        assert!(contains_ignoring_case("café", "é"));
    }

    #[test]
    fn the_assets_key_follows_their_content() {
        assert_ne!(
            fnv(0xcbf2_9ce4_8422_2325, b"a"),
            fnv(0xcbf2_9ce4_8422_2325, b"b")
        );
        let html = html();
        assert!(html.contains(&format!("/assets/dashboard.js?v={ASSETS_KEY:016x}")));
        assert!(html.contains(&format!("/assets/dashboard.css?v={ASSETS_KEY:016x}")));
        assert!(!html.contains("<script>"), "no inline script");
    }
}
