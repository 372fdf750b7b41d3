//! `portico bindings` and `portico explain`: what they show is what the live server does.
//!
//! The same configuration is served in process and inspected with the commands' library
//! functions; every resolution shown is checked against a real handshake and request. The
//! human output is compared to snapshots (temporary paths, ports, dates, day counts and
//! fingerprints masked), the JSON to its documented shape, and exit codes come from the real
//! binary.

mod pages;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use portico::inspect::bindings;
use portico::inspect::explain::{self, Options, Outcome};
use portico::route::Refusal;
use rustls::AlertDescription;

use crate::support::client::{alert, connect, Http, Opts};
use crate::support::pki::{Key, Pki, Validity};
use crate::support::{free_port, serve, TestServer};

struct Setup {
    dir: tempfile::TempDir,
    file: PathBuf,
    port: u16,
    http_port: u16,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A multi-site configuration: exact, wildcard, SAN, RSA+ECDSA (plus an older ECDSA and an
/// expired RSA for the same name), a certificate expiring soon, a pinned and an internal
/// site on an `IP:port` listener next to `*:port`, and an http listener.
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let cur = Validity::Current;
    let certs = [
        pki.leaf("exact", &["exact.x.test"], Key::Ecdsa, cur),
        pki.leaf("wildcard", &["*.x.test"], Key::Ecdsa, cur),
        pki.leaf("san", &["one.test", "two.test"], Key::Ecdsa, cur),
        pki.leaf("dual-rsa", &["dual.test"], Key::Rsa, cur),
        pki.leaf("dual-ecdsa", &["dual.test"], Key::Ecdsa, cur),
        pki.leaf(
            "dual-old",
            &["dual.test"],
            Key::Ecdsa,
            Validity::ExpiresInDays(30),
        ),
        pki.leaf("dual-expired", &["dual.test"], Key::Rsa, Validity::Expired),
        pki.leaf(
            "soon",
            &["soon.test"],
            Key::Ecdsa,
            Validity::ExpiresInDays(5),
        ),
    ];
    let (pc, pk) = pki.leaf("pin", &["pin.test"], Key::Ecdsa, cur);
    let port = free_port();
    let http_port = free_port();
    let mut toml = format!(
        r#"
[[listener]]
name = "any"
address = "*:{port}"
no_sni = "one.test"

[[listener]]
name = "dedicated"
address = "127.0.0.2:{port}"

[[listener]]
name = "plain"
address = "127.0.0.1:{http_port}"
kind = "http"
alpn = ["http/1.1"]
"#
    );
    for (c, k) in &certs {
        toml += &format!("[[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n", p(c), p(k));
    }
    let sites = [
        ("wild", "*.x.test", "[\"any\"]", ""),
        ("exact", "exact.x.test", "[\"any\"]", ""),
        ("one", "one.test", "[\"any\", \"plain\"]", ""),
        ("two", "two.test", "[\"any\"]", ""),
        ("dual", "dual.test", "[\"any\"]", ""),
        ("soon", "soon.test", "[\"any\"]", ""),
        ("dev", "dev.test", "[\"dedicated\"]", "tls = \"internal\"\n"),
    ];
    for (name, host, listeners, tls) in sites {
        toml += &format!(
            "[[site]]\nname = \"{name}\"\nhosts = [\"{host}\"]\nlisteners = {listeners}\n{tls}respond = {{ body = \"{name}\" }}\n"
        );
    }
    toml += &format!(
        "[[site]]\nname = \"pinned\"\nhosts = [\"pin.test\"]\nlisteners = [\"dedicated\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\nrespond = {{ body = \"pinned\" }}\n",
        p(&pc),
        p(&pk)
    );
    let file = dir.path().join("portico.toml");
    std::fs::write(&file, toml).expect("write config");
    Setup {
        dir,
        file,
        port,
        http_port,
    }
}

async fn start(s: &Setup) -> TestServer {
    let toml = std::fs::read_to_string(&s.file).expect("read config");
    serve(s.dir.path(), &toml).await
}

fn checked(s: &Setup) -> (portico::runtime::Runtime, portico::config::Report) {
    let (rt, report) = portico::cli::check::check(&s.file);
    (
        rt.unwrap_or_else(|| panic!("config checks:\n{report}")),
        report,
    )
}

fn now() -> i64 {
    portico::runtime::unix_now()
}

/// Connects as `opts` says and, if the handshake succeeds, sends one request for `host`.
/// Returns the subject presented and the reply (status, body), or the alert.
async fn live(
    addr: SocketAddr,
    opts: &Opts,
    host: &str,
) -> Result<(String, u16, String), Option<AlertDescription>> {
    let (tls, presented) = connect(addr, opts).await.map_err(|e| alert(&e))?;
    let mut http = Http::over(tls).await;
    let reply = http.get(host, "/").await;
    Ok((presented.subject, reply.status.as_u16(), reply.text()))
}

fn alert_of(r: &Refusal) -> AlertDescription {
    AlertDescription::from(r.alert())
}

#[tokio::test]
async fn explain_shows_what_the_live_server_does() {
    let s = setup();
    let server = start(&s).await;
    let (rt, _) = checked(&s);
    let any: SocketAddr = format!("127.0.0.1:{}", s.port).parse().expect("addr");
    let dedicated: SocketAddr = format!("127.0.0.2:{}", s.port).parse().expect("addr");
    // (host, local, no SNI, RSA only)
    let cases = [
        ("exact.x.test", any, false, false),
        ("a.x.test", any, false, false),
        ("A.X.TEST.", any, false, false),
        ("a.b.x.test", any, false, false),
        ("one.test", any, false, false),
        ("two.test", any, false, false),
        ("dual.test", any, false, false),
        ("dual.test", any, false, true),
        ("soon.test", any, false, false),
        ("unknown.test", any, false, false),
        ("one.test", any, true, false),
        ("two.test", any, true, false),
        ("exact.x.test", any, true, false),
        ("pin.test", dedicated, false, false),
        ("pin.test", any, false, false),
        ("one.test", dedicated, false, false),
        ("pin.test", dedicated, true, false),
        ("dev.test", dedicated, false, false),
    ];
    for (host, local, no_sni, rsa_only) in cases {
        let opts = Options {
            local: Some(local),
            no_sni,
            rsa_only,
        };
        let ex = explain::explain(&rt, host, &opts, now());
        let mut client = if no_sni {
            Opts::no_sni()
        } else {
            Opts::sni(host)
        };
        client.rsa_only = rsa_only;
        let got = live(local, &client, host).await;
        let case = format!("{host} on {local} (no SNI: {no_sni}, RSA only: {rsa_only})");
        match &ex.outcome {
            Outcome::Refused(r) => assert_eq!(got, Err(Some(alert_of(r))), "{case}"),
            Outcome::Served { site } => {
                let (subject, status, body) = got.unwrap_or_else(|e| panic!("{case}: {e:?}"));
                assert_eq!(status, 200, "{case}");
                assert_eq!(body, rt.sites[*site].name, "{case}");
                if let Some(cert) = ex.presented {
                    assert_eq!(subject, cert.subject, "{case}");
                } else {
                    assert!(ex.internal_pending, "{case}");
                }
            }
            Outcome::Misdirected => {
                let (subject, status, _) = got.unwrap_or_else(|e| panic!("{case}: {e:?}"));
                assert_eq!(status, 421, "{case}");
                let cert = ex.presented.expect("a certificate was presented");
                assert_eq!(subject, cert.subject, "{case}");
            }
            other => panic!("{case}: unexpected outcome {other:?}"),
        }
    }
    // A few outcomes spelled out, so a shared mistake cannot pass unnoticed.
    let opts = |local, no_sni, rsa_only| Options {
        local: Some(local),
        no_sni,
        rsa_only,
    };
    let ex = explain::explain(&rt, "dual.test", &opts(any, false, true), now());
    assert_eq!(
        ex.presented.as_ref().map(|c| c.subject.as_str()),
        Some("CN=dual-rsa Rsa")
    );
    assert_eq!(
        ex.for_modern.as_ref().map(|c| c.subject.as_str()),
        Some("CN=dual-ecdsa Ecdsa")
    );
    assert_eq!(ex.candidates.iter().filter(|c| c.chosen).count(), 2);
    assert_eq!(ex.candidates.len(), 4);
    let ex = explain::explain(&rt, "pin.test", &opts(any, false, false), now());
    assert_eq!(
        ex.outcome,
        Outcome::Refused(Refusal::UnknownName("pin.test".into()))
    );
    let ex = explain::explain(&rt, "pin.test", &opts(dedicated, true, false), now());
    assert_eq!(ex.outcome, Outcome::Refused(Refusal::NoSni));
    let ex = explain::explain(&rt, "exact.x.test", &Options::default(), now());
    assert_eq!(ex.local, any, "the default local address");
    assert_eq!(
        ex.candidates.len(),
        2,
        "the exact certificate and the wildcard"
    );
    drop(server);
}

#[tokio::test]
async fn explain_on_http_listener_and_without_listener() {
    let s = setup();
    let (rt, _) = checked(&s);
    let plain: SocketAddr = format!("127.0.0.1:{}", s.http_port).parse().expect("addr");
    let opts = Options {
        local: Some(plain),
        ..Options::default()
    };
    let ex = explain::explain(&rt, "one.test", &opts, now());
    assert_eq!(
        ex.outcome,
        Outcome::Redirect {
            site: 2,
            port: s.port
        }
    );
    let ex = explain::explain(&rt, "two.test", &opts, now());
    assert_eq!(ex.outcome, Outcome::NotFound);
    let opts = Options {
        local: Some("127.0.0.3:1".parse().expect("addr")),
        ..Options::default()
    };
    let ex = explain::explain(&rt, "one.test", &opts, now());
    assert_eq!(ex.outcome, Outcome::NoListener);
}

#[tokio::test]
async fn bindings_show_what_the_live_server_presents() {
    let s = setup();
    let server = start(&s).await;
    let (rt, report) = checked(&s);
    let (views, rest) = bindings::collect(&rt, &report);
    assert_eq!(views.len(), 3);
    let mut checked_rows = 0;
    for v in views
        .iter()
        .filter(|v| v.kind == portico::config::ListenerKind::Https)
    {
        let addr: SocketAddr = if v.address.starts_with('*') {
            format!("127.0.0.1:{}", s.port)
        } else {
            v.address.clone()
        }
        .parse()
        .expect("addr");
        for row in &v.rows {
            let host = row.host.expect("a bound host");
            let sni = host.replace('*', "any");
            let got = live(addr, &Opts::sni(&sni), &sni).await;
            let (subject, status, body) = got.unwrap_or_else(|e| panic!("{sni}: {e:?}"));
            assert_eq!((status, Some(body.as_str())), (200, row.site), "{sni}");
            match row.certs.first() {
                Some(cert) => assert_eq!(subject, cert.subject, "{sni}"),
                None => assert!(row.internal_pending, "{sni}"),
            }
            if let Some(rsa) = row
                .certs
                .iter()
                .find(|c| c.key_type == portico::tls::load::KeyType::Rsa)
            {
                let mut opts = Opts::sni(&sni);
                opts.rsa_only = true;
                let (subject, _, _) = live(addr, &opts, &sni).await.expect("rsa handshake");
                assert_eq!(subject, rsa.subject, "{sni}, RSA only");
            }
            checked_rows += 1;
        }
        let no_sni = v
            .no_sni
            .as_ref()
            .expect("an https listener has a no-SNI row");
        let got = live(addr, &Opts::no_sni(), "one.test").await;
        match &no_sni.refused {
            Some(r) => assert_eq!(got, Err(Some(alert_of(r)))),
            None => {
                let (subject, _, _) = got.expect("no-SNI handshake");
                assert_eq!(Some(&subject), no_sni.certs.first().map(|c| &c.subject));
            }
        }
    }
    assert_eq!(checked_rows, 8);
    // The expiry warning sits next to its row; the http listener's alpn warning at the end.
    let soon = views[0]
        .rows
        .iter()
        .find(|r| r.host == Some("soon.test"))
        .expect("soon.test row");
    assert!(soon
        .warnings
        .iter()
        .any(|w| w.message.contains("expires in")));
    assert_eq!(rest.len(), 1);
    assert!(rest[0].path.starts_with("listener[2]"));
    drop(server);
}

/// Masks what changes between runs: the temporary directory, ports, dates, day counts and
/// fingerprints.
fn mask(text: &str, s: &Setup) -> String {
    mask_in(text, s.dir.path(), &[s.port, s.http_port])
}

/// [`mask`] for any directory and ports.
pub(crate) fn mask_in(text: &str, dir: &Path, ports: &[u16]) -> String {
    // Warnings wrap at a width that depends on the temporary path: unwrap them (their
    // continuation lines, alone, are indented by exactly six spaces).
    let mut t = text
        .replace("\n      ", "\n\u{0}")
        .replace("\n\u{0} ", "\n       ");
    t = t.replace("\n\u{0}", " ");
    t = t.replace(&p(dir), "<DIR>");
    for &port in ports {
        t = t.replace(&format!(":{port}"), ":<PORT>");
        t = t.replace(&format!("port {port}"), "port <PORT>");
    }
    let c: Vec<char> = t.chars().collect();
    let digits =
        |i: usize, n: usize| (i..i + n).all(|k| c.get(k).is_some_and(char::is_ascii_digit));
    let hex = |i: usize| {
        (i..i + 2).all(|k| {
            c.get(k)
                .is_some_and(|ch| ch.is_ascii_digit() || ('A'..='F').contains(ch))
        })
    };
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        let boundary = i == 0 || !c[i - 1].is_ascii_alphanumeric();
        // 2025-01-31 or 2025-01-31T12:00:00Z
        if boundary && digits(i, 4) && c.get(i + 4) == Some(&'-') && digits(i + 5, 2) {
            let mut j = i + 10;
            if c.get(j) == Some(&'T') {
                j += 9;
                if c.get(j) == Some(&'Z') {
                    j += 1;
                }
            }
            out.push_str("<DATE>");
            i = j;
            continue;
        }
        // AB:CD:EF:01... (at least four pairs, joined by ':' or '…')
        if boundary && hex(i) {
            let mut j = i + 2;
            let mut pairs = 1;
            while matches!(c.get(j), Some(':') | Some('…')) && hex(j + 1) {
                j += 3;
                pairs += 1;
            }
            if pairs >= 4 {
                out.push_str("<FP>");
                i = j;
                continue;
            }
        }
        // "89 days"
        if boundary && digits(i, 1) {
            let mut j = i;
            while digits(j, 1) {
                j += 1;
            }
            let rest: String = c[j..c.len().min(j + 5)].iter().collect();
            if rest == " days" {
                out.push('N');
                i = j;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

fn portico(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .output()
        .expect("run portico");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bindings_human_output() {
    let s = setup();
    let (code, out, err) = portico(&["bindings", "-c", &p(&s.file)]);
    assert_eq!(code, 0, "{err}");
    let got = mask(&out, &s);
    let expected = BINDINGS;
    assert_eq!(got, expected, "got:\n{got}");
}

#[test]
fn explain_human_output() {
    let s = setup();
    let (code, out, err) = portico(&["explain", "-c", &p(&s.file), "dual.test", "--rsa-only"]);
    assert_eq!(code, 0, "{err}");
    let got = mask(&out, &s);
    assert_eq!(got, EXPLAIN_DUAL, "got:\n{got}");
    let local = format!("127.0.0.2:{}", s.port);
    let (code, out, _) = portico(&[
        "explain",
        "-c",
        &p(&s.file),
        "Unknown.Test.",
        "--local",
        &local,
    ]);
    assert_eq!(code, 0);
    let got = mask(&out, &s);
    assert_eq!(got, EXPLAIN_UNKNOWN, "got:\n{got}");
}

const BINDINGS: &str = r#"listener "any"  *:<PORT>  https  unknown SNI: reject (alert unrecognized_name, 112)
  *.x.test -> site "wild" · pool, wildcard
    ECDSA  CN=wildcard Ecdsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: *.x.test
    ! warning: host *.x.test is bound on *:<PORT> but not on 127.0.0.2:<PORT>: clients connecting to 127.0.0.2:<PORT> will not reach site "wild"
  dual.test -> site "dual" · pool, exact name
    ECDSA  CN=dual-ecdsa Ecdsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: dual.test
    RSA    CN=dual-rsa Rsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: dual.test
    ! warning: host dual.test is bound on *:<PORT> but not on 127.0.0.2:<PORT>: clients connecting to 127.0.0.2:<PORT> will not reach site "dual"
  exact.x.test -> site "exact" · pool, exact name
    ECDSA  CN=exact Ecdsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: exact.x.test
    ! warning: host exact.x.test is bound on *:<PORT> but not on 127.0.0.2:<PORT>: clients connecting to 127.0.0.2:<PORT> will not reach site "exact"
  one.test -> site "one" · pool, exact name
    ECDSA  CN=san Ecdsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: one.test, two.test
    ! warning: host one.test is bound on *:<PORT> but not on 127.0.0.2:<PORT>: clients connecting to 127.0.0.2:<PORT> will not reach site "one"
  soon.test -> site "soon" · pool, exact name
    ECDSA  CN=soon Ecdsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: soon.test
    ! warning: host soon.test is bound on *:<PORT> but not on 127.0.0.2:<PORT>: clients connecting to 127.0.0.2:<PORT> will not reach site "soon"
    ! warning: the certificate for soon.test (<DIR>/pki/soon.pem) expires in N days, on <DATE>
  two.test -> site "two" · pool, exact name
    ECDSA  CN=san Ecdsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: one.test, two.test
    ! warning: host two.test is bound on *:<PORT> but not on 127.0.0.2:<PORT>: clients connecting to 127.0.0.2:<PORT> will not reach site "two"
  (no SNI) -> site "one" via no_sni = one.test · pool, exact name
    ECDSA  CN=san Ecdsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: one.test, two.test

listener "dedicated"  127.0.0.2:<PORT>  https  unknown SNI: reject (alert unrecognized_name, 112)
  dev.test -> site "dev" · internal CA (issued at start)
  pin.test -> site "pinned" · pinned
    ECDSA  CN=pin Ecdsa  issued by CN=Portico Test Intermediate
           expires <DATE> (N days left)  SHA-256 <FP>
           SANs: pin.test
  (no SNI) -> refused: handshake_failure (40)

listener "plain"  127.0.0.1:<PORT>  http (redirects bound hosts to https)
  one.test -> site "one" · redirect to https port <PORT>

warning: listener[2]: no_sni, unknown_sni, default_passthrough and alpn mean nothing on an http listener
  fix: remove them
"#;

const EXPLAIN_DUAL: &str = r#"explain dual.test: an RSA-only client, SNI dual.test, connecting to 127.0.0.1:<PORT>

1. Name
   dual.test is a normalized host name

2. Listener
   local address 127.0.0.1:<PORT>: the first https listener's address (choose another with --local)
   127.0.0.1:<PORT> -> listener "any" (*:<PORT>): it accepts every address on port <PORT>, and no
   IP:port listener is on 127.0.0.1

3. Binding
   exact binding dual.test on listener "any" (*:<PORT>) -> site "dual"

4. Certificate
   pool: the certificates whose SAN names include dual.test; per key type the valid one that expires
   last wins; variants are offered ECDSA, Ed25519, RSA
   candidate 1 (exact): chosen: the best RSA certificate
     RSA    CN=dual-rsa Rsa  issued by CN=Portico Test Intermediate
            expires <DATE> (N days left)  SHA-256 <FP>
            SANs: dual.test
            file: <DIR>/pki/dual-rsa.pem
   candidate 2 (exact): chosen: the best ECDSA certificate
     ECDSA  CN=dual-ecdsa Ecdsa  issued by CN=Portico Test Intermediate
            expires <DATE> (N days left)  SHA-256 <FP>
            SANs: dual.test
            file: <DIR>/pki/dual-ecdsa.pem
   candidate 3 (exact): expires earlier than the chosen ECDSA certificate (SHA-256
     <FP>): the one that expires last wins
     ECDSA  CN=dual-old Ecdsa  issued by CN=Portico Test Intermediate
            expires <DATE> (N days left)  SHA-256 <FP>
            SANs: dual.test
            file: <DIR>/pki/dual-old.pem
   candidate 4 (exact): not valid now; the chosen RSA certificate is
     RSA    CN=dual-expired Rsa  issued by CN=Portico Test Intermediate
            expired on <DATE>  SHA-256 <FP>
            SANs: dual.test
            file: <DIR>/pki/dual-expired.pem
   a client offering ECDSA gets: ECDSA CN=dual-ecdsa Ecdsa (SHA-256 <FP>)
   an RSA-only client gets:      RSA CN=dual-rsa Rsa (SHA-256 <FP>)  <- this client

5. Request with Host: dual.test
   200 OK: served by site "dual": the certificate presented (SANs: dual.test) covers dual.test; the
   site responds 200 with its fixed body
"#;

const EXPLAIN_UNKNOWN: &str = r#"explain Unknown.Test.: a client offering ECDSA, SNI Unknown.Test., connecting to 127.0.0.2:<PORT>

1. Name
   Unknown.Test. normalizes to unknown.test (ASCII lowercase, one trailing dot removed, IDNA
   A-labels)

2. Listener
   local address 127.0.0.2:<PORT>: given with --local
   127.0.0.2:<PORT> -> listener "dedicated" (127.0.0.2:<PORT>): its IP:port matches exactly; it beats
   listener "any" (*:<PORT>) (IP:port beats *:port)

3. Binding
   unknown.test is not bound on listener "dedicated" (127.0.0.2:<PORT>) and unknown_sni = "reject":
   the handshake is refused with alert unrecognized_name (112)

4. Certificate
   none: the handshake is refused before a certificate is chosen

5. Request with Host: Unknown.Test.
   no request: the handshake is refused with alert unrecognized_name (112)
"#;

/// A JSON value, parsed by a small reader (the project has no JSON crate).
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn get(&self, key: &str) -> &J {
        match self {
            J::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no key {key:?} in {self:?}")),
            _ => panic!("looking for {key:?} in something that is not an object: {self:?}"),
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            J::Obj(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn arr(&self) -> &[J] {
        match self {
            J::Arr(items) => items,
            _ => panic!("not an array: {self:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            J::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
}

fn parse_json(text: &str) -> J {
    fn ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    fn string(b: &[u8], i: &mut usize) -> String {
        assert_eq!(b[*i], b'"');
        *i += 1;
        let mut out = Vec::new();
        while b[*i] != b'"' {
            if b[*i] == b'\\' {
                *i += 1;
                match b[*i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'u' => {
                        let hex = std::str::from_utf8(&b[*i + 1..*i + 5]).expect("hex");
                        let c = char::from_u32(u32::from_str_radix(hex, 16).expect("hex"))
                            .expect("char");
                        out.extend(c.to_string().bytes());
                        *i += 4;
                    }
                    c => out.push(c),
                }
            } else {
                out.push(b[*i]);
            }
            *i += 1;
        }
        *i += 1;
        String::from_utf8(out).expect("utf-8")
    }
    fn value(b: &[u8], i: &mut usize) -> J {
        ws(b, i);
        let v = match b[*i] {
            b'n' => {
                *i += 4;
                J::Null
            }
            b't' => {
                *i += 4;
                J::Bool(true)
            }
            b'f' => {
                *i += 5;
                J::Bool(false)
            }
            b'"' => J::Str(string(b, i)),
            b'[' => {
                *i += 1;
                let mut items = Vec::new();
                ws(b, i);
                while b[*i] != b']' {
                    items.push(value(b, i));
                    ws(b, i);
                    if b[*i] == b',' {
                        *i += 1;
                    }
                    ws(b, i);
                }
                *i += 1;
                J::Arr(items)
            }
            b'{' => {
                *i += 1;
                let mut fields = Vec::new();
                ws(b, i);
                while b[*i] != b'}' {
                    let k = string(b, i);
                    ws(b, i);
                    assert_eq!(b[*i], b':');
                    *i += 1;
                    fields.push((k, value(b, i)));
                    ws(b, i);
                    if b[*i] == b',' {
                        *i += 1;
                    }
                    ws(b, i);
                }
                *i += 1;
                J::Obj(fields)
            }
            _ => {
                let start = *i;
                while *i < b.len() && (b[*i] == b'-' || b[*i].is_ascii_digit()) {
                    *i += 1;
                }
                J::Num(
                    std::str::from_utf8(&b[start..*i])
                        .expect("digits")
                        .parse()
                        .expect("number"),
                )
            }
        };
        ws(b, i);
        v
    }
    let b = text.as_bytes();
    let mut i = 0;
    let v = value(b, &mut i);
    assert_eq!(i, b.len(), "trailing text after the JSON value");
    v
}

const CERT_KEYS: &[&str] = &[
    "subject",
    "issuer",
    "names",
    "key_type",
    "not_before",
    "not_after",
    "days_left",
    "valid_now",
    "sha256",
    "cert_file",
    "key_file",
    "in_memory",
];

#[test]
fn json_shapes_are_the_documented_ones() {
    let s = setup();
    let (code, out, err) = portico(&["bindings", "-c", &p(&s.file), "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc = parse_json(&out);
    assert_eq!(
        doc.keys(),
        [
            "version",
            "config",
            "now",
            "listeners",
            "warnings",
            "total",
            "next"
        ]
    );
    // Every row fits the default page.
    assert_eq!(doc.get("total"), &J::Num(9.0));
    assert_eq!(doc.get("next"), &J::Null);
    assert_eq!(doc.get("version"), &J::Num(1.0));
    let listeners = doc.get("listeners").arr();
    assert_eq!(listeners.len(), 3);
    let row_keys = [
        "host",
        "binding",
        "site",
        "how",
        "internal_pending",
        "acme_pending",
        "certificates",
        "https_port",
        "client_auth",
        "refused",
        "warnings",
    ];
    for l in listeners {
        assert_eq!(
            l.keys(),
            [
                "name",
                "address",
                "kind",
                "unknown_sni",
                "no_sni_host",
                "no_sni",
                "bindings"
            ]
        );
        for row in l.get("bindings").arr().iter().chain([l.get("no_sni")]) {
            if *row == J::Null {
                continue;
            }
            assert_eq!(row.keys(), row_keys);
            for c in row.get("certificates").arr() {
                assert_eq!(c.keys(), CERT_KEYS);
                assert_eq!(c.get("sha256").str().len(), 32 * 3 - 1, "full fingerprint");
            }
        }
    }
    let dual = listeners[0]
        .get("bindings")
        .arr()
        .iter()
        .find(|r| r.get("host").str() == "dual.test")
        .expect("dual.test");
    assert_eq!(dual.get("how").str(), "exact");
    let types: Vec<&str> = dual
        .get("certificates")
        .arr()
        .iter()
        .map(|c| c.get("key_type").str())
        .collect();
    assert_eq!(types, ["ECDSA", "RSA"]);
    let refused = listeners[1].get("no_sni").get("refused");
    assert_eq!(refused.get("alert").str(), "handshake_failure");
    assert_eq!(refused.get("code"), &J::Num(40.0));
    assert_eq!(doc.get("warnings").arr().len(), 1);

    let (code, out, err) = portico(&["explain", "-c", &p(&s.file), "dual.test", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc = parse_json(&out);
    assert_eq!(
        doc.keys(),
        [
            "version",
            "config",
            "host",
            "name",
            "client",
            "local",
            "listener",
            "listener_why",
            "binding",
            "certificates",
            "presented",
            "request",
            "http3"
        ]
    );
    // No listener here has http3.
    assert_eq!(doc.get("http3"), &J::Null);
    assert_eq!(doc.get("name").get("normalized").str(), "dual.test");
    assert_eq!(doc.get("binding").get("result").str(), "exact");
    let certs = doc.get("certificates");
    assert_eq!(
        certs.keys(),
        [
            "how",
            "internal_pending",
            "why",
            "candidates",
            "for_ecdsa_client",
            "for_rsa_only_client",
            "rsa_only_client_fails",
            "client_auth",
            "client_auth_why"
        ]
    );
    assert_eq!(certs.get("candidates").arr().len(), 4);
    assert_eq!(
        certs.get("for_rsa_only_client").get("key_type").str(),
        "RSA"
    );
    assert_eq!(doc.get("presented").get("key_type").str(), "ECDSA");
    let request = doc.get("request");
    assert_eq!(request.keys(), ["outcome", "status", "site", "why"]);
    assert_eq!(request.get("outcome").str(), "served");
    assert_eq!(request.get("status"), &J::Num(200.0));

    let (_, out, _) = portico(&["explain", "-c", &p(&s.file), "nope.test", "--json"]);
    let doc = parse_json(&out);
    assert_eq!(doc.get("certificates"), &J::Null);
    assert_eq!(doc.get("binding").get("alert").get("code"), &J::Num(112.0));
    assert_eq!(doc.get("request").get("outcome").str(), "refused");
}

#[test]
fn exit_codes() {
    let s = setup();
    let file = p(&s.file);
    assert_eq!(portico(&["bindings", "-c", &file]).0, 0);
    assert_eq!(portico(&["explain", "-c", &file, "nope.test"]).0, 0);
    // Usage errors.
    assert_eq!(portico(&["explain", "-c", &file]).0, 2, "HOST is required");
    assert_eq!(
        portico(&["explain", "-c", &file, "a.test", "--local", "nowhere"]).0,
        2
    );
    assert_eq!(portico(&["bindings", "--bogus"]).0, 2);
    // A configuration with an error: the report on stderr, exit 1, nothing on stdout.
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\naddress = \"*:1\"\n[[site]]\nhosts = [\"nothing.test\"]\nrespond = { body = \"x\" }\n",
    )
    .expect("write");
    let (code, out, err) = portico(&["bindings", "-c", &p(&bad)]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("no certificate in the pool covers host nothing.test"),
        "{err}"
    );
    let (code, _, _) = portico(&["explain", "-c", &p(&bad), "nothing.test", "--json"]);
    assert_eq!(code, 1);
    let (code, _, _) = portico(&["bindings", "-c", &p(&s.dir.path().join("missing.toml"))]);
    assert_eq!(code, 1);
}

/// `z.a.x.test` under a `*.x.test` binding: nginx's `*.x.test` matches it, Portico's does
/// not. `explain` says so and names the binding, and the live server refuses the name as
/// `explain` says.
#[tokio::test]
async fn explain_says_a_wildcard_covers_exactly_one_label() {
    let s = setup();
    let server = start(&s).await;
    let (rt, _) = checked(&s);
    let any: SocketAddr = format!("127.0.0.1:{}", s.port).parse().expect("addr");
    let opts = Options {
        local: Some(any),
        ..Options::default()
    };
    let ex = explain::explain(&rt, "z.a.x.test", &opts, now());
    assert_eq!(
        ex.outcome,
        Outcome::Refused(Refusal::UnknownName("z.a.x.test".into()))
    );
    assert!(
        ex.binding_why.contains(
            "the wildcard binding *.x.test (site \"wild\") does not cover z.a.x.test: a wildcard covers exactly one label"
        ),
        "{}",
        ex.binding_why
    );
    assert!(ex.binding_why.contains("nginx"), "{}", ex.binding_why);
    let got = live(any, &Opts::sni("z.a.x.test"), "z.a.x.test").await;
    assert_eq!(got, Err(Some(AlertDescription::UnrecognisedName)));
    // A name the wildcard does cover gets no such note.
    let ex = explain::explain(&rt, "a.x.test", &opts, now());
    assert!(!ex.binding_why.contains("note:"), "{}", ex.binding_why);
    // Nor does a name no wildcard is near.
    let ex = explain::explain(&rt, "unknown.test", &opts, now());
    assert!(!ex.binding_why.contains("note:"), "{}", ex.binding_why);
    drop(server);
}

/// A document root written relative in a configuration read through a relative `-c`:
/// `explain` shows the absolute path the server serves from.
#[test]
fn explain_shows_document_roots_as_absolute_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let (c, k) = pki.leaf("docs", &["docs.test"], Key::Ecdsa, Validity::Current);
    let root = crate::support::site_root(dir.path(), "www", "hello\n");
    std::fs::write(
        dir.path().join("portico.toml"),
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[certificate]]\ncert = \"{}\"\nkey = \"{}\"\n[[site]]\nname = \"docs\"\nhosts = [\"docs.test\"]\nroot = \"www\"\n",
            free_port(),
            p(&c),
            p(&k)
        ),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["explain", "-c", "portico.toml", "docs.test"])
        .current_dir(dir.path())
        .output()
        .expect("run portico explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let absolute = std::fs::canonicalize(&root).expect("canonical root");
    // The explanation wraps at 100 columns; join its lines first.
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        joined.contains(&format!("serves files from {}", absolute.display())),
        "{text}"
    );
    assert!(!joined.contains("./www"), "{text}");
}

/// Once a server has issued an internal certificate into state_dir, `bindings` and
/// `explain` show that certificate (what the server presents), not "issued at start".
#[tokio::test]
async fn bindings_and_explain_show_a_stored_internal_certificate() {
    let s = setup();
    // Before any server ran: nothing is stored, so it is issued at start.
    let (code, out, err) = portico(&["bindings", "-c", &p(&s.file)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dev.test -> site \"dev\" · internal CA (issued at start)"),
        "{out}"
    );
    let server = start(&s).await;
    let dedicated: SocketAddr = format!("127.0.0.2:{}", s.port).parse().expect("addr");
    let (presented, _, _) = live(dedicated, &Opts::sni("dev.test"), "dev.test")
        .await
        .expect("dev.test is served");
    let (rt, report) = checked(&s);
    let (views, _) = bindings::collect(&rt, &report);
    let row = views
        .iter()
        .flat_map(|v| v.rows.iter())
        .find(|r| r.host == Some("dev.test"))
        .expect("a dev.test row");
    assert!(!row.internal_pending);
    assert_eq!(row.how, Some(portico::tls::pool::How::Internal));
    assert_eq!(
        row.certs.first().map(|c| c.subject.as_str()),
        Some(presented.as_str()),
        "bindings shows the certificate the server presents"
    );
    let (code, out, err) = portico(&["bindings", "-c", &p(&s.file)]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("issued at start"), "{out}");
    let masked = mask(&out, &s);
    assert!(
        masked.contains(&format!(
            "  dev.test -> site \"dev\" · internal CA\n    ECDSA  {presented}  issued by CN=Portico Local CA"
        )),
        "{masked}"
    );
    let (code, out, err) = portico(&["bindings", "--json", "-c", &p(&s.file)]);
    assert_eq!(code, 0, "{err}");
    let doc = parse_json(&out);
    let dev = doc
        .get("listeners")
        .arr()
        .iter()
        .flat_map(|l| l.get("bindings").arr().iter())
        .find(|b| b.get("host") == &J::Str("dev.test".into()))
        .expect("dev.test in the JSON");
    assert_eq!(dev.get("internal_pending"), &J::Bool(false));
    assert_eq!(dev.get("how").str(), "internal");
    assert_eq!(
        dev.get("certificates").arr()[0].get("subject").str(),
        presented
    );
    let ex = explain::explain(
        &rt,
        "dev.test",
        &Options {
            local: Some(dedicated),
            ..Options::default()
        },
        now(),
    );
    assert!(!ex.internal_pending);
    assert_eq!(
        ex.presented.as_ref().map(|c| c.subject.as_str()),
        Some(presented.as_str())
    );
    assert!(ex.certs_why.contains("stored in"), "{}", ex.certs_why);
    assert!(
        !ex.certs_why.contains("issued at start"),
        "{}",
        ex.certs_why
    );
    drop(server);
}
