//! `portico certs` and the pending reason in `portico bindings`, from status files written
//! here the way the site tasks write them (the Pebble and fake-CA tests show the tasks
//! writing them for real).

use std::path::Path;
use std::process::Command;

use portico::acme::status::{LastError, Problem, Rule, State, Status, Window};

use crate::inspect::mask_in;
use crate::support::pki::{Key, Pki, Validity};

use super::BIN;

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn run(args: &[&str], config: &Path) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("run portico");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ACME directory `setup` configures (nothing listens there).
const DIRECTORY: &str = "https://127.0.0.1:1/dir";

/// The ACME folder of the directory `setup` configures.
fn home(state: &Path) -> std::path::PathBuf {
    portico::acme::directory_home(state, DIRECTORY)
}

fn write_status(state: &Path, st: &Status) {
    std::fs::create_dir_all(home(state)).expect("mkdir");
    std::fs::write(
        portico::acme::status::path(&home(state), &st.site),
        serde_json::to_vec_pretty(st).expect("json"),
    )
    .expect("write status");
}

/// A file certificate in the pool, a pinned one, an internal site, an ACME site with a
/// stored certificate and an ARI plan, and one whose orders fail.
fn setup(dir: &Path) -> (std::path::PathBuf, u16) {
    let pki = Pki::new(&dir.join("pki"));
    let cur = Validity::Current;
    let (pool_c, pool_k) = pki.leaf("pool", &["pool.test"], Key::Ecdsa, cur);
    let (pin_c, pin_k) = pki.leaf("pin", &["pin.test"], Key::Ecdsa, cur);
    let state = dir.join("state");
    std::fs::create_dir_all(home(&state)).expect("mkdir");
    let (blog_c, blog_k) = pki.leaf("blog", &["blog.test"], Key::Ecdsa, cur);
    std::fs::copy(&blog_c, home(&state).join("blog.pem")).expect("copy");
    std::fs::copy(&blog_k, home(&state).join("blog.key")).expect("copy");
    let now = portico::runtime::unix_now();
    let mut blog = Status {
        version: 1,
        site: "blog".to_string(),
        hosts: vec!["blog.test".to_string()],
        state: State::Waiting,
        next_renewal: Some(now + 40 * 86_400),
        rule: Rule::Ari,
        ari_window: Some(Window {
            start: now + 39 * 86_400,
            end: now + 41 * 86_400,
        }),
        ari_explanation: None,
        attempts: 0,
        last_attempt: Some(now - 50 * 86_400),
        last_success: Some(now - 50 * 86_400),
        last_error: None,
        updated: now,
        issued_by: None,
        held_by: None,
        certificate: None,
    };
    write_status(&state, &blog);
    blog.site = "shop".to_string();
    blog.hosts = vec!["shop.test".to_string()];
    blog.state = State::Backoff;
    blog.rule = Rule::Retry;
    blog.next_renewal = Some(now + 40);
    blog.ari_window = None;
    blog.attempts = 3;
    blog.last_attempt = Some(now - 20);
    blog.last_success = None;
    blog.last_error = Some(LastError {
        at: now - 20,
        message: "validation of shop.test failed: urn:ietf:params:acme:error:connection: Connection refused".to_string(),
        problem: Some(Problem {
            kind: Some("urn:ietf:params:acme:error:connection".to_string()),
            detail: Some("127.0.0.1: Connection refused".to_string()),
            status: Some(400),
            subproblems: vec![],
        }),
    });
    write_status(&state, &blog);
    let port = crate::support::free_port();
    let toml = format!(
        r#"state_dir = "state"
[acme]
directory = "{DIRECTORY}"

[[listener]]
address = "127.0.0.1:{port}"

[[certificate]]
cert = "{}"
key = "{}"

[[site]]
name = "pool"
hosts = ["pool.test"]
respond = {{ body = "pool" }}

[[site]]
name = "pinned"
hosts = ["pin.test"]
tls = {{ cert = "{}", key = "{}" }}
respond = {{ body = "pinned" }}

[[site]]
name = "dev"
hosts = ["dev.test"]
tls = "internal"
respond = {{ body = "dev" }}

[[site]]
name = "blog"
hosts = ["blog.test"]
tls = "acme"
respond = {{ body = "blog" }}

[[site]]
name = "shop"
hosts = ["shop.test"]
tls = "acme"
respond = {{ body = "shop" }}
"#,
        p(&pool_c),
        p(&pool_k),
        p(&pin_c),
        p(&pin_k)
    );
    let file = dir.join("portico.toml");
    std::fs::write(&file, toml).expect("write config");
    (file, port)
}

#[test]
fn certs_human_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, port) = setup(dir.path());
    let out = run(&["certs"], &file);
    let got = mask_in(&out, dir.path(), &[port]);
    assert_eq!(got, CERTS, "got:\n{got}");
}

