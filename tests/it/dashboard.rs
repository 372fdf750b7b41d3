//! The dashboard in a real browser (headless Chromium through chromedriver), against the
//! real binary serving the README's quickstart: without signing in it shows nothing; after
//! the printed sign-in URL it lists the three sites with their certificates' real expiry
//! dates, its search box filters through the server, and its charts are drawn. The
//! screenshot is kept at `target/tmp/dashboard.png` (`CARGO_TARGET_TMPDIR`).

use std::collections::BTreeMap;

use serde_json::json;

use crate::support::admin::{request, Logged, To};
use crate::support::client::{get, Opts};
use crate::support::webdriver::Browser;
use crate::support::{free_port, quickstart};

#[tokio::test]
async fn the_dashboard_lists_searches_and_charts_the_quickstart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, ports) = quickstart(dir.path());
    let (https, admin_port) = (ports.https, ports.admin);
    let server = Logged::serve(&config);
    let line = server.line("admin: ");
    let sign_in = line.trim_start_matches("admin: ").to_string();
    let base = format!("http://127.0.0.1:{admin_port}");
    assert!(sign_in.starts_with(&format!("{base}/?token=")), "{line}");

    // Some requests, for the requests chart to draw.
    let site1: std::net::SocketAddr = format!("127.0.0.1:{https}").parse().expect("addr");
    for _ in 0..3 {
        let (_, reply) = get(site1, &Opts::sni("site1.localhost"), "site1.localhost", "/").await;
        assert_eq!(reply.status, 200);
    }

    // The certificates' real expiry, from the API.
    let token = std::fs::read_to_string(dir.path().join("state/admin.token")).expect("token");
    let bearer = format!("Bearer {}", token.trim());
    let to = To::Tcp(format!("127.0.0.1:{admin_port}").parse().expect("addr"));
    let certs = request(&to, "GET", "/api/v1/certs", &[("authorization", &bearer)])
        .await
        .json();
    let expiry: BTreeMap<String, String> = certs["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .map(|c| {
            (
                c["sites"][0].as_str().expect("site").to_string(),
                c["certificate"]["not_after"]
                    .as_str()
                    .expect("not_after")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        expiry.keys().collect::<Vec<_>>(),
        ["site1", "site2", "site3"]
    );

    let browser = Browser::start().await;

    // Not signed in: the page is refused and shows no data.
    browser.goto(&format!("{base}/")).await;
    let refused = browser
        .run(
            "return [document.body.innerText, document.getElementById('sites') === null]",
            json!([]),
        )
        .await;
    assert!(
        refused[0]
            .as_str()
            .is_some_and(|t| t.contains("needs the token")),
        "{refused}"
    );
    assert_eq!(refused[1], true, "no dashboard without the token");

    // Signed in with the printed URL: the cookie is set and the browser lands on `/`.
    browser.goto(&sign_in).await;
    let rows = browser
        .wait_for(
            "the three sites, each with an expiry date",
            "const rows = [...document.querySelectorAll('#sites tbody tr')];
             if (rows.length !== 3) return null;
             const out = rows.map((r) => {
               const t = r.querySelector('td.expires time');
               return t && [r.getAttribute('data-site'), t.getAttribute('datetime'), t.textContent];
             });
             return out.every(Boolean) ? out : null;",
        )
        .await;
    let url = browser.run("return location.href", json!([])).await;
    assert_eq!(url, format!("{base}/"), "the token left the address bar");
    let shown: BTreeMap<String, (String, String)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let s = |i: usize| r[i].as_str().expect("text").to_string();
            (s(0), (s(1), s(2)))
        })
        .collect();
    for (site, not_after) in &expiry {
        let (datetime, text) = &shown[site];
        assert_eq!(datetime, not_after, "{site}'s expiry on the page");
        assert_eq!(text, &not_after[..10], "{site}'s expiry date as shown");
    }

    // The certificates, soonest expiry first, with the same dates.
    let listed = browser
        .wait_for(
            "the certificates table",
            "const rows = [...document.querySelectorAll('#certs tbody tr')];
             return rows.length === 3
               ? rows.map((r) => [r.getAttribute('data-sites'),
                                  r.querySelector('time').getAttribute('datetime')])
               : null;",
        )
        .await;
    let mut by_expiry: Vec<(&String, &String)> = expiry.iter().collect();
    by_expiry.sort_by_key(|(site, at)| (at.as_str(), site.as_str()));
    let listed: Vec<(String, String)> = listed
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r[0].as_str().expect("site").to_string(),
                r[1].as_str().expect("at").to_string(),
            )
        })
        .collect();
    let mut expected: Vec<(String, String)> = by_expiry
        .iter()
        .map(|(s, a)| (s.to_string(), a.to_string()))
        .collect();
    // Equal expiry times may come in either order; the dates must still be ascending.
    assert!(listed.windows(2).all(|w| w[0].1 <= w[1].1), "{listed:?}");
    let mut sorted = listed.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);

    // The search box filters through the server's paged endpoint.
    browser.type_into("#sites-search", "site2").await;
    let filtered = browser
        .wait_for(
            "the sites list filtered to site2",
            "const rows = [...document.querySelectorAll('#sites tbody tr')];
             return rows.length === 1 ? rows[0].getAttribute('data-site') : null;",
        )
        .await;
    assert_eq!(filtered, "site2");
    let asked = browser
        .run(
            "return performance.getEntriesByType('resource')
               .some((e) => e.name.includes('/api/v1/sites?q=site2&offset=0&limit=50'))",
            json!([]),
        )
        .await;
    assert_eq!(asked, true, "the search went to the server");

    // The charts are drawn: site1's requests, and the expiry timeline's three certificates.
    let peak = browser
        .wait_for(
            "site1's line in the requests chart",
            "const p = document.querySelector('#requests-chart path.series[data-series=\"site1\"]');
             return p && Number(p.getAttribute('data-peak')) > 0 && p.getAttribute('d').startsWith('M')
               ? Number(p.getAttribute('data-peak')) : null;",
        )
        .await;
    assert!(peak.as_f64().is_some_and(|p| p > 0.0), "{peak}");
    let bars = browser
        .run(
            "return [...document.querySelectorAll('#expiry-chart rect')]
               .reduce((n, r) => n + Number(r.getAttribute('data-count')), 0)",
            json!([]),
        )
        .await;
    assert_eq!(bars, 3, "every certificate has its bar");
    let handshakes = browser
        .run(
            "return !!document.querySelector('#handshakes-chart path.series[data-series=\"ok\"]')",
            json!([]),
        )
        .await;
    assert_eq!(handshakes, true, "the handshakes chart has the ok line");

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&artifact, &png).expect("keep the screenshot");
    eprintln!("dashboard screenshot: {}", artifact.display());
    drop(browser);
    drop(server);
}

