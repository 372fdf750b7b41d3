//! The runtime: everything a running server needs, built from a checked [`Config`] in one
//! pass — certificates loaded, route tables and TLS configurations made.
//!
//! Startup, reload and `portico check` all go through [`build`], so a configuration that
//! `check` accepts is exactly one that serves. A reload builds a new runtime and swaps it
//! in; only the certificates are changed in place (the pool, and each site's own: see
//! patch.rs), since at 100,000 sites a renewal must not cost a build. The checks that need certificate files live here and report into the
//! same [`Report`] as the file checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::ServerConfig;
use tokio::sync::Semaphore;

use crate::config::{Action, CertFiles, Config, Listener, ListenerKind, NoSni, Report, TlsMode};
use crate::config::{Backend, UnknownSni};
use crate::http::static_files;
use crate::names::HostName;

pub mod names_cache;
mod patch;
mod shared;
use crate::route::{Binding, CertFrom, Match, Refusal, Resolved, Table};
use crate::tls::cache::KeyCache;
use crate::tls::client_auth::{self, Policy};
use crate::tls::dir;
use crate::tls::internal_ca::{self, LocalCa};
use crate::tls::load::{self, Cert};
use crate::tls::pool::{Choice, How, Pool};
use crate::tls::resolver::Resolver;
pub use patch::{patch_pool, patch_site_certs, Patched};
pub use shared::{stamp, stamps_now, FileStamp, Shared};

/// Certificates expiring sooner than this get a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Whether the build may create files (the local CA and its certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `portico check`, `bindings`, `explain`: read only. Internal certificates are not
    /// issued; their hosts count as covered, because the local CA issues a certificate for
    /// exactly the site's hosts when serving starts.
    Check,
    /// `portico serve` and reloads.
    Serve,
}

/// A site ready to serve.
pub struct SiteRt {
    pub name: String,
    pub action: SiteAction,
    /// This site's counters (kept across reloads by name).
    pub metrics: Arc<crate::metrics::SiteCounters>,
    /// Index into `Runtime::client_auth`: the policy its handshakes verify clients with.
    pub client_auth: Option<usize>,
    /// `client_auth.subject_header`: set on proxied requests to the verified subject.
    pub subject_header: Option<http::HeaderName>,
}

pub enum SiteAction {
    Root(static_files::Root),
    Redirect {
        to: String,
        status: http::StatusCode,
    },
    Respond {
        status: http::StatusCode,
        body: bytes::Bytes,
        content_type: http::HeaderValue,
    },
    Passthrough(Backend),
    Proxy(Arc<crate::http::proxy::Upstreams>),
}

/// What to do with a connection once its ClientHello is read.
#[derive(Debug, Clone)]
pub enum Decision<'a> {
    /// Terminate TLS with the binding's certificate and serve HTTP.
    Terminate(Resolved<'a>),
    /// Relay the raw bytes; `resolved` is None for the listener's default backend.
    Passthrough {
        backend: &'a Backend,
        resolved: Option<Resolved<'a>>,
    },
    /// Refuse the handshake with the refusal's alert.
    Refuse(Refusal),
    /// The catch-all site orders certificates on demand and the pool has none for `name`
    /// yet: the handshake asks `Runtime::on_demand` and waits (bounded), then decides again.
    OnDemand { site: usize, name: HostName },
}

/// A listener ready to accept.
pub struct ListenerRt {
    pub config: Listener,
    pub table: Arc<Table>,
    /// Present on https listeners.
    pub tls: Option<Arc<ServerConfig>>,
    /// On https listeners, for each site here with `client_auth` (by site index): the
    /// configuration that asks for and verifies client certificates with the site's policy,
    /// with its own session cache and tickets bound to the site and policy. Sites without
    /// `client_auth` use `tls`.
    pub site_tls: HashMap<usize, Arc<ServerConfig>>,
    pub connections: Arc<Semaphore>,
    /// This listener's counters (kept across reloads by name).
    pub metrics: Arc<crate::metrics::ListenerCounters>,
}

pub struct Runtime {
    pub config: Config,
    pub listeners: Vec<ListenerRt>,
    pub sites: Vec<SiteRt>,
    /// The certificate pool, swapped as a whole when certificates in directories change
    /// (no new runtime); pool hosts read it at each handshake.
    pool: ArcSwap<Pool>,
    /// The hosts that take their certificate from the pool, with their site and their
    /// index in its hosts: a change of the pool that would leave one uncovered is refused.
    pool_hosts: HashMap<HostName, (usize, usize)>,
    /// Each site's own certificate (pinned, local CA, ACME), by site index; swapped in
    /// place when ACME or the local CA issues one (`patch_site_certs`). Hosts bound with
    /// `CertFrom::Site` read it at each handshake.
    site_certs: Box<[ArcSwapOption<Cert>]>,
    /// The distinct client-auth policies (`SiteRt::client_auth` indexes them).
    pub client_auth: Vec<Arc<Policy>>,
    /// ACME challenge answers (shared by every runtime of one process).
    pub challenges: Arc<crate::acme::Challenges>,
    /// The certificate cache (shared by every runtime of one process).
    pub keys: Arc<KeyCache>,
    /// The process's metrics (shared by every runtime of one process).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// On-demand orders and the permission cache (shared by every runtime of one process).
    pub on_demand: Arc<crate::acme::on_demand::Orders>,
    /// The admin listener's TLS configuration, when `[admin]` has `tls`.
    pub admin_tls: Option<Arc<ServerConfig>>,
    /// Set once a newer runtime replaced this one: its connections finish what they are
    /// doing and close, so old certificates and sites do not live on in keep-alive
    /// connections.
    retired: tokio::sync::watch::Sender<bool>,
    /// The admin API's certificate store.
    store: std::path::PathBuf,
}

