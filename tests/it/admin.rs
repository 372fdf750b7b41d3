//! The admin listener, through the real binary: every endpoint with and without the token,
//! a wrong token, the sign-in cookie, a foreign Host and Origin, the Unix socket's and the
//! token file's modes, `check` on a non-loopback address, and a reload through the API that
//! reports a broken configuration and changes nothing.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::support::admin::{request, try_request, up, Answer, Logged, To};
use crate::support::client::{get, Opts};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{eventually, free_port, Running};

const BIN: &str = env!("CARGO_BIN_EXE_portico");

/// One https listener with one site (local CA), and `admin` as the [admin] table's lines.
fn write_config(dir: &Path, https: u16, admin: &str) -> PathBuf {
    let file = dir.join("portico.toml");
    let admin = if admin.is_empty() {
        String::new()
    } else {
        format!("[admin]\n{admin}\n")
    };
    std::fs::write(
        &file,
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{https}\"\n[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = {{ body = \"a\" }}\n{admin}"
        ),
    )
    .expect("write config");
    file
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// A server with its admin listener on loopback TCP; returns it, the address and the token.
async fn tcp_server(dir: &Path) -> (Logged, To, String) {
    let port = free_port();
    let config = write_config(dir, free_port(), &format!("address = \"127.0.0.1:{port}\""));
    let server = Logged::serve(&config);
    let to = To::Tcp(format!("127.0.0.1:{port}").parse().expect("addr"));
    up(&to).await;
    let token_file = dir.join("state/admin.token");
    let token = std::fs::read_to_string(&token_file).expect("token file");
    (server, to, token.trim().to_string())
}

fn assert_refused(a: &Answer, status: u16, contains: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert!(a.body.contains(contains), "{contains:?} not in {a:?}");
}

#[tokio::test]
async fn every_endpoint_on_tcp_needs_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, to, token) = tcp_server(dir.path()).await;
    assert_eq!(token.len(), 64, "32 random bytes in hex");
    assert_eq!(mode(&dir.path().join("state/admin.token")), 0o600);
    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {}", "0".repeat(64));
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/status"),
        ("POST", "/api/v1/reload"),
        ("GET", "/api/v1/bindings"),
        ("GET", "/api/v1/certs"),
        ("GET", "/api/v1/explain?host=a.test"),
        ("GET", "/api/v1/sites?q=a"),
        ("GET", "/api/v1/expiry"),
        ("GET", "/api/v1/series"),
        ("GET", "/api/v1/reloads"),
        ("GET", "/assets/dashboard.js"),
    ] {
        let none = request(&to, method, path, &[]).await;
        assert_refused(&none, 401, "needs the token");
        assert_eq!(
            none.header("www-authenticate"),
            Some("Bearer realm=\"portico admin\"")
        );
        let bad = request(&to, method, path, &[("authorization", &wrong)]).await;
        assert_refused(&bad, 401, "is wrong");
        let ok = request(&to, method, path, &[("authorization", &bearer)]).await;
        assert_eq!(ok.status, 200, "{method} {path} with the token: {ok:?}");
        // The dashboard's assets are named by their content and kept; nothing else is.
        let caching = if path.starts_with("/assets/") {
            "private, max-age=31536000, immutable"
        } else {
            "no-store"
        };
        assert_eq!(ok.header("cache-control"), Some(caching), "{path}");
    }
    // The API's errors are JSON.
    let none = request(&to, "GET", "/api/v1/status", &[]).await;
    assert!(none.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("token")));

    let metrics = request(&to, "GET", "/metrics", &[("authorization", &bearer)]).await;
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        metrics.body.contains("portico_uptime_seconds"),
        "{}",
        metrics.body
    );

    let status = request(&to, "GET", "/api/v1/status", &[("authorization", &bearer)]).await;
    let s = status.json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["sites"], 1);
    assert_eq!(
        s["certificates"], 1,
        "the local CA's certificate for site a"
    );
    assert_eq!(s["listeners"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["listeners"][0]["kind"], "https");
    assert_eq!(s["listeners"][0]["hosts"], 1);
    // The POST above reloaded the unchanged file.
    assert_eq!(s["last_reload"]["ok"], true, "{s}");
    assert_eq!(s["last_reload"]["reason"], "admin API");
    assert_eq!(
        s["last_reload"]["summary"],
        "reloaded: 1 listeners, 1 sites"
    );

    let missing = request(&to, "GET", "/api/v1/nothing", &[("authorization", &bearer)]).await;
    assert_refused(&missing, 404, "no such admin endpoint");
    let get_reload = request(&to, "GET", "/api/v1/reload", &[("authorization", &bearer)]).await;
    assert_eq!(get_reload.status, 405);
    assert_eq!(get_reload.header("allow"), Some("POST"));
}

