//! Configuration: the TOML file read into raw serde structs, then checked into typed values.
//!
//! This module checks everything that can be known from the file alone (syntax, unknown keys,
//! addresses, host names, binding conflicts, actions). Checks that need the certificate files
//! run when the runtime is built (`runtime::build`), which reports into the same [`Report`].
//! Nothing downstream re-checks what is typed here.

mod backend;
mod check;
mod diag;
mod fleet;
mod proxy;
mod raw;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A certificate's two files; defined next to the loading that reads them.
pub use crate::tls::load::CertFiles;
pub use backend::{Backend, Cidr, ProxyProtocol};
use check::Checker;
pub use check::{MAX_CONNECTIONS, MAX_DURATION};
pub use diag::{Diagnostic, Report, Severity};
pub use fleet::{merge, NodeLocal, NODE_LOCAL};
pub use proxy::{HealthCheck, LoadBalance, Proxy, Scheme, Upstream};
use raw::RawConfig;

use crate::names::HostName;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    pub state_dir: PathBuf,
    pub listeners: Vec<Listener>,
    pub certificates: Vec<CertFiles>,
    /// `[[certificate]] dir`: directories whose every pair joins the pool (`tls/dir.rs`).
    pub certificate_dirs: Vec<CertDir>,
    pub sites: Vec<Site>,
    pub limits: Limits,
    /// The ACME account and CA that `tls = "acme"` sites get their certificates from.
    pub acme: Option<Acme>,
    /// `[metrics] per_site_histograms`: request latency per site (true) or per listener
    /// (false); unset, per site up to 1,000 sites.
    pub per_site_histograms: Option<bool>,
    /// The admin listener; None when `[admin] enabled = false`.
    pub admin: Option<Admin>,
    /// `[log] format`: how log lines are written. Read at start only (`logging::init`).
    pub log_format: LogFormat,
    /// `[cluster]`: the etcd cluster this node shares its state with; None for a node on its
    /// own (state in `state_dir` only).
    pub cluster: Option<Cluster>,
}

/// A `[[certificate]] dir = "..."`: a directory of `NAME.pem` + `NAME.key` pairs, read
/// (never written) at each build and watched for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDir {
    pub path: PathBuf,
    /// Its place among the `[[certificate]]` tables, for diagnostics (`certificate[3].dir`).
    pub index: usize,
}

impl CertDir {
    /// Where its problems are reported.
    pub fn at(&self) -> String {
        format!("certificate[{}].dir", self.index)
    }
}

/// The `[cluster]` table (docs/cluster.md): where the fleet's shared state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The etcd members' client URLs, as written (`http://10.0.0.1:2379`); at least one.
    pub etcd: Vec<String>,
    /// Every key this fleet writes starts with it: `/portico/prod`, no trailing `/`.
    pub prefix: String,
    /// This node's name in the fleet: unique per node, `[A-Za-z0-9._-]`, up to 63 bytes.
    pub node: String,
    /// The 32-byte key that seals private keys and ticket keys; the same file on every node.
    pub key_file: PathBuf,
    /// TLS to etcd: the CA that signed the members' certificates and, for client
    /// authentication, this node's certificate; required when an URL is `https://`.
    pub tls: Option<ClusterTls>,
    /// `config`: where the rest of the configuration comes from.
    pub config: ConfigSource,
}

/// `[cluster] config`: whether this file is the node's whole configuration, or only its
/// node-local part, the rest pushed to the fleet (`portico cluster push`, `fleet.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfigSource {
    /// `"file"` (the default): this file is the whole configuration.
    #[default]
    File,
    /// `"etcd"`: the fleet's pushed configuration, merged with this file's node-local part.
    Etcd,
}

/// `[cluster] tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    pub ca: PathBuf,
    pub client: Option<CertFiles>,
}

/// The `[log] format`: text for people (the default), or one JSON object per line for a
/// log shipper (Loki, Elasticsearch), with the field names docs/config.md lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The `[admin]` table: where the admin listener (API, metrics, dashboard) listens and how
/// its clients prove who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub address: AdminAddress,
    /// The file holding the token that TCP clients present (created when missing).
    pub token_file: PathBuf,
    /// The certificate the admin listener presents on TCP; required off loopback.
    pub tls: Option<CertFiles>,
    /// Names (or IP addresses) besides the address itself and the loopback names that
    /// clients may use in `Host` and `Origin`: what the operator types in the browser.
    pub hosts: Vec<AdminHost>,
}

