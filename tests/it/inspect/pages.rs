//! Pages of `bindings` and `certs` (`--limit`, `--after`), from the real binary: following
//! `next` from the first page to the last shows every row exactly once and in the order of
//! the whole list, with the same total on every page, from the file and from a running
//! server (`--live`); a cursor that names no row is an error that says so.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{p, portico};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{eventually, free_port, Running};

/// A configuration of `sites` sites `h{i}.page.test` (zero-padded to `width` digits, so the
/// names sort as the numbers do), all on https listener "a" and the first `on_b` of them
/// on http listener "b" as well; https listener "c", between them, binds nothing. One pool
/// wildcard covers every host.
struct Sites {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    file: PathBuf,
}

fn sites(count: usize, width: usize, on_b: usize) -> Sites {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (cert, key) = pki.leaf("wild", &["*.page.test"], Key::Ecdsa, Validity::Current);
    let (a, b, c) = (free_port(), free_port(), free_port());
    let mut toml = format!(
        "[[listener]]\nname = \"a\"\naddress = \"127.0.0.1:{a}\"\n\
         [[listener]]\nname = \"c\"\naddress = \"127.0.0.1:{c}\"\n\
         [[listener]]\nname = \"b\"\naddress = \"127.0.0.1:{b}\"\nkind = \"http\"\n\
         [[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
        p(&cert),
        p(&key)
    );
    for i in 0..count {
        let listeners = if i < on_b {
            "[\"a\", \"b\"]"
        } else {
            "[\"a\"]"
        };
        toml += &format!(
            "[[site]]\nname = \"s{i}\"\nhosts = [\"h{i:0width$}.page.test\"]\nlisteners = {listeners}\nrespond = {{ body = \"{i}\" }}\n"
        );
    }
    let file = dir.path().join("portico.toml");
    std::fs::write(&file, toml).expect("write config");
    Sites {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        file,
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The `LISTENER/HOST` of every binding row of a `bindings --json` document, in order.
fn binding_rows(doc: &Value) -> Vec<String> {
    let mut rows = Vec::new();
    for l in doc["listeners"].as_array().expect("listeners") {
        for b in l["bindings"].as_array().expect("bindings") {
            rows.push(format!("{}/{}", str(&l["name"]), str(&b["host"])));
        }
    }
    rows
}

fn str(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Runs `what` (`bindings` or `certs`) with `args` and `--json --limit N`, following `next`
/// until it is null. Returns every page's document; checks that each holds at most `limit`
/// rows (as `rows` counts them), that `total` is `total` on each and that `next` is the key
/// `key` gives the page's last row.
fn page_through(
    what: &str,
    args: &[&str],
    limit: usize,
    total: usize,
    rows: impl Fn(&Value) -> Vec<String>,
) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let limit = limit.to_string();
        let mut argv = vec![what, "--json", "--limit", &limit];
        argv.extend(args);
        if let Some(a) = &after {
            argv.extend(["--after", a]);
        }
        let (code, out, err) = portico(&argv);
        assert_eq!(code, 0, "{argv:?}: {err}");
        let doc = json(&out);
        assert_eq!(doc["total"], total, "{argv:?}");
        let mine = rows(&doc);
        assert!(
            mine.len() <= limit.parse().expect("n"),
            "{argv:?}: {mine:?}"
        );
        after = match &doc["next"] {
            Value::Null => None,
            next => {
                assert_eq!(Some(str(next)), mine.last().map(String::as_str), "{argv:?}");
                Some(str(next).to_string())
            }
        };
        pages.push(doc);
        assert!(pages.len() <= total + 1, "the pages never end");
        if after.is_none() {
            return pages;
        }
    }
}

/// The rows the 30-site configuration has, in the order `bindings` shows them.
fn expected_bindings() -> Vec<String> {
    let a = (0..30).map(|i| format!("a/h{i:02}.page.test"));
    let b = (0..20).map(|i| format!("b/h{i:02}.page.test"));
    a.chain(b).collect()
}

/// Pages of text: the rows of each (`LISTENER/HOST`), and each page's last line.
fn text_pages(args: &[&str]) -> Vec<(Vec<String>, String)> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut argv = vec!["bindings", "--limit", "10"];
        argv.extend(args);
        if let Some(a) = &after {
            argv.extend(["--after", a]);
        }
        let (code, out, err) = portico(&argv);
        assert_eq!(code, 0, "{argv:?}: {err}");
        let mut rows = Vec::new();
        let mut listener = String::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("listener \"") {
                listener = rest.split('"').next().expect("name").to_string();
            } else if let Some((host, _)) =
                line.strip_prefix("  h").and_then(|l| l.split_once(" -> "))
            {
                rows.push(format!("{listener}/h{host}"));
            }
        }
        let last = out.lines().last().unwrap_or_default().to_string();
        after = last
            .split_once("; next: --after ")
            .map(|(_, key)| key.to_string());
        pages.push((rows, last));
        assert!(pages.len() <= 10, "the pages never end");
        if after.is_none() {
            return pages;
        }
    }
}