#[tokio::test]
async fn the_printed_sign_in_url_sets_a_session_cookie() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, to, token) = tcp_server(dir.path()).await;
    let To::Tcp(addr) = &to else { unreachable!() };
    let line = server.line("admin: ");
    assert_eq!(line, format!("admin: http://{addr}/?token={token}"));

    let target = format!("/?token={token}");
    let signed = request(&to, "GET", &target, &[]).await;
    assert_eq!(signed.status, 303, "{signed:?}");
    assert_eq!(signed.header("location"), Some("/"));
    let cookie = signed.header("set-cookie").expect("a cookie").to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} not in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "no TLS, no Secure: {cookie}");
    assert!(
        !cookie.contains(&token),
        "the cookie is not the token itself"
    );
    let session = cookie.split(';').next().expect("name=value");
    let status = request(&to, "GET", "/api/v1/status", &[("cookie", session)]).await;
    assert_eq!(status.status, 200, "{status:?}");
    let page = request(&to, "GET", "/", &[("cookie", session)]).await;
    assert!(page.body.contains("/assets/dashboard.js?v="), "{page:?}");

    let wrong = request(&to, "GET", "/?token=not-the-token-at-all", &[]).await;
    assert_refused(&wrong, 401, "sign-in URL is wrong");
    assert!(wrong.header("set-cookie").is_none());
    let forged = request(
        &to,
        "GET",
        "/api/v1/status",
        &[("cookie", "portico_admin=00ff")],
    )
    .await;
    assert_eq!(forged.status, 401);
}

#[tokio::test]
async fn a_foreign_host_or_origin_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, to, token) = tcp_server(dir.path()).await;
    let To::Tcp(addr) = &to else { unreachable!() };
    let port = addr.port();
    let bearer = format!("Bearer {token}");
    let auth = ("authorization", bearer.as_str());

    // DNS rebinding: a name that resolves to 127.0.0.1 but is not ours.
    let evil = format!("evil.test:{port}");
    let foreign = request(&to, "GET", "/api/v1/status", &[auth, ("host", &evil)]).await;
    assert_refused(&foreign, 403, "DNS rebinding");
    let other_port = format!("127.0.0.1:{}", port + 1);
    let foreign = request(&to, "GET", "/metrics", &[auth, ("host", &other_port)]).await;
    assert_eq!(foreign.status, 403);
    for ours in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let a = request(&to, "GET", "/api/v1/status", &[auth, ("host", &ours)]).await;
        assert_eq!(a.status, 200, "Host {ours}: {a:?}");
    }
    // Sign-in is judged by Host too.
    let target = format!("/?token={token}");
    let a = request(&to, "GET", &target, &[("host", &evil)]).await;
    assert_eq!(a.status, 403);

    // A cross-site POST changes nothing, even with the token (a cookie would come along).
    let post = request(
        &to,
        "POST",
        "/api/v1/reload",
        &[auth, ("origin", "http://evil.test")],
    )
    .await;
    assert_refused(&post, 403, "is not this admin listener");
    let post = request(&to, "POST", "/api/v1/reload", &[auth, ("origin", "null")]).await;
    assert_eq!(post.status, 403);
    let s = request(&to, "GET", "/api/v1/status", &[auth]).await.json();
    assert!(s["last_reload"].is_null(), "a refused POST reloaded: {s}");
    // A GET from anywhere is only read (CORS keeps the answer from the other site).
    let read = request(
        &to,
        "GET",
        "/api/v1/status",
        &[auth, ("origin", "http://evil.test")],
    )
    .await;
    assert_eq!(read.status, 200);

    let same = format!("http://127.0.0.1:{port}");
    let post = request(&to, "POST", "/api/v1/reload", &[auth, ("origin", &same)]).await;
    assert_eq!(post.status, 200, "{post:?}");
    assert_eq!(post.json()["ok"], true);
    let post = request(&to, "POST", "/api/v1/reload", &[auth]).await;
    assert_eq!(post.status, 200, "no Origin (curl, scripts): {post:?}");
}

