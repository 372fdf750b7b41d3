//! What a runtime would do, in words: every binding (`bindings`), every certificate
//! (`certs`) and one connection's resolution step by step (`explain`), each as text for
//! people and as JSON (schemas in docs/cli.md).
//!
//! One computation, three askers: the commands over the runtime `check` builds from the
//! file, the control socket (`--live`) and the admin API over the runtime serving now. So
//! `portico explain --live` and `GET /api/v1/explain` can never disagree with each other,
//! and neither with the server: every step calls the server's own resolution code (DESIGN
//! rule 6); these modules only collect its answers and word them.

pub mod bindings;
pub mod certs;
pub mod explain;
pub mod json;

use crate::config::Report;
use crate::runtime::Runtime;
use json::Json;

/// A question about a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Every listener x host name -> site and certificate.
    Bindings,
    /// Every certificate in use.
    Certs,
    /// One connection for `host`.
    Explain {
        host: String,
        options: explain::Options,
    },
}

/// How an answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The answer to `query` about `rt`, as a command prints it. `report` holds the build's
/// diagnostics, which `bindings` shows beside the rows they concern; a running server does
/// not keep them (its last reload's are in the admin status), so it passes an empty one.
pub fn answer(rt: &Runtime, report: &Report, query: &Query, format: Format, now: i64) -> String {
    match format {
        Format::Text => text(rt, report, query, now),
        Format::Json => document(rt, report, query, now).pretty(),
    }
}

fn text(rt: &Runtime, report: &Report, query: &Query, now: i64) -> String {
    match query {
        Query::Bindings => {
            let (views, rest) = bindings::collect(rt, report);
            bindings::human(rt, &views, &rest, now)
        }
        Query::Certs => certs::human(&certs::collect(rt), now),
        Query::Explain { host, options } => {
            explain::human(&explain::explain(rt, host, options, now), options, now)
        }
    }
}

/// The JSON document answering `query`; it names the configuration file `rt` was built from.
pub fn document(rt: &Runtime, report: &Report, query: &Query, now: i64) -> Json {
    let file = &rt.config.file;
    match query {
        Query::Bindings => {
            let (views, rest) = bindings::collect(rt, report);
            bindings::json(rt, &views, &rest, file, now)
        }
        Query::Certs => certs::json(&certs::collect(rt), file, now),
        Query::Explain { host, options } => {
            let ex = explain::explain(rt, host, options, now);
            explain::json(rt, &ex, options, file, now)
        }
    }
}