#[test]
fn bindings_pages_show_every_row_once_in_order() {
    let s = sites(30, 2, 20);
    let file = p(&s.file);
    let all = expected_bindings();

    // Everything at once: the order the pages must keep, and no footer.
    let (code, out, err) = portico(&["bindings", "-c", &file, "--json", "--limit", "0"]);
    assert_eq!(code, 0, "{err}");
    let doc = json(&out);
    assert_eq!(binding_rows(&doc), all);
    assert_eq!(
        (&doc["total"], &doc["next"]),
        (&Value::from(50), &Value::Null)
    );
    let (_, text, _) = portico(&["bindings", "-c", &file, "--limit", "0"]);
    assert!(!text.contains(" rows;"), "{text}");

    let pages = page_through("bindings", &["-c", &file], 10, 50, binding_rows);
    assert_eq!(pages.len(), 5);
    let paged: Vec<String> = pages.iter().flat_map(binding_rows).collect();
    assert_eq!(paged, all, "every row once, in order");
    // Listener "c" binds nothing: shown once, on the page its place falls on (after a's
    // last row, before b's first).
    let c_on: Vec<usize> = pages
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d["listeners"]
                .as_array()
                .expect("listeners")
                .iter()
                .any(|l| l["name"] == "c")
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(c_on, [3], "{pages:#?}");

    // The text pages: the same rows, each page ending with how many and the next flag.
    let text = text_pages(&["-c", &file]);
    let rows: Vec<String> = text.iter().flat_map(|(r, _)| r.clone()).collect();
    assert_eq!(rows, all);
    assert_eq!(text[0].1, "10 of 50 rows; next: --after a/h09.page.test");
    assert_eq!(text[4].1, "10 of 50 rows; this is the last page");
}