impl Runtime {
    /// The certificate pool now.
    pub fn pool(&self) -> Arc<Pool> {
        self.pool.load_full()
    }

    /// The sites' own certificates (local CA, ACME, pinned) that `pool` does not hold, each
    /// with its site's index: with the pool's, every certificate in use, each once (by
    /// fingerprint: a pinned file that is also a pool certificate, or one certificate two
    /// sites pin, counts once). The pool is looked through only when sites hold
    /// certificates of their own, so a pool of a million behind a catch-all costs nothing.
    pub fn site_only_certs(&self, pool: &Pool) -> Vec<(usize, Arc<Cert>)> {
        let own: Vec<(usize, Arc<Cert>)> = self.site_certs().collect();
        if own.is_empty() {
            return own;
        }
        let wanted: std::collections::HashSet<[u8; 32]> =
            own.iter().map(|(_, c)| c.sha256).collect();
        let mut seen: std::collections::HashSet<[u8; 32]> = pool
            .certs()
            .map(|c| c.sha256)
            .filter(|sha| wanted.contains(sha))
            .collect();
        own.into_iter()
            .filter(|(_, c)| seen.insert(c.sha256))
            .collect()
    }

    /// Site `si`'s own certificate now (pinned, local CA, ACME); None for a pool site, a
    /// site not on an https listener, and an ACME site whose first order is pending.
    pub fn site_cert(&self, si: usize) -> Option<Arc<Cert>> {
        self.site_certs.get(si)?.load_full()
    }