/// Where the admin listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAddress {
    /// A Unix socket, mode 0600: the file's permissions are the authentication.
    Unix(PathBuf),
    /// A TCP address: every request carries the token.
    Tcp(SocketAddr),
}

/// A host clients may name in `Host` and `Origin` to reach the admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminHost {
    Name(HostName),
    Ip(IpAddr),
}

impl AdminAddress {
    /// A TCP address on a loopback interface (127.0.0.0/8, ::1); a Unix socket counts too.
    pub fn is_local(&self) -> bool {
        match self {
            AdminAddress::Unix(_) => true,
            AdminAddress::Tcp(a) => a.ip().to_canonical().is_loopback(),
        }
    }
}

impl fmt::Display for AdminAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            AdminAddress::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// The `[acme]` table: which ACME v2 directory to order certificates from, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// The directory URL (`https://...`).
    pub directory: String,
    /// A contact address for the account (`mailto:` is added).
    pub email: Option<String>,
    /// An extra root certificate (PEM) to trust for the directory's own TLS (test CAs).
    pub ca: Option<PathBuf>,
    /// Challenge types in order of preference.
    pub challenges: Vec<Challenge>,
    /// External Account Binding, for CAs that tie ACME accounts to an account of theirs.
    pub eab: Option<Eab>,
}

/// An External Account Binding (RFC 8555 section 7.3.4): the key identifier and the HMAC
/// key the CA gave out, used once, when the ACME account is created.
#[derive(Clone, PartialEq, Eq)]
pub struct Eab {
    pub kid: String,
    /// The raw key (the file holds it base64url-encoded).
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for Eab {
    // The key is a secret: never in logs or debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("kid", &self.kid)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

/// An ACME challenge type Portico can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `acme-tls/1` on an https listener (port 443 for a public CA).
    TlsAlpn01,
    /// `/.well-known/acme-challenge/` on an http listener (port 80 for a public CA).
    Http01,
}

/// Where a listener accepts: one IP or every address (`*`), and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenAddr {
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl ListenAddr {
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        if let Some(port) = s.strip_prefix("*:") {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port number"))?;
            if port == 0 {
                return Err("port 0 is not a port Portico can serve on".to_string());
            }
            return Ok(ListenAddr { ip: None, port });
        }
        let addr: SocketAddr = s
            .parse()
            .map_err(|_| format!("{s:?} is not \"IP:port\", \"[v6]:port\" or \"*:port\""))?;
        // A connection's local address is never 0.0.0.0 or ::, so such a listener would
        // match no connection at all.
        if addr.ip().is_unspecified() {
            return Err(format!(
                "{s:?} names no address: to accept on every address write \"*:{}\"",
                addr.port()
            ));
        }
        if addr.port() == 0 {
            return Err("port 0 is not a port Portico can serve on".to_string());
        }
        Ok(ListenAddr {
            ip: Some(addr.ip().to_canonical()),
            port: addr.port(),
        })
    }

    /// Whether a connection that arrived at `local` belongs to this address.
    pub fn matches(&self, local: SocketAddr) -> bool {
        local.port() == self.port && self.ip.is_none_or(|ip| ip == local.ip().to_canonical())
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            None => write!(f, "*:{}", self.port),
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Https,
    Http,
}

/// What a client without SNI gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSni {
    Reject,
    Host(HostName),
}

/// What a client naming a host that is not bound on the listener gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    Reject,
    NoSni,
    /// Relay the connection to the listener's `default_passthrough` backend.
    Passthrough,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: ListenAddr,
    pub kind: ListenerKind,
    pub no_sni: NoSni,
    pub unknown_sni: UnknownSni,
    pub alpn: Vec<Vec<u8>>,
    pub max_connections: usize,
    /// Where `unknown_sni = "passthrough"` relays unknown names.
    pub default_passthrough: Option<Backend>,
    /// Connections from these sources must start with a PROXY protocol header, which gives
    /// the real client address.
    pub proxy_protocol_from: Vec<Cidr>,
    /// `http3 = true` (https listeners only): HTTP/3 over QUIC on a UDP socket of the same
    /// address and port, advertised on this listener's TCP responses by `alt_svc`.
    pub http3: bool,
    /// `h3=":PORT"; ma=86400`, made once here: the header every TCP response of an `http3`
    /// listener carries.
    pub alt_svc: Option<http::HeaderValue>,
}

/// Where a site's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// The pool's best certificate for each host.
    Pool,
    /// Issued by Portico's local CA.
    Internal,
    /// This certificate, whatever the pool holds.
    Pinned(CertFiles),
    /// Ordered from the `[acme]` directory and stored in `state_dir/acme/`.
    Acme,
}

