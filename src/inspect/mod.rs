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
pub mod page;

use crate::config::Report;
use crate::runtime::Runtime;
use json::Json;
pub use page::{NoSuchRow, Page};

/// A question about a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Every listener x host name -> site and certificate, a page at a time.
    Bindings(Page),
    /// Every certificate in use, a page at a time.
    Certs(Page),
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

/// The answer to `query` about `rt`, as a command prints it; an error when a page's cursor
/// names no row. `report` holds the build's diagnostics, which `bindings` shows beside the
/// rows they concern; a running server does not keep them (its last reload's are in the
/// admin status), so it passes an empty one.
pub fn answer(
    rt: &Runtime,
    report: &Report,
    query: &Query,
    format: Format,
    now: i64,
) -> Result<String, NoSuchRow> {
    Ok(match format {
        Format::Text => text(rt, report, query, now)?,
        Format::Json => document(rt, report, query, now)?.pretty(),
    })
}

fn text(rt: &Runtime, report: &Report, query: &Query, now: i64) -> Result<String, NoSuchRow> {
    let (mut out, shown) = match query {
        Query::Bindings(page) => {
            let paged = bindings::collect_page(rt, report, page)?;
            let text = bindings::human(rt, &paged.views, &paged.rest, now);
            (text, paged.shown)
        }
        Query::Certs(page) => {
            let (entries, shown) = certs::collect_page(rt, page)?;
            // An empty page of a list that has rows is not "no certificates".
            let text = if entries.is_empty() && shown.total > 0 {
                String::new()
            } else {
                certs::human(&entries, now)
            };
            (text, shown)
        }
        Query::Explain { host, options } => {
            let ex = explain::explain(rt, host, options, now);
            return Ok(explain::human(&ex, options, now));
        }
    };
    if let Some(footer) = shown.footer() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&footer);
    }
    Ok(out)
}

/// The JSON document answering `query`; it names the configuration file `rt` was built
/// from. Pages add `total` (rows in the whole list) and `next` (the cursor of the next
/// page, or null) to the documents' fields.
pub fn document(rt: &Runtime, report: &Report, query: &Query, now: i64) -> Result<Json, NoSuchRow> {
    let file = &rt.config.file;
    Ok(match query {
        Query::Bindings(page) => {
            let paged = bindings::collect_page(rt, report, page)?;
            let doc = bindings::json(rt, &paged.views, &paged.rest, file, now);
            with_page(doc, &paged.shown)
        }
        Query::Certs(page) => {
            let (entries, shown) = certs::collect_page(rt, page)?;
            with_page(certs::json(&entries, file, now), &shown)
        }
        Query::Explain { host, options } => {
            let ex = explain::explain(rt, host, options, now);
            explain::json(rt, &ex, options, file, now)
        }
    })
}

/// `doc` with a page's `total` and `next` after its own fields.
fn with_page(doc: Json, shown: &page::Shown) -> Json {
    match doc {
        Json::Obj(mut fields) => {
            fields.push(("total", Json::Int(shown.total as i64)));
            fields.push(("next", Json::opt_str(shown.next.as_deref())));
            Json::Obj(fields)
        }
        other => other,
    }
}