    /// Every site's own certificate now, with its site's index.
    pub fn site_certs(&self) -> impl Iterator<Item = (usize, Arc<Cert>)> + '_ {
        (0..self.site_certs.len()).filter_map(|si| Some((si, self.site_cert(si)?)))
    }

    /// Makes `cert` site `si`'s own certificate, for the handshakes from now on (connections
    /// made with the old one go on). `patch_site_certs` checked it as a build would.
    pub fn install_site_cert(&self, si: usize, cert: Arc<Cert>) {
        if let Some(cell) = self.site_certs.get(si) {
            cell.store(Some(cert));
        }
    }

    /// The certificate for a resolved binding and a client's signature schemes: the
    /// site's own, or the pool's best for the host now.
    pub fn certificate_for(
        &self,
        resolved: &Resolved<'_>,
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<Cert>> {
        let b = resolved.binding;
        match b.certs {
            CertFrom::Nothing => None,
            CertFrom::Site => self.site_cert(b.site),
            CertFrom::Pool => self
                .pool
                .load()
                .choose(resolved.cert_name(), schemes, unix_now())
                .cloned(),
        }
    }

    /// The certificates a binding may be served with now: the site's own, or the pool's
    /// best for the host.
    pub fn certs_of(&self, b: &Binding) -> Option<Choice> {
        match b.certs {
            CertFrom::Nothing => None,
            CertFrom::Site => {
                let how = match self.config.sites[b.site].tls {
                    TlsMode::Pinned(_) => How::Pinned,
                    TlsMode::Internal => How::Internal,
                    TlsMode::Acme => How::Acme,
                    // Pool sites' hosts are bound with CertFrom::Pool.
                    TlsMode::Pool => return None,
                };
                Some(Choice::single(self.site_cert(b.site)?, how))
            }
            CertFrom::Pool => self.pool.load().best(&b.host, unix_now()),
        }
    }

    /// Checks `next` as the pool for this runtime's pool hosts among `touched` names (all
    /// of them, when a wildcard was touched), as a build would: each must still have a
    /// certificate that covers it and is valid now. Problems go to `report`; none means
    /// `next` may be installed with [`Runtime::install_pool`].
    pub fn judge_pool(&self, next: &Pool, touched: &[HostName], report: &mut Report) {
        let now = unix_now();
        let mut judge = |host: &HostName, &(site, hi): &(usize, usize)| {
            let at = format!("site[{}].hosts[{hi}]", self.config.sites[site].index);
            match next.best(host, now) {
                None => report.error(
                    at,
                    format!("no certificate in the pool covers host {host}"),
                    Some(format!("keep a certificate whose SAN names include {host} in the pool, or remove the host from its site first")),
                ),
                Some(choice) if !choice.variants.iter().any(|c| c.is_valid_at(now)) => report.error(
                    at,
                    format!("no certificate in the pool that covers host {host} is valid now"),
                    Some("put a certificate valid now in place first".to_string()),
                ),
                Some(_) => {}
            }
        };
        if touched.iter().any(HostName::is_wildcard) {
            for (host, at) in &self.pool_hosts {
                judge(host, at);
            }
        } else {
            for name in touched {
                if let Some(at) = self.pool_hosts.get(name) {
                    judge(name, at);
                }
            }
        }
    }

    /// Installs a pool [`Runtime::judge_pool`] accepted.
    pub fn install_pool(&self, next: Pool) {
        self.pool.store(Arc::new(next));
    }

    /// Whether `cert` was loaded from the admin API's certificate store
    /// (`state_dir/certificates`): its source is "admin", not a file the configuration names.
    pub fn is_stored(&self, cert: &Cert) -> bool {
        cert.cert_file.parent() == Some(self.store.as_path())
    }

    /// Tells this runtime's connections to finish and close: a newer runtime serves now.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Resolves once [`Runtime::retire`] was called.
    pub async fn retired(&self) {
        let mut rx = self.retired.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
    /// The one decision for a connection on listener `li` whose ClientHello named `sni`:
    /// terminate, pass through, or refuse. The server and `explain` both call it.
    /// The TLS configuration a connection to `site` on listener `li` is terminated with:
    /// the site's policy's when it has `client_auth`, else the listener's. Sites without
    /// client certificates pay one branch for this.
    pub fn tls_for(&self, li: usize, site: usize) -> Option<&Arc<ServerConfig>> {
        let listener = &self.listeners[li];
        match self.sites[site].client_auth {
            None => listener.tls.as_ref(),
            Some(_) => listener.site_tls.get(&site),
        }
    }

    /// Whether a connection established under `policy` (None: no client certificates) may
    /// carry requests for `site`: only when the site has the very same policy. Sites of one
    /// policy still coalesce; across policies the answer is 421 (docs/config.md).
    pub fn same_policy(&self, site: usize, policy: Option<usize>) -> bool {
        self.sites[site].client_auth == policy
    }

    pub fn decide(&self, li: usize, sni: Option<&str>) -> Decision<'_> {
        let listener = &self.listeners[li];
        let resolved = match listener.table.resolve_sni(sni) {
            // The catch-all site takes a name only when the pool has a certificate for it;
            // otherwise the name is as unknown as if there were no catch-all, unless the
            // site orders certificates on demand.
            Ok(r) if r.by == Match::CatchAll && !self.pool.load().covers(r.cert_name()) => {
                if self.config.sites[r.binding.site].on_demand.is_some() {
                    return Decision::OnDemand {
                        site: r.binding.site,
                        name: r.cert_name().clone(),
                    };
                }
                listener.table.unknown(sni)
            }
            other => other,
        };
        match resolved {
            Ok(r) => match &self.sites[r.binding.site].action {
                SiteAction::Passthrough(backend) => Decision::Passthrough {
                    backend,
                    resolved: Some(r),
                },
                // Refused here, with the alert that says the name is not served (yet),
                // rather than by rustls finding no certificate.
                _ if self.config.sites[r.binding.site].tls == TlsMode::Acme
                    && self.site_certs[r.binding.site].load().is_none() =>
                {
                    Decision::Refuse(Refusal::NoCertificate(r.binding.host.to_string()))
                }
                _ => Decision::Terminate(r),
            },
            Err(Refusal::UnknownName(name)) => match (
                &listener.config.default_passthrough,
                listener.config.unknown_sni,
            ) {
                (Some(backend), UnknownSni::Passthrough) => Decision::Passthrough {
                    backend,
                    resolved: None,
                },
                _ => Decision::Refuse(Refusal::UnknownName(name)),
            },
            Err(refusal) => Decision::Refuse(refusal),
        }
    }

    /// The listener a connection that arrived at `local` belongs to: an `IP:port` listener
    /// beats `*:port`.
    pub fn listener_for(&self, local: std::net::SocketAddr) -> Option<usize> {
        let mut wildcard = None;
        for (i, l) in self.listeners.iter().enumerate() {
            if l.config.address.matches(local) {
                if l.config.address.ip.is_some() {
                    return Some(i);
                }
                wildcard = Some(i);
            }
        }
        wildcard
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Loads many certificates on every core: 100,000 certificates must load in seconds.
fn load_all(files: &[CertFiles], shared: &Shared) -> Vec<Result<Arc<Cert>, load::LoadError>> {
    on_every_core(files, |f| shared.load(f))
}

/// Checks a new pair from its bytes into `report` at `body`: it loads, is valid now, and
/// its key can sign.
pub fn check_new_pair(chain: &[u8], key: &[u8], report: &mut Report) {
    let body = std::path::Path::new("the request body").to_path_buf();
    checked_pair(chain, key, &CertFiles::new(body.clone(), body), report);
}

/// [`check_new_pair`], which also returns the certificate when it passes, loaded as from
/// `files` (where it is about to be written): `Shared::adopt` then spares the build that
/// follows a second parse.
pub fn checked_pair(
    chain: &[u8],
    key: &[u8],
    files: &CertFiles,
    report: &mut Report,
) -> Option<Arc<Cert>> {
    match load::from_pem(chain, key, files) {
        Err(e) => {
            report.error("body", e.to_string(), Some(e.fix().to_string()));
            None
        }
        Ok(cert) => {
            let errors = report.errors().count();
            let now = unix_now();
            if now > cert.not_after {
                report.error(
                    "body",
                    format!("the certificate expired on {}", format_time(cert.not_after)),
                    Some("send a certificate that is valid now".to_string()),
                );
            } else if now < cert.not_before {
                report.error(
                    "body",
                    format!(
                        "the certificate is not valid until {}",
                        format_time(cert.not_before)
                    ),
                    Some("check the system clock, or send it once it is valid".to_string()),
                );
            }
            let cert = Arc::new(cert);
            if !cert.key_usable(&KeyCache::default()) {
                report.error("body", "the private key cannot sign: its public key matches the certificate, but the key itself is not valid".to_string(), Some("send the key the certificate was issued for".to_string()));
            }
            (report.errors().count() == errors).then_some(cert)
        }
    }
}

/// `f` of each item, in order, the items split among the CPUs (in chunks of 64 at least).
pub fn on_every_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(64);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                // A panic while loading or checking a pair is a bug; re-raise it rather than
                // hide it.
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    })
}

