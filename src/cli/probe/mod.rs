//! `portico probe`: connect to a live TLS server as a client and report what it presented —
//! protocol, cipher suite, ALPN, the whole chain — whether the leaf covers the name asked for
//! and whether the chain verifies to the given roots, or which alert refused the handshake.
//!
//! A probe must show the chain even when verification fails: the verifier (`verify.rs`)
//! records webpki's verdict and lets the handshake finish, so a probe over TCP never sends
//! application data (`--http3`, `quic.rs`, sends one `HEAD /` to show that HTTP/3 answers). Name coverage is judged by [`HostName::covers`], the server's own rule; this module
//! must never grow a second implementation of it.

mod client_cert;
pub mod compare;
pub mod quic;
mod render;
mod report;
mod verify;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::names::{HostName, NameError};

pub use client_cert::{ClientCert, ClientCertError};
pub use render::{label, render_human, render_json, render_table};
pub use report::{Alert, CertInfo, ClientAuthSeen, Negotiated, Report, Verdict, Verification};

/// How long one probe may take, TCP connect and handshake together.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The system trust store read when no `--ca` is given (Debian's `ca-certificates`).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `portico probe HOST:PORT [--sni NAME | --no-sni] [--ca FILE] [--cert FILE --key FILE]
/// [--alpn P] [--names a,b] [--json]`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server: HOST:PORT, where HOST is a name, an IPv4 address or [an IPv6 address].
    #[arg(value_name = "HOST:PORT", required_unless_present = "compare")]
    pub target: Option<Target>,
    /// Compare two servers: this one (the old server) with --with (the new one), for each
    /// --names name and for a client without SNI. Exit 1 when they differ, except where the
    /// old one presented a certificate that does not cover the name.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["target", "sni", "json"], requires_all = ["with", "names"])]
    pub compare: Option<Target>,
    /// The second server of --compare.
    #[arg(long = "with", value_name = "HOST:PORT", requires = "compare")]
    pub with: Option<Target>,
    /// The SNI name to send (default: HOST, unless HOST is an IP address).
    #[arg(long, value_name = "NAME", value_parser = client_name, conflicts_with_all = ["no_sni", "names"])]
    pub sni: Option<HostName>,
    /// Send no SNI, as a legacy client would.
    #[arg(long, conflicts_with = "names")]
    pub no_sni: bool,
    /// Verify against the certificates in this PEM file instead of the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Present this client certificate (PEM chain, leaf first) when the server asks for one.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The ALPN protocols offered, comma-separated.
    #[arg(
        long,
        value_name = "P",
        value_delimiter = ',',
        default_value = "h2,http/1.1"
    )]
    pub alpn: Vec<String>,
    /// Probe each of these SNI names on the same address and print one table.
    #[arg(long, value_name = "a,b,c", value_parser = client_name, value_delimiter = ',')]
    pub names: Vec<HostName>,
    /// Print the documented JSON report (docs/probe.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Connect over QUIC (UDP) with ALPN h3 instead of TCP, and send one HEAD / over
    /// HTTP/3 to report its status.
    #[arg(long, conflicts_with_all = ["compare", "cert", "alpn"])]
    pub http3: bool,
}

/// A name a client may ask for: a host name that is not a wildcard.
fn client_name(s: &str) -> Result<HostName, TargetError> {
    let name = HostName::parse(s).map_err(|source| TargetError::Name {
        input: s.to_string(),
        source,
    })?;
    if name.is_wildcard() {
        return Err(TargetError::Wildcard(s.to_string()));
    }
    Ok(name)
}

/// Where to connect: `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(HostName),
}

/// Why a command-line value is not a target or a name.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} has no port: give HOST:PORT, as in example.com:443 or [::1]:443")]
    NoPort(String),
    #[error("{0:?} has no valid port (1-65535)")]
    BadPort(String),
    #[error("{input:?} is not a host name or IP address")]
    Name { input: String, source: NameError },
    #[error("{0:?} is a wildcard; a client asks for one name, as in www.example.com")]
    Wildcard(String),
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Target, TargetError> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| TargetError::NoPort(s.to_string()))?;
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(TargetError::BadPort(s.to_string())),
        };
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = match bare.parse::<IpAddr>() {
            // An unbracketed IPv6 address would make the port ambiguous.
            Ok(ip @ IpAddr::V6(_)) if bare == host => {
                return Err(TargetError::NoPort(format!("{s} (write [{ip}]:port)")))
            }
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(client_name(host)?),
        };
        Ok(Target { host, port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// Which SNI a probe sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// HOST when it is a name; none when it is an IP address.
    FromHost,
    Name(HostName),
    Off,
}

/// Where the trust anchors came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustSource {
    /// `--ca FILE`.
    CaFile(PathBuf),
    /// The system bundle, [`SYSTEM_ROOTS`].
    System(PathBuf),
}

