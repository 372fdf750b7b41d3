//! Client certificates per site (`client_auth`): curl and openssl s_client with and without
//! certificates, from the site's CA, from another CA, revoked by a CRL, expired; sessions
//! that must not cross sites; HTTP/2 coalescing across policies; RFC 9440 headers to the
//! backend; passthrough sites left alone. Every certificate and the CRL are made here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::{Duration, OffsetDateTime};
use tokio::net::{TcpListener, TcpStream};

use crate::support::client::Http;
use crate::support::pki::Pki;
use crate::support::{free_port, serve, TestServer};

/// A CA that issues client certificates, and the certificates and CRL it made.
struct ClientCa {
    dir: PathBuf,
    stem: String,
    issuer: Issuer<'static, KeyPair>,
    /// For an intermediate: its own certificate, which its clients send after their leaf.
    chain: Option<CertificateDer<'static>>,
}

impl ClientCa {
    fn new(dir: &Path, stem: &str) -> ClientCa {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{stem} client CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("ca");
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write ca");
        ClientCa {
            dir: dir.to_path_buf(),
            stem: stem.to_string(),
            issuer: Issuer::new(params, key),
            chain: None,
        }
    }

    /// An intermediate CA under this one; its clients' files hold leaf and intermediate.
    fn intermediate(&self, stem: &str) -> ClientCa {
        let key = KeyPair::generate().expect("intermediate key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{stem} intermediate"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.signed_by(&key, &self.issuer).expect("intermediate");
        ClientCa {
            dir: self.dir.clone(),
            stem: stem.to_string(),
            issuer: Issuer::new(params, key),
            chain: Some(cert.der().clone()),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.stem))
    }

    /// A client certificate for `cn` with serial `serial`, valid now or expired a day ago,
    /// written as `<name>.pem` and `<name>.key`.
    fn client(&self, name: &str, cn: &str, serial: u64, expired: bool) -> Client {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = if expired {
            (now - Duration::days(30), now - Duration::days(1))
        } else {
            (now - Duration::days(1), now + Duration::days(30))
        };
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        let client = Client {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            der: cert.der().to_vec(),
        };
        let mut pem = cert.pem();
        if let Some(inter) = &self.chain {
            pem += &pem_of(inter);
        }
        std::fs::write(&client.cert, pem).expect("write cert");
        std::fs::write(&client.key, key.serialize_pem()).expect("write key");
        client
    }

    /// A CRL that revokes `serials`, as PEM in `<name>`.
    fn crl(&self, name: &str, serials: &[u64]) -> PathBuf {
        self.crl_due(name, serials, Duration::days(7))
    }

    /// [`ClientCa::crl`] with its `nextUpdate` at now + `due` (negative: overdue).
    fn crl_due(&self, name: &str, serials: &[u64], due: Duration) -> PathBuf {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now + due - Duration::days(8),
            next_update: now + due,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: now - Duration::hours(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("crl");
        let path = self.dir.join(name);
        std::fs::write(&path, crl.pem().expect("crl pem")).expect("write crl");
        path
    }
}

/// A DER certificate as PEM.
fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

struct Client {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Client {
    /// The RFC 9440 `Client-Cert` value for this certificate.
    fn header(&self) -> String {
        format!(
            ":{}:",
            base64::engine::general_purpose::STANDARD.encode(&self.der)
        )
    }
}

/// A plain HTTP backend that answers every request with its head: `name: value` lines.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let mut head = String::from("echo\n");
                    for (k, v) in req.headers() {
                        head += &format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes()));
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        head,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// The values of header `name` in an echoed head.
fn echoed(echo: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}: ");
    echo.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::to_string)
        .collect()
}

/// Everything one test needs: the server, its PKI, the client CAs and their certificates.
struct World {
    server: TestServer,
    port: u16,
    root: PathBuf,
    alice: Client,
    bob: Client,
    revoked: Client,
    expired: Client,
    stranger: Client,
    /// Issued by an intermediate under the "clients" CA; sends leaf and intermediate.
    carol: Client,
    /// The `Client-Cert-Chain` value carol's connections carry: the intermediate.
    carol_chain: String,
    _dir: tempfile::TempDir,
}

