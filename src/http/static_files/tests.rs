use super::cache::CACHE_VALID;
use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DIGITS: &[u8] = b"0123456789";

/// A scratch directory holding a document root and a secret beside it,
/// removed when the test ends.
struct Fixture {
    base: PathBuf,
    root: Root,
}

impl Fixture {
    fn new() -> Fixture {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let base = std::env::temp_dir().join(format!(
            "portico-static-{}-{}-{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let site = base.join("site");
        std::fs::create_dir_all(site.join("dir")).expect("create dir");
        std::fs::create_dir_all(site.join("empty")).expect("create empty");
        std::fs::create_dir_all(site.join("a")).expect("create a");
        std::fs::create_dir_all(site.join("a b")).expect("create a b");
        std::fs::create_dir_all(site.join("evil.com")).expect("create evil.com");
        std::fs::create_dir_all(site.join("trap")).expect("create trap");
        let write = |name: &str, data: &[u8]| {
            std::fs::write(site.join(name), data).expect("write fixture file");
        };
        write("index.html", b"<h1>home</h1>\n");
        write("dir/index.html", b"<h1>dir</h1>\n");
        write("a b/index.html", b"spaced\n");
        write("evil.com/index.html", b"not evil\n");
        write("digits.txt", DIGITS);
        write("empty.txt", b"");
        for name in [
            "style.css",
            "app.js",
            "mod.mjs",
            "data.json",
            "image.png",
            "photo.JPG",
            "font.woff2",
            "doc.pdf",
            "notes.md",
            "table.csv",
            "pic.svg",
            "blob.xyz",
            "noextension",
            "PAGE.HTML",
            "%2e%2e",
        ] {
            write(name, b"x");
        }
        std::fs::write(base.join("secret.txt"), b"top secret\n").expect("write secret");
        symlink(base.join("secret.txt"), site.join("link-out")).expect("symlink out");
        symlink("digits.txt", site.join("link-in.txt")).expect("symlink in");
        symlink("..", site.join("linkdir-out")).expect("symlink dir out");
        symlink("../../secret.txt", site.join("trap/index.html")).expect("symlink index out");
        let root = Root::new(&site).expect("root");
        Fixture { base, root }
    }

    fn site(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

async fn request(
    root: &Root,
    method: Method,
    path: &str,
    pairs: &[(&str, &str)],
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(value.as_bytes()).expect("header value"),
        );
    }
    serve(root, &method, path, &headers).await
}

async fn get(root: &Root, path: &str) -> Response<Body> {
    request(root, Method::GET, path, &[]).await
}

async fn body_of(response: Response<Body>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes()
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {name}"))
}

#[tokio::test]
async fn cached_small_files_answer_like_fresh_ones_and_are_looked_at_again() {
    let fx = Fixture::new();
    std::fs::write(fx.site().join("hot.txt"), b"0123456789").expect("write");
    let first = get(&fx.root, "/hot.txt").await;
    let etag = header(&first, "etag").to_owned();
    assert_eq!(body_of(first).await, "0123456789");
    // Served again (from memory): same validators, ranges and conditions still work.
    let again = get(&fx.root, "/hot.txt").await;
    assert_eq!(header(&again, "etag"), etag);
    assert_eq!(body_of(again).await, "0123456789");
    let ranged = request(&fx.root, Method::GET, "/hot.txt", &[("range", "bytes=2-4")]).await;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body_of(ranged).await, "234");
    let cond = request(
        &fx.root,
        Method::GET,
        "/hot.txt",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(cond.status(), StatusCode::NOT_MODIFIED);
    // After the cache's validity, a changed file is read again.
    std::fs::write(fx.site().join("hot.txt"), b"changed").expect("write");
    tokio::time::sleep(CACHE_VALID + Duration::from_millis(200)).await;
    let fresh = get(&fx.root, "/hot.txt").await;
    assert_ne!(header(&fresh, "etag"), etag);
    assert_eq!(body_of(fresh).await, "changed");
}

#[tokio::test]
async fn concurrent_misses_share_one_read_and_an_ended_read_wakes_the_waiters() {
    let fx = Fixture::new();
    // Spawned together, they all miss while the first one's read is on the blocking pool.
    let answers: Vec<_> = (0..16)
        .map(|_| {
            let root = fx.root.clone();
            tokio::spawn(async move { get(&root, "/digits.txt").await })
        })
        .collect();
    for answer in answers {
        let response = answer.await.expect("request task");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_of(response).await, "0123456789");
    }
    // A read that stores nothing (a large file, an error, a cancelled request) still
    // wakes its waiters, and the next miss reads again.
    let cache = Arc::new(FileCache::default());
    let Lookup::Load(reader) = cache.lookup("a") else {
        panic!("the first miss reads");
    };
    let Lookup::Wait(mut waiter) = cache.lookup("a") else {
        panic!("a second miss waits");
    };
    drop(reader);
    assert!(waiter.changed().await.is_err(), "the reader never sends");
    assert!(matches!(cache.lookup("a"), Lookup::Load(_)));
}

#[tokio::test]
async fn serves_index_for_root_and_directories() {
    let fx = Fixture::new();
    let response = get(&fx.root, "/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_eq!(body_of(response).await, "<h1>home</h1>\n");

    let response = get(&fx.root, "/dir/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_of(response).await, "<h1>dir</h1>\n");

    let response = get(&fx.root, "//dir//./").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_of(response).await, "<h1>dir</h1>\n");
}

#[tokio::test]
async fn hidden_files_are_never_served_but_well_known_is() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.site().join(".git")).expect("mkdir");
    std::fs::write(fx.site().join(".git/config"), b"[core]").expect("write");
    std::fs::write(fx.site().join(".env"), b"SECRET=1").expect("write");
    std::fs::create_dir_all(fx.site().join(".well-known")).expect("mkdir");
    std::fs::write(fx.site().join(".well-known/security.txt"), b"Contact: x").expect("write");
    symlink(".env", fx.site().join("env.txt")).expect("symlink to hidden");
    for path in ["/.env", "/.git/config", "/%2eenv", "/env.txt", "/.git/"] {
        assert_eq!(
            get(&fx.root, path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let response = get(&fx.root, "/.well-known/security.txt").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_of(response).await, "Contact: x");
}

#[tokio::test]
async fn directory_without_slash_redirects() {
    let fx = Fixture::new();
    let response = get(&fx.root, "/dir").await;
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header(&response, "location"), "/dir/");

    let response = get(&fx.root, "/a%20b").await;
    assert_eq!(header(&response, "location"), "/a%20b/");
    let response = get(&fx.root, "/a%20b/").await;
    assert_eq!(body_of(response).await, "spaced\n");

    // A doubled leading slash must not turn into a protocol-relative
    // redirect to another host.
    let response = get(&fx.root, "//evil.com").await;
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header(&response, "location"), "/evil.com/");