#[test]
fn a_cursor_that_names_no_row_is_an_error_and_after_the_last_row_the_page_is_empty() {
    let s = sites(30, 2, 20);
    let file = p(&s.file);
    for bad in ["a/nope.page.test", "nowhere/h01.page.test", "h01.page.test"] {
        let (code, out, err) = portico(&["bindings", "-c", &file, "--after", bad]);
        assert_eq!(code, 1, "{bad}: {out}");
        assert!(out.is_empty(), "{bad}: {out}");
        assert!(
            err.contains(&format!("no bindings row has the key {bad:?}"))
                && err.contains("LISTENER/HOST"),
            "{bad}: {err}"
        );
    }
    let (code, _, err) = portico(&["bindings", "-c", &file, "--after", ""]);
    assert_eq!(code, 2, "an empty cursor is a usage error: {err}");
    let (code, _, err) = portico(&["bindings", "-c", &file, "--limit", "-1"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = portico(&[
        "bindings",
        "-c",
        &file,
        "--json",
        "--after",
        "b/h19.page.test",
    ]);
    assert_eq!(code, 0, "{err}");
    let doc = json(&out);
    assert_eq!(binding_rows(&doc), Vec::<String>::new());
    assert_eq!(
        (&doc["total"], &doc["next"]),
        (&Value::from(50), &Value::Null)
    );
    let (_, out, _) = portico(&["bindings", "-c", &file, "--after", "b/h19.page.test"]);
    assert_eq!(out, "0 of 50 rows; this is the last page\n");
}

#[test]
fn without_a_limit_a_page_holds_1000_rows() {
    let s = sites(1001, 4, 0);
    let file = p(&s.file);
    let (code, out, err) = portico(&["bindings", "-c", &file, "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc = json(&out);
    let rows = binding_rows(&doc);
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows.last().map(String::as_str), Some("a/h0999.page.test"));
    assert_eq!(doc["total"], 1001);
    assert_eq!(doc["next"], "a/h0999.page.test");
    let (_, out, _) = portico(&["bindings", "-c", &file, "--after", "a/h0999.page.test"]);
    assert!(out.contains("  h1000.page.test -> site \"s1000\""), "{out}");
    assert!(
        out.ends_with("\n1 of 1001 rows; this is the last page\n"),
        "{out}"
    );
}

/// Waits until the server behind `file` answers on its control socket.
fn answering(file: &str) {
    eventually("the server answers --live", || {
        let (code, _, _) = portico(&["bindings", "-c", file, "--live", "--limit", "1"]);
        (code == 0).then_some(())
    });
}

#[test]
fn live_pages_are_the_servers_own_rows() {
    let s = sites(30, 2, 20);
    let file = p(&s.file);
    let _server = Running::serve(&s.file);
    answering(&file);
    let pages = page_through("bindings", &["-c", &file, "--live"], 10, 50, binding_rows);
    let paged: Vec<String> = pages.iter().flat_map(binding_rows).collect();
    assert_eq!(paged, expected_bindings());
    let text = text_pages(&["-c", &file, "--live"]);
    let rows: Vec<String> = text.iter().flat_map(|(r, _)| r.clone()).collect();
    assert_eq!(rows, expected_bindings());
    assert_eq!(text[1].1, "10 of 50 rows; next: --after a/h19.page.test");

    // The server says the cursor names no row, and the command fails with its words.
    let (code, out, err) = portico(&[
        "bindings",
        "-c",
        &file,
        "--live",
        "--after",
        "a/gone.page.test",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("no bindings row has the key \"a/gone.page.test\""),
        "{err}"
    );
    assert!(s.dir.join("state/portico.sock").exists());
}

/// A pool directory of 25 pairs `c00.pem`..`c24.pem` and two sites with pinned
/// certificates; the certs rows are the pool's files in order, then the two sites.
fn pool_dir() -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    for i in 0..25 {
        let name = format!("c{i:02}");
        pki.put_pair(&certs, &name, &name, &[&format!("{name}.pool.test")]);
    }
    let port = free_port();
    let mut toml = format!(
        "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
         [[certificate]]\ndir = \"certs\"\n\
         [[site]]\nname = \"pooled\"\nhosts = [\"c03.pool.test\"]\nrespond = {{ body = \"p\" }}\n"
    );
    for site in ["p1", "p2"] {
        let (c, k) = pki.leaf(
            site,
            &[&format!("{site}.test")],
            Key::Ecdsa,
            Validity::Current,
        );
        toml += &format!(
            "[[site]]\nname = \"{site}\"\nhosts = [\"{site}.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nrespond = {{ body = \"{site}\" }}\n",
            p(&c),
            p(&k)
        );
    }
    let file = dir.path().join("portico.toml");
    std::fs::write(&file, toml).expect("write config");
    let mut keys: Vec<String> = (0..25)
        .map(|i| format!("pool:{}", p(&certs.join(format!("c{i:02}.pem")))))
        .collect();
    keys.extend(["site:p1".to_string(), "site:p2".to_string()]);
    (dir, file, keys)
}

/// The key of every entry of a `certs --json` document: `pool:FILE` for a certificate
/// from the `pool` directory, `site:NAME` for a site's own.
fn cert_rows(pool: &Path) -> impl Fn(&Value) -> Vec<String> + '_ {
    move |doc| {
        doc["certificates"]
            .as_array()
            .expect("certificates")
            .iter()
            .map(|e| {
                let file = str(&e["certificate"]["cert_file"]);
                if Path::new(file).starts_with(pool) {
                    format!("pool:{file}")
                } else {
                    format!("site:{}", str(&e["sites"][0]))
                }
            })
            .collect()
    }
}

#[test]
fn certs_pages_of_a_pool_directory() {
    let (dir, file, keys) = pool_dir();
    let pool = dir.path().join("certs");
    let rows = cert_rows(&pool);
    let file = p(&file);
    let pages = page_through("certs", &["-c", &file], 10, 27, &rows);
    let sizes: Vec<usize> = pages.iter().map(|d| rows(d).len()).collect();
    assert_eq!(sizes, [10, 10, 7]);
    let paged: Vec<String> = pages.iter().flat_map(&rows).collect();
    assert_eq!(paged, keys, "every certificate once, in order");
    // The pool certificate a site uses says so on whichever page it is.
    let c03 = &pages[0]["certificates"][3];
    assert_eq!(c03["sites"], serde_json::json!(["pooled"]), "{c03}");

    let (code, out, err) = portico(&["certs", "-c", &file, "--limit", "10"]);
    assert_eq!(code, 0, "{err}");
    let footer = format!("\n10 of 27 rows; next: --after {}\n", keys[9]);
    assert!(out.ends_with(&footer), "{out}");
    assert_eq!(out.matches("\nfile  ").count() + 1, 10, "{out}");

    for bad in ["pool:/nowhere/c01.pem", "site:nobody", "c01.pem", "site:"] {
        let (code, _, err) = portico(&["certs", "-c", &file, "--after", bad]);
        assert_eq!(code, 1, "{bad}");
        assert!(
            err.contains(&format!("no certs row has the key {bad:?}")) && err.contains("pool:FILE"),
            "{bad}: {err}"
        );
    }

    // The running server pages its certificates the same way.
    let _server = Running::serve(Path::new(&file));
    answering(&file);
    let live = page_through("certs", &["-c", &file, "--live"], 10, 27, &rows);
    let paged: Vec<String> = live.iter().flat_map(&rows).collect();
    assert_eq!(paged, keys);
    drop(dir);
}