/// The sites every test here uses, on one listener with one SAN certificate covering every
/// name: `admin.test` (proxy to an echo backend, CA "clients", a CRL, a subject header) and
/// `admin2.test` (the same policy, another site), `optional.test` (the same CA, `required =
/// false`, proxy), `other.test` (another CA), `public.test` (no client certificates) and
/// `legacy.test` (passthrough).
async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let names = [
        "admin.test",
        "admin2.test",
        "optional.test",
        "other.test",
        "public.test",
    ];
    let pool = pki.pool(&[("san", &names)]);
    let clients = ClientCa::new(dir.path(), "clients");
    let others = ClientCa::new(dir.path(), "others");
    let alice = clients.client("alice", "alice", 10, false);
    let bob = others.client("bob", "bob", 11, false);
    let revoked = clients.client("mallory", "mallory", 12, false);
    let expired = clients.client("old", "old", 13, true);
    let stranger = ClientCa::new(dir.path(), "strangers").client("eve", "eve", 14, false);
    let team = clients.intermediate("team");
    let carol = team.client("carol", "carol", 15, false);
    let team_header = format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD
            .encode(team.chain.as_deref().expect("intermediate"))
    );
    let crl = clients.crl("clients.crl", &[12]);
    let up = echo().await;
    let legacy = legacy_backend(&pki).await;
    let port = free_port();
    let toml = format!(
        r#"
[[listener]]
address = "127.0.0.1:{port}"

{pool}

[[site]]
name = "admin"
hosts = ["admin.test"]
client_auth = {{ ca = "{ca}", required = true, crl = ["{crl}"], subject_header = "X-Client-Subject" }}
proxy = {{ upstreams = ["http://{up}"] }}

[[site]]
name = "admin2"
hosts = ["admin2.test"]
client_auth = {{ ca = "{ca}", crl = ["{crl}"] }}
respond = {{ status = 200, body = "admin2\n" }}

[[site]]
name = "optional"
hosts = ["optional.test"]
client_auth = {{ ca = "{ca}", required = false }}
proxy = {{ upstreams = ["http://{up}"] }}

[[site]]
name = "other"
hosts = ["other.test"]
client_auth = {{ ca = "{other}" }}
respond = {{ status = 200, body = "other\n" }}

[[site]]
name = "public"
hosts = ["public.test"]
proxy = {{ upstreams = ["http://{up}"] }}

[[site]]
name = "legacy"
hosts = ["legacy.test"]
passthrough = {{ backend = "{legacy}" }}
"#,
        ca = clients.file().display(),
        other = others.file().display(),
        crl = crl.display(),
    );
    let server = serve(dir.path(), &toml).await;
    World {
        server,
        port,
        root: pki.root_file(),
        alice,
        bob,
        revoked,
        expired,
        stranger,
        carol,
        carol_chain: team_header,
        _dir: dir,
    }
}

