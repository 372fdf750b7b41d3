//! Every diagnostic of `portico check`, table-driven.
//!
//! Each row is a configuration file, written into a temporary directory next to a test PKI made
//! with rcgen, and the exact set of diagnostics `cli::check::check` must report for it: the
//! severity and path of each (no extra, none missing), a piece of its message, and — for
//! errors — a fix. A row that expects no error must also produce a runtime (warnings never
//! stop a configuration from serving). After the table, a few tests look into the runtime a
//! valid configuration builds: which certificates a host gets, and why.
//!
//! In expected messages, `{dir}` stands for the temporary directory (relative paths in the
//! file resolve against it, and messages print the resolved path).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    RsaKeySize, PKCS_RSA_SHA256,
};
use time::{Duration, OffsetDateTime};

use super::Severity;
use crate::cli::check::check;
use crate::names::HostName;
use crate::route::Match;
use crate::runtime::Runtime;
use crate::tls::load::KeyType;
use crate::tls::pool::How;

// ---------------------------------------------------------------------------------------------
// The test PKI
// ---------------------------------------------------------------------------------------------

/// An EC private key on secp256k1, a curve rustls/aws-lc-rs cannot sign with, in PKCS#8 PEM.
/// Generated once with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1`
/// (OpenSSL 3.0) and embedded, so the tests do not need openssl at run time.
const SECP256K1_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGEAgEAMBAGByqGSM49AgEGBSuBBAAKBG0wawIBAQQgREe8rXsccAQ7BydQGUd3
9S64jm6+GChTdybc0ls7SRqhRANCAARUFH/fruB40H4sVVem/A38H5y/9DzxN6rI
NKfSzazUzjn1uYEYZbRDdPVVDQiwwhT6RT6P/oAVWvdT9HNf5CXf
-----END PRIVATE KEY-----
";

/// Every file of the test PKI: (file name, contents). Made once per test process.
fn pki() -> &'static [(&'static str, String)] {
    static PKI: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    PKI.get_or_init(make_pki)
}

/// Parameters for a certificate named `cn` covering `names`, valid from `from` to `to` days
/// from now.
fn params(cn: &str, names: &[&str], from: i64, to: i64) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(names).expect("test names are valid SANs");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    p.not_before = now + Duration::days(from);
    p.not_after = now + Duration::days(to);
    p
}

fn ec_key() -> KeyPair {
    KeyPair::generate().expect("generate an ECDSA P-256 key")
}

/// A self-signed certificate and its key, as PEM.
fn self_signed(p: &CertificateParams, key: &KeyPair) -> (String, String) {
    let cert = p.self_signed(key).expect("self-sign a test certificate");
    (cert.pem(), key.serialize_pem())
}

fn make_pki() -> Vec<(&'static str, String)> {
    let mut files: Vec<(&'static str, String)> = Vec::new();
    let mut add = |cert: &'static str, key: &'static str, (c, k): (String, String)| {
        files.push((cert, c));
        files.push((key, k));
    };
    let year = 365;
    // ECDSA and RSA certificates for the same two names.
    add(
        "a.pem",
        "a.key",
        self_signed(&params("a", &["a.test", "www.a.test"], -1, year), &ec_key()),
    );
    let rsa = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
        .expect("generate an RSA key");
    add(
        "rsa-a.pem",
        "rsa-a.key",
        self_signed(
            &params("a (RSA)", &["a.test", "www.a.test"], -1, year),
            &rsa,
        ),
    );
    // A wildcard, and an exact certificate for one name it covers.
    add(
        "wild.pem",
        "wild.key",
        self_signed(&params("wildcard b", &["*.b.test"], -1, year), &ec_key()),
    );
    add(
        "xb.pem",
        "xb.key",
        self_signed(&params("x.b", &["x.b.test"], -1, year), &ec_key()),
    );
    // One certificate, two SAN names.
    add(
        "san.pem",
        "san.key",
        self_signed(
            &params("c and d", &["c.test", "d.test"], -1, year),
            &ec_key(),
        ),
    );
    // Validity.
    add(
        "expired.pem",
        "expired.key",
        self_signed(&params("expired", &["e.test"], -30, -1), &ec_key()),
    );
    add(
        "future.pem",
        "future.key",
        self_signed(&params("future", &["f.test"], 10, 100), &ec_key()),
    );
    // Five and a half days left, so the warning says "5 days" however long the tests take.
    let mut soon = params("soon", &["s.test"], -30, 5);
    soon.not_after += Duration::hours(12);
    add("soon.pem", "soon.key", self_signed(&soon, &ec_key()));
    // Three certificates for l.test: the valid one that expires last must win; the one that
    // expires even later is not valid yet.
    add(
        "short.pem",
        "short.key",
        self_signed(&params("l short", &["l.test"], -1, 30), &ec_key()),
    );
    add(
        "long.pem",
        "long.key",
        self_signed(&params("l long", &["l.test"], -1, 300), &ec_key()),
    );
    add(
        "later.pem",
        "later.key",
        self_signed(&params("l later", &["l.test"], 1, 900), &ec_key()),
    );
    // An expired RSA certificate for l.test: a valid ECDSA one exists, so it must be
    // neither chosen nor reported.
    add(
        "rsa-expired.pem",
        "rsa-expired.key",
        self_signed(&params("l old RSA", &["l.test"], -300, -1), &rsa),
    );
    // A CA and a leaf it issued, in both orders.
    let ca_key = ec_key();
    let mut ca = params("Portico Test Root", &[], -1, 2 * year);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).expect("self-sign the CA").pem();
    let leaf_key = ec_key();
    let leaf = params("chain leaf", &["chain.test"], -1, year)
        .signed_by(&leaf_key, &Issuer::new(ca, ca_key))
        .expect("issue the chain leaf")
        .pem();
    files.push(("chain.pem", format!("{leaf}{ca_pem}")));
    files.push(("chain-reversed.pem", format!("{ca_pem}{leaf}")));
    files.push(("chain.key", leaf_key.serialize_pem()));
    // Keys and files that are wrong in some way.
    files.push(("other.key", ec_key().serialize_pem()));
    files.push(("k1.key", SECP256K1_PKCS8.to_string()));
    files.push(("garbage.pem", "this is not a certificate\n".to_string()));
    // Certificate and key in one file, as many deployments keep them (read once, see
    // tls/load.rs), in either order, and the same with something wrong.
    let made = |name: &str| -> String {
        files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    };
    let one_file = [
        ("a-both.pem", made("a.pem") + &made("a.key")),
        ("a-key-first.pem", made("a.key") + &made("a.pem")),
        ("a-other-key.pem", made("a.pem") + &made("other.key")),
        (
            "chain-reversed-both.pem",
            made("chain-reversed.pem") + &made("chain.key"),
        ),
    ];
    files.extend(one_file);
    files
}

