//! The page at `/`. For now a placeholder that says the dashboard is coming and links to
//! what exists; the dashboard itself (every asset embedded, no build step) replaces it.

use http::{header, HeaderValue, StatusCode};

use super::{response, Body};

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Portico admin</title>
<style>body { font: 16px/1.5 system-ui, sans-serif; max-width: 40em; margin: 3em auto; padding: 0 1em; }</style>
</head>
<body>
<h1>Portico admin</h1>
<p>The dashboard is coming. Meanwhile this listener answers:</p>
<ul>
<li><a href="/api/v1/status">/api/v1/status</a>: version, uptime, listeners, counts, the last reload</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><code>POST /api/v1/reload</code>: reload the configuration file</li>
</ul>
<p>See docs/admin.md.</p>
</body>
</html>
"#;

pub(super) fn page() -> http::Response<Body> {
    let mut r = response(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    // Nothing but the inline style may load, and no other site may frame the page.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    r
}