/// `check` parses every key whose parsing serving defers to the first handshake, so that a
/// key aws-lc refuses is still an error before it is served.
fn check_key(report: &mut Report, at: &str, cert: &Arc<Cert>, keys: &KeyCache) {
    if !cert.key_usable(keys) {
        report.error(
            format!("{at}.key"),
            format!(
                "the private key in {} cannot sign: its public key matches the certificate, but the key itself is not valid (corrupt or edited)",
                cert.key_file.display()
            ),
            Some("replace the key file with the key the certificate was issued for".to_string()),
        );
    }
}

/// Loads the certificates of a directory [`dir::list`] read, reporting each that fails (and
/// each half pair) at `at` with its file, and noting it in `unloaded`.
fn load_dir(
    listing: &dir::Listing,
    at: &str,
    mode: Mode,
    shared: &Shared,
    report: &mut Report,
    unloaded: &mut Vec<String>,
) -> Vec<Arc<Cert>> {
    for problem in &listing.problems {
        report.error(at, problem.clone(), Some(dir::HALF_PAIR_FIX.to_string()));
    }
    let files: Vec<CertFiles> = listing.pairs.iter().map(|(_, f)| f.clone()).collect();
    let mut certs = Vec::with_capacity(files.len());
    for ((name, _), r) in listing.pairs.iter().zip(load_all(&files, shared)) {
        match r {
            Ok(c) => {
                if mode == Mode::Check {
                    check_key(report, at, &c, &shared.keys);
                }
                certs.push(c)
            }
            Err(e) => {
                report.error(
                    at,
                    format!("certificate {name:?}: {e}"),
                    Some(e.fix().to_string()),
                );
                unloaded.push(format!("certificate {name:?} in {at}"));
            }
        }
    }
    certs
}