/// The roots a probe verifies against, loaded once for every name probed.
#[derive(Debug, Clone)]
pub struct Trust {
    pub source: TrustSource,
    /// How many certificates the file gave.
    pub certificates: usize,
    webpki: Arc<WebPkiServerVerifier>,
}

/// Why the trust anchors could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a PEM certificate file", path.display())]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no usable CERTIFICATE block", path.display())]
    Empty { path: PathBuf },
    #[error("cannot build a certificate verifier from {}", path.display())]
    Verifier {
        path: PathBuf,
        source: VerifierBuilderError,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Trust {
    /// Loads `ca` (every certificate in the PEM file must parse), or the system roots when
    /// `ca` is None (certificates webpki cannot use are skipped, as every client does).
    pub fn load(ca: Option<&Path>) -> Result<Trust, TrustError> {
        let (source, path) = match ca {
            Some(p) => (TrustSource::CaFile(p.to_path_buf()), p),
            None => (
                TrustSource::System(PathBuf::from(SYSTEM_ROOTS)),
                Path::new(SYSTEM_ROOTS),
            ),
        };
        let bytes = std::fs::read(path).map_err(|source| TrustError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        let ders = CertificateDer::pem_slice_iter(&bytes);
        match source {
            TrustSource::CaFile(_) => {
                let ders =
                    ders.collect::<Result<Vec<_>, _>>()
                        .map_err(|source| TrustError::Pem {
                            path: path.to_path_buf(),
                            source,
                        })?;
                roots.add_parsable_certificates(ders);
            }
            TrustSource::System(_) => {
                roots.add_parsable_certificates(ders.filter_map(Result::ok));
            }
        }
        if roots.is_empty() {
            return Err(TrustError::Empty {
                path: path.to_path_buf(),
            });
        }
        let certificates = roots.len();
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|source| TrustError::Verifier {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Trust {
            source,
            certificates,
            webpki,
        })
    }
}

/// Probes `target` once: connect, handshake, record. Never fails: every problem is in the
/// report. A fresh client configuration per call, so a session is never resumed (a resumed
/// session presents no certificate).
pub async fn probe(
    target: &Target,
    sni: &Sni,
    trust: &Trust,
    alpn: &[String],
    timeout: Duration,
) -> Report {
    probe_with(target, sni, trust, alpn, None, timeout).await
}

/// [`probe`] presenting `client` when the server asks for a client certificate. Whenever
/// the server asked (with or without `client`), the probe then closes its side and waits
/// for the server's answer: with TLS 1.3 the server judges the client's certificate after
/// the client has finished its handshake, so a refusal (`certificate_required`,
/// `unknown_ca`, ...) arrives as an alert after it.
pub async fn probe_with(
    target: &Target,
    sni: &Sni,
    trust: &Trust,
    alpn: &[String],
    client: Option<&ClientCert>,
    timeout: Duration,
) -> Report {
    let (sni, name) = names(sni, target);
    let mut report = Report::new(target, &sni, &name);
    // The name rustls hands the verifier; webpki's verdict on it is not used (see `verify`).
    let server_name: ServerName<'static> = match (&sni, &target.host) {
        (Some(n), _) | (None, Host::Name(n)) => {
            match ServerName::try_from(n.as_str().to_string()) {
                Ok(s) => s,
                Err(e) => {
                    report.error = Some(format!("{n} cannot be sent as SNI: {e}"));
                    return report;
                }
            }
        }
        (None, Host::Ip(ip)) => ServerName::IpAddress((*ip).into()),
    };
    let recorder = Arc::new(verify::Recorder::new(trust.webpki.clone()));
    let asked = Arc::new(client_cert::Asked::new(client));
    let config = match client_config(recorder.clone(), asked.clone(), alpn, sni.is_some()) {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(format!("cannot configure TLS: {e}"));
            return report;
        }
    };
    // One deadline for resolution, connection and handshake together.
    let deadline = tokio::time::Instant::now() + timeout;
    let late = || format!("no answer within {} s", timeout.as_secs());
    let addr = match tokio::time::timeout_at(deadline, resolve(target)).await {
        Ok(Ok(addr)) => addr,
        Ok(Err(e)) => {
            report.error = Some(format!("cannot resolve {}: {e}", report.target));
            return report;
        }
        Err(_) => {
            report.error = Some(late());
            return report;
        }
    };
    report.address = Some(addr);
    let outcome = tokio::time::timeout_at(deadline, async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        Ok::<_, std::io::Error>(
            tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await,
        )
    })
    .await;
    match outcome {
        Err(_) => report.error = Some(late()),
        Ok(Err(e)) => report.error = Some(format!("cannot connect to {addr}: {e}")),
        Ok(Ok(tls)) => match tls {
            Ok(mut stream) => {
                let (_, conn) = stream.get_ref();
                report.tls = Some(Negotiated {
                    version: match conn.protocol_version() {
                        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
                        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
                        Some(v) => format!("{v:?}"),
                        None => "unknown".to_string(),
                    },
                    cipher_suite: conn
                        .negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                        .unwrap_or_default(),
                    alpn: conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                });
                if asked.seen().is_some() {
                    if let Some(a) = client_cert::answer(&mut stream, deadline).await {
                        report.alert = Some(Alert::new(a));
                    }
                }
            }
            Err(e) => match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::AlertReceived(a)) => report.alert = Some(Alert::new(*a)),
                _ => report.error = Some(format!("TLS handshake failed: {e}")),
            },
        },
    }
    report.client_auth = asked.seen();
    // The chain is reported whenever the server presented one, even if the handshake then
    // failed.
    if let Some(seen) = recorder.take() {
        report.chain = seen.chain.iter().map(|c| CertInfo::from_der(c)).collect();
        report.verification = Some(match seen.verdict {
            Ok(()) => Verification::Verified,
            Err(e) => Verification::Failed(e.to_string()),
        });
        report.covers = match (&name, report.chain.first()) {
            (Some(n), Some(leaf)) => Some(leaf.covers(n)),
            _ => None,
        };
    }
    report
}

