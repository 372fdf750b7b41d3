//! HTTP on terminated connections: the 421 rule, actions, static files, http -> https.

use crate::support::client::{get, Http, Opts};
use crate::support::{free_port, serve, site_root};

async fn sites() -> (tempfile::TempDir, crate::support::TestServer, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = site_root(dir.path(), "www", "<h1>home</h1>");
    std::fs::create_dir_all(root.join("docs")).expect("mkdir");
    std::fs::write(root.join("docs/index.html"), "docs index").expect("write");
    std::fs::write(root.join("big.txt"), "0123456789".repeat(1000)).expect("write");
    std::fs::write(dir.path().join("secret.txt"), "secret").expect("write");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak.txt"))
        .expect("symlink");
    let https = free_port();
    let http = free_port();
    let toml = format!(
        r#"
[[listener]]
name = "https"
address = "127.0.0.1:{https}"
[[listener]]
name = "http"
address = "127.0.0.1:{http}"
kind = "http"

[[site]]
name = "www"
hosts = ["www.test"]
tls = "internal"
root = "www"
[[site]]
name = "old"
hosts = ["old.test"]
tls = "internal"
redirect = {{ to = "https://www.test", status = 301 }}
[[site]]
name = "health"
hosts = ["health.test"]
tls = "internal"
respond = {{ status = 203, body = "ok\n" }}
"#
    );
    let server = serve(dir.path(), &toml).await;
    (dir, server, http)
}

#[tokio::test]
async fn host_not_covered_by_connection_certificate_gets_421() {
    let (_dir, server, _) = sites().await;
    for opts in [Opts::sni("www.test"), Opts::sni("www.test").http1()] {
        let (tls, _) = crate::support::client::connect(server.addr("127.0.0.1"), &opts)
            .await
            .expect("handshake");
        let mut http = Http::over(tls).await;
        assert_eq!(http.get("www.test", "/").await.status, 200);
        let r = http.get("health.test", "/").await;
        assert_eq!(
            r.status, 421,
            "health.test is bound but www.test's certificate does not cover it"
        );
        assert!(r.text().contains("misdirected"));
        assert_eq!(http.get("127.0.0.1", "/").await.status, 421);
        // The connection still works after a 421.
        assert_eq!(http.get("www.test:443", "/").await.status, 200);
        // A host not in normal form is normalized before routing (the usual one is
        // used as it came).
        assert_eq!(http.get("WWW.Test.:443", "/").await.status, 200);
        assert_eq!(http.get("-www.test", "/").await.status, 421);
    }
}

#[tokio::test]
async fn redirect_and_respond_actions() {
    let (_dir, server, _) = sites().await;
    let addr = server.addr("127.0.0.1");
    let (_, r) = get(addr, &Opts::sni("old.test"), "old.test", "/a/b?c=d").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "https://www.test/a/b?c=d");
    let (_, r) = get(addr, &Opts::sni("health.test"), "health.test", "/").await;
    assert_eq!(r.status, 203);
    assert_eq!(r.text(), "ok\n");
}

#[tokio::test]
async fn static_files_semantics_over_tls() {
    let (_dir, server, _) = sites().await;
    let (tls, _) =
        crate::support::client::connect(server.addr("127.0.0.1"), &Opts::sni("www.test"))
            .await
            .expect("handshake");
    let mut http = Http::over(tls).await;
    let r = http.get("www.test", "/").await;
    assert_eq!(r.text(), "<h1>home</h1>");
    assert!(r.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    let etag = r.headers["etag"].clone();
    assert!(r.headers.contains_key("last-modified"));
    let r = http
        .send(
            "www.test",
            "/",
            &[("if-none-match", etag.to_str().expect("ascii"))],
        )
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = http.get("www.test", "/docs/").await;
    assert_eq!(r.text(), "docs index");
    let r = http.get("www.test", "/docs").await;
    assert!(r.status.is_redirection());
    let r = http
        .send("www.test", "/big.txt", &[("range", "bytes=10-19")])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "0123456789");
    assert_eq!(r.headers["content-range"], "bytes 10-19/10000");
    let r = http
        .send("www.test", "/big.txt", &[("range", "bytes=20000-")])
        .await;
    assert_eq!(r.status, 416);
    for path in [
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/docs/%2E%2E/%2E%2E/secret.txt",
        "/leak.txt",
        "/nothing",
    ] {
        let r = http.get("www.test", path).await;
        assert!(r.status == 404 || r.status == 400, "{path} -> {}", r.status);
        assert!(!r.text().contains("secret"), "{path} leaked the file");
    }
}