#[tokio::test]
async fn the_unix_socket_is_private_and_a_broken_reload_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let https = free_port();
    // No [admin] table: the default, a Unix socket in state_dir.
    let config = write_config(dir.path(), https, "");
    let _server = Running::serve(&config);
    let socket = dir.path().join("state/admin.sock");
    eventually("the admin socket", || socket.exists().then_some(()));
    let meta = std::fs::symlink_metadata(&socket).expect("stat");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let to = To::Unix(socket);
    up(&to).await;
    assert!(
        !dir.path().join("state/admin.token").exists(),
        "no token on a Unix socket"
    );
    // The file mode is the authentication: no token.
    let metrics = request(&to, "GET", "/metrics", &[]).await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    let s = request(&to, "GET", "/api/v1/status", &[]).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["sites"], 1);

    // A second site with a bad host and a root that does not exist.
    let broken = std::fs::read_to_string(&config).expect("read")
        + "[[site]]\nname = \"b\"\nhosts = [\"bad host!\"]\nroot = \"missing\"\n";
    std::fs::write(&config, broken).expect("write");
    let reload = request(&to, "POST", "/api/v1/reload", &[]).await;
    assert_eq!(reload.status, 422, "{reload:?}");
    let r = reload.json();
    assert_eq!(r["ok"], false);
    assert_eq!(r["reason"], "admin API");
    assert!(
        r["summary"]
            .as_str()
            .is_some_and(|s| s.contains("the previous configuration keeps serving")),
        "{r}"
    );
    let diagnostics = r["diagnostics"].as_array().expect("diagnostics");
    assert!(
        diagnostics.iter().any(|d| d["severity"] == "error"
            && d["path"] == "site[1].hosts[0]"
            && d["fix"].is_string()),
        "{r}"
    );
    // Nothing changed: the status says so, and site a still answers.
    let s = request(&to, "GET", "/api/v1/status", &[]).await.json();
    assert_eq!(s["sites"], 1, "{s}");
    assert_eq!(s["last_reload"]["ok"], false);
    assert_eq!(s["last_reload"]["diagnostics"], r["diagnostics"]);
    let addr = format!("127.0.0.1:{https}").parse().expect("addr");
    let (_, reply) = get(addr, &Opts::sni("a.test"), "a.test", "/").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "a"));
}

#[tokio::test]
async fn admin_over_tls_sets_a_secure_cookie() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (cert, key) = pki.leaf("admin", &["localhost"], Key::Ecdsa, Validity::Current);
    let port = free_port();
    let config = write_config(
        dir.path(),
        free_port(),
        &format!(
            "address = \"127.0.0.1:{port}\"\ntls = {{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        ),
    );
    let server = Logged::serve(&config);
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let to = To::Tls(addr);
    up(&to).await;
    let token = std::fs::read_to_string(dir.path().join("state/admin.token")).expect("token");
    let token = token.trim();
    assert_eq!(
        server.line("admin: "),
        format!("admin: https://{addr}/?token={token}")
    );
    let signed = request(&to, "GET", &format!("/?token={token}"), &[]).await;
    assert_eq!(signed.status, 303);
    assert!(signed
        .header("set-cookie")
        .is_some_and(|c| c.ends_with("; Secure")));
    let bearer = format!("Bearer {token}");
    let ok = request(&to, "GET", "/api/v1/status", &[("authorization", &bearer)]).await;
    assert_eq!(ok.status, 200);
    // Plain HTTP to the TLS port gets no answer.
    assert!(try_request(&To::Tcp(addr), "GET", "/", &[]).await.is_err());
}