/// The SNI a probe sends, and the name the leaf must cover: the SNI, else HOST when it
/// is a name.
fn names(sni: &Sni, target: &Target) -> (Option<HostName>, Option<HostName>) {
    let sni = match (sni, &target.host) {
        (Sni::Name(n), _) => Some(n.clone()),
        (Sni::FromHost, Host::Name(n)) => Some(n.clone()),
        (Sni::FromHost, Host::Ip(_)) | (Sni::Off, _) => None,
    };
    let name = match (&sni, &target.host) {
        (Some(n), _) | (None, Host::Name(n)) => Some(n.clone()),
        (None, Host::Ip(_)) => None,
    };
    (sni, name)
}

async fn resolve(target: &Target) -> std::io::Result<SocketAddr> {
    match &target.host {
        Host::Ip(ip) => Ok(SocketAddr::new(*ip, target.port)),
        Host::Name(n) => tokio::net::lookup_host((n.as_str(), target.port))
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{n} has no address"))
            }),
    }
}

fn client_config(
    recorder: Arc<verify::Recorder>,
    asked: Arc<client_cert::Asked>,
    alpn: &[String],
    send_sni: bool,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_client_cert_resolver(asked);
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.enable_sni = send_sni;
    Ok(Arc::new(config))
}

/// Probes the target once, or once per `--names` name, and prints the report. Exit 1 on any
/// mismatch, verification failure, refusal or error.
pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let (Some(old), Some(new)) = (&args.compare, &args.with) {
        return compare::run(old, new, &args);
    }
    let Some(target) = args.target.clone() else {
        anyhow::bail!("give HOST:PORT, or --compare HOST:PORT --with HOST:PORT --names a,b");
    };
    let trust = Trust::load(args.ca.as_deref()).context("cannot load the trust anchors")?;
    let client = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            Some(ClientCert::load(cert, key).context("cannot load the client certificate")?)
        }
        _ => None,
    };
    let client = client.as_ref();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let sni = match (&args.sni, args.no_sni) {
        (Some(n), _) => Sni::Name(n.clone()),
        (None, true) => Sni::Off,
        (None, false) => Sni::FromHost,
    };
    let one = |sni: Sni| {
        let (target, trust, alpn) = (&target, &trust, &args.alpn);
        async move {
            if args.http3 {
                quic::probe(target, &sni, trust, TIMEOUT).await
            } else {
                probe_with(target, &sni, trust, alpn, client, TIMEOUT).await
            }
        }
    };
    let reports = tokio.block_on(async {
        if args.names.is_empty() {
            vec![one(sni).await]
        } else {
            let mut out = Vec::with_capacity(args.names.len());
            for n in &args.names {
                out.push(one(Sni::Name(n.clone())).await);
            }
            out
        }
    });
    let now = crate::runtime::unix_now();
    let text = if args.json {
        render_json(&target, &trust, &reports)
    } else if args.names.is_empty() {
        render_human(&reports[0], &trust, now)
    } else {
        render_table(&target, &trust, &reports)
    };
    print!("{text}");
    let ok = reports.iter().all(|r| r.verdict() == Verdict::Ok);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_names_ipv4_and_bracketed_ipv6() {
        let t: Target = "Example.COM.:443".parse().expect("name");
        assert_eq!(t.to_string(), "example.com:443");
        let t: Target = "127.0.0.1:8443".parse().expect("v4");
        assert_eq!(t.host, Host::Ip(IpAddr::from([127, 0, 0, 1])));
        let t: Target = "[::1]:8443".parse().expect("v6");
        assert_eq!(t.to_string(), "[::1]:8443");
        for bad in [
            "example.com",
            "::1:443",
            "a.test:0",
            "a.test:x",
            "*.a.test:443",
            ":443",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