/// Builds a runtime. Returns it only when the report has no error.
pub fn build(config: Config, mode: Mode, shared: &Shared) -> (Option<Runtime>, Report) {
    let mut report = Report::default();
    let now = unix_now();
    shared.keys.set_capacity(config.limits.certificate_cache);
    shared.read_names(&config.state_dir);
    let parsed_before = shared.parsed();
    // The cluster key is a file like a certificate's: checked here, in every mode.
    if let Some(cluster) = &config.cluster {
        if let Err(e) = crate::store::ClusterKey::load(&cluster.key_file) {
            report.error(
                "cluster.key_file",
                e.to_string(),
                Some(format!(
                    "make it once, then copy the same file to every node (mode 0600): head -c 32 /dev/urandom > {}",
                    cluster.key_file.display()
                )),
            );
        }
    }

    let mut certs = Vec::with_capacity(config.certificates.len());
    // Pool certificates that failed to load: a host they were meant for is reported as
    // uncovered too, and that message should point back at them.
    let mut unloaded = Vec::new();
    // The `[[certificate]] dir` directories, then the admin API's store: read in every
    // mode, so `check` judges what serving would load.
    let mut listed = Vec::with_capacity(config.certificate_dirs.len() + 1);
    for d in &config.certificate_dirs {
        match std::fs::metadata(&d.path) {
            Ok(m) if m.is_dir() => listed.push((d.at(), dir::list(&d.path))),
            Ok(_) => report.error(
                d.at(),
                format!("{} is not a directory", d.path.display()),
                Some("name a directory of NAME.pem + NAME.key pairs, or use cert and key for one pair".to_string()),
            ),
            Err(e) => report.error(
                d.at(),
                format!(
                    "cannot read the certificate directory {}: {}",
                    d.path.display(),
                    crate::error_text::describe_io(&e)
                ),
                Some("create the directory (it may be empty), or fix the path (relative paths are relative to the configuration file)".to_string()),
            ),
        }
    }
    listed.push((
        "state_dir".to_string(),
        dir::list(&dir::admin_store(&config.state_dir)),
    ));
    shared.retain(&config, &listed);
    for (i, r) in load_all(&config.certificates, shared)
        .into_iter()
        .enumerate()
    {
        match r {
            Ok(c) => {
                if mode == Mode::Check {
                    check_key(&mut report, &format!("certificate[{i}]"), &c, &shared.keys);
                }
                certs.push(c)
            }
            Err(e) => {
                let at = format!("certificate[{i}]");
                report.error(e.path_in(&at), e.to_string(), Some(e.fix().to_string()));
                unloaded.push(at);
            }
        }
    }
    for (at, listing) in &listed {
        certs.extend(load_dir(
            listing,
            at,
            mode,
            shared,
            &mut report,
            &mut unloaded,
        ));
    }
    let unloaded_note = if unloaded.is_empty() {
        String::new()
    } else {
        format!(" (note: {} could not be loaded)", unloaded.join(", "))
    };
    let pool = Pool::new(certs);
    if mode == Mode::Serve {
        let parsed = shared.parsed() - parsed_before;
        tracing::info!(
            certificates = pool.len(),
            parsed,
            "pool certificates loaded (the others known from memory or state_dir/names.cache)"
        );
    }

    let needs_ca = mode == Mode::Serve && config.sites.iter().any(|s| s.tls == TlsMode::Internal);
    let ca = if needs_ca {
        match LocalCa::load_or_create(&config.state_dir) {
            Ok(ca) => Some(ca),
            Err(e) => {
                report.error(
                    "state_dir",
                    format!("local CA: {e}"),
                    Some("make state_dir writable by the user Portico runs as".to_string()),
                );
                None
            }
        }
    } else {
        None
    };

    let mut sites = Vec::with_capacity(config.sites.len());
    let mut site_certs = Vec::with_capacity(config.sites.len());
    // (site index, host) -> certificates, for hosts on https listeners.
    let mut choices: HashMap<(usize, &crate::names::HostName), Choice> = HashMap::new();
    let mut judged: std::collections::HashSet<*const Cert> = std::collections::HashSet::new();
    let mut pool_hosts = HashMap::new();
    let mut policies: Vec<Arc<Policy>> = Vec::new();
    let mut policy_index: HashMap<crate::config::ClientAuth, Option<usize>> = HashMap::new();
    let mut roots: HashMap<std::path::PathBuf, static_files::Root> = HashMap::new();
    let mut root_paths: HashMap<&std::ffi::OsStr, static_files::Root> = HashMap::new();
    let acme_home = crate::acme::home(&config);
    let per_site_histograms = config
        .per_site_histograms
        .unwrap_or(config.sites.len() <= crate::metrics::PER_SITE_HISTOGRAMS_UP_TO);
    for (si, site) in config.sites.iter().enumerate() {
        let at = format!("site[{}]", site.index);
        let action = match &site.action {
            Action::Root(path) => match root_for(path, &mut roots, &mut root_paths) {
                Ok(root) => SiteAction::Root(root),
                Err(e) => {
                    report.error(format!("{at}.root"), format!("cannot serve {}: {e}", path.display()), Some("create the directory, or fix the path (relative to the configuration file)".to_string()));
                    // Go on to check the site's certificates (every problem at once). The
                    // report has an error now, so this placeholder is never served; it keeps
                    // `sites` aligned with `config.sites`.
                    SiteAction::Respond {
                        status: http::StatusCode::INTERNAL_SERVER_ERROR,
                        body: bytes::Bytes::new(),
                        content_type: http::HeaderValue::from_static("text/plain"),
                    }
                }
            },
            Action::Redirect { to, status } => SiteAction::Redirect {
                to: to.clone(),
                status: http::StatusCode::from_u16(*status)
                    .unwrap_or(http::StatusCode::PERMANENT_REDIRECT),
            },
            Action::Passthrough(backend) => SiteAction::Passthrough(backend.clone()),
            Action::Proxy(proxy) => {
                proxy_action(&mut report, &at, proxy, mode, &site.name, &shared.metrics)
            }
            Action::Respond {
                status,
                body,
                content_type,
            } => SiteAction::Respond {
                status: http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::OK),
                body: bytes::Bytes::from(body.clone()),
                content_type: http::HeaderValue::from_str(content_type)
                    .unwrap_or(http::HeaderValue::from_static("text/plain")),
            },
        };
        // One policy per distinct `client_auth` (its files read once); a passthrough site
        // with one was refused by the file check.
        let policy = match &site.client_auth {
            None => None,
            Some(ca) => match policy_index.get(&policy_key(ca)) {
                Some(&p) => p,
                None => {
                    let loaded = match client_auth::load(&policy_key(ca)) {
                        Ok(p) => {
                            for (file, next) in &p.crl_next_update {
                                if *next < now {
                                    report.warning(
                                        format!("{at}.client_auth.crl"),
                                        format!("the CRL {} was due to be replaced on {}; it is still used, but certificates revoked since are not in it", file.display(), format_time(*next)),
                                        Some("fetch the CA's current CRL into the file (the watcher picks it up)".to_string()),
                                    );
                                }
                            }
                            policies.push(Arc::new(p));
                            Some(policies.len() - 1)
                        }
                        Err(e) => {
                            report.error(
                                format!("{at}.client_auth.{}", e.field()),
                                e.to_string(),
                                Some(e.fix().to_string()),
                            );
                            None
                        }
                    };
                    policy_index.insert(policy_key(ca), loaded);
                    loaded
                }
            },
        };
        sites.push(SiteRt {
            name: site.name.clone(),
            action,
            metrics: shared.metrics.site(&site.name, per_site_histograms),
            client_auth: policy,
            subject_header: site
                .client_auth
                .as_ref()
                .and_then(|c| c.subject_header.as_deref())
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        });

        let mut site_cert = None;
        if terminates_tls(&config, site) {
            match &site.tls {
                TlsMode::Pinned(files) => match shared.load(files) {
                    Ok(cert) => {
                        if mode == Mode::Check {
                            check_key(&mut report, &format!("{at}.tls"), &cert, &shared.keys);
                        }
                        for (hi, host) in site.hosts.iter().enumerate() {
                            if cert.covers(host) {
                                choices
                                    .insert((si, host), Choice::single(cert.clone(), How::Pinned));
                            } else {
                                report.error(
                                    format!("{at}.hosts[{hi}]"),
                                    format!("host {host} is not covered by the site's certificate {} (it covers: {})", files.cert.display(), names_list(&cert)),
                                    Some("use a certificate whose SAN names include this host, or move the host to another site".to_string()),
                                );
                            }
                        }
                        site_cert = Some(cert);
                    }
                    Err(e) => report.error(
                        e.path_in(&format!("{at}.tls")),
                        e.to_string(),
                        Some(e.fix().to_string()),
                    ),
                },
                // Check mode opens no CA (it would create one): a leaf the CA already
                // stored, and that serving would reuse, is the site's certificate then, so
                // `bindings` and `explain` show what a server presents.
                TlsMode::Internal if mode == Mode::Check => {
                    if let Some(cert) =
                        internal_ca::stored_leaf(&config.state_dir, &site.name, &site.hosts)
                    {
                        let cert = Arc::new(cert);
                        for host in &site.hosts {
                            choices.insert((si, host), Choice::single(cert.clone(), How::Internal));
                        }
                        site_cert = Some(cert);
                    }
                }
                TlsMode::Internal => {
                    if let Some(ca) = &ca {
                        match ca.leaf(&site.name, &site.hosts) {
                            Ok(cert) => {
                                let cert = Arc::new(cert);
                                for host in &site.hosts {
                                    choices.insert(
                                        (si, host),
                                        Choice::single(cert.clone(), How::Internal),
                                    );
                                }
                                site_cert = Some(cert);
                            }
                            Err(e) => report.error(
                                format!("{at}.tls"),
                                format!("local CA: {e}"),
                                Some(
                                    "make state_dir writable by the user Portico runs as"
                                        .to_string(),
                                ),
                            ),
                        }
                    }
                }
                // Without an [acme] table the file check has reported an error already.
                TlsMode::Acme => {
                    if let Some(home) = &acme_home {
                        let files = crate::acme::cert_files(home, &site.name);
                        // Until the first order succeeds there is nothing to load: the site's
                        // names are refused at the handshake, and that is not an error.
                        match acme_cert(&files, site, shared, now) {
                            Some(cert) => {
                                for host in &site.hosts {
                                    choices
                                        .insert((si, host), Choice::single(cert.clone(), How::Acme));
                                }
                                site_cert = Some(cert);
                            }
                            None => report.warning(
                                format!("{at}.tls"),
                                format!("the ACME certificate is pending: {} has none yet that is valid and covers every host; its names are refused at the handshake until it is issued", files.cert.display()),
                                Some("make sure the [acme] directory is reachable and the CA can reach an http listener on port 80 or an https listener on port 443 for these names".to_string()),
                            ),
                        }
                    }
                }
                TlsMode::Pool => {
                    // The catch-all host has no certificate of its own: each name it takes
                    // is served with the pool's certificate for that name, or refused.
                    for (hi, host) in site
                        .hosts
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| !h.is_catch_all())
                    {
                        pool_hosts.entry(host.clone()).or_insert((si, hi));
                        match pool.best(host, now) {
                            Some(choice) => {
                                choices.insert((si, host), choice);
                            }
                            None => report.error(
                                format!("{at}.hosts[{hi}]"),
                                format!("no certificate in the pool covers host {host}{unloaded_note}"),
                                Some(format!("add a [[certificate]] whose SAN names include {host}, pin one with tls = {{ cert, key }}, or use tls = \"internal\"")),
                            ),
                        }
                    }
                }
            }
            for (hi, host) in site.hosts.iter().enumerate() {
                let Some(choice) = choices.get(&(si, host)) else {
                    continue;
                };
                for cert in choice.variants.iter() {
                    if judged.insert(Arc::as_ptr(cert)) {
                        judge_validity(&mut report, &format!("{at}.hosts[{hi}]"), host, cert, now);
                    }
                }
            }
        }
        site_certs.push(site_cert);
    }

    let mut listeners = Vec::with_capacity(config.listeners.len());
    for (li, l) in config.listeners.iter().enumerate() {
        let mut bindings = HashMap::new();
        for (si, site) in config.sites.iter().enumerate() {
            if !site.listeners.contains(&li) {
                continue;
            }
            let pooled = l.kind == ListenerKind::Https
                && site.tls == TlsMode::Pool
                && !matches!(site.action, Action::Passthrough(_));
            for host in &site.hosts {
                let certs = match l.kind {
                    ListenerKind::Https if pooled => CertFrom::Pool,
                    ListenerKind::Https if !matches!(site.action, Action::Passthrough(_)) => {
                        CertFrom::Site
                    }
                    _ => CertFrom::Nothing,
                };
                let https_port = match l.kind {
                    ListenerKind::Http => https_port_for(&config, si, l),
                    ListenerKind::Https => None,
                };
                // Conflicts were reported by the config check; the first site keeps the host.
                bindings.entry(host.clone()).or_insert(Binding {
                    host: host.clone(),
                    site: si,
                    certs,
                    https_port,
                });
            }
        }
        let no_sni = match &l.no_sni {
            NoSni::Host(h) => Some(h.clone()),
            NoSni::Reject => None,
        };
        let table = Arc::new(Table::new(bindings, no_sni, l.unknown_sni));
        let tls = match l.kind {
            ListenerKind::Https => match server_config(l, shared) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    report.error(
                        format!("listener[{li}]"),
                        format!("cannot make the TLS configuration: {e}"),
                        None,
                    );
                    None
                }
            },
            ListenerKind::Http => None,
        };
        let mut site_tls = HashMap::new();
        // TLS 1.2 session-ID resumption: one store per policy on this listener (rustls
        // resumes a session only for the SNI it was made for, so sites sharing a policy do
        // not share sessions), rather than rustls' default of one 256-entry store per site.
        let mut stores: HashMap<usize, Arc<dyn rustls::server::StoresServerSessions>> =
            HashMap::new();
        if l.kind == ListenerKind::Https {
            for (si, site) in sites.iter().enumerate() {
                let Some(p) = site.client_auth else { continue };
                if !config.sites[si].listeners.contains(&li) {
                    continue;
                }
                let store = stores
                    .entry(p)
                    .or_insert_with(|| rustls::server::ServerSessionMemoryCache::new(256))
                    .clone();
                match policy_config(l, shared, &site.name, &policies[p], store) {
                    Ok(c) => {
                        site_tls.insert(si, Arc::new(c));
                    }
                    Err(e) => report.error(
                        format!("site[{}].client_auth", config.sites[si].index),
                        format!("cannot make the TLS configuration: {e}"),
                        None,
                    ),
                }
            }
        }
        listeners.push(ListenerRt {
            config: l.clone(),
            table,
            tls,
            site_tls,
            connections: Arc::new(Semaphore::new(l.max_connections)),
            metrics: shared.metrics.listener(&l.name),
        });
    }

    let admin_tls = admin_tls(&config, shared, &mut report);

    if report.has_errors() {
        return (None, report);
    }
    let store = dir::admin_store(&config.state_dir);
    (
        Some(Runtime {
            config,
            listeners,
            sites,
            pool: ArcSwap::from_pointee(pool),
            pool_hosts,
            site_certs: site_certs.into_iter().map(ArcSwapOption::new).collect(),
            client_auth: policies,
            challenges: shared.challenges.clone(),
            keys: shared.keys.clone(),
            metrics: shared.metrics.clone(),
            on_demand: shared.on_demand.clone(),
            admin_tls,
            retired: tokio::sync::watch::Sender::new(false),
            store,
        }),
        report,
    )
}

