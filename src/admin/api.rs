//! The endpoints: `GET /metrics`, `GET /api/v1/status`, `GET /api/v1/bindings`,
//! `GET /api/v1/certs`, `GET /api/v1/explain`, `POST /api/v1/reload`. Schemas in
//! docs/admin.md; `bindings`, `certs` and `explain` are the documents the commands print
//! with `--json` (docs/cli.md), computed by `inspect/` over the runtime now serving, and
//! paged the same way (`limit`, `after`).
//!
//! Work that grows with the number of sites or certificates runs on the blocking pool, so
//! a scrape or a status request never holds up the threads that run connections.

use http::StatusCode;

use super::{problem, response, Body, Context, JSON};
use crate::config::{Diagnostic, ListenerKind, Severity};
use crate::control::{self, Command, Outcome, Reply};
use crate::inspect::page::DEFAULT_LIMIT;
use crate::inspect::{self, json::Json, Page, Query};
use crate::runtime::{format_time, unix_now, Runtime};

/// The Prometheus text exposition format.
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn metrics(ctx: &Context) -> http::Response<Body> {
    let rt = ctx.runtime.load_full();
    let metrics = ctx.shared.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render(&rt)).await {
        Ok(text) => response(StatusCode::OK, METRICS, text),
        Err(e) => {
            tracing::error!(error = %e, "rendering the metrics failed");
            problem(
                "/metrics",
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed (see the server's log)",
            )
        }
    }
}

pub(super) async fn status(ctx: &Context) -> http::Response<Body> {
    let rt = ctx.runtime.load_full();
    let (started, last) = (ctx.started, ctx.history.last());
    json_off_loop("/api/v1/status", move || {
        status_json(&rt, started, last.as_ref())
    })
    .await
}

/// `GET /api/v1/bindings?limit=N&after=KEY`: what `portico bindings --json` prints, for
/// the running configuration, a page at a time. The build's warnings are not kept with the
/// runtime; the last reload's are in `status`.
pub(super) async fn bindings(ctx: &Context, query: &str) -> http::Response<Body> {
    const PATH: &str = "/api/v1/bindings";
    match page(query) {
        Ok(page) => document(ctx, PATH, Query::Bindings(page)).await,
        Err(message) => problem(PATH, StatusCode::BAD_REQUEST, &message),
    }
}

/// `GET /api/v1/certs?limit=N&after=KEY`: what `portico certs --json` prints, for the
/// running configuration, a page at a time.
pub(super) async fn certs(ctx: &Context, query: &str) -> http::Response<Body> {
    const PATH: &str = "/api/v1/certs";
    match page(query) {
        Ok(page) => document(ctx, PATH, Query::Certs(page)).await,
        Err(message) => problem(PATH, StatusCode::BAD_REQUEST, &message),
    }
}

/// The page `limit` and `after` ask for, as `--limit` and `--after` would (the same
/// default); a message for the 400 answer when one is wrong.
fn page(query: &str) -> Result<Page, String> {
    let value = |key| super::auth::query_value(query, key);
    let limit = match value("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                format!("limit must be a whole number of rows, 0 for all (got {v:?})")
            })?,
    };
    let after = value("after")
        .map(|key| inspect::page::check_key(&key).map(|()| key))
        .transpose()
        .map_err(|why| format!("after: {why}"))?;
    Ok(Page { limit, after })
}

/// `GET /api/v1/explain?host=NAME&local=IP:PORT&no_sni=1&rsa_only=1`: what `portico explain
/// --json` prints, for the running configuration.
pub(super) async fn explain(ctx: &Context, query: &str) -> http::Response<Body> {
    const PATH: &str = "/api/v1/explain";
    let value = |key| super::auth::query_value(query, key);
    let flag = |key| value(key).is_some_and(|v| v == "1" || v == "true");
    let Some(host) = value("host").filter(|h| !h.is_empty()) else {
        return problem(
            PATH,
            StatusCode::BAD_REQUEST,
            "name the host to explain: ?host=NAME (and optionally local=IP:PORT, no_sni=1, rsa_only=1)",
        );
    };
    let local = match value("local").map(|l| l.parse::<std::net::SocketAddr>()) {
        None => None,
        Some(Ok(addr)) => Some(addr),
        Some(Err(_)) => {
            return problem(
                PATH,
                StatusCode::BAD_REQUEST,
                "local must be an address and port: 127.0.0.1:443 or [::1]:443",
            )
        }
    };
    let options = inspect::explain::Options {
        local,
        no_sni: flag("no_sni"),
        rsa_only: flag("rsa_only"),
    };
    document(ctx, PATH, Query::Explain { host, options }).await
}

