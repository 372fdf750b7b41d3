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

mod acme;
mod admin;
mod certificates;
mod listeners;
mod log;
mod sites;

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
    let bad = [
        ("a-bad-scalar.key", bad_scalar(&made("a.key"))),
        ("rsa-a-bad-prime.key", bad_prime(&made("rsa-a.key"))),
    ];
    files.extend(one_file);
    files.extend(bad);
    files
}

/// The PKCS#8 EC key in `pem` with one bit of its private scalar flipped: the public key it
/// carries still matches the certificate, but aws-lc refuses the key.
fn bad_scalar(pem: &str) -> String {
    edit_pkcs8(pem, |der| {
        // ECPrivateKey: INTEGER 1, then OCTET STRING (32 bytes) with the scalar.
        let at = der
            .windows(5)
            .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
            .expect("a P-256 ECPrivateKey");
        der[at + 5 + 31] ^= 1;
    })
}

/// The PKCS#8 RSA key in `pem` with a bit flipped near its end, in the CRT coefficient: the
/// modulus and exponent still match the certificate, but aws-lc refuses the key.
fn bad_prime(pem: &str) -> String {
    edit_pkcs8(pem, |der| {
        let last = der.len() - 1;
        der[last - 10] ^= 1;
    })
}

/// `pem` (one PKCS#8 key) decoded, changed by `edit`, and encoded again.
fn edit_pkcs8(pem: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("test key base64");
    edit(&mut der);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// Writes the PKI and `toml` (as `portico.toml`) into a new temporary directory.
fn write_dir(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    for (name, contents) in pki() {
        std::fs::write(dir.path().join(name), contents).expect("write a PKI file");
    }
    // A directory where a file is expected.
    std::fs::create_dir(dir.path().join("keys")).expect("make a directory");
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
    /// How the fix starts, when the row is about the fix.
    fix: Option<&'static str>,
}

fn error(path: &'static str, contains: &str) -> Want {
    Want {
        severity: Severity::Error,
        path,
        contains: contains.to_string(),
        fix: None,
    }
}

/// An error whose fix must start with `fix`.
fn error_fix(path: &'static str, contains: &str, fix: &'static str) -> Want {
    Want {
        fix: Some(fix),
        ..error(path, contains)
    }
}

fn warning(path: &'static str, contains: &str) -> Want {
    Want {
        severity: Severity::Warning,
        path,
        contains: contains.to_string(),
        fix: None,
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
/// the only problem is the bad certificate itself, reported at `certificate[0]` (a problem
/// in the pair, such as a key that does not match).
fn bad_pool_cert(name: &'static str, cert: &str, key: &str, contains: &str) -> Case {
    bad_pool_cert_at(name, cert, key, "certificate[0]", contains)
}

/// [`bad_pool_cert`] with the problem reported at `path` (`certificate[0].key` for a
/// problem in the key file).
fn bad_pool_cert_at(
    name: &'static str,
    cert: &str,
    key: &str,
    path: &'static str,
    contains: &str,
) -> Case {
    case(
        name,
        [
            listener("*:8443"),
            pool(cert, key),
            pool("a.pem", "a.key"),
            site("a", &["a.test"], &[RESPOND]),
        ]
        .concat(),
        vec![error(path, contains)],
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
max_headers = 50
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
    [
        listeners::cases(),
        sites::cases(),
        certificates::cases(),
        acme::cases(),
        admin::cases(),
        log::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
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
            d.severity == want.severity
                && d.path == want.path
                && d.message.contains(&contains)
                && want
                    .fix
                    .is_none_or(|f| d.fix.as_deref().is_some_and(|got| got.starts_with(f)))
        });
        match found {
            Some(i) => {
                unmatched.remove(i);
            }
            None => problems.push(format!(
                "missing {:?} at {:?} containing {contains:?}{}",
                want.severity,
                want.path,
                want.fix
                    .map(|f| format!(" with a fix starting {f:?}"))
                    .unwrap_or_default()
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
    let certs = rt
        .certs_of(resolved.binding)
        .unwrap_or_else(|| panic!("{name} has certificates on listener {li}"));
    // The handshake's choice (`Pool::choose`, no allocation) is the displayed one's.
    for schemes in [
        crate::inspect::explain::RSA_ONLY_SCHEMES,
        &[
            rustls::SignatureScheme::ECDSA_NISTP256_SHA256,
            rustls::SignatureScheme::RSA_PSS_SHA256,
        ],
    ] {
        let handshake = rt.certificate_for(&resolved, schemes);
        let shown = certs.for_client(schemes);
        assert!(
            handshake.as_ref().map(std::sync::Arc::as_ptr) == shown.map(std::sync::Arc::as_ptr),
            "{name}: the handshake and the display choose alike"
        );
    }
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
    assert_eq!(http.binding.certs, crate::route::CertFrom::Nothing);
}

#[test]
fn check_writes_nothing() {
    // `tls = "internal"` is issued at start; check must not create the local CA.
    let (dir, _rt) = valid_runtime();
    assert!(!dir.path().join("state").exists());
}

/// Writes `pem` to `path` as a new file (a new inode), as the ACME task stores its files.
fn replace_file(path: &Path, pem: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("make the directory");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pem).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn acme_and_internal_certificates_change_in_place() {
    let toml = [
        "state_dir = \"state\"\n[acme]\ndirectory = \"https://acme.test/dir\"\n".to_string(),
        base(),
        site("shop", &["shop.test"], &[r#"tls = "acme""#, RESPOND]),
        site("dev", &["dev.test"], &[r#"tls = "internal""#, RESPOND]),
        site("a", &["a.test"], &[RESPOND]),
    ]
    .concat();
    let (_dir, file) = write_dir(&toml);
    let shared = crate::runtime::Shared::new();
    let (rt, _) = crate::cli::serve::load(&file, super::Origin::Given, &shared)
        .unwrap_or_else(|r| panic!("serves:\n{r}"));
    let sha = |c: Option<std::sync::Arc<crate::tls::load::Cert>>| c.map(|c| c.sha256);
    // Before its first order the ACME site's names are refused; the local CA issued dev's.
    assert!(rt.site_cert(0).is_none());
    assert!(matches!(
        rt.decide(0, Some("shop.test")),
        crate::runtime::Decision::Refuse(crate::route::Refusal::NoCertificate(_))
    ));
    let dev = sha(rt.site_cert(1)).expect("dev has its leaf");
    // Nothing due: nothing changes.
    let (changed, report) = crate::runtime::patch_site_certs(&rt, &shared, &[0, 1, 2]);
    assert!(changed.is_empty() && report.items.is_empty(), "{report}");

    // The ACME task stored a certificate: it is served, from this runtime.
    let home = crate::acme::home(&rt.config).expect("an ACME home");
    let files = crate::acme::cert_files(&home, "shop");
    let key = ec_key();
    let (cert, pem_key) = self_signed(&params("shop", &["shop.test"], -1, 90), &key);
    replace_file(&files.key, &pem_key);
    replace_file(&files.cert, &cert);
    let (changed, report) = crate::runtime::patch_site_certs(&rt, &shared, &[0, 1, 2]);
    assert!(report.items.is_empty(), "{report}");
    assert_eq!(changed.iter().map(|(si, _)| *si).collect::<Vec<_>>(), [0]);
    let issued = changed[0].1.sha256;
    for (si, cert) in changed {
        rt.install_site_cert(si, cert);
    }
    let crate::runtime::Decision::Terminate(resolved) = rt.decide(0, Some("shop.test")) else {
        panic!("shop.test is served once its certificate is there");
    };
    assert_eq!(sha(rt.certificate_for(&resolved, &[])), Some(issued));
    assert_eq!(
        rt.certs_of(resolved.binding).map(|c| c.how),
        Some(How::Acme)
    );

    // A certificate that does not cover the site's host is not taken: the site keeps its
    // own, and the report says why.
    let (other, other_key) = self_signed(&params("other", &["other.test"], -1, 90), &key);
    replace_file(&files.key, &other_key);
    replace_file(&files.cert, &other);
    let (changed, report) = crate::runtime::patch_site_certs(&rt, &shared, &[0]);
    assert!(changed.is_empty());
    let errors: Vec<String> = report.errors().map(|d| d.to_string()).collect();
    assert!(
        errors.len() == 1 && errors[0].contains("keeps serving the certificate it has"),
        "{errors:?}"
    );
    assert_eq!(sha(rt.site_cert(0)), Some(issued));

    // The local CA's leaf gone (or due): a new one is issued and swapped in.
    let (leaf, leaf_key) = crate::tls::internal_ca::leaf_paths(&rt.config.state_dir, "dev");
    std::fs::remove_file(leaf).expect("remove the leaf");
    std::fs::remove_file(leaf_key).expect("remove its key");
    let (changed, report) = crate::runtime::patch_site_certs(&rt, &shared, &[1]);
    assert!(report.items.is_empty(), "{report}");
    assert_eq!(changed.len(), 1);
    assert_ne!(changed[0].1.sha256, dev);
}