#[tokio::test]
async fn http_listener_redirects_bound_hosts_to_https_and_404s_others() {
    let (_dir, server, http_port) = sites().await;
    let https_port = server.addr("127.0.0.1").port();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = |host: &str, path: &str| {
        http::Request::get(path)
            .header("host", host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let r = send
        .send_request(req("www.test", "/x?y=1"))
        .await
        .expect("response");
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://www.test:{https_port}/x?y=1").as_str()
    );
    let r = send
        .send_request(req("unknown.test", "/"))
        .await
        .expect("response");
    assert_eq!(r.status(), 404);
}

#[test]
fn sites_serving_one_directory_share_one_file_cache() {
    use portico::runtime::{self, Mode, Shared, SiteAction};
    let dir = tempfile::tempdir().expect("tempdir");
    site_root(dir.path(), "www", "shared");
    site_root(dir.path(), "other", "own");
    let file = dir.path().join("portico.toml");
    // `www` is named two ways: the comparison is by canonical path.
    std::fs::write(
        &file,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{}\"\nkind = \"http\"\n\
             [[site]]\nname = \"a\"\nhosts = [\"a.test\"]\nroot = \"www\"\n\
             [[site]]\nname = \"b\"\nhosts = [\"b.test\"]\nroot = \"./other/../www/\"\n\
             [[site]]\nname = \"c\"\nhosts = [\"c.test\"]\nroot = \"other\"\n",
            free_port()
        ),
    )
    .expect("write");
    let (config, report) = portico::config::Config::load(&file);
    let config = config.unwrap_or_else(|| panic!("{report}"));
    let (rt, report) = runtime::build(config, Mode::Check, &Shared::new());
    let rt = rt.unwrap_or_else(|| panic!("{report}"));
    let root = |i: usize| match &rt.sites[i].action {
        SiteAction::Root(r) => r.clone(),
        _ => panic!("site {i} serves files"),
    };
    assert!(root(0).shares_cache_with(&root(1)));
    assert!(!root(0).shares_cache_with(&root(2)));
}

/// Many streams answered at once on one HTTP/2 connection each get their own whole body,
/// small ones and ones larger than the flow-control window alike: the responses a wake-up
/// finds ready are written together, and none may be cut, mixed or held back.
#[tokio::test]
async fn concurrent_h2_streams_each_get_their_whole_body() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use std::time::Duration;

    let (dir, server, _) = sites().await;
    let large: Bytes = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("www/large.bin"), &large).expect("write");
    let (tls, _) =
        crate::support::client::connect(server.addr("127.0.0.1"), &Opts::sni("www.test"))
            .await
            .expect("handshake");
    let Http::H2(send) = Http::over(tls).await else {
        panic!("the server should choose h2");
    };
    let mut all = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut send = send.clone();
        let path = ["/large.bin", "/big.txt", "/docs/index.html", "/"][i % 4];
        all.spawn(async move {
            let req = hyper::Request::get(format!("https://www.test{path}"))
                .body(Empty::<Bytes>::new())
                .expect("request");
            let resp = send.send_request(req).await.expect("response");
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (path, status, body)
        });
    }
    let small = "0123456789".repeat(1000);
    let mut answered = 0;
    while let Some(done) = tokio::time::timeout(Duration::from_secs(60), all.join_next())
        .await
        .expect("every stream answered (bound)")
    {
        let (path, status, body) = done.expect("request task");
        assert_eq!(status, 200, "{path}");
        let want: &[u8] = match path {
            "/large.bin" => &large,
            "/big.txt" => small.as_bytes(),
            "/docs/index.html" => b"docs index",
            _ => b"<h1>home</h1>",
        };
        assert!(
            body == want,
            "{path}: got {} bytes, wanted {}",
            body.len(),
            want.len()
        );
        answered += 1;
    }
    assert_eq!(answered, 40);
}