/// The answer to `query` about the runtime serving now, as the command prints it with
/// `--json`; 400 when the page's cursor names no row.
async fn document(ctx: &Context, path: &'static str, query: Query) -> http::Response<Body> {
    let rt = ctx.runtime.load_full();
    let computed = tokio::task::spawn_blocking(move || {
        let report = crate::config::Report::default();
        inspect::document(&rt, &report, &query, unix_now())
    })
    .await;
    match computed {
        Ok(Ok(json)) => response(StatusCode::OK, JSON, json.pretty()),
        Ok(Err(no_such_row)) => problem(path, StatusCode::BAD_REQUEST, &no_such_row.to_string()),
        Err(e) => not_computed(path, &e),
    }
}

/// The answer when the blocking task computing a document failed.
fn not_computed(path: &'static str, e: &tokio::task::JoinError) -> http::Response<Body> {
    tracing::error!(error = %e, path, "an admin endpoint failed");
    problem(
        path,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the answer could not be computed (see the server's log)",
    )
}

/// Computes a JSON document on the blocking pool and answers it.
pub(super) async fn json_off_loop(
    path: &'static str,
    compute: impl FnOnce() -> Json + Send + 'static,
) -> http::Response<Body> {
    match tokio::task::spawn_blocking(compute).await {
        Ok(json) => response(StatusCode::OK, JSON, json.pretty()),
        Err(e) => not_computed(path, &e),
    }
}

/// Runs a reload through the serve loop, as `portico reload` does, and returns its outcome:
/// 200 when the new configuration serves, 422 when it did not (nothing changed).
pub(super) async fn reload(ctx: &Context) -> http::Response<Body> {
    const PATH: &str = "/api/v1/reload";
    match control::ask_as(&ctx.requests, Command::Reload, "admin API").await {
        Some(Reply::Reload(outcome)) => {
            let status = if outcome.ok {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            response(status, JSON, outcome_json(&outcome).pretty())
        }
        Some(_) => problem(
            PATH,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the serve loop gave an unexpected answer",
        ),
        None => problem(
            PATH,
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ),
    }
}

fn status_json(rt: &Runtime, started: i64, last: Option<&Outcome>) -> Json {
    let listeners = rt
        .listeners
        .iter()
        .map(|l| {
            Json::Obj(vec![
                ("name", Json::str(&l.config.name)),
                ("address", Json::str(l.config.address.to_string())),
                (
                    "kind",
                    Json::str(match l.config.kind {
                        ListenerKind::Https => "https",
                        ListenerKind::Http => "http",
                    }),
                ),
                ("hosts", Json::Int(l.table.len() as i64)),
            ])
        })
        .collect();
    // A certificate in the pool and pinned by a site too counts once.
    let mut seen = std::collections::HashSet::new();
    let pool = rt.pool();
    let certificates = pool
        .certs()
        .map(|c| c.sha256)
        .chain(rt.site_certs().map(|(_, c)| c.sha256))
        .filter(|sha| seen.insert(*sha))
        .count();
    Json::Obj(vec![
        ("version", Json::str(env!("CARGO_PKG_VERSION"))),
        ("pid", Json::Int(i64::from(std::process::id()))),
        ("started_at", Json::str(format_time(started))),
        ("uptime_seconds", Json::Int((unix_now() - started).max(0))),
        (
            "config_file",
            Json::str(rt.config.file.display().to_string()),
        ),
        ("listeners", Json::Arr(listeners)),
        ("sites", Json::Int(rt.sites.len() as i64)),
        ("certificates", Json::Int(certificates as i64)),
        ("last_reload", last.map_or(Json::Null, outcome_json)),
    ])
}

/// A reload's outcome; the same object in `POST /api/v1/reload`, in the certificate
/// changes' answers and in the status.
pub(super) fn outcome_json(o: &Outcome) -> Json {
    Json::Obj(vec![
        ("ok", Json::Bool(o.ok)),
        ("at", Json::str(format_time(o.at))),
        ("reason", Json::str(&o.reason)),
        ("summary", Json::str(&o.summary)),
        (
            "diagnostics",
            Json::Arr(o.report.items.iter().map(diagnostic_json).collect()),
        ),
    ])
}

fn diagnostic_json(d: &Diagnostic) -> Json {
    Json::Obj(vec![
        (
            "severity",
            Json::str(match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            }),
        ),
        ("path", Json::str(&d.path)),
        ("message", Json::str(&d.message)),
        ("fix", Json::opt_str(d.fix.clone())),
    ])
}