/// The document root for a site's `root` path. Sites serving the same directory share one
/// root, so a hot file is read and cached once for all of them; and a path already opened
/// for another site is not resolved again (thousands of sites often name one directory).
/// Failures are not remembered: each site naming a bad path gets its own error.
fn root_for<'c>(
    path: &'c std::path::Path,
    roots: &mut HashMap<std::path::PathBuf, static_files::Root>,
    root_paths: &mut HashMap<&'c std::ffi::OsStr, static_files::Root>,
) -> std::io::Result<static_files::Root> {
    // By the path's bytes: hashing a `Path` walks its components.
    if let Some(root) = root_paths.get(path.as_os_str()) {
        return Ok(root.clone());
    }
    let root = static_files::Root::new(path)?;
    let root = roots
        .entry(root.path().to_path_buf())
        .or_insert(root)
        .clone();
    root_paths.insert(path.as_os_str(), root.clone());
    Ok(root)
}

/// A proxy site's upstreams, with their active health checks started when serving. A
/// problem (the `ca` file) is reported and gives a placeholder that never serves, since the
/// report then has an error.
fn proxy_action(
    report: &mut Report,
    at: &str,
    proxy: &crate::config::Proxy,
    mode: Mode,
    site: &str,
    metrics: &crate::metrics::Metrics,
) -> SiteAction {
    use crate::http::proxy::{BuildError, Upstreams, SYSTEM_BUNDLE};
    match Upstreams::new(proxy, |upstream| metrics.upstream(site, upstream)) {
        Ok(up) => {
            let up = Arc::new(up);
            if mode == Mode::Serve {
                up.start_health_checks();
            }
            SiteAction::Proxy(up)
        }
        Err(e) => {
            let (path, fix) = match (&e, &proxy.ca) {
                (BuildError::Roots(_), Some(_)) => (
                    format!("{at}.proxy.ca"),
                    "name a readable PEM file holding the CA certificates that issued the upstreams' certificates".to_string(),
                ),
                (BuildError::Roots(_), None) => (
                    format!("{at}.proxy"),
                    format!("install the system CA bundle ({SYSTEM_BUNDLE}, Debian package ca-certificates) or set ca = \"file.pem\""),
                ),
                _ => (
                    format!("{at}.proxy"),
                    "check the upstreams and server_name".to_string(),
                ),
            };
            report.error(path, e.to_string(), Some(fix));
            SiteAction::Respond {
                status: http::StatusCode::BAD_GATEWAY,
                body: bytes::Bytes::new(),
                content_type: http::HeaderValue::from_static("text/plain"),
            }
        }
    }
}