/// A TLS backend for the passthrough site, with its own certificate, answering "legacy".
async fn legacy_backend(pki: &Pki) -> SocketAddr {
    let acceptor = pki.backend_acceptor("legacy", &["legacy.test"], &[b"http/1.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"legacy\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// What curl got: whether it succeeded, its output and its error text.
struct Curl {
    ok: bool,
    out: String,
    err: String,
}

/// `curl https://HOST:PORT/` (trusting the test root), with `cert` as client certificate
/// and `headers` added.
async fn curl(port: u16, root: &Path, host: &str, cert: Option<&Client>, headers: &[&str]) -> Curl {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")]);
    if let Some(c) = cert {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("https://{host}:{port}/"));
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("curl runs"))
        .await
        .expect("curl");
    Curl {
        ok: out.status.success(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What `openssl s_client` saw: its whole output (stdout and stderr).
struct SClient {
    text: String,
}

impl SClient {
    fn reused(&self) -> bool {
        self.text.contains("Reused, TLSv1.")
    }

    /// Whether the ClientHello offered a saved session (`-trace` shows its extensions).
    fn offered_session(&self) -> bool {
        self.text.contains("extension_type=psk(41)")
    }

    fn new_session(&self) -> bool {
        self.text.contains("New, TLSv1.")
    }

    /// The number of the alert the server sent, if any.
    fn alert(&self) -> Option<u32> {
        let at = self.text.find("SSL alert number ")?;
        self.text[at + "SSL alert number ".len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

/// One TLS 1.3 connection with `openssl s_client` to `sni`, sending a GET for it; `cert`
/// as client certificate, `sess_in` a saved session to offer, `sess_out` where to save it.
async fn s_client(
    port: u16,
    sni: &str,
    cert: Option<&Client>,
    sess_in: Option<&Path>,
    sess_out: Option<&Path>,
) -> SClient {
    s_client_with(port, sni, cert, sess_in, sess_out, &["-tls1_3"]).await
}

/// [`s_client`] with these protocol options instead of `-tls1_3`.
async fn s_client_with(
    port: u16,
    sni: &str,
    cert: Option<&Client>,
    sess_in: Option<&Path>,
    sess_out: Option<&Path>,
    protocol: &[&str],
) -> SClient {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client").args(protocol);
    cmd.args([
        "-ign_eof",
        "-trace",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        sni,
    ]);
    if let Some(c) = cert {
        cmd.arg("-cert").arg(&c.cert).arg("-key").arg(&c.key);
    }
    if let Some(s) = sess_in {
        cmd.arg("-sess_in").arg(s);
    }
    if let Some(s) = sess_out {
        cmd.arg("-sess_out").arg(s);
    }
    let request = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl runs");
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(request.as_bytes());
        child.wait_with_output().expect("openssl ends")
    })
    .await
    .expect("openssl");
    SClient {
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The server's count of `outcome` for `site` in `portico_client_certificates_total`.
fn counted(server: &TestServer, site: &str, outcome: &str) -> u64 {
    let rt = server.server.as_ref().expect("running").runtime();
    let text = rt.metrics.render(&rt);
    let want =
        format!("portico_client_certificates_total{{site=\"{site}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificate_curl_with_and_without_one() {
    let w = world().await;
    let with = curl(w.port, &w.root, "admin.test", Some(&w.alice), &[]).await;
    assert!(with.ok, "{}", with.err);
    assert_eq!(
        echoed(&with.out, "client-cert"),
        [w.alice.header()],
        "{}",
        with.out
    );
    assert_eq!(
        echoed(&with.out, "x-client-subject"),
        ["CN=alice"],
        "{}",
        with.out
    );
    assert!(
        echoed(&with.out, "client-cert-chain").is_empty(),
        "alice sent no intermediates"
    );

    let without = curl(w.port, &w.root, "admin.test", None, &[]).await;
    assert!(!without.ok, "served without a certificate: {}", without.out);
    assert!(
        without.err.contains("certificate required"),
        "{}",
        without.err
    );
    let s = s_client(w.port, "admin.test", None, None, None).await;
    assert_eq!(s.alert(), Some(116), "{}", s.text);
    assert_eq!(counted(&w.server, "admin", "verified"), 1);
    assert_eq!(counted(&w.server, "admin", "certificate_required"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_a_revoked_and_an_expired_certificate_get_their_alerts() {
    let w = world().await;
    for (who, alert, reason, curl_says) in [
        (&w.stranger, 48, "unknown_ca", "unknown ca"),
        (&w.revoked, 44, "certificate_revoked", "certificate revoked"),
        (&w.expired, 45, "certificate_expired", "certificate expired"),
    ] {
        // With TLS 1.3 curl has sent its request when the alert comes: it reads the alert
        // only because the server reads on before it closes (`close_after_alert`).
        let c = curl(w.port, &w.root, "admin.test", Some(who), &[]).await;
        assert!(!c.ok, "{reason}: served: {}", c.out);
        assert!(c.err.contains(curl_says), "{reason}: {}", c.err);
        let s = s_client(w.port, "admin.test", Some(who), None, None).await;
        assert_eq!(s.alert(), Some(alert), "{reason}: {}", s.text);
        assert_eq!(counted(&w.server, "admin", reason), 2, "{reason}");
    }
    // Bob's CA is trusted by other.test only.
    assert!(
        curl(w.port, &w.root, "other.test", Some(&w.bob), &[])
            .await
            .ok
    );
    let s = s_client(w.port, "admin.test", Some(&w.bob), None, None).await;
    assert_eq!(s.alert(), Some(48), "{}", s.text);
    assert_eq!(counted(&w.server, "admin", "verified"), 0);
}

/// A client that sends its intermediate: the upstream gets it as `Client-Cert-Chain`.
/// (optional.test trusts the root; admin.test would refuse carol, since its CRL is the
/// root's and says nothing about certificates the intermediate issued.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_chain_reaches_the_backend_as_client_cert_chain() {
    let w = world().await;
    let c = curl(w.port, &w.root, "optional.test", Some(&w.carol), &[]).await;
    assert!(c.ok, "{}", c.err);
    assert_eq!(
        echoed(&c.out, "client-cert"),
        [w.carol.header()],
        "{}",
        c.out
    );
    assert_eq!(
        echoed(&c.out, "client-cert-chain"),
        std::slice::from_ref(&w.carol_chain),
        "{}",
        c.out
    );
    let s = s_client(w.port, "admin.test", Some(&w.carol), None, None).await;
    assert_eq!(
        s.alert(),
        Some(48),
        "fail closed without a revocation status:\n{}",
        s.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificate_with_and_without_one_and_spoofed_headers_stripped() {
    let w = world().await;
    let spoof = [
        "Client-Cert: :AAAA:",
        "Client-Cert-Chain: :AAAA:",
        "X-Client-Subject: CN=root",
    ];
    let with = curl(w.port, &w.root, "optional.test", Some(&w.alice), &spoof).await;
    assert!(with.ok, "{}", with.err);
    assert_eq!(
        echoed(&with.out, "client-cert"),
        [w.alice.header()],
        "{}",
        with.out
    );
    assert!(
        echoed(&with.out, "client-cert-chain").is_empty(),
        "{}",
        with.out
    );

    let without = curl(w.port, &w.root, "optional.test", None, &spoof).await;
    assert!(without.ok, "{}", without.err);
    assert!(without.out.starts_with("echo\n"), "{}", without.out);
    assert!(
        echoed(&without.out, "client-cert").is_empty(),
        "{}",
        without.out
    );
    assert!(
        echoed(&without.out, "client-cert-chain").is_empty(),
        "{}",
        without.out
    );

    // A site without client_auth strips them too; the subject header is only a name
    // there, so it passes.
    let public = curl(w.port, &w.root, "public.test", None, &spoof).await;
    assert!(public.ok, "{}", public.err);
    assert!(
        echoed(&public.out, "client-cert").is_empty(),
        "{}",
        public.out
    );
    // On admin.test the client's own subject header is replaced by the verified one.
    let admin = curl(w.port, &w.root, "admin.test", Some(&w.alice), &spoof).await;
    assert_eq!(
        echoed(&admin.out, "x-client-subject"),
        ["CN=alice"],
        "{}",
        admin.out
    );
    assert_eq!(
        echoed(&admin.out, "client-cert"),
        [w.alice.header()],
        "{}",
        admin.out
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_only_on_its_own_site_and_with_its_identity() {
    let w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sess = dir.path().join("admin.sess");
    let first = s_client(w.port, "admin.test", Some(&w.alice), None, Some(&sess)).await;
    assert!(first.new_session(), "{}", first.text);
    assert!(first.text.contains("client-cert: "), "{}", first.text);
    assert!(sess.exists(), "openssl saved the session");

    // Site B, same policy and certificate: a full handshake, and B requires a certificate.
    let b = s_client(w.port, "admin2.test", None, Some(&sess), None).await;
    assert!(b.offered_session(), "{}", b.text);
    assert!(!b.reused(), "resumed on another site:\n{}", b.text);
    assert_eq!(b.alert(), Some(116), "{}", b.text);
    // Site B without client certificates: a full handshake too.
    let public = s_client(w.port, "public.test", None, Some(&sess), None).await;
    assert!(public.offered_session(), "{}", public.text);
    assert!(!public.reused() && public.new_session(), "{}", public.text);
    assert!(public.text.contains("echo"), "{}", public.text);

    // Site A again, without offering a certificate: it resumes, as alice.
    let again = s_client(w.port, "admin.test", None, Some(&sess), None).await;
    assert!(
        again.reused(),
        "did not resume on its own site:\n{}",
        again.text
    );
    let header = format!("client-cert: {}", w.alice.header());
    assert!(again.text.contains(&header), "{}", again.text);
    assert!(
        again.text.contains("x-client-subject: CN=alice"),
        "{}",
        again.text
    );
}

/// TLS 1.2 without tickets resumes by session ID, from the store of the site's policy on
/// the listener: only for the name it was made for, with the identity it was made with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_session_id_resumes_only_on_its_own_site_and_with_its_identity() {
    let w = world().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sess = dir.path().join("admin12.sess");
    let tls12 = ["-tls1_2", "-no_ticket"];
    let first = s_client_with(
        w.port,
        "admin.test",
        Some(&w.alice),
        None,
        Some(&sess),
        &tls12,
    )
    .await;
    assert!(first.text.contains("New, TLSv1.2"), "{}", first.text);
    let b = s_client_with(w.port, "admin2.test", None, Some(&sess), None, &tls12).await;
    assert!(!b.reused(), "resumed on another site:\n{}", b.text);
    assert_eq!(b.alert(), Some(116), "{}", b.text);
    let public = s_client_with(w.port, "public.test", None, Some(&sess), None, &tls12).await;
    assert!(!public.reused(), "{}", public.text);
    let again = s_client_with(w.port, "admin.test", None, Some(&sess), None, &tls12).await;
    assert!(again.text.contains("Reused, TLSv1.2"), "{}", again.text);
    let header = format!("client-cert: {}", w.alice.header());
    assert!(again.text.contains(&header), "{}", again.text);
}

/// One name bound to two sites on two listeners, one without client certificates and one
/// requiring them: rustls' own check (the session's SNI) cannot tell them apart, the
/// tickets bound to the site and policy do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_a_site_without_client_auth_does_not_open_on_one_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let pool = pki.pool(&[("h", &["h.test"])]);
    let clients = ClientCa::new(dir.path(), "clients");
    let (open, locked) = (free_port(), free_port());
    let toml = format!(
        r#"
[[listener]]
name = "open"
address = "127.0.0.1:{open}"
[[listener]]
name = "locked"
address = "127.0.0.1:{locked}"
{pool}
[[site]]
name = "open"
hosts = ["h.test"]
listeners = ["open"]
respond = {{ status = 200, body = "open\n" }}
[[site]]
name = "locked"
hosts = ["h.test"]
listeners = ["locked"]
client_auth = {{ ca = "{ca}" }}
respond = {{ status = 200, body = "locked\n" }}
"#,
        ca = clients.file().display()
    );
    let _server = serve(dir.path(), &toml).await;
    let sess = dir.path().join("open.sess");
    let first = s_client(open, "h.test", None, None, Some(&sess)).await;
    assert!(first.text.contains("open"), "{}", first.text);
    let again = s_client(open, "h.test", None, Some(&sess), None).await;
    assert!(
        again.reused(),
        "the ticket resumes where it was made:\n{}",
        again.text
    );
    let there = s_client(locked, "h.test", None, Some(&sess), None).await;
    assert!(there.offered_session(), "{}", there.text);
    assert!(!there.reused(), "resumed past client_auth:\n{}", there.text);
    assert_eq!(there.alert(), Some(116), "{}", there.text);
}

/// A rustls client presenting `cert` (or none), offering h2, for `sni`.
async fn h2(port: u16, sni: &str, cert: Option<&Client>) -> Http {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut config = match cert {
        Some(c) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
                .expect("cert")
                .collect::<Result<_, _>>()
                .expect("certs");
            let key = PrivateKeyDer::from_pem_file(&c.key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_string()).expect("name"), tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    Http::over(tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_coalescing_is_421_across_policies_and_served_within_one() {
    let w = world().await;
    let mut conn = h2(w.port, "admin.test", Some(&w.alice)).await;
    let admin = conn.get("admin.test", "/").await;
    assert_eq!(admin.status, 200);
    assert!(admin.text().contains(&w.alice.header()), "{}", admin.text());
    // admin2.test: the same policy (same CA and CRL), another site: coalesced.
    let same = conn.get("admin2.test", "/").await;
    assert_eq!(
        (same.status.as_u16(), same.text().as_str()),
        (200, "admin2\n")
    );
    // The certificate covers these too, but their policies differ.
    for host in ["public.test", "optional.test", "other.test"] {
        let r = conn.get(host, "/").await;
        assert_eq!(r.status, 421, "{host}: {}", r.text());
    }
    // And the other way: a connection made without client certificates.
    let mut public = h2(w.port, "public.test", None).await;
    assert_eq!(public.get("public.test", "/").await.status, 200);
    for host in ["admin.test", "admin2.test", "optional.test"] {
        let r = public.get(host, "/").await;
        assert_eq!(r.status, 421, "{host}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_sites_are_unaffected_by_client_auth() {
    let w = world().await;
    let c = tokio::task::spawn_blocking({
        let port = w.port;
        move || {
            Command::new("curl")
                .args(["-sS", "--max-time", "10", "-k", "--resolve"])
                .arg(format!("legacy.test:{port}:127.0.0.1"))
                .arg(format!("https://legacy.test:{port}/"))
                .output()
                .expect("curl runs")
        }
    })
    .await
    .expect("curl");
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(String::from_utf8_lossy(&c.stdout), "legacy\n");
    // The server never asked for a client certificate there: s_client shows no request.
    let s = s_client(w.port, "legacy.test", None, None, None).await;
    assert!(
        s.text.contains("No client certificate CA names sent"),
        "{}",
        s.text
    );
    let s = s_client(w.port, "admin.test", Some(&w.alice), None, None).await;
    assert!(
        s.text.contains("Acceptable client certificate CA names"),
        "{}",
        s.text
    );
    assert!(
        s.text.contains("CN=clients client CA") || s.text.contains("CN = clients client CA"),
        "{}",
        s.text
    );
}

#[tokio::test]
async fn check_names_unreadable_ca_and_crl_files_and_refuses_client_auth_on_passthrough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let pool = pki.pool(&[("a", &["a.test", "b.test"])]);
    std::fs::write(dir.path().join("bad.crl"), "not a CRL").expect("write");
    let toml = format!(
        r#"
[[listener]]
address = "127.0.0.1:{}"
{pool}
[[site]]
hosts = ["a.test"]
client_auth = {{ ca = "missing-ca.pem" }}
respond = {{ status = 200, body = "a" }}
[[site]]
hosts = ["b.test"]
client_auth = {{ ca = "{root}", crl = ["bad.crl"] }}
respond = {{ status = 200, body = "b" }}
"#,
        free_port(),
        root = pki.root_file().display()
    );
    let file = dir.path().join("portico.toml");
    std::fs::write(&file, &toml).expect("write");
    let (config, report) = portico::config::Config::load(&file);
    let config = config.unwrap_or_else(|| panic!("{report}"));
    let (rt, report) =
        portico::runtime::build(config, portico::runtime::Mode::Check, &Default::default());
    assert!(rt.is_none());
    let text = report.to_string();
    assert!(
        text.contains("site[0].client_auth") && text.contains("missing-ca.pem"),
        "{text}"
    );
    assert!(
        text.contains("site[1].client_auth.crl") && text.contains("bad.crl"),
        "{text}"
    );

    // An overdue CRL is used, with a warning.
    let clients = ClientCa::new(dir.path(), "clients");
    let overdue = clients.crl_due("overdue.crl", &[1], Duration::days(-1));
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n{pool}\n[[site]]\nhosts = [\"a.test\"]\nclient_auth = {{ ca = \"{}\", crl = [\"{}\"] }}\nrespond = {{ status = 200, body = \"a\" }}\n",
        free_port(),
        clients.file().display(),
        overdue.display()
    );
    std::fs::write(&file, &toml).expect("write");
    let (config, report) = portico::config::Config::load(&file);
    let config = config.unwrap_or_else(|| panic!("{report}"));
    let (rt, report) =
        portico::runtime::build(config, portico::runtime::Mode::Check, &Default::default());
    assert!(rt.is_some(), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("site[0].client_auth.crl") && text.contains("was due to be replaced"),
        "{text}"
    );

    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n[[site]]\nhosts = [\"p.test\"]\nclient_auth = {{ ca = \"x.pem\" }}\npassthrough = {{ backend = \"127.0.0.1:9\" }}\n",
        free_port()
    );
    std::fs::write(&file, &toml).expect("write");
    let (config, report) = portico::config::Config::load(&file);
    assert!(config.is_none());
    assert!(
        report.to_string().contains("site[0].client_auth"),
        "{report}"
    );
}

/// `portico ARGS...` (the binary under test); its exit code and output.
async fn portico(args: Vec<String>) -> (i32, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(&args)
            .output()
            .expect("portico runs")
    })
    .await
    .expect("portico");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_and_explain_show_each_sites_policy_and_trusted_ca() {
    let w = world().await;
    let config = w.server.dir.join("portico.toml").display().to_string();
    let (code, text) = portico(vec!["bindings".into(), "-c".into(), config.clone()]).await;
    assert_eq!(code, 0, "{text}");
    let after = |host: &str| {
        let at = text.find(&format!("  {host} -> ")).expect(host);
        let lines: Vec<&str> = text[at..].lines().skip(1).take(2).collect();
        lines.join(" ")
    };
    let admin = after("admin.test");
    assert!(
        admin.contains("client certificates required (policy 1): trusts CN=clients client CA"),
        "{text}"
    );
    assert!(admin.contains("clients.pem"), "{text}");
    assert!(
        text.contains("CRL: ") && text.contains("clients.crl"),
        "{text}"
    );
    assert!(
        after("admin2.test").contains("(policy 1)"),
        "one policy for both:\n{text}"
    );
    assert!(
        after("optional.test").contains("asked for, not required (policy 2)"),
        "{text}"
    );
    assert!(
        after("other.test").contains("trusts CN=others client CA"),
        "{text}"
    );
    assert!(
        !after("public.test").contains("client certificates"),
        "{text}"
    );

    let (code, json) = portico(vec![
        "bindings".into(),
        "-c".into(),
        config.clone(),
        "--json".into(),
    ])
    .await;
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let rows = v["listeners"][0]["bindings"].as_array().expect("bindings");
    let row = |host: &str| rows.iter().find(|r| r["host"] == host).expect(host).clone();
    let admin = row("admin.test");
    assert_eq!(admin["client_auth"]["required"], true, "{admin}");
    assert_eq!(admin["client_auth"]["policy"], 1, "{admin}");
    assert_eq!(
        admin["client_auth"]["trusted"][0], "CN=clients client CA",
        "{admin}"
    );
    assert_eq!(
        admin["client_auth"]["subject_header"], "x-client-subject",
        "{admin}"
    );
    assert_eq!(
        row("admin2.test")["client_auth"]["subject_header"],
        serde_json::Value::Null
    );
    assert_eq!(row("public.test")["client_auth"], serde_json::Value::Null);

    // Explanations wrap at 100 columns: compare the words.
    let words = |t: String| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let (code, text) = portico(vec![
        "explain".into(),
        "-c".into(),
        config.clone(),
        "admin.test".into(),
    ])
    .await;
    let text = words(text);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("client certificates required (policy 1): trusts CN=clients client CA"),
        "{text}"
    );
    assert!(text.contains("resumes only for this site"), "{text}");
    let (_, text) = portico(vec![
        "explain".into(),
        "-c".into(),
        config,
        "public.test".into(),
    ])
    .await;
    let text = words(text);
    assert!(text.contains("asks for no client certificate"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_with_a_client_certificate_and_the_refusals_it_reports() {
    let w = world().await;
    let probe = |sni: &str, cert: Option<&Client>| {
        let mut args: Vec<String> = vec![
            "probe".into(),
            format!("127.0.0.1:{}", w.port),
            "--sni".into(),
            sni.into(),
            "--ca".into(),
            w.root.display().to_string(),
        ];
        if let Some(c) = cert {
            args.extend([
                "--cert".into(),
                c.cert.display().to_string(),
                "--key".into(),
                c.key.display().to_string(),
            ]);
        }
        portico(args)
    };
    let (code, text) = probe("admin.test", Some(&w.alice)).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("the server asked for a client certificate (acceptable CAs: CN=clients client CA); presented CN=alice"), "{text}");
    let (code, text) = probe("admin.test", None).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("presented none"), "{text}");
    assert!(
        text.contains("the server sent the alert certificate_required (116)"),
        "{text}"
    );
    let (code, text) = probe("admin.test", Some(&w.revoked)).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("certificate_revoked (44)"), "{text}");
    let (code, text) = probe("public.test", Some(&w.alice)).await;
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("asked for a client certificate"), "{text}");
}

/// `portico serve`: a refusal's log line names the site and the reason, the access log
/// names the client, and a new CRL is picked up by the certificate watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_refusals_and_clients_and_watches_the_crl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(&dir.path().join("pki"));
    let pool = pki.pool(&[("a", &["admin.test"])]);
    let clients = ClientCa::new(dir.path(), "clients");
    let alice = clients.client("alice", "alice", 10, false);
    let crl = clients.crl("clients.crl", &[99]);
    let port = free_port();
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"state\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n{pool}\n[[site]]\nname = \"admin\"\nhosts = [\"admin.test\"]\nclient_auth = {{ ca = \"{}\", crl = [\"{}\"] }}\nrespond = {{ status = 200, body = \"admin\\n\" }}\n",
            clients.file().display(),
            crl.display()
        ),
    )
    .expect("config");
    let server = crate::support::admin::Logged::serve(&config);
    let root = pki.root_file();
    let mut served = None;
    for _ in 0..100 {
        let c = curl(port, &root, "admin.test", Some(&alice), &[]).await;
        if c.ok {
            served = Some(c.out);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        served.as_deref(),
        Some("admin\n"),
        "portico did not serve alice"
    );
    let line = server.line_containing("client_subject");
    assert!(
        line.contains("CN=alice") && line.contains("client_sha256"),
        "{line}"
    );

    let refused = curl(port, &root, "admin.test", None, &[]).await;
    assert!(!refused.ok);
    let line = server.line_containing("client certificate refused");
    assert!(
        line.contains("admin") && line.contains("certificate_required"),
        "{line}"
    );

    // Revoke alice: the watcher sees the CRL change and rebuilds.
    clients.crl("clients.crl", &[10]);
    let mut revoked = None;
    for _ in 0..150 {
        let c = curl(port, &root, "admin.test", Some(&alice), &[]).await;
        if !c.ok {
            revoked = Some(c.err);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let err = revoked.expect("alice still served 15 s after her certificate was revoked");
    assert!(err.contains("certificate revoked"), "{err}");
    server.line_containing("certificate files changed");
}

/// Accepts any server certificate: these tests are about the client's.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