#[test]
fn bindings_show_why_an_acme_name_is_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, port) = setup(dir.path());
    let out = run(&["bindings"], &file);
    let got = mask_in(&out, dir.path(), &[port]);
    let shop: Vec<&str> = got
        .lines()
        .skip_while(|l| !l.starts_with("  shop.test"))
        .take(2)
        .collect();
    assert_eq!(shop.join("\n"), SHOP_BINDING, "got:\n{got}");
    // explain words it the same way: one implementation.
    let out = run(&["explain", "shop.test"], &file);
    let pending = "ACME certificate pending: none issued yet";
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains(pending), "{out}");
    assert!(words.contains("3 failed attempts"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&run(&["bindings", "--json"], &file)).expect("json");
    let rows = json["listeners"][0]["bindings"].as_array().expect("rows");
    let shop = rows
        .iter()
        .find(|r| r["host"] == "shop.test")
        .expect("shop row");
    let reason = shop["acme_pending"].as_str().expect("acme_pending");
    assert!(reason.contains("3 failed attempts"), "{reason}");
    let blog = rows
        .iter()
        .find(|r| r["host"] == "blog.test")
        .expect("blog row");
    assert!(blog["acme_pending"].is_null());
}

#[test]
fn certs_json_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, _) = setup(dir.path());
    let doc: serde_json::Value =
        serde_json::from_str(&run(&["certs", "--json"], &file)).expect("json");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object().expect("object").keys().cloned().collect()
    };
    assert_eq!(
        keys(&doc),
        ["certificates", "config", "next", "now", "total", "version"]
    );
    let certs = doc["certificates"].as_array().expect("certificates");
    let sources: Vec<&str> = certs
        .iter()
        .map(|c| c["source"].as_str().expect("source"))
        .collect();
    assert_eq!(sources, ["file", "file", "internal", "acme", "acme"]);
    for c in certs {
        let mut k = keys(c);
        k.sort();
        assert_eq!(
            k,
            [
                "acme",
                "certificate",
                "names",
                "next_renewal",
                "pending",
                "renewal_rule",
                "sites",
                "source"
            ]
        );
    }
    let blog = &certs[3];
    assert_eq!(blog["acme"]["rule"], "ari");
    assert!(blog["acme"]["ari_window"]["start"].is_string());
    assert!(blog["next_renewal"].is_string());
    assert_eq!(blog["names"], serde_json::json!(["blog.test"]));
    let shop = &certs[4];
    assert!(shop["certificate"].is_null());
    assert_eq!(shop["acme"]["state"], "backoff");
    assert_eq!(shop["acme"]["attempts"], 3);
    assert_eq!(
        shop["acme"]["last_error"]["problem"]["type"],
        "urn:ietf:params:acme:error:connection"
    );
    assert_eq!(shop["acme"]["last_error"]["problem"]["status"], 400);
    assert!(shop["pending"]
        .as_str()
        .expect("pending")
        .contains("refused"));
    // The internal site has no certificate until the server starts.
    assert!(certs[2]["certificate"].is_null());
    assert!(certs[2]["pending"].is_string());
}

const CERTS: &str = r#"file  site "pool"
  ECDSA  CN=pool Ecdsa  issued by CN=Portico Test Intermediate
         expires <DATE> (N days left)  SHA-256 <FP>
         SANs: pool.test
         file: <DIR>/pki/pool.pem
  renewal: not by Portico (replace the files; they are reloaded when they change)

file  site "pinned"
  ECDSA  CN=pin Ecdsa  issued by CN=Portico Test Intermediate
         expires <DATE> (N days left)  SHA-256 <FP>
         SANs: pin.test
         file: <DIR>/pki/pin.pem
  renewal: not by Portico (replace the files; they are reloaded when they change)

internal  site "dev"
  no certificate  hosts: dev.test
  pending: the local CA issues it when the server starts
  next renewal: unknown (the server has not planned it yet)

acme  site "blog"
  ECDSA  CN=blog Ecdsa  issued by CN=Portico Test Intermediate
         expires <DATE> (N days left)  SHA-256 <FP>
         SANs: blog.test
         file: <DIR>/state/acme/127.0.0.1_1_dir/blog.pem
  next renewal: <DATE> (a random time in the CA's ACME Renewal Information window)
  ARI window: <DATE> to <DATE>

acme  site "shop"
  no certificate  hosts: shop.test
  pending: ACME certificate pending: none issued yet, so the names are refused at the handshake
    (unrecognized_name, 112) until one is; last order failed <DATE> (3 failed
    attempts): validation of shop.test failed: urn:ietf:params:acme:error:connection: Connection
    refused; next try <DATE>
  next renewal: <DATE> (retry after a failed order (exponential backoff))
  ACME problem: urn:ietf:params:acme:error:connection (HTTP 400): 127.0.0.1: Connection refused
"#;

const SHOP_BINDING: &str = r#"  shop.test -> site "shop" · ACME (pending)
    ! ACME certificate pending: none issued yet, so the names are refused at the handshake (unrecognized_name, 112) until one is; last order failed <DATE> (3 failed attempts): validation of shop.test failed: urn:ietf:params:acme:error:connection: Connection refused; next try <DATE>"#;