/// The dashboard's endpoints over the Unix socket (no token there), at a size where paging
/// matters: 120 sites, searched and paged by the server; bad parameters are 400s.
#[tokio::test]
async fn the_dashboard_endpoints_page_search_and_refuse_bad_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toml = format!(
        "[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:{}\"\n",
        free_port()
    );
    for i in 0..120 {
        toml.push_str(&format!(
            "[[site]]\nname = \"s{i:03}\"\nhosts = [\"h{i:03}.example.test\"]\ntls = \"internal\"\nrespond = {{ body = \"{i}\" }}\n"
        ));
    }
    let config = dir.path().join("portico.toml");
    std::fs::write(&config, toml).expect("write config");
    let _server = Logged::serve(&config);
    let to = To::Unix(dir.path().join("state/admin.sock"));
    crate::support::eventually("the admin socket", || {
        dir.path().join("state/admin.sock").exists().then_some(())
    });

    let page = request(&to, "GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let script = request(&to, "GET", "/assets/dashboard.js", &[]).await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(script
        .header("cache-control")
        .is_some_and(|c| c.contains("immutable")));

    let all = request(&to, "GET", "/api/v1/sites?offset=100&limit=50", &[])
        .await
        .json();
    assert_eq!(all["total"], 120);
    let names: Vec<&str> = all["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names.len(), 20, "the last page");
    assert_eq!(names[0], "s100");
    let first = &all["sites"][0];
    assert_eq!(first["bindings"][0]["host"], "h100.example.test");
    assert_eq!(first["bindings"][0]["how"], "internal");
    assert!(first["bindings"][0]["certificate"]["not_after"].is_string());

    // A host substring, in any case, finds its site; a site name too.
    let found = request(&to, "GET", "/api/v1/sites?q=H042.Example", &[])
        .await
        .json();
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["sites"][0]["name"], "s042");
    let found = request(&to, "GET", "/api/v1/sites?q=s11", &[]).await.json();
    assert_eq!(found["total"], 10, "s110 to s119: {found}");

    let certs = request(&to, "GET", "/api/v1/expiry?limit=5", &[])
        .await
        .json();
    assert_eq!(certs["total"], 120);
    assert_eq!(certs["certificates"].as_array().map(Vec::len), Some(5));
    let bars: i64 = certs["timeline"]["bars"]
        .as_array()
        .expect("bars")
        .iter()
        .map(|b| b.as_i64().expect("count"))
        .sum();
    assert_eq!(
        bars + certs["timeline"]["later"].as_i64().expect("later"),
        120
    );
    let acme = request(&to, "GET", "/api/v1/expiry?source=acme", &[])
        .await
        .json();
    assert_eq!(acme["total"], 0);

    let series = request(&to, "GET", "/api/v1/series", &[]).await.json();
    assert!(
        !series["samples"].as_array().expect("samples").is_empty(),
        "a first sample is taken at start: {series}"
    );
    assert_eq!(series["current"]["handshakes"][0]["listener"], "https");
    let reloads = request(&to, "GET", "/api/v1/reloads", &[]).await.json();
    assert_eq!(reloads["reloads"], json!([]));
    // Two reloads, the second of a broken file: newest first, each with its report.
    assert_eq!(
        request(&to, "POST", "/api/v1/reload", &[]).await.status,
        200
    );
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("h007.example.test", "bad host!")).expect("break it");
    assert_eq!(
        request(&to, "POST", "/api/v1/reload", &[]).await.status,
        422
    );
    let reloads = request(&to, "GET", "/api/v1/reloads", &[]).await.json();
    let list = reloads["reloads"].as_array().expect("reloads");
    assert_eq!(list.len(), 2, "{reloads}");
    assert_eq!(list[0]["ok"], false);
    assert_eq!(list[0]["diagnostics"][0]["path"], "site[7].hosts[0]");
    assert_eq!(list[1]["ok"], true);
    assert_eq!(list[1]["reason"], "admin API");

    for (target, says) in [
        ("/api/v1/sites?offset=-1", "offset must be a whole number"),
        ("/api/v1/sites?limit=100000", "limit must be 1 to 500"),
        ("/api/v1/expiry?limit=x", "limit must be a whole number"),
        (
            "/api/v1/expiry?source=disk",
            "source must be file, internal or acme",
        ),
    ] {
        let a = request(&to, "GET", target, &[]).await;
        assert_eq!(a.status, 400, "{target}: {a:?}");
        assert!(
            a.json()["error"].as_str().is_some_and(|e| e.contains(says)),
            "{target}: {a:?}"
        );
    }
    let post = request(&to, "POST", "/api/v1/sites", &[]).await;
    assert_eq!(post.status, 405);
}