/// The ACME certificate stored in `files` for `site`, when it may serve: it loads, is
/// valid now and covers every host of the site. None until the first order succeeds.
fn acme_cert(
    files: &CertFiles,
    site: &crate::config::Site,
    shared: &Shared,
    now: i64,
) -> Option<Arc<Cert>> {
    if !(files.cert.exists() && files.key.exists()) {
        return None;
    }
    shared
        .load(files)
        .ok()
        .filter(|c| c.is_valid_at(now) && site.hosts.iter().all(|h| c.covers(h)))
}

/// Whether `site` presents a certificate of its own: it is on an https listener and does
/// not pass TLS through (a passthrough site's certificate lives on its backend).
fn terminates_tls(config: &Config, site: &crate::config::Site) -> bool {
    site.listeners
        .iter()
        .any(|&l| config.listeners[l].kind == ListenerKind::Https)
        && !matches!(site.action, Action::Passthrough(_))
}

fn names_list(cert: &Cert) -> String {
    if cert.names.is_empty() {
        return "no DNS names".to_string();
    }
    cert.names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn judge_validity(
    report: &mut Report,
    at: &str,
    host: &crate::names::HostName,
    cert: &Cert,
    now: i64,
) {
    let file = cert.cert_file.display();
    if now > cert.not_after {
        report.error(
            at,
            format!(
                "the certificate for {host} ({file}) expired on {}",
                format_time(cert.not_after)
            ),
            Some("renew the certificate".to_string()),
        );
    } else if now < cert.not_before {
        report.error(
            at,
            format!(
                "the certificate for {host} ({file}) is not valid until {}",
                format_time(cert.not_before)
            ),
            Some("check the system clock, or wait until the certificate becomes valid".to_string()),
        );
    } else if cert.not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        let days = (cert.not_after - now) / 86_400;
        report.warning(
            at,
            format!(
                "the certificate for {host} ({file}) expires in {days} days, on {}",
                format_time(cert.not_after)
            ),
            Some("renew it soon".to_string()),
        );
    }
}