#[test]
fn check_refuses_an_admin_address_off_loopback_without_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), free_port(), "address = \"10.0.0.5:9900\"");
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("check runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error: admin.address: 10.0.0.5:9900 is not a loopback address"),
        "{text}"
    );
    assert!(text.contains("fix: add tls = {"), "{text}");

    let pki = Pki::new(&dir.path().join("pki"));
    let (cert, key) = pki.leaf("admin", &["admin.test"], Key::Ecdsa, Validity::Current);
    write_config(
        dir.path(),
        free_port(),
        &format!(
            "address = \"10.0.0.5:9900\"\ntls = {{ cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        ),
    );
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("check runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn a_reload_moves_the_admin_listener_and_reads_the_token_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let https = free_port();
    let config = write_config(dir.path(), https, "");
    let server = Logged::serve(&config);
    let socket = dir.path().join("state/admin.sock");
    let unix = To::Unix(socket.clone());
    eventually("the admin socket", || socket.exists().then_some(()));
    up(&unix).await;

    // From the Unix socket to TCP: the reload answers on the old socket, which then goes.
    let port = free_port();
    write_config(
        dir.path(),
        https,
        &format!("address = \"127.0.0.1:{port}\""),
    );
    let reload = request(&unix, "POST", "/api/v1/reload", &[]).await;
    assert_eq!(reload.status, 200, "{reload:?}");
    assert!(!socket.exists(), "the old socket file is removed");
    let tcp = To::Tcp(format!("127.0.0.1:{port}").parse().expect("addr"));
    let token_file = dir.path().join("state/admin.token");
    let first = std::fs::read_to_string(&token_file).expect("token created on the move");
    let first = format!("Bearer {}", first.trim());
    let s = request(&tcp, "GET", "/api/v1/status", &[("authorization", &first)]).await;
    assert_eq!(s.status, 200, "{s:?}");

    // A new token: delete the file and reload; the old token stops working.
    std::fs::remove_file(&token_file).expect("rm token");
    let reload = request(&tcp, "POST", "/api/v1/reload", &[("authorization", &first)]).await;
    assert_eq!(reload.status, 200, "{reload:?}");
    let second = std::fs::read_to_string(&token_file).expect("a new token");
    let second = format!("Bearer {}", second.trim());
    assert_ne!(first, second);
    let old = request(&tcp, "GET", "/api/v1/status", &[("authorization", &first)]).await;
    assert_eq!(old.status, 401);
    let new = request(&tcp, "GET", "/api/v1/status", &[("authorization", &second)]).await;
    assert_eq!(new.status, 200);
    let printed = eventually("the new sign-in URL", || {
        let log = server.stderr.lock().expect("lock");
        log.lines()
            .filter(|l| l.starts_with("admin: "))
            .nth(1)
            .map(str::to_string)
    });
    assert!(
        printed.ends_with(second.trim_start_matches("Bearer ")),
        "{printed}"
    );
}

#[tokio::test]
async fn bindings_certs_and_explain_on_the_api_are_the_commands_json_for_the_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), free_port(), "");
    let _server = Running::serve(&config);
    let socket = dir.path().join("state/admin.sock");
    eventually("the admin socket", || socket.exists().then_some(()));
    let to = To::Unix(socket);
    up(&to).await;
    let command = |what: &str| -> serde_json::Value {
        let out = std::process::Command::new(BIN)
            .args([what, "--json", "-c"])
            .arg(&config)
            .output()
            .expect("the command runs");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{what} --json: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    // certs: the running server's internal certificate, the same the command reads from
    // state_dir, in the same document.
    let api = request(&to, "GET", "/api/v1/certs", &[]).await;
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.header("content-type"), Some("application/json"));
    let (api, cli) = (api.json(), command("certs"));
    assert_eq!(api["version"], cli["version"]);
    let fingerprint =
        |doc: &serde_json::Value| doc["certificates"][0]["certificate"]["sha256"].clone();
    assert!(fingerprint(&api).is_string(), "{api}");
    assert_eq!(fingerprint(&api), fingerprint(&cli), "api {api}\ncli {cli}");
    assert_eq!(api["certificates"][0]["sites"], serde_json::json!(["a"]));
    // bindings: the same rows, host to site with the certificate presented.
    let api = request(&to, "GET", "/api/v1/bindings", &[]).await;
    assert_eq!(api.status, 200, "{}", api.body);
    let (api, cli) = (api.json(), command("bindings"));
    let listeners = |doc: &serde_json::Value| doc["listeners"].as_array().map(Vec::len);
    assert_eq!(listeners(&api), Some(1), "{api}");
    assert_eq!(listeners(&api), listeners(&cli));
    let keys = |doc: &serde_json::Value| {
        doc["listeners"][0]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(keys(&api), keys(&cli), "the same schema");
    assert!(
        api.to_string()
            .contains(fingerprint(&cli).as_str().unwrap_or("-")),
        "{api}"
    );
    // explain: the same steps as the command, for one host.
    let api = request(&to, "GET", "/api/v1/explain?host=a.test", &[]).await;
    assert_eq!(api.status, 200, "{}", api.body);
    let mut api = api.json();
    let out = std::process::Command::new(BIN)
        .args(["explain", "a.test", "--json", "-c"])
        .arg(&config)
        .output()
        .expect("explain runs");
    let mut cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("explain --json");
    timeless(&mut api);
    timeless(&mut cli);
    assert_eq!(api, cli, "the API explains as the command does");
    let unknown = request(&to, "GET", "/api/v1/explain?host=nope.test&no_sni=1", &[]).await;
    assert_eq!(unknown.status, 200, "{}", unknown.body);
    for bad in [
        "/api/v1/explain",
        "/api/v1/explain?host=a.test&local=nowhere",
    ] {
        let answer = request(&to, "GET", bad, &[]).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert!(answer.json()["error"].is_string(), "{}", answer.body);
    }
    // Only GET.
    let post = request(&to, "POST", "/api/v1/certs", &[]).await;
    assert_eq!(post.status, 405);
}