#[derive(Debug, Clone)]
pub struct Site {
    /// Position in the file, for diagnostics (`site[N]`).
    pub index: usize,
    pub name: String,
    pub hosts: Vec<HostName>,
    /// Indexes into `Config::listeners`.
    pub listeners: Vec<usize>,
    pub tls: TlsMode,
    pub action: Action,
    /// Client certificates asked for (and verified) on this site's handshakes.
    pub client_auth: Option<ClientAuth>,
    /// On the catch-all site with `tls = { acme = true, on_demand = { ... } }`: names
    /// without a certificate in the pool are asked about and ordered at their first
    /// handshake (`acme::on_demand`).
    pub on_demand: Option<std::sync::Arc<OnDemand>>,
}

/// A catch-all site's `on_demand` settings (docs/config.md), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDemand {
    /// The permission endpoint (`http://` only); `?domain=NAME` is added.
    pub permission: String,
    /// How long a handshake waits for a certificate being ordered.
    pub wait: Duration,
    /// How long a yes and a no from the endpoint are believed.
    pub allowed_ttl: Duration,
    pub refused_ttl: Duration,
    /// How many answers the permission cache keeps.
    pub cache_entries: usize,
    /// How many orders run at once.
    pub max_orders: usize,
    /// How many orders start in any hour; the rest wait in the queue.
    pub orders_per_hour: usize,
}

/// A site's `client_auth`: which CA's client certificates it accepts, whether one is
/// required, the revocation lists to consult, and the header that carries the verified
/// subject to proxy upstreams. The files are named here and read by `runtime::build`.
///
/// Two sites whose `ClientAuth` values are equal share one policy: connections under it
/// may carry requests for both (HTTP/2 coalescing); any difference makes two policies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientAuth {
    /// PEM file of the CA certificates client certificates must chain to.
    pub ca: PathBuf,
    /// Without a certificate the handshake is refused (`certificate_required`); when false
    /// a certificate is asked for and the request goes through without one.
    pub required: bool,
    /// Certificate revocation lists (PEM or DER), consulted for the client's own certificate.
    pub crl: Vec<PathBuf>,
    /// A header (lowercase) set on proxied requests to the verified certificate's subject.
    pub subject_header: Option<String>,
}

/// What a site does with a request.
#[derive(Debug, Clone)]
pub enum Action {
    Root(PathBuf),
    Redirect {
        to: String,
        status: u16,
    },
    Respond {
        status: u16,
        body: String,
        content_type: String,
    },
    /// TLS is not terminated: the raw connection goes to the backend.
    Passthrough(Backend),
    /// TLS is terminated and requests are forwarded to HTTP(S) upstreams.
    Proxy(Proxy),
}

/// `limits.certificate_cache` by default: room for every certificate of a large shared
/// host; with a million certificates in a directory, most stay on disk.
pub const DEFAULT_CERTIFICATE_CACHE: usize = 100_000;

/// Time and size limits that protect the server from slow or greedy clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// For a request's headers to arrive (slowloris).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// On shutdown, requests in flight get this long to finish.
    pub drain_timeout: Duration,
    /// Larger request heads get 431: on HTTP/1.1 the head as sent (request line, header
    /// lines, the empty line); on HTTP/2 the header list size of RFC 9113 (name + value + 32
    /// per field).
    pub max_header_bytes: usize,
    /// More header fields than this get 431, on either protocol. HTTP/2's pseudo-header
    /// fields are not counted, and the crumbs of a split `cookie` count as one field.
    pub max_headers: usize,
    /// Per listener, unless the listener says otherwise.
    pub max_connections: usize,
    /// How many certificates keep their chain and private key in memory; the others are
    /// read again from their files at their next handshake (tls/cache.rs).
    pub certificate_cache: usize,
    /// Requests one HTTP/2 or HTTP/3 connection may have open at once (streams); more wait
    /// (HTTP/3: QUIC stream credit) or are refused (HTTP/2: REFUSED_STREAM).
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            certificate_cache: DEFAULT_CERTIFICATE_CACHE,
            max_concurrent_streams: 250,
        }
    }
}

impl Config {
    /// The certificate files the configuration names: the pool's and the pinned ones.
    pub fn cert_files(&self) -> impl Iterator<Item = &CertFiles> {
        let pinned = self.sites.iter().filter_map(|s| match &s.tls {
            TlsMode::Pinned(files) => Some(files),
            _ => None,
        });
        self.certificates.iter().chain(pinned)
    }