    let response = get(&fx.root, "/.").await;
    assert_eq!(header(&response, "location"), "/");
}

#[tokio::test]
async fn never_lists_directories() {
    let fx = Fixture::new();
    let response = get(&fx.root, "/empty/").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_of(response).await, "not found\n");
}

#[tokio::test]
async fn missing_and_misused_paths_are_not_found() {
    let fx = Fixture::new();
    for path in [
        "/nope",
        "/nope/",
        "/digits.txt/",
        "/digits.txt/more",
        "/dir/nope.html",
    ] {
        let response = get(&fx.root, path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            header(&response, "content-type"),
            "text/plain; charset=utf-8"
        );
    }
    let long = format!("/{}", "a".repeat(300));
    assert_eq!(get(&fx.root, &long).await.status(), StatusCode::NOT_FOUND);
    let deep = "/abc".repeat(2000);
    assert_eq!(get(&fx.root, &deep).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn content_types_follow_the_extension() {
    let fx = Fixture::new();
    let cases = [
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/mod.mjs", "text/javascript; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/image.png", "image/png"),
        ("/photo.JPG", "image/jpeg"),
        ("/font.woff2", "font/woff2"),
        ("/doc.pdf", "application/pdf"),
        ("/notes.md", "text/markdown; charset=utf-8"),
        ("/table.csv", "text/csv; charset=utf-8"),
        ("/pic.svg", "image/svg+xml"),
        ("/digits.txt", "text/plain; charset=utf-8"),
        ("/PAGE.HTML", "text/html; charset=utf-8"),
        ("/blob.xyz", "application/octet-stream"),
        ("/noextension", "application/octet-stream"),
    ];
    for (path, expected) in cases {
        let response = get(&fx.root, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "content-type"), expected, "{path}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    }
}

#[tokio::test]
async fn full_response_has_validators_and_length() {
    let fx = Fixture::new();
    let response = get(&fx.root, "/digits.txt").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-length"), "10");
    assert_eq!(header(&response, "accept-ranges"), "bytes");
    let etag = header(&response, "etag");
    assert!(etag.starts_with("\"a-") && etag.ends_with('"'), "{etag}");
    let modified = header(&response, "last-modified");
    assert!(httpdate::parse_http_date(modified).is_ok(), "{modified}");
    assert_eq!(body_of(response).await, DIGITS);

    let response = get(&fx.root, "/empty.txt").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-length"), "0");
    assert!(body_of(response).await.is_empty());
}

#[tokio::test]
async fn if_none_match_gives_not_modified() {
    let fx = Fixture::new();
    let first = get(&fx.root, "/digits.txt").await;
    let etag = header(&first, "etag").to_owned();
    let modified = header(&first, "last-modified").to_owned();

    for value in [
        etag.clone(),
        format!("\"other\", {etag}"),
        format!("\"a,b\",{etag}"),
        format!("W/{etag}"),
        "*".to_owned(),
    ] {
        let response = request(
            &fx.root,
            Method::GET,
            "/digits.txt",
            &[("if-none-match", &value)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{value}");
        assert_eq!(header(&response, "etag"), etag);
        assert_eq!(header(&response, "last-modified"), modified);
        assert!(response.headers().get("content-length").is_none());
        assert!(body_of(response).await.is_empty());
    }

    let response = request(
        &fx.root,
        Method::GET,
        "/digits.txt",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_modified_since_gives_not_modified() {
    let fx = Fixture::new();
    let first = get(&fx.root, "/digits.txt").await;
    let modified = header(&first, "last-modified").to_owned();

    let response = request(
        &fx.root,
        Method::GET,
        "/digits.txt",
        &[("if-modified-since", &modified)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    let old = "Sun, 06 Nov 1994 08:49:37 GMT";
    let response = request(
        &fx.root,
        Method::GET,
        "/digits.txt",
        &[("if-modified-since", old)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    // If-None-Match takes precedence: a non-matching tag means 200 even
    // though the date alone would allow 304.
    let response = request(
        &fx.root,
        Method::GET,
        "/digits.txt",
        &[
            ("if-modified-since", &modified),
            ("if-none-match", "\"other\""),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = request(
        &fx.root,
        Method::GET,
        "/digits.txt",
        &[("if-modified-since", "not a date")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_match_and_if_unmodified_since_fail_with_412() {
    let fx = Fixture::new();
    let first = get(&fx.root, "/digits.txt").await;
    let etag = header(&first, "etag").to_owned();
    let modified = header(&first, "last-modified").to_owned();

    let failing: [(&str, String); 4] = [
        ("if-match", "\"other\"".to_owned()),
        // If-Match uses strong comparison, so a weak tag never matches.
        ("if-match", format!("W/{etag}")),
        (
            "if-unmodified-since",
            "Sun, 06 Nov 1994 08:49:37 GMT".to_owned(),
        ),
        ("if-match", "garbage".to_owned()),
    ];
    for (name, value) in &failing {
        let response = request(&fx.root, Method::GET, "/digits.txt", &[(name, value)]).await;
        assert_eq!(
            response.status(),
            StatusCode::PRECONDITION_FAILED,
            "{name}: {value}"
        );
        assert_eq!(body_of(response).await, "precondition failed\n");
    }

    let passing: [(&str, String); 4] = [
        ("if-match", etag.clone()),
        ("if-match", format!("\"x\", {etag}")),
        ("if-match", "*".to_owned()),
        ("if-unmodified-since", modified.clone()),
    ];
    for (name, value) in &passing {
        let response = request(&fx.root, Method::GET, "/digits.txt", &[(name, value)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}: {value}");
    }
}

async fn range(fx: &Fixture, value: &str) -> Response<Body> {
    request(&fx.root, Method::GET, "/digits.txt", &[("range", value)]).await
}

#[tokio::test]
async fn single_ranges_give_partial_content() {
    let fx = Fixture::new();
    let cases = [
        ("bytes=2-5", "2345", "bytes 2-5/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=-20", "0123456789", "bytes 0-9/10"),
        ("bytes=5-100", "56789", "bytes 5-9/10"),
        ("bytes=9-9", "9", "bytes 9-9/10"),
        (
            "bytes=0-99999999999999999999999",
            "0123456789",
            "bytes 0-9/10",
        ),
        ("Bytes = 1-1", "1", "bytes 1-1/10"),
        ("bytes=3-4,", "34", "bytes 3-4/10"),
    ];
    for (value, expected, content_range) in cases {
        let response = range(&fx, value).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{value}");
        assert_eq!(header(&response, "content-range"), content_range, "{value}");
        assert_eq!(
            header(&response, "content-length"),
            expected.len().to_string(),
            "{value}"
        );
        assert_eq!(body_of(response).await, expected, "{value}");
    }
}

#[tokio::test]
async fn unsatisfiable_ranges_give_416() {
    let fx = Fixture::new();
    for value in [
        "bytes=10-",
        "bytes=10-20",
        "bytes=-0",
        "bytes=99999999999999999999999-",
    ] {
        let response = range(&fx, value).await;
        assert_eq!(
            response.status(),
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{value}"
        );
        assert_eq!(header(&response, "content-range"), "bytes */10");
    }
    let response = request(
        &fx.root,
        Method::GET,
        "/empty.txt",
        &[("range", "bytes=0-")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&response, "content-range"), "bytes */0");
}

#[tokio::test]
async fn multiple_or_invalid_ranges_give_the_whole_file() {
    let fx = Fixture::new();
    for value in [
        "bytes=0-1,4-5",
        "bytes=5-2",
        "items=0-1",
        "bytes=",
        "bytes=a-b",
        "bytes=1",
        "bytes=--1",
        "0-1",
    ] {
        let response = range(&fx, value).await;
        assert_eq!(response.status(), StatusCode::OK, "{value}");
        assert!(response.headers().get("content-range").is_none());
        assert_eq!(body_of(response).await, DIGITS, "{value}");
    }
}

#[tokio::test]
async fn if_range_is_honoured() {
    let fx = Fixture::new();
    let first = get(&fx.root, "/digits.txt").await;
    let etag = header(&first, "etag").to_owned();
    let modified = header(&first, "last-modified").to_owned();

    for validator in [etag.as_str(), modified.as_str()] {
        let response = request(
            &fx.root,
            Method::GET,
            "/digits.txt",
            &[("range", "bytes=0-1"), ("if-range", validator)],
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::PARTIAL_CONTENT,
            "{validator}"
        );
        assert_eq!(body_of(response).await, "01");
    }

    let weak = format!("W/{etag}");
    for validator in [
        "\"other\"",
        "Sun, 06 Nov 1994 08:49:37 GMT",
        weak.as_str(),
        "junk",
    ] {
        let response = request(
            &fx.root,
            Method::GET,
            "/digits.txt",
            &[("range", "bytes=0-1"), ("if-range", validator)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{validator}");
        assert_eq!(body_of(response).await, DIGITS);
    }
}

#[tokio::test]
async fn head_has_headers_but_no_body() {
    let fx = Fixture::new();
    let get_response = get(&fx.root, "/digits.txt").await;
    let head_response = request(&fx.root, Method::HEAD, "/digits.txt", &[]).await;
    assert_eq!(head_response.status(), StatusCode::OK);
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "accept-ranges",
    ] {
        assert_eq!(
            header(&head_response, name),
            header(&get_response, name),
            "{name}"
        );
    }
    assert!(body_of(head_response).await.is_empty());

    let head_range = request(
        &fx.root,
        Method::HEAD,
        "/digits.txt",
        &[("range", "bytes=1-2")],
    )
    .await;
    assert_eq!(head_range.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&head_range, "content-length"), "2");
    assert!(body_of(head_range).await.is_empty());

    let head_missing = request(&fx.root, Method::HEAD, "/nope", &[]).await;
    assert_eq!(head_missing.status(), StatusCode::NOT_FOUND);
    assert!(body_of(head_missing).await.is_empty());
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let fx = Fixture::new();
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let response = request(&fx.root, method.clone(), "/digits.txt", &[]).await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(header(&response, "allow"), "GET, HEAD");
    }
}

#[tokio::test]
async fn traversal_attempts_are_rejected() {
    let fx = Fixture::new();
    for path in [
        "/../etc/passwd",
        "/../secret.txt",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/a/%2E%2E/%2E%2E/x",
        "/a/..",
        "/%00",
        "/digits.txt%00.html",
        "\\..\\",
        "/..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/%ff",
        "secret.txt",
        "",
    ] {
        let response = get(&fx.root, path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path:?}");
        assert_eq!(body_of(response).await, "bad request\n");
    }
    // Decoding happens once, so a double-encoded dot-dot is just a file
    // name, here one that really exists inside the root.
    let response = get(&fx.root, "/%252e%252e").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_of(response).await, "x");
}

#[tokio::test]
async fn symlinks_must_stay_inside_the_root() {
    let fx = Fixture::new();
    for path in [
        "/link-out",
        "/linkdir-out/secret.txt",
        "/linkdir-out/",
        "/trap/",
    ] {
        let response = get(&fx.root, path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body_of(response).await, "not found\n");
    }
    let response = get(&fx.root, "/link-in.txt").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        "text/plain; charset=utf-8"
    );
    assert_eq!(body_of(response).await, DIGITS);
}

#[tokio::test]
async fn unreadable_file_is_forbidden() {
    let fx = Fixture::new();
    let locked = fx.site().join("locked.txt");
    std::fs::write(&locked, b"hidden").expect("write locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    if std::fs::File::open(&locked).is_ok() {
        // Running as root (or with CAP_DAC_OVERRIDE): permissions do not
        // stop reads, so there is no 403 to observe.
        return;
    }
    let response = get(&fx.root, "/locked.txt").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_of(response).await, "forbidden\n");
}

#[tokio::test]
async fn large_file_streams_in_bounded_chunks() {
    let fx = Fixture::new();
    let len = 5 * 1024 * 1024 + 123;
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(fx.site().join("big.bin"), &data).expect("write big");

    let response = get(&fx.root, "/big.bin").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-length"), len.to_string());
    let mut body = response.into_body();
    let mut received = Vec::with_capacity(len);
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        let chunk = frame.expect("frame").into_data().expect("data frame");
        assert!(chunk.len() <= CHUNK_SIZE);
        received.extend_from_slice(&chunk);
        frames += 1;
    }
    assert!(frames >= len / CHUNK_SIZE);
    assert_eq!(received.len(), len);
    assert!(received == data, "streamed content differs");

    // A range crossing chunk boundaries starts and stops exactly.
    let (start, end) = (100_000, 300_000);
    let response = request(
        &fx.root,
        Method::GET,
        "/big.bin",
        &[("range", &format!("bytes={start}-{end}"))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&response, "content-length"),
        (end - start + 1).to_string()
    );
    assert!(body_of(response).await == data[start..=end]);
}

#[tokio::test]
async fn odd_inputs_never_panic() {
    let fx = Fixture::new();
    let pieces = [
        "",
        "/",
        "%",
        "%2",
        "%zz",
        "..",
        ".",
        "%2e",
        "\\",
        "%00",
        "%c3%28",
        "é",
        "?",
        "#",
        "~",
        "//",
        "index.html",
    ];
    for a in pieces {
        for b in pieces {
            for c in pieces {
                let path = format!("{a}{b}/{c}");
                let response = get(&fx.root, &path).await;
                assert!(
                    [200, 301, 400, 404].contains(&response.status().as_u16()),
                    "{path:?} -> {}",
                    response.status()
                );
            }
        }
    }
    for value in ["", ",", "W/", "W/\"", "\"", "*,*", ",,,\"x", "é"] {
        let response = request(
            &fx.root,
            Method::GET,
            "/digits.txt",
            &[
                ("if-none-match", value),
                ("if-match", value),
                ("range", value),
                ("if-range", value),
            ],
        )
        .await;
        assert!(response.status().as_u16() < 500, "{value:?}");
    }
}

#[test]
fn root_must_be_an_existing_directory() {
    let fx = Fixture::new();
    assert!(Root::new(&fx.site().join("digits.txt")).is_err());
    assert!(Root::new(&fx.site().join("missing")).is_err());
    let via_dots = Root::new(&fx.site().join("dir/..")).expect("root via dots");
    assert_eq!(via_dots.path(), fx.site());
}