/// Writes the PKI and `toml` (as `portico.toml`) into a new temporary directory.
fn write_dir(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    for (name, contents) in pki() {
        std::fs::write(dir.path().join(name), contents).expect("write a PKI file");
    }
    let file = dir.path().join("portico.toml");
    std::fs::write(&file, toml).expect("write portico.toml");
    (dir, file)
}

// ---------------------------------------------------------------------------------------------
// Building blocks for the table
// ---------------------------------------------------------------------------------------------

const RESPOND: &str = r#"respond = { body = "ok" }"#;

fn listener(address: &str) -> String {
    format!("[[listener]]\naddress = {address:?}\n")
}

fn named_listener(name: &str, address: &str) -> String {
    format!("[[listener]]\nname = {name:?}\naddress = {address:?}\n")
}

fn pool(cert: &str, key: &str) -> String {
    format!("[[certificate]]\ncert = {cert:?}\nkey = {key:?}\n")
}

/// A site; `rest` holds its other lines (action, tls, listeners), one per line.
fn site(name: &str, hosts: &[&str], rest: &[&str]) -> String {
    let mut s = format!("[[site]]\nname = {name:?}\nhosts = {hosts:?}\n");
    for line in rest {
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// The usual start: one https listener on `*:8443` and a.pem in the pool.
fn base() -> String {
    [listener("*:8443"), pool("a.pem", "a.key")].concat()
}

struct Want {
    severity: Severity,
    path: &'static str,
    /// A piece of the message; `{dir}` is replaced by the configuration's directory.
    contains: String,
}

fn error(path: &'static str, contains: &str) -> Want {
    Want {
        severity: Severity::Error,
        path,
        contains: contains.to_string(),
    }
}

fn warning(path: &'static str, contains: &str) -> Want {
    Want {
        severity: Severity::Warning,
        path,
        contains: contains.to_string(),
    }
}

/// Whether a row can run here (some rows need a non-root user).
enum Setup {
    Run,
    Skip(&'static str),
}

struct Case {
    name: &'static str,
    toml: String,
    want: Vec<Want>,
    /// Runs after the files are written, before the check.
    setup: Option<fn(&Path) -> Setup>,
}

fn case(name: &'static str, toml: String, want: Vec<Want>) -> Case {
    Case {
        name,
        toml,
        want,
        setup: None,
    }
}

/// A pool certificate that fails to load, next to a good one (a.pem) for the site, so that
/// the only problem is the bad certificate itself.
fn bad_pool_cert(name: &'static str, cert: &str, key: &str, contains: &str) -> Case {
    case(
        name,
        [
            listener("*:8443"),
            pool(cert, key),
            pool("a.pem", "a.key"),
            site("a", &["a.test"], &[RESPOND]),
        ]
        .concat(),
        vec![error("certificate[0]", contains)],
    )
}

/// One bad host next to a good one.
fn bad_host(name: &'static str, host: &str, contains: &str) -> Case {
    case(
        name,
        [base(), site("a", &["a.test", host], &[RESPOND])].concat(),
        vec![error("site[0].hosts[1]", contains)],
    )
}

/// One listener with a bad address.
fn bad_address(name: &'static str, address: &str, contains: &str) -> Case {
    case(
        name,
        [
            listener(address),
            pool("a.pem", "a.key"),
            site("a", &["a.test"], &[RESPOND]),
        ]
        .concat(),
        vec![error("listener[0].address", contains)],
    )
}

fn lock_key(dir: &Path) -> Setup {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("locked.key");
    std::fs::copy(dir.join("a.key"), &key).expect("copy a.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    if std::fs::read(&key).is_ok() {
        return Setup::Skip("this user can read a file with mode 000 (root)");
    }
    Setup::Run
}

fn make_www(dir: &Path) -> Setup {
    std::fs::create_dir(dir.join("www")).expect("create www");
    std::fs::write(dir.join("www/index.html"), "hello\n").expect("write index.html");
    Setup::Run
}

/// A configuration with nothing wrong: several sites on three listeners, exact, wildcard and
/// SAN certificates, an RSA and an ECDSA certificate for the same names, a pinned chain, a
/// certificate issued at start by the local CA, and every action Portico has.
fn valid_config() -> String {
    [
        "state_dir = \"state\"\n".to_string(),
        r#"
[limits]
handshake_timeout = "5s"
header_timeout = "500ms"
idle_timeout = "2m"
drain_timeout = "1h"
max_header_bytes = 16384
max_connections = 100

[[listener]]
name = "https"
address = "*:8443"
no_sni = "a.test"
unknown_sni = "no_sni"
alpn = ["h2", "http/1.1"]

[[listener]]
name = "legacy"
address = "127.0.0.1:9443"
no_sni = "c.test"
max_connections = 10

[[listener]]
address = "*:8080"
kind = "http"
"#
        .to_string(),
        pool("a.pem", "a.key"),
        pool("rsa-a.pem", "rsa-a.key"),
        pool("wild.pem", "wild.key"),
        pool("xb.pem", "xb.key"),
        pool("san.pem", "san.key"),
        pool("short.pem", "short.key"),
        pool("long.pem", "long.key"),
        pool("later.pem", "later.key"),
        pool("rsa-expired.pem", "rsa-expired.key"),
        site("a", &["a.test", "WWW.A.test."], &[r#"root = "www""#]),
        site("wild", &["*.b.test"], &[RESPOND]),
        site(
            "xb",
            &["x.b.test", "q.b.test"],
            &[
                r#"listeners = ["https", "*:8080"]"#,
                r#"redirect = { to = "https://a.test/", status = 301 }"#,
            ],
        ),
        site("c", &["c.test"], &[RESPOND]),
        site(
            "d",
            &["d.test"],
            &[
                r#"listeners = ["https"]"#,
                r#"respond = { status = 404, body = "no\n", content_type = "text/html" }"#,
            ],
        ),
        site(
            "chain",
            &["chain.test"],
            &[
                r#"tls = { cert = "chain.pem", key = "chain.key" }"#,
                r#"listeners = ["*:8443"]"#,
                RESPOND,
            ],
        ),
        site("l", &["l.test"], &[r#"tls = "pool""#, RESPOND]),
        site("dev", &["dev.test"], &[r#"tls = "internal""#, RESPOND]),
        site(
            "app",
            &["app.test"],
            &[r#"tls = "internal""#, r#"proxy = { upstreams = ["http://127.0.0.1:3000", "https://[::1]:8443"], ca = "chain.pem", server_name = "app.internal", lb = "least_conn", connect_timeout = "2s", response_timeout = "30s", idle_timeout = "1m", max_fails = 0, fail_timeout = "5s", health_check = { path = "/healthz?full=1", interval = "10s" }, trusted_proxies = ["10.0.0.0/8", "::1"], host = "app.internal:8080", max_body_bytes = 1048576 }"#],
        ),
    ]
    .concat()
}

fn cases() -> Vec<Case> {
    vec![
        // ---- the file itself ----------------------------------------------------------------
        case(
            "toml syntax error",
            "[[listener]\naddress = \"*:8443\"\n".to_string(),
            vec![error("", "{dir}/portico.toml is not valid")],
        ),
        case(
            "value of the wrong type",
            [
                listener("*:8443"),
                "[[site]]\nhosts = \"a.test\"\n".to_string(),
            ]
            .concat(),
            vec![error("", "{dir}/portico.toml is not valid")],
        ),
        case(
            "unknown keys everywhere, all reported",
            [
                "colour = \"blue\"\n".to_string(),
                "[limits]\nidle = \"1s\"\n".to_string(),
                "[[listener]]\naddress = \"*:8443\"\nadress = \"*:9443\"\n".to_string(),
                "[[certificate]]\ncert = \"a.pem\"\nkey = \"a.key\"\nchain = \"x.pem\"\n"
                    .to_string(),
                site("a", &["a.test"], &[RESPOND, r#"roots = "www""#]),
                site(
                    "r",
                    &["r.test"],
                    &[r#"redirect = { to = "https://a.test", code = 301, keep_path = true }"#],
                ),
                site(
                    "t",
                    &["t.test"],
                    &[r#"respond = { body = "x", headers = "y" }"#],
                ),
            ]
            .concat(),
            vec![
                error("colour", "unknown key \"colour\""),
                error("limits.idle", "unknown key \"idle\""),
                error("listener[0].adress", "unknown key \"adress\""),
                error("certificate[0].chain", "unknown key \"chain\""),
                error("site[0].roots", "unknown key \"roots\""),
                error("site[1].redirect.code", "unknown key \"code\""),
                error("site[1].redirect.keep_path", "unknown key \"keep_path\""),
                error("site[2].respond.headers", "unknown key \"headers\""),
                // Certificate checks run too, even though the file has errors.
                error(
                    "site[1].hosts[0]",
                    "no certificate in the pool covers host r.test",
                ),
                error(
                    "site[2].hosts[0]",
                    "no certificate in the pool covers host t.test",
                ),
            ],
        ),
        // ---- listeners ----------------------------------------------------------------------
        case(
            "no listener",
            [pool("a.pem", "a.key"), site("a", &["a.test"], &[RESPOND])].concat(),
            vec![error("listener", "no listener is configured")],
        ),
        case(
            "listener without address",
            [
                "[[listener]]\nname = \"web\"\n".to_string(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("listener[0]", "the listener has no address"),
                error(
                    "site[0].hosts[0]",
                    "no certificate in the pool covers host a.test",
                ),
            ],
        ),
        case(
            "passthrough and PROXY protocol settings",
            [
                listener("*:8443"),
                "unknown_sni = \"passthrough\"\nproxy_protocol_from = [\"10.0.0.0/8\", \"nope\"]\n".to_string(),
                named_listener("two", "*:9443"),
                "default_passthrough = { backend = \"127.0.0.1:9\" }\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
                site("p", &["p.test"], &[r#"passthrough = { backend = "nowhere", proxy_protocol = "v3" }"#]),
                site("q", &["q.test"], &[r#"passthrough = { backend = "[::1]:0" }"#]),
                site("r", &["r.test"], &[r#"passthrough = { proxy_protocol = "v1" }"#]),
            ]
            .concat(),
            vec![
                error("listener[0].unknown_sni", "needs default_passthrough"),
                error("listener[0].proxy_protocol_from[1]", "\"nope\" is not an IP address or range"),
                warning("listener[1].default_passthrough", "used only with unknown_sni = \"passthrough\""),
                error("site[1].passthrough.proxy_protocol", "unknown PROXY protocol version \"v3\""),
                error("site[2].passthrough.backend", "\"[::1]:0\" is not \"host:port\""),
                error("site[3].passthrough", "no backend"),
            ],
        ),
        bad_address("port 0", "*:0", "port 0 is not a port"),
        bad_address("port 0 on an IP", "127.0.0.1:0", "port 0 is not a port"),
        case(
            "limits too large or too small",
            [
                "[limits]\nhandshake_timeout = \"48h\"\nmax_header_bytes = 4096\n".to_string(),
                base(),
            ]
            .concat(),
            vec![
                error(
                    "limits.handshake_timeout",
                    "is not a duration between 1ms and 24h",
                ),
                error("limits.max_header_bytes", "4096 is out of range"),
            ],
        ),
        case(
            "redirect target with a query",
            [
                listener("*:8443"),
                pool("a.pem", "a.key"),
                site(
                    "a",
                    &["a.test"],
                    &[r#"redirect = { to = "https://b.test/?x=1" }"#],
                ),
            ]
            .concat(),
            vec![error("site[0].redirect.to", "without a query")],
        ),
        bad_address(
            "address is a word",
            "nowhere",
            r#""nowhere" is not "IP:port""#,
        ),
        bad_address(
            "address without port",
            "1.2.3.4",
            r#""1.2.3.4" is not "IP:port""#,
        ),
        bad_address(
            "port out of range",
            "*:99999",
            r#""99999" is not a port number"#,
        ),
        bad_address(
            "unspecified IPv4 address",
            "0.0.0.0:8443",
            r#"to accept on every address write "*:8443""#,
        ),
        bad_address(
            "unspecified IPv6 address",
            "[::]:8443",
            r#"to accept on every address write "*:8443""#,
        ),
        case(
            "duplicate listener address",
            [
                named_listener("one", "*:8443"),
                named_listener("two", "*:8443"),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[1].address",
                "address *:8443 is already used by listener[0]",
            )],
        ),
        case(
            "duplicate address spelled differently, unnamed: one error, not two",
            [
                listener("127.0.0.1:8443"),
                listener("[::ffff:127.0.0.1]:8443"),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[1].address",
                "address 127.0.0.1:8443 is already used by listener[0]",
            )],
        ),
        case(
            "duplicate listener name",
            [
                named_listener("web", "*:8443"),
                named_listener("web", "*:9443"),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[1].name",
                "name \"web\" is already used by listener[0]",
            )],
        ),
        case(
            "unknown listener kind",
            [
                "[[listener]]\naddress = \"*:8443\"\nkind = \"tls\"\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("listener[0].kind", "unknown kind \"tls\"")],
        ),
        case(
            "no_sni names a host not bound on that listener",
            [
                named_listener("one", "*:8443"),
                "no_sni = \"b.test\"\n".to_string(),
                named_listener("two", "*:9443"),
                pool("a.pem", "a.key"),
                pool("wild.pem", "wild.key"),
                site("a", &["a.test"], &[RESPOND, r#"listeners = ["one"]"#]),
                site("b", &["b.x.test"], &[RESPOND, r#"listeners = ["two"]"#]),
            ]
            .concat(),
            vec![
                error(
                    "listener[0].no_sni",
                    "b.test is not bound to any site on listener \"one\"",
                ),
                error(
                    "site[1].hosts[0]",
                    "no certificate in the pool covers host b.x.test",
                ),
            ],
        ),
        case(
            "no_sni is a wildcard",
            [
                listener("*:8443"),
                "no_sni = \"*.b.test\"\n".to_string(),
                pool("wild.pem", "wild.key"),
                site("b", &["*.b.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("listener[0].no_sni", "\"*.b.test\" is a wildcard")],
        ),
        case(
            "no_sni is not a host name",
            [
                listener("*:8443"),
                "no_sni = \"10.0.0.1\"\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("listener[0].no_sni", "is an IP address")],
        ),
        case(
            "unknown_sni = no_sni without no_sni",
            [
                listener("*:8443"),
                "unknown_sni = \"no_sni\"\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[0].unknown_sni",
                "unknown_sni = \"no_sni\" needs a no_sni host",
            )],
        ),
        case(
            "unknown_sni has an unknown value",
            [
                listener("*:8443"),
                "unknown_sni = \"fallback\"\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[0].unknown_sni",
                "unknown value \"fallback\"",
            )],
        ),
        case(
            "alpn: unsupported protocol, and an empty list",
            [
                listener("*:8443"),
                "alpn = [\"h2\", \"spdy/3\"]\n".to_string(),
                listener("*:9443"),
                "alpn = []\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("listener[0].alpn[1]", "unsupported protocol \"spdy/3\""),
                error("listener[1].alpn", "the list is empty"),
            ],
        ),
        case(
            "listener max_connections is not positive",
            [
                listener("*:8443"),
                "max_connections = 0\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[0].max_connections",
                "0 is not between 1 and 10000000",
            )],
        ),
        case(
            "TLS settings on an http listener (warning)",
            [
                base(),
                "[[listener]]\naddress = \"*:8080\"\nkind = \"http\"\nalpn = [\"h2\"]\n"
                    .to_string(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![warning(
                "listener[1]",
                "no_sni, unknown_sni, default_passthrough and alpn mean nothing on an http listener",
            )],
        ),
        // ---- limits -------------------------------------------------------------------------
        case(
            "bad limits durations",
            [
                "[limits]\nidle_timeout = \"soon\"\nhandshake_timeout = \"10 minutes\"\n\
                 drain_timeout = \"0s\"\n"
                    .to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("limits.idle_timeout", "\"soon\" is not a duration"),
                error(
                    "limits.handshake_timeout",
                    "\"10 minutes\" is not a duration",
                ),
                error("limits.drain_timeout", "\"0s\" is not a duration"),
            ],
        ),
        case(
            "limits out of range",
            [
                "[limits]\nmax_header_bytes = 10\nmax_connections = -1\n".to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("limits.max_header_bytes", "10 is out of range"),
                error("limits.max_connections", "-1 is not between 1 and 10000000"),
            ],
        ),
        // ---- host names and bindings --------------------------------------------------------
        bad_host("host is an IPv4 literal", "10.0.0.1", "is an IP address"),
        bad_host(
            "host is a bracketed IPv6 literal",
            "[::1]",
            "is an IP address",
        ),
        bad_host(
            "host has a bad character",
            "a b.test",
            "label \"a b\" has a character other than letters",
        ),
        bad_host(
            "wildcard not the left-most label",
            "a.*.test",
            "'*' may only be the whole left-most label",
        ),
        bad_host(
            "wildcard not a whole label",
            "f*.x.test",
            "'*' may only be the whole left-most label",
        ),
        case(
            "site without hosts",
            [base(), "[[site]]\nname = \"a\"\nrespond = {}\n".to_string()].concat(),
            vec![error("site[0].hosts", "the site has no hosts")],
        ),
        case(
            "host listed twice in one site, spelled differently (warning)",
            [base(), site("a", &["a.test", "A.TEST."], &[RESPOND])].concat(),
            vec![warning("site[0].hosts[1]", "a.test is listed twice")],
        ),
        case(
            "one host claimed by two sites on one listener",
            [
                base(),
                site("a", &["a.test"], &[RESPOND]),
                site("b", &["www.a.test", "a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[1].hosts[1]",
                "host a.test is claimed by site \"a\" (site[0]) and site \"b\" (site[1]) \
                 on listener \"*:8443\"",
            )],
        ),
        case(
            "one host, spelled differently, claimed by two sites",
            [
                base(),
                site("a", &["A.test."], &[RESPOND]),
                site("b", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[1].hosts[0]",
                "host a.test is claimed by site \"a\" (site[0]) and site \"b\" (site[1])",
            )],
        ),
        case(
            "same host on different listeners is fine",
            [
                named_listener("one", "*:8443"),
                named_listener("two", "*:9443"),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND, r#"listeners = ["one"]"#]),
                site("b", &["a.test"], &[RESPOND, r#"listeners = ["*:9443"]"#]),
            ]
            .concat(),
            vec![],
        ),
        case(
            "site names an unknown listener",
            [
                base(),
                site(
                    "a",
                    &["a.test"],
                    &[RESPOND, r#"listeners = ["*:8443", "nope"]"#],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].listeners[1]",
                "no listener is named \"nope\"",
            )],
        ),
        case(
            "site bound to no listener (warning)",
            [
                base(),
                site("a", &["a.test"], &[RESPOND]),
                site("b", &["b.test"], &[RESPOND, "listeners = []"]),
            ]
            .concat(),
            vec![warning(
                "site[1].listeners",
                "site \"b\" is bound to no listener and will never be served",
            )],
        ),
        case(
            "host on *:port that the IP:port listener does not bind (warning)",
            [
                named_listener("all", "*:8443"),
                named_listener("lo", "127.0.0.1:8443"),
                pool("a.pem", "a.key"),
                pool("wild.pem", "wild.key"),
                site("a", &["a.test"], &[RESPOND, r#"listeners = ["all"]"#]),
                site("b", &["x.b.test"], &[RESPOND]),
            ]
            .concat(),
            vec![warning(
                "site[0].hosts[0]",
                "host a.test is bound on *:8443 but not on 127.0.0.1:8443",
            )],
        ),
        case(
            "duplicate site name",
            [
                base(),
                site("a", &["a.test"], &[RESPOND]),
                site("a", &["www.a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[1].name",
                "name \"a\" is already used by site[0]",
            )],
        ),
        // ---- actions ------------------------------------------------------------------------
        case(
            "site with no action",
            [base(), site("a", &["a.test"], &[])].concat(),
            vec![error("site[0]", "site \"a\" has no action")],
        ),
        case(
            "site with two actions",
            [
                base(),
                site("a", &["a.test"], &[r#"root = "www""#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0]", "site \"a\" has 2 actions: root, respond")],
        ),
        case(
            "proxy settings, every problem with its path",
            [
                base(),
                site(
                    "a",
                    &["a.test"],
                    &[r#"proxy = { upstreams = ["ftp://x:1", "http://127.0.0.1:3000/api", "http://127.0.0.1:0", "http://127.0.0.1:3000", "http://127.0.0.1:3000/"], lb = "random", connect_timeout = "5", response_timeout = "25h", max_fails = -1, trusted_proxies = ["10.0.0.0/8", "nope"], host = "a b", max_body_bytes = -5, retries = 2 }"#],
                ),
                site(
                    "b",
                    &["b.test"],
                    &[r#"proxy = { upstreams = ["http://127.0.0.1:3000"], server_name = "*.x.test", ca = "root.pem", health_check = { path = "healthz", interval = "0s", expect = 200 } }"#],
                ),
                site("c", &["c.test"], &[r#"proxy = { lb = "least_conn" }"#]),
                site("d", &["d.test"], &[r#"proxy = { upstreams = [] }"#]),
            ]
            .concat(),
            vec![
                error("site[0].proxy.retries", "unknown key \"retries\""),
                error("site[0].proxy.upstreams[0]", "is not an http:// or https:// URL"),
                error("site[0].proxy.upstreams[1]", "has a path, query or fragment"),
                error("site[0].proxy.upstreams[2]", "\"0\" is not a port number"),
                warning("site[0].proxy.upstreams[4]", "http://127.0.0.1:3000 is listed twice"),
                error("site[0].proxy.lb", "unknown load balancing \"random\""),
                error("site[0].proxy.connect_timeout", "\"5\" is not a duration"),
                error("site[0].proxy.response_timeout", "\"25h\" is not a duration"),
                error("site[0].proxy.max_fails", "-1 is not between 0 and 1000"),
                error("site[0].proxy.trusted_proxies[1]", "\"nope\" is not an IP address or range"),
                error("site[0].proxy.host", "\"a b\" is not a host or host:port"),
                error("site[0].proxy.max_body_bytes", "-5 is negative"),
                error("site[1].proxy.health_check.expect", "unknown key \"expect\""),
                error("site[1].proxy.server_name", "\"*.x.test\" is a wildcard"),
                warning("site[1].proxy.ca", "ca is used only for https:// upstreams"),
                warning("site[1].proxy.server_name", "server_name is used only for https:// upstreams"),
                error("site[1].proxy.health_check.path", "\"healthz\" is not a request path"),
                error("site[1].proxy.health_check.interval", "\"0s\" is not a duration"),
                error("site[2].proxy", "proxy has no upstreams"),
                error("site[3].proxy.upstreams", "the list of upstreams is empty"),
            ],
        ),
        case(
            "proxy ca file that cannot be loaded",
            [
                base(),
                site(
                    "a",
                    &["a.test"],
                    &[r#"proxy = { upstreams = ["https://127.0.0.1:3000"], ca = "missing.pem" }"#],
                ),
                site(
                    "b",
                    &["www.a.test"],
                    &[r#"proxy = { upstreams = ["https://127.0.0.1:3000"], ca = "garbage.pem" }"#],
                ),
            ]
            .concat(),
            vec![
                error("site[0].proxy.ca", "cannot read {dir}/missing.pem"),
                error("site[1].proxy.ca", "{dir}/garbage.pem holds no usable CERTIFICATE block"),
            ],
        ),
        case(
            "unknown tls mode",
            [
                base(),
                site("a", &["a.test"], &[r#"tls = "letsencrypt""#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0].tls", "unknown value \"letsencrypt\"")],
        ),
        case(
            "pinned tls without key",
            [
                base(),
                site("a", &["a.test"], &[r#"tls = { cert = "a.pem" }"#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0].tls", "key is missing")],
        ),
        case(
            "pool certificate without cert",
            [
                base(),
                "[[certificate]]\nkey = \"a.key\"\n".to_string(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("certificate[1]", "cert is missing")],
        ),
        case(
            "bad redirects",
            [
                base(),
                site("a", &["a.test"], &[r#"redirect = { to = "/elsewhere" }"#]),
                site("b", &["b.test"], &[r#"redirect = { status = 301 }"#]),
                site(
                    "c",
                    &["c.test"],
                    &[r#"redirect = { to = "https://a.test", status = 200 }"#],
                ),
            ]
            .concat(),
            vec![
                error(
                    "site[0].redirect.to",
                    "\"/elsewhere\" is not an absolute http(s) URL",
                ),
                error("site[1].redirect", "redirect has no `to`"),
                error("site[2].redirect.status", "200 is not a redirect status"),
            ],
        ),
        case(
            "bad responds",
            [
                base(),
                site("a", &["a.test"], &[r#"respond = { status = 99 }"#]),
                site(
                    "b",
                    &["b.test"],
                    &[r#"respond = { content_type = "text/plain\n" }"#],
                ),
            ]
            .concat(),
            vec![
                error("site[0].respond.status", "99 is not a final HTTP status"),
                error(
                    "site[1].respond.content_type",
                    "is not a valid header value",
                ),
            ],
        ),
        case(
            "root directory missing",
            [base(), site("a", &["a.test"], &[r#"root = "nowhere""#])].concat(),
            vec![error("site[0].root", "cannot serve {dir}/nowhere")],
        ),
        // ---- certificate files --------------------------------------------------------------
        bad_pool_cert(
            "certificate file missing",
            "missing.pem",
            "a.key",
            "cannot read {dir}/missing.pem: no such file",
        ),
        case(
            "the only certificate for a host is missing: both reported, linked",
            [
                listener("*:8443"),
                pool("missing.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error(
                    "certificate[0]",
                    "cannot read {dir}/missing.pem: no such file",
                ),
                error(
                    "site[0].hosts[0]",
                    "no certificate in the pool covers host a.test (note: certificate[0] \
                     could not be loaded)",
                ),
            ],
        ),
        case(
            "pinned key file missing",
            [
                listener("*:8443"),
                site(
                    "a",
                    &["a.test"],
                    &[r#"tls = { cert = "a.pem", key = "missing.key" }"#, RESPOND],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].tls",
                "cannot read {dir}/missing.key: no such file",
            )],
        ),
        Case {
            // Another pool certificate covers the host too: the unreadable key must still
            // stop the configuration, not fall back to the other certificate.
            setup: Some(lock_key),
            ..case(
                "key file unreadable",
                [
                    listener("*:8443"),
                    pool("a.pem", "locked.key"),
                    pool("rsa-a.pem", "rsa-a.key"),
                    site("a", &["a.test"], &[RESPOND]),
                ]
                .concat(),
                vec![error(
                    "certificate[0]",
                    "cannot read {dir}/locked.key: permission denied",
                )],
            )
        },
        bad_pool_cert(
            "certificate file is not PEM",
            "garbage.pem",
            "a.key",
            "{dir}/garbage.pem is not a PEM file",
        ),
        bad_pool_cert(
            "key file holds no key (the certificate given as key)",
            "a.pem",
            "a.pem",
            "{dir}/a.pem has no private key",
        ),
        case(
            "certificate and key in one file",
            [
                listener("*:8443"),
                pool("a-both.pem", "a-both.pem"),
                pool("a-key-first.pem", "a-key-first.pem"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![],
        ),
        bad_pool_cert(
            "certificate and key in one file that do not match",
            "a-other-key.pem",
            "a-other-key.pem",
            "the key in {dir}/a-other-key.pem does not match the certificate in {dir}/a-other-key.pem",
        ),
        bad_pool_cert(
            "chain and key in one file, chain not leaf-first",
            "chain-reversed-both.pem",
            "chain-reversed-both.pem",
            "{dir}/chain-reversed-both.pem: the chain is not in leaf-first order: certificate #0 \
             (CN=Portico Test Root) is not issued by the next one (CN=chain leaf)",
        ),
        bad_pool_cert(
            "key does not match the certificate",
            "a.pem",
            "other.key",
            "the key in {dir}/other.key does not match the certificate in {dir}/a.pem",
        ),
        bad_pool_cert(
            "unsupported key type (EC on secp256k1)",
            "a.pem",
            "k1.key",
            "{dir}/k1.key: unsupported private key",
        ),
        bad_pool_cert(
            "chain not leaf-first",
            "chain-reversed.pem",
            "chain.key",
            "{dir}/chain-reversed.pem: the chain is not in leaf-first order: certificate #0 \
             (CN=Portico Test Root) is not issued by the next one (CN=chain leaf)",
        ),
        case(
            "bound host not covered by the pinned certificate",
            [
                listener("*:8443"),
                site(
                    "a",
                    &["a.test", "z.test"],
                    &[r#"tls = { cert = "a.pem", key = "a.key" }"#, RESPOND],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].hosts[1]",
                "host z.test is not covered by the site's certificate {dir}/a.pem \
                 (it covers: a.test, www.a.test)",
            )],
        ),
        case(
            "no pool certificate covers a host",
            [base(), site("a", &["a.test", "nocert.test"], &[RESPOND])].concat(),
            vec![error(
                "site[0].hosts[1]",
                "no certificate in the pool covers host nocert.test",
            )],
        ),
        case(
            "a wildcard certificate does not cover the bare parent",
            [
                listener("*:8443"),
                pool("wild.pem", "wild.key"),
                site("b", &["b.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[0].hosts[0]",
                "no certificate in the pool covers host b.test",
            )],
        ),
        case(
            "a site only on an http listener needs no certificate",
            [
                "[[listener]]\naddress = \"*:8080\"\nkind = \"http\"\n".to_string(),
                site("a", &["nocert.test"], &[RESPOND]),
            ]
            .concat(),
            vec![],
        ),
        // ---- validity -----------------------------------------------------------------------
        case(
            "certificate expired",
            [
                listener("*:8443"),
                pool("expired.pem", "expired.key"),
                site("e", &["e.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[0].hosts[0]",
                "the certificate for e.test ({dir}/expired.pem) expired on",
            )],
        ),
        case(
            "pinned certificate not yet valid",
            [
                listener("*:8443"),
                site(
                    "f",
                    &["f.test"],
                    &[
                        r#"tls = { cert = "future.pem", key = "future.key" }"#,
                        RESPOND,
                    ],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].hosts[0]",
                "the certificate for f.test ({dir}/future.pem) is not valid until",
            )],
        ),
        case(
            "certificate expiring within 14 days (warning)",
            [
                listener("*:8443"),
                pool("soon.pem", "soon.key"),
                site("s", &["s.test"], &[RESPOND]),
            ]
            .concat(),
            vec![warning(
                "site[0].hosts[0]",
                "the certificate for s.test ({dir}/soon.pem) expires in 5 days",
            )],
        ),
        // ---- everything at once -------------------------------------------------------------
        case(
            "many problems in the file, all in one report",
            [
                "colour = 1\n".to_string(),
                "[limits]\nidle_timeout = \"soon\"\n".to_string(),
                named_listener("web", "*:8443"),
                "unknown_sni = \"no_sni\"\n".to_string(),
                named_listener("web", "1.2.3.4"),
                pool("a.pem", "a.key"),
                site("a", &["a.test", "10.0.0.1"], &[RESPOND]),
                site(
                    "b",
                    &["A.TEST"],
                    &[RESPOND, r#"listeners = ["nope", "web"]"#],
                ),
                site("c", &["c.test"], &[]),
                site("d", &["d.test"], &[RESPOND, "listeners = []"]),
            ]
            .concat(),
            vec![
                error("colour", "unknown key \"colour\""),
                error("limits.idle_timeout", "\"soon\" is not a duration"),
                error("listener[0].unknown_sni", "needs a no_sni host"),
                error("listener[1].address", "\"1.2.3.4\" is not \"IP:port\""),
                error("listener[1].name", "name \"web\" is already used"),
                error("site[0].hosts[1]", "is an IP address"),
                error("site[1].listeners[0]", "no listener is named \"nope\""),
                error(
                    "site[1].hosts[0]",
                    "host a.test is claimed by site \"a\" (site[0]) and site \"b\" (site[1])",
                ),
                error("site[2]", "site \"c\" has no action"),
                warning("site[3].listeners", "bound to no listener"),
            ],
        ),
        case(
            "many certificate problems, all in one report",
            [
                listener("*:8443"),
                pool("missing.pem", "a.key"),
                pool("a.pem", "other.key"),
                pool("expired.pem", "expired.key"),
                pool("soon.pem", "soon.key"),
                pool("future.pem", "future.key"),
                site("a", &["a.test"], &[RESPOND]),
                site("e", &["e.test"], &[RESPOND]),
                site("s", &["s.test"], &[RESPOND]),
                site(
                    "p",
                    &["www.a.test", "p.test"],
                    &[r#"tls = { cert = "a.pem", key = "a.key" }"#, RESPOND],
                ),
                site(
                    "g",
                    &["g.test"],
                    &[r#"tls = { cert = "garbage.pem", key = "a.key" }"#, RESPOND],
                ),
                site("f", &["f.test"], &[r#"root = "nowhere""#]),
            ]
            .concat(),
            vec![
                error("certificate[0]", "cannot read {dir}/missing.pem"),
                error("certificate[1]", "does not match the certificate"),
                error(
                    "site[0].hosts[0]",
                    "no certificate in the pool covers host a.test (note: certificate[0], \
                     certificate[1] could not be loaded)",
                ),
                error("site[1].hosts[0]", "expired on"),
                warning("site[2].hosts[0]", "expires in 5 days"),
                error("site[3].hosts[1]", "host p.test is not covered"),
                error("site[4].tls", "{dir}/garbage.pem is not a PEM file"),
                error("site[5].root", "cannot serve {dir}/nowhere"),
                error("site[5].hosts[0]", "is not valid until"),
            ],
        ),
        // ---- nothing wrong ------------------------------------------------------------------
        Case {
            setup: Some(make_www),
            ..case("valid multi-site configuration", valid_config(), vec![])
        },
        // ---- ACME ------------------------------------------------------------------------------
        case(
            "acme site without an [acme] table",
            [base(), site("a", &["a.test"], &[r#"tls = "acme""#, RESPOND])].concat(),
            vec![error("site[0].tls", "there is no [acme] table")],
        ),
        case(
            "acme site before its first certificate: a warning, not an error",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[r#"tls = "acme""#, RESPOND]),
            ]
            .concat(),
            vec![warning("site[0].tls", "certificate is pending")],
        ),
        case(
            "acme table problems, all reported",
            [
                "[acme]\ndirectory = \"http://acme.test/dir\"\nemail = \"nobody\"\nchallenges = [\"dns-01\"]\nkey = \"x\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("acme.directory", "is not an https:// URL"),
                error("acme.email", "is not an email address"),
                error("acme.challenges[0]", "unknown challenge type \"dns-01\""),
                error("acme.key", "unknown key \"key\""),
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------------------------

/// Checks one row; Ok(None) when it passes, Ok(Some(reason)) when skipped, Err on failure.
fn run(case: &Case) -> Result<Option<&'static str>, String> {
    let (dir, file) = write_dir(&case.toml);
    if let Some(setup) = case.setup {
        if let Setup::Skip(why) = setup(dir.path()) {
            return Ok(Some(why));
        }
    }
    let (rt, report) = check(&file);
    let dir_str = dir.path().display().to_string();
    let mut problems = Vec::new();
    let mut unmatched: Vec<&super::Diagnostic> = report.items.iter().collect();
    for want in &case.want {
        let contains = want.contains.replace("{dir}", &dir_str);
        let found = unmatched.iter().position(|d| {
            d.severity == want.severity && d.path == want.path && d.message.contains(&contains)
        });
        match found {
            Some(i) => {
                unmatched.remove(i);
            }
            None => problems.push(format!(
                "missing {:?} at {:?} containing {contains:?}",
                want.severity, want.path
            )),
        }
    }
    for d in unmatched {
        problems.push(format!("unexpected {d}"));
    }
    for d in report.errors() {
        if d.fix.as_deref().is_none_or(|f| f.trim().is_empty()) {
            problems.push(format!("error without a fix: {d}"));
        }
        if d.message.trim().is_empty() {
            problems.push(format!("error without a message at {:?}", d.path));
        }
    }
    let expect_errors = case.want.iter().any(|w| w.severity == Severity::Error);
    match (&rt, expect_errors) {
        (Some(_), true) => problems.push("a runtime was built despite errors".to_string()),
        (None, false) => problems.push("no runtime was built, though no error is expected".into()),
        _ => {}
    }
    if problems.is_empty() {
        Ok(None)
    } else {
        Err(format!(
            "row {:?}:\n  {}\n  full report:\n{}",
            case.name,
            problems.join("\n  "),
            report
                .to_string()
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }
}

#[test]
fn every_check_diagnostic() {
    let cases = cases();
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "two rows are named {:?}", c.name);
    }
    let mut failures = Vec::new();
    for c in &cases {
        match run(c) {
            Ok(None) => {}
            Ok(Some(why)) => eprintln!("skipped row {:?}: {why}", c.name),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// What a valid configuration builds
// ---------------------------------------------------------------------------------------------

fn valid_runtime() -> (tempfile::TempDir, Runtime) {
    let (dir, file) = write_dir(&valid_config());
    make_www(dir.path());
    let (rt, report) = check(&file);
    assert!(report.items.is_empty(), "unexpected diagnostics:\n{report}");
    (dir, rt.expect("a valid configuration builds a runtime"))
}

fn host(s: &str) -> HostName {
    HostName::parse(s).expect("valid test host")
}

/// The certificate choice for `name` on listener `li`: how it was made, the key types of its
/// variants (best first) and their file names.
fn choice(rt: &Runtime, li: usize, name: &str) -> (Match, How, Vec<KeyType>, Vec<String>) {
    let resolved = rt.listeners[li]
        .table
        .lookup(&host(name))
        .unwrap_or_else(|| panic!("{name} is bound on listener {li}"));
    let certs = resolved
        .binding
        .certs
        .as_ref()
        .unwrap_or_else(|| panic!("{name} has certificates on listener {li}"));
    let files = certs
        .variants
        .iter()
        .map(|c| {
            c.cert_file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    (
        resolved.by,
        certs.how,
        certs.variants.iter().map(|c| c.key_type).collect(),
        files,
    )
}

#[test]
fn rsa_and_ecdsa_for_the_same_names_are_both_offered_ecdsa_first() {
    let (_dir, rt) = valid_runtime();
    for name in ["a.test", "www.a.test"] {
        let (by, how, types, files) = choice(&rt, 0, name);
        assert_eq!(by, Match::Exact, "{name}");
        assert_eq!(how, How::Exact, "{name}");
        assert_eq!(types, [KeyType::Ecdsa, KeyType::Rsa], "{name}");
        assert_eq!(files, ["a.pem", "rsa-a.pem"], "{name}");
    }
    // The same choice on every https listener the site is bound to.
    let (_, _, types, _) = choice(&rt, 1, "a.test");
    assert_eq!(types, [KeyType::Ecdsa, KeyType::Rsa]);
}

#[test]
fn exact_certificate_beats_wildcard_in_the_pool() {
    let (_dir, rt) = valid_runtime();
    // x.b.test: both xb.pem (exact) and wild.pem (*.b.test) cover it.
    let (_, how, _, files) = choice(&rt, 0, "x.b.test");
    assert_eq!(
        (how, files.as_slice()),
        (How::Exact, &["xb.pem".to_string()][..])
    );
    // q.b.test: only the wildcard covers it.
    let (_, how, _, files) = choice(&rt, 0, "q.b.test");
    assert_eq!(
        (how, files.as_slice()),
        (How::Wildcard, &["wild.pem".to_string()][..])
    );
    // A name bound by the wildcard site only.
    let (by, how, _, files) = choice(&rt, 0, "other.b.test");
    assert_eq!(by, Match::Wildcard);
    assert_eq!(
        (how, files.as_slice()),
        (How::Wildcard, &["wild.pem".to_string()][..])
    );
}

#[test]
fn among_equals_the_valid_certificate_that_expires_last_wins() {
    let (_dir, rt) = valid_runtime();
    // short.pem (30 days), long.pem (300 days), later.pem (900 days, not valid yet), and an
    // expired RSA certificate that is dropped because a valid ECDSA one exists.
    let (_, how, types, files) = choice(&rt, 0, "l.test");
    assert_eq!(how, How::Exact);
    assert_eq!(types, [KeyType::Ecdsa]);
    assert_eq!(files, ["long.pem"]);
}

#[test]
fn san_and_pinned_certificates() {
    let (_dir, rt) = valid_runtime();
    assert_eq!(choice(&rt, 0, "c.test").3, ["san.pem"]);
    assert_eq!(choice(&rt, 0, "d.test").3, ["san.pem"]);
    let (_, how, _, files) = choice(&rt, 0, "chain.test");
    assert_eq!(
        (how, files.as_slice()),
        (How::Pinned, &["chain.pem".to_string()][..])
    );
    // The pinned site is bound to the first listener only.
    assert!(rt.listeners[1].table.lookup(&host("chain.test")).is_none());
    // The http listener binds hosts without certificates.
    let http = rt.listeners[2]
        .table
        .lookup(&host("x.b.test"))
        .expect("x.b.test is bound on the http listener");
    assert!(http.binding.certs.is_none());
}

#[test]
fn check_writes_nothing() {
    // `tls = "internal"` is issued at start; check must not create the local CA.
    let (dir, _rt) = valid_runtime();
    assert!(!dir.path().join("state").exists());
}