    /// The CA and CRL files of the sites' `client_auth` tables, each once: the certificate
    /// watcher looks at them like at certificate files.
    pub fn client_auth_files(&self) -> Vec<&Path> {
        let mut seen = std::collections::HashSet::new();
        self.sites
            .iter()
            .filter_map(|s| s.client_auth.as_ref())
            .flat_map(|c| std::iter::once(&c.ca).chain(&c.crl))
            .map(PathBuf::as_path)
            .filter(|p| seen.insert(*p))
            .collect()
    }

    /// Reads and checks the file. Errors and warnings go into the report; the configuration
    /// is returned only when there is no error.
    pub fn load(file: &Path) -> (Option<Config>, Report) {
        Config::load_as(file, Origin::Given)
    }

    /// The `[log] format` in `file`, read before logging starts so that the first line is
    /// already in that format. Anything unreadable or wrong gives text: the full load that
    /// follows reports it (in text, since the format is not known).
    pub fn log_format_in(file: &Path) -> LogFormat {
        #[derive(serde::Deserialize)]
        struct Only {
            log: Option<OnlyLog>,
        }
        #[derive(serde::Deserialize)]
        struct OnlyLog {
            format: Option<String>,
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            return LogFormat::Text;
        };
        match toml::from_str::<Only>(&text) {
            Ok(Only {
                log: Some(OnlyLog {
                    format: Some(f), ..
                }),
            }) if f == "json" => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }

    /// [`Config::load`] of a file named as `origin` says.
    pub fn load_as(file: &Path, origin: Origin) -> (Option<Config>, Report) {
        let (config, report) = Config::load_partial_as(file, origin);
        (config.filter(|_| !report.has_errors()), report)
    }

    /// Like [`Config::load`], but returns whatever could be read even when there are errors,
    /// so `check` can go on to look at certificates and report those problems too. Such a
    /// configuration must never serve.
    pub fn load_partial(file: &Path) -> (Option<Config>, Report) {
        Config::load_partial_as(file, Origin::Given)
    }

    /// [`Config::load_partial`] of a file named as `origin` says.
    pub fn load_partial_as(file: &Path, origin: Origin) -> (Option<Config>, Report) {
        let mut report = Report::default();
        let Some(text) = Config::read(file, origin, &mut report) else {
            return (None, report);
        };
        let config = Config::from_str(&text, file, &mut report);
        (config, report)
    }

    /// The text of `file`, or None with the error in `report`.
    fn read(file: &Path, origin: Origin, report: &mut Report) -> Option<String> {
        match std::fs::read_to_string(file) {
            Ok(text) => Some(text),
            Err(e) => {
                let fix = match origin {
                    Origin::Given => "check the path given with -c (relative paths are relative to the current directory)",
                    Origin::Default => "pass the configuration file with -c FILE (without -c, Portico reads ./portico.toml)",
                };
                report.error(
                    "",
                    format!(
                        "cannot read {}: {}",
                        file.display(),
                        crate::error_text::describe_io(&e)
                    ),
                    Some(fix.to_string()),
                );
                None
            }
        }
    }

    /// Checks `text` as if read from `file` (relative paths resolve against its directory).
    pub fn from_str(text: &str, file: &Path, report: &mut Report) -> Option<Config> {
        let parsed = toml::from_str::<RawConfig>(text);
        let raw: RawConfig = match parsed {
            Ok(raw) => raw,
            Err(e) => {
                report.error(
                    "",
                    format!("{} is not valid: {}", file.display(), toml_error(&e, text)),
                    Some(
                        "fix the TOML at the line and column shown (values of the wrong type count too)"
                            .to_string(),
                    ),
                );
                return None;
            }
        };
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Some(Checker { base, report }.check(raw, file))
    }
}

/// How the configuration file was named: it decides the fix when the file cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The operator gave the path (`-c FILE`), or a caller of the library did.
    Given,
    /// No `-c`: the default, `./portico.toml`.
    Default,
}

/// The parser's message with its snippet of the file. A duplicate key is named: the
/// parser says only "duplicate key" and marks it in the snippet.
fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let shown = e.to_string();
    let shown = shown.trim_end();
    let key = e.span().and_then(|span| text.get(span)).map(str::trim);
    match (e.message(), key) {
        ("duplicate key", Some(key)) if shown.ends_with("duplicate key") => {
            format!("{} `{key}` (set twice in one table)", shown)
        }
        _ => shown.to_string(),
    }
}

#[cfg(test)]
mod tests;