/// `--live`: the commands ask the running server about what it serves, not the file. After
/// the file gains a site the server has not loaded, the commands without `--live` show it
/// and with `--live` do not; `--live --json` is the API's document; and with no server the
/// command says which socket it could not reach.
#[tokio::test]
async fn live_commands_answer_for_the_running_server_not_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), free_port(), "");
    let server = Running::serve(&config);
    let socket = dir.path().join("state/admin.sock");
    eventually("the admin socket", || socket.exists().then_some(()));
    let to = To::Unix(socket);
    up(&to).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .expect("the command runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The file gains site b; the server is not told.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(
        &config,
        format!("{text}[[site]]\nname = \"b\"\nhosts = [\"b.test\"]\ntls = \"internal\"\nrespond = {{ body = \"b\" }}\n"),
    )
    .expect("write config");

    let (code, file, err) = run(&["bindings"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(file.contains("b.test") && file.contains("a.test"), "{file}");
    let (code, live, err) = run(&["bindings", "--live"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(live.contains("a.test"), "{live}");
    assert!(
        !live.contains("b.test"),
        "the server never loaded b:\n{live}"
    );

    // explain, as text: the file binds b.test, the server refuses it.
    let (_, file, _) = run(&["explain", "b.test"]);
    let (code, live, err) = run(&["explain", "b.test", "--live"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(file.contains("site \"b\""), "{file}");
    assert!(!live.contains("site \"b\""), "{live}");
    assert!(live.contains("unrecognized_name"), "{live}");

    // --live --json is the API's document, for each question.
    for (args, path) in [
        (&["certs", "--live", "--json"][..], "/api/v1/certs"),
        (&["bindings", "--live", "--json"][..], "/api/v1/bindings"),
        (
            &["explain", "a.test", "--rsa-only", "--live", "--json"][..],
            "/api/v1/explain?host=a.test&rsa_only=1",
        ),
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        let mut cli: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
        let api = request(&to, "GET", path, &[]).await;
        assert_eq!(api.status, 200, "{}", api.body);
        let mut api = api.json();
        timeless(&mut cli);
        timeless(&mut api);
        assert_eq!(cli, api, "{args:?} is {path}");
    }

    // No server: the command fails and names the socket it tried.
    drop(server);
    let (code, out, err) = run(&["certs", "--live"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("cannot reach a running Portico") && err.contains("portico.sock"),
        "{err}"
    );
}

/// Removes what depends on the moment of asking: `now`, and `days_left`, which drops by one
/// when the second changes right after the certificate was issued.
fn timeless(doc: &mut serde_json::Value) {
    match doc {
        serde_json::Value::Object(o) => {
            o.remove("now");
            o.remove("days_left");
            o.values_mut().for_each(timeless);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(timeless),
        _ => {}
    }
}

/// `GET /api/v1/bindings` and `/api/v1/certs` page as `--limit` and `--after` do: `limit`
/// rows after the row `after` names, with `total` and `next`; a page is what `--live
/// --json` prints with the same flags; an `after` that names no row, or a `limit` that is
/// not a number, is a 400 saying so.
#[tokio::test]
async fn the_api_pages_bindings_and_certs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("portico.toml");
    let mut toml = format!("[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:{port}\"\n");
    for i in 1..=3 {
        toml += &format!("[[site]]\nname = \"s{i}\"\nhosts = [\"h{i}.test\"]\ntls = \"internal\"\nrespond = {{ body = \"{i}\" }}\n");
    }
    std::fs::write(&config, toml).expect("write config");
    let _server = Running::serve(&config);
    let socket = dir.path().join("state/admin.sock");
    eventually("the admin socket", || socket.exists().then_some(()));
    let to = To::Unix(socket);
    up(&to).await;
    let get = |target: String| {
        let to = &to;
        async move {
            let answer = request(to, "GET", &target, &[]).await;
            (answer.status, answer.json())
        }
    };
    let hosts = |doc: &serde_json::Value| -> Vec<String> {
        doc["listeners"][0]["bindings"]
            .as_array()
            .expect("bindings")
            .iter()
            .map(|b| b["host"].as_str().expect("host").to_string())
            .collect()
    };

    // Without parameters: the default page, which holds all three.
    let (status, all) = get("/api/v1/bindings".to_string()).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(hosts(&all), ["h1.test", "h2.test", "h3.test"]);
    assert_eq!(
        (&all["total"], &all["next"]),
        (&3.into(), &serde_json::Value::Null)
    );

    let (status, first) = get("/api/v1/bindings?limit=2".to_string()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(hosts(&first), ["h1.test", "h2.test"]);
    assert_eq!(
        (&first["total"], &first["next"]),
        (&3.into(), &"l/h2.test".into())
    );
    let (status, second) = get("/api/v1/bindings?limit=2&after=l%2Fh2.test".to_string()).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(hosts(&second), ["h3.test"]);
    assert_eq!(second["next"], serde_json::Value::Null);

    // The command with --live and the same flags prints the same page.
    let out = std::process::Command::new(BIN)
        .args([
            "bindings",
            "--live",
            "--json",
            "--limit",
            "2",
            "--after",
            "l/h2.test",
            "-c",
        ])
        .arg(&config)
        .output()
        .expect("bindings runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut api = second.clone();
    timeless(&mut cli);
    timeless(&mut api);
    assert_eq!(cli, api);

    // The certs of internal sites are the sites' own rows: site:NAME.
    let (status, certs) = get("/api/v1/certs?limit=1&after=site%3As1".to_string()).await;
    assert_eq!(status, 200, "{certs}");
    assert_eq!(certs["certificates"][0]["sites"], serde_json::json!(["s2"]));
    assert_eq!(
        (&certs["total"], &certs["next"]),
        (&3.into(), &"site:s2".into())
    );
    let (status, rest) = get("/api/v1/certs?limit=0&after=site%3As2".to_string()).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["certificates"][0]["sites"], serde_json::json!(["s3"]));
    assert_eq!(rest["next"], serde_json::Value::Null);

    for (target, says) in [
        (
            "/api/v1/bindings?after=l%2Fnope.test",
            "no bindings row has the key \"l/nope.test\"",
        ),
        (
            "/api/v1/certs?after=pool%3A%2Fnope.pem",
            "no certs row has the key \"pool:/nope.pem\"",
        ),
        ("/api/v1/bindings?limit=ten", "limit must be a whole number"),
        ("/api/v1/certs?limit=-1", "limit must be a whole number"),
        ("/api/v1/bindings?after=", "after: the cursor is empty"),
    ] {
        let answer = request(&to, "GET", target, &[]).await;
        assert_eq!(answer.status, 400, "{target}: {}", answer.body);
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(says), "{target}: {error}");
    }
}