/// The port of the https listener an http listener redirects a site's hosts to: one on the
/// same IP if the site is bound there, else any https listener of the site.
fn https_port_for(config: &Config, site: usize, http: &Listener) -> Option<u16> {
    let https: Vec<&Listener> = config.sites[site]
        .listeners
        .iter()
        .map(|&i| &config.listeners[i])
        .filter(|l| l.kind == ListenerKind::Https)
        .collect();
    https
        .iter()
        .find(|l| l.address.ip == http.address.ip)
        .or_else(|| https.first())
        .map(|l| l.address.port)
}

/// The admin listener's TLS configuration: its one certificate, whatever the client names
/// (the operator reaches it by an address or a name of their choosing), HTTP/1.1 only.
fn admin_tls(config: &Config, shared: &Shared, report: &mut Report) -> Option<Arc<ServerConfig>> {
    let files = config.admin.as_ref()?.tls.as_ref()?;
    let cert = match shared.load(files) {
        Ok(cert) => cert,
        Err(e) => {
            report.error("admin.tls", e.to_string(), Some(e.fix().to_string()));
            return None;
        }
    };
    check_key(report, "admin.tls", &cert, &shared.keys);
    let certified = match cert.certified(&shared.keys) {
        Ok(certified) => certified,
        Err(e) => {
            report.error("admin.tls", e.to_string(), Some(e.fix().to_string()));
            return None;
        }
    };
    let resolver = rustls::sign::SingleCertAndKey::from(certified);
    match crate::tls::server_config(Arc::new(resolver)) {
        Ok(mut c) => {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            c.ticketer = shared.tickets.clone();
            Some(Arc::new(c))
        }
        Err(e) => {
            report.error(
                "admin.tls",
                format!("cannot make the TLS configuration: {e}"),
                None,
            );
            None
        }
    }
}

fn server_config(l: &Listener, shared: &Shared) -> Result<ServerConfig, rustls::Error> {
    let mut config = crate::tls::server_config(Arc::new(Resolver))?;
    config.alpn_protocols = l.alpn.clone();
    config.ticketer = shared.tickets.clone();
    Ok(config)
}

/// What makes two `client_auth` tables one policy: the CA, `required` and the CRLs. The
/// subject header only names a header, and sites that differ in it still coalesce.
fn policy_key(ca: &crate::config::ClientAuth) -> crate::config::ClientAuth {
    crate::config::ClientAuth {
        subject_header: None,
        ..ca.clone()
    }
}

/// The TLS configuration of one site with `client_auth` on listener `l`: the listener's
/// settings and resolver, the policy's verifier, the policy's session store on this
/// listener (`store`), and tickets bound to the site and its policy
/// ([`crate::tls::tickets::Bound`]). So a session resumes only for the site and the very
/// policy (CA and CRL contents) that verified it: never on a site without client
/// certificates, never on another site, never after its CRL changed.
fn policy_config(
    l: &Listener,
    shared: &Shared,
    site: &str,
    policy: &Policy,
    store: Arc<dyn rustls::server::StoresServerSessions>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config =
        crate::tls::server_config_verifying(Arc::new(Resolver), policy.verifier.clone())?;
    config.alpn_protocols = l.alpn.clone();
    config.session_storage = store;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(b"portico client_auth session\0");
    context.update(&(site.len() as u64).to_be_bytes());
    context.update(site.as_bytes());
    context.update(&policy.digest);
    let context: [u8; 32] = context
        .finish()
        .as_ref()
        .try_into()
        .unwrap_or_else(|_| unreachable!("SHA-256 gives 32 bytes"));
    config.ticketer = Arc::new(crate::tls::tickets::Bound::new(
        shared.tickets.clone(),
        context,
    ));
    Ok(config)
}
