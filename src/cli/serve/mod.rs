//! `portico serve`: build the runtime, bind, serve; SIGHUP reloads, SIGTERM/SIGINT drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::cluster::pushed::{Pushed, State};
use crate::config::{CertFiles, Config, Origin, Report, TlsMode};
use crate::control::{Changed, Command, History, Outcome, Reply};
use crate::listener::Server;
use crate::notify::Notifier;
use crate::runtime::{self, format_time, FileStamp, Mode, Runtime, Shared};
use crate::tls::dir::Staged;

mod acme;
mod certificates;
mod fleet;
mod watch;

use acme::AcmeTasks;
use certificates::{
    apply_dir_pairs, apply_fleet_ca, apply_fleet_certificates, apply_site_certs,
    change_certificates, internal_sites, next_fleet_change, Asker, CertChange,
};
use fleet::{next_push, start_from_fleet};
use watch::{cert_dirs, cert_files, loaded_cert_files, watch_period, DirChanges, DirReady};

/// How long a binary upgrade's new process reads cold certificates for QUIC
/// (`quic::warm_certificates`) before it tells the old process it serves.
const WARM_BEFORE_READY: Duration = Duration::from_secs(10);
/// How often internal certificates are looked at for renewal.
const RENEWAL_CHECK: Duration = Duration::from_secs(6 * 3600);
/// How often certificate and key files are looked at for changes (more rarely for many
/// files, `watch_period`).
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A change is applied once the files have stayed the same this long, so a writer that
/// replaces the chain and then the key is seen once, done. Also how soon a directory event
/// (inotify) is followed by a look.
const SETTLE: Duration = Duration::from_millis(500);

/// The most threads tokio's blocking pool may run (its default is 512). Static files use
/// it for what is not cached: one task per request for the path checks, open, metadata and
/// the read of a small file, and one per 64 KiB chunk of a streamed one. From the page
/// cache that is CPU work, which more threads than cores do not speed up; a thread only
/// waits for a cold disk read, and 32 reads in flight is a deep queue (nginx's
/// `thread_pool` default). Tasks beyond it wait in the pool's queue. The longest users,
/// a reload's build and the watcher's pass, take one thread each.
pub const MAX_BLOCKING_THREADS: usize = 32;

/// How long an idle blocking-pool thread lives (tokio's default is 10 s). The pool wakes
/// idle threads in the order they went idle, so a task every `WATCH_INTERVAL` (the
/// certificate watcher's pass) wakes each of N idle threads every N seconds, and none of
/// them ends while N seconds are less than the keep-alive: with the default, a burst left
/// nine blocking threads for good (12 threads in all on 2 CPUs after h2load: main, two
/// workers, nine). With 2.5 s two stay (a third idles 3 s between wake-ups and ends), and
/// a burst that needs more pays a thread start, tens of microseconds, per thread.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_millis(2500);

pub(super) fn run(config: &super::ConfigArg) -> anyhow::Result<ExitCode> {
    // Before the configuration is loaded, so that its diagnostics are in the chosen format
    // too; the format cannot change after this (a reload that changes it warns).
    super::init_logging(Config::log_format_in(config.path()));
    // What the service manager handed this process, read (and removed from the
    // environment) before any other thread runs.
    let notifier = Notifier::from_env();
    let activated = crate::activation::take_from_env()
        .map_err(|e| anyhow::anyhow!("{e}\n  fix: {}", e.fix()))
        .context("cannot take the sockets from the service manager")?;
    // With one CPU to run on (a pinned process, a container limited to one CPU), one
    // thread runs every connection and this loop: tokio's multi-threaded scheduler would
    // add a second thread for the loop and pay for handing tasks between threads it cannot
    // run at once (about 8% of HTTP/2's CPU per request, bench/profiling.md section 7).
    // The loop's heavy steps (reloads, the certificate watcher's pass) run on the
    // blocking pool either way.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let tokio = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .max_blocking_threads(MAX_BLOCKING_THREADS)
    .thread_keep_alive(BLOCKING_KEEP_ALIVE)
    .enable_all()
    .build()
    .context("cannot start the async runtime")?;
    tracing::info!(
        scheduler = if one_cpu {
            "one thread"
        } else {
            "a thread per CPU"
        },
        "async runtime"
    );
    tokio.block_on(serve(
        config.path().to_path_buf(),
        config.origin(),
        notifier,
        activated,
    ))
}

/// Loads and builds a runtime, logging every diagnostic. With the runtime comes the report
/// of its warnings.
pub fn load(path: &Path, origin: Origin, shared: &Shared) -> Result<(Runtime, Report), Report> {
    load_with(path, origin, None, shared)
}

/// [`load`] of a node's own file merged with the fleet's `pushed` configuration text
/// (`[cluster] config = "etcd"`), or of the file alone (None).
pub fn load_with(
    path: &Path,
    origin: Origin,
    pushed: Option<&str>,
    shared: &Shared,
) -> Result<(Runtime, Report), Report> {
    let (config, mut report) = match pushed {
        Some(text) => Config::load_fleet_as(path, origin, text),
        None => Config::load_as(path, origin),
    };
    let rt = config.and_then(|config| {
        let running = crate::logging::format();
        if config.log_format != running {
            report.warning(
                "log.format",
                format!(
                    "the running server writes its log as {:?} until it restarts (this file says {:?})",
                    running.as_str(),
                    config.log_format.as_str(),
                ),
                Some(
                    "restart Portico, or run `portico upgrade` (its new process reads the format)"
                        .to_string(),
                ),
            );
        }
        let (rt, more) = runtime::build(config, Mode::Serve, shared);
        report.extend(more);
        rt
    });
    for d in &report.items {
        match d.severity {
            crate::config::Severity::Error => tracing::error!("{}: {d}", path.display()),
            crate::config::Severity::Warning => tracing::warn!("{}: {d}", path.display()),
        }
    }
    match rt {
        Some(rt) => Ok((rt, report)),
        None => Err(report),
    }
}

/// Up to this many sites, the start logs a line per site and per certificate at info
/// level; with more, one line with the counts, and the per-site lines at debug level.
/// 100,000 sites made 200,000 lines, about 0.2 s of a start on one CPU.
const SITE_LINES_AT_INFO: usize = 100;

fn summary(rt: &Runtime) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    for l in &rt.listeners {
        tracing::info!(listener = %l.config.name, address = %l.config.address, kind = ?l.config.kind, hosts = l.table.len(), "listener");
    }
    let pool = rt.pool();
    // Counted without listing them: a pool of a million certificates is one line.
    let site_only = rt.site_only_certs(&pool);
    let certificates = pool.len() + site_only.len();
    let at_info = rt.sites.len() <= SITE_LINES_AT_INFO && certificates <= SITE_LINES_AT_INFO;
    if !at_info {
        tracing::info!(
            sites = rt.sites.len(),
            certificates,
            "serving (a line per site and certificate at debug level: RUST_LOG=debug)"
        );
    }
    macro_rules! each {
        ($($field:tt)*) => {
            if at_info {
                tracing::info!($($field)*)
            } else {
                tracing::debug!($($field)*)
            }
        };
    }
    if at_info || tracing::enabled!(tracing::Level::DEBUG) {
        for (i, s) in rt.sites.iter().enumerate() {
            let cfg = &rt.config.sites[i];
            let hosts: Vec<&str> = cfg.hosts.iter().map(|h| h.as_str()).collect();
            each!(site = %s.name, hosts = %hosts.join(","), tls = ?cfg.tls, "site");
        }
        for c in pool.certs().chain(site_only.iter().map(|(_, c)| c)) {
            each!(subject = %c.subject, names = c.names.len(), key = %c.key_type, not_after = %format_time(c.not_after), file = %c.cert_file.display(), "certificate");
        }
    }
    if rt.config.sites.iter().any(|s| s.tls == TlsMode::Internal) {
        tracing::info!(ca = %crate::tls::internal_ca::ca_cert_path(&rt.config.state_dir).display(), "local CA (trust this file to verify internal certificates)");
    }
}

/// Installs a freshly built runtime, or reports why not, and records the outcome in
/// `history`. Returns it for `portico reload` and the admin API.
fn install(
    server: &mut Server,
    metrics: &crate::metrics::Metrics,
    history: &History,
    built: Result<(Runtime, Report), Report>,
    why: &str,
) -> Outcome {
    let (ok, report, summary) = match built {
        Ok((rt, warnings)) => {
            let (listeners, sites) = (rt.listeners.len(), rt.sites.len());
            match server.install(rt) {
                Ok(()) => {
                    metrics.installed(&server.runtime());
                    metrics.reload(crate::metrics::Outcome::Ok);
                    tracing::info!(reason = why, listeners, sites, "reloaded");
                    let summary = format!("reloaded: {listeners} listeners, {sites} sites");
                    (true, warnings, summary)
                }
                Err(e) => {
                    metrics.reload(crate::metrics::Outcome::Failed);
                    tracing::error!(reason = why, error = %e, "reload failed; the previous configuration keeps serving");
                    let mut report = Report::default();
                    report.error("", e.to_string(), None);
                    let summary = "the previous configuration keeps serving".to_string();
                    (false, report, summary)
                }
            }
        }
        Err(report) => {
            metrics.reload(crate::metrics::Outcome::Failed);
            let errors = report.errors().count();
            tracing::error!(
                reason = why,
                errors,
                "reload failed; the previous configuration keeps serving"
            );
            let summary = format!("{errors} errors; the previous configuration keeps serving");
            (false, report, summary)
        }
    };
    record(history, ok, report, summary, why)
}

/// Installs a change of the certificate pool (`runtime::patch_pool`) on the runtime
/// serving, or reports why not: like [`install`], the outcome goes to the history and the
/// reload counter, but no runtime is built or replaced. Pairs the change left out are in
/// the outcome's report (and the log); with nothing else changed, it failed.
fn install_patch(
    server: &Server,
    metrics: &crate::metrics::Metrics,
    history: &History,
    patched: Result<runtime::Patched, Report>,
    why: &str,
) -> Outcome {
    let (ok, report, summary) = match patched {
        Ok(p) if p.is_empty() && p.skipped.has_errors() => {
            for d in p.skipped.errors() {
                tracing::error!(reason = why, "certificate change not applied: {d}");
            }
            metrics.reload(crate::metrics::Outcome::Failed);
            (false, p.skipped, "no certificate changed".to_string())
        }
        Ok(p) => {
            for d in p.skipped.errors() {
                tracing::error!(reason = why, "certificate change not applied: {d}");
            }
            let (added, replaced, removed) = (p.added, p.replaced, p.removed);
            server.runtime().install_pool(p.pool);
            metrics.reload(crate::metrics::Outcome::Ok);
            tracing::info!(
                reason = why,
                added,
                replaced,
                removed,
                "certificate pool changed"
            );
            let summary =
                format!("certificate pool: {added} added, {replaced} replaced, {removed} removed");
            (true, p.skipped, summary)
        }
        Err(report) => {
            for d in report.errors() {
                tracing::error!(reason = why, "certificate change not applied: {d}");
            }
            metrics.reload(crate::metrics::Outcome::Failed);
            let summary = format!(
                "{} errors; the previous certificates keep serving",
                report.errors().count()
            );
            (false, report, summary)
        }
    };
    record(history, ok, report, summary, why)
}

/// How many certificates known from the names cache were looked at, and the pairs
/// (directory, name) among them that changed.
type Verified = (usize, Vec<(PathBuf, String)>);

/// What the look at the names cache's certificates found changed, once it is done; never,
/// after.
async fn verified(verify: &mut Option<tokio::task::JoinHandle<Verified>>) -> Verified {
    match verify {
        Some(task) => task.await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}

/// Writes the names cache on the blocking pool (`Shared::write_names`); a failure costs
/// only the next start's time, and is logged.
fn write_names(shared: &Shared, state_dir: &Path) {
    let (shared, dir) = (shared.clone(), state_dir.to_path_buf());
    tokio::task::spawn_blocking(move || match shared.write_names(&dir) {
        Some(Err(e)) => {
            tracing::warn!(file = %runtime::names_cache::path(&dir).display(), error = %e, "cannot write the names cache; the next start parses every certificate again")
        }
        Some(Ok(entries)) => tracing::debug!(entries, "names cache written"),
        None => {}
    });
}

/// Records the outcome of a change in `history`, and returns it.
fn record(history: &History, ok: bool, report: Report, summary: String, why: &str) -> Outcome {
    let outcome = Outcome {
        ok,
        report,
        summary,
        reason: why.to_string(),
        at: runtime::unix_now(),
    };
    history.record(outcome.clone());
    outcome
}

/// A binary upgrade in progress: the new process and the client waiting for the outcome.
#[derive(Default)]
struct Upgrade {
    pid: Option<u32>,
    client: Option<tokio::sync::oneshot::Sender<Reply>>,
    deadline: Option<tokio::time::Instant>,
}

impl Upgrade {
    /// Starts the binary at `exe` as `serve -c path`, told to take the sockets over.
    fn start(
        &mut self,
        exe: &Path,
        path: &Path,
        state_dir: &Path,
        notifier: &Notifier,
    ) -> anyhow::Result<()> {
        if self.client.is_some() {
            anyhow::bail!("an upgrade is already in progress");
        }
        let mut command = std::process::Command::new(exe);
        // Under systemd the new process tells the manager it is ready, once this one has
        // named it the main process (MAINPID) at the hand-over.
        if let Some(socket) = notifier.socket_env() {
            command.env(crate::notify::SOCKET_ENV, socket);
        }
        let child = command
            .arg("serve")
            .arg("-c")
            .arg(path)
            .env(
                crate::upgrade::FROM_ENV,
                crate::control::socket_path(state_dir),
            )
            .stdin(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        tracing::info!(pid = child.id(), exe = %exe.display(), "upgrade: started the new process");
        self.pid = Some(child.id());
        // Reap it if it exits while this process still runs (a failed upgrade); after a
        // successful one this process exits first and the new one lives on.
        let mut child = child;
        std::thread::spawn(move || child.wait());
        // Building a runtime for many certificates takes a while; a minute is generous.
        self.deadline = Some(tokio::time::Instant::now() + Duration::from_secs(60));
        Ok(())
    }

    /// Resolves when a started upgrade has not completed in time; never without one.
    async fn timed_out(&self) {
        match self.deadline {
            Some(d) if self.client.is_some() => tokio::time::sleep_until(d).await,
            _ => std::future::pending().await,
        }
    }
}

/// Runs `f` on tokio's blocking pool. Building a runtime reads and parses every changed
/// certificate, and the watcher looks at every certificate file: seconds with 100,000
/// sites, which must never hold up a connection, whichever scheduler runs them.
async fn off_loop<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        // The blocking pool is only cancelled when the runtime shuts down, after this loop.
        Err(e) => std::panic::resume_unwind(
            e.try_into_panic()
                .unwrap_or_else(|e| Box::new(format!("a rebuild did not finish: {e}"))),
        ),
    }
}

/// [`load_with`] off the serving threads.
async fn load_off(
    path: &Path,
    origin: Origin,
    pushed: Option<Arc<Pushed>>,
    shared: &Shared,
) -> Result<(Runtime, Report), Report> {
    let (path, shared) = (path.to_path_buf(), shared.clone());
    off_loop(move || {
        load_with(
            &path,
            origin,
            pushed.as_ref().map(|p| p.text.as_str()),
            &shared,
        )
    })
    .await
}

/// [`build`] off the serving threads.
async fn build_off(config: Config, shared: &Shared) -> Result<(Runtime, Report), Report> {
    let shared = shared.clone();
    off_loop(move || build(config, &shared)).await
}

/// Builds a runtime from a configuration already in memory.
fn build(config: Config, shared: &Shared) -> Result<(Runtime, Report), Report> {
    let (rt, report) = runtime::build(config, Mode::Serve, shared);
    match rt {
        Some(rt) => Ok((rt, report)),
        None => Err(report),
    }
}

/// The first tick of a timer that fires every `period`, one period from now: nothing
/// periodic runs while the server starts.
fn every(period: Duration) -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

async fn serve(
    path: PathBuf,
    origin: Origin,
    notifier: Notifier,
    activated: Vec<crate::activation::Inherited>,
) -> anyhow::Result<ExitCode> {
    let shared = Shared::new();
    // A node whose configuration is the fleet's: the newest version it knows (what a
    // reload loads again with its own file), and what its start ran and tried.
    let fleet_node = Config::fleet_node(&path);
    // A fleet's node first brings its state_dir to the fleet's CA and certificates (etcd
    // gets a few seconds; without it the node's own files serve). A node on its own file
    // reads it twice only when it can hold a `[cluster]` table.
    let joining = match &fleet_node {
        Some(node) => Some((node.cluster.clone(), node.state_dir.clone())),
        None => std::fs::read_to_string(&path)
            .is_ok_and(|t| t.contains("cluster"))
            .then(|| Config::load_as(&path, origin).0)
            .flatten()
            .and_then(|c| Some((c.cluster?, c.state_dir))),
    };
    if let Some((cluster, state_dir)) = joining {
        crate::cluster::prepare(&cluster, &state_dir, &shared).await;
    }
    let mut latest: Option<Arc<Pushed>> = None;
    let mut config_state = State::default();
    let mut running = None;
    // The first build takes what the names cache says; the files are looked at once
    // serving has started (`verify` below).
    shared.trust_index(true);
    let loaded = match &fleet_node {
        Some(node) => match start_from_fleet(&path, origin, node, &shared).await? {
            Ok((rt, newest, ran, state)) => {
                latest = Some(newest);
                running = Some(ran);
                config_state = state;
                Ok((rt, Report::default()))
            }
            Err(code) => return Ok(code),
        },
        None => load(&path, origin, &shared),
    };
    shared.trust_index(false);
    let rt = match loaded {
        Ok((rt, _warnings)) => rt,
        Err(report) => {
            eprint!("{report}");
            eprintln!(
                "{}: {} errors; not serving",
                path.display(),
                report.errors().count()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let state_dir = rt.config.state_dir.clone();
    // Sites whose ACME certificate was just stored, by this node's order or (in a fleet)
    // another's: the serve loop rebuilds for each.
    let (issued_tx, mut issued) = tokio::sync::mpsc::unbounded_channel();
    // A fleet's node installs the fleet's ticket keys (its sealed local copy at once, etcd's
    // when it answers) before it accepts; etcd being away never stops the start.
    let mut fleet = match &rt.config.cluster {
        Some(cluster) => Some(
            crate::cluster::Node::start(cluster, &state_dir, &shared, issued_tx.clone())
                .await
                .context("cannot join the fleet")?,
        ),
        None => None,
    };
    // The path this binary was started from: an upgrade starts whatever is there now.
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let (mut server, takeover) = match std::env::var_os(crate::upgrade::FROM_ENV) {
        None if activated.is_empty() => (Server::start(rt).await?, None),
        None => {
            // Socket activation: the manager's sockets, matched to listeners by address,
            // take the path an upgrade's do; listeners without one are bound.
            let count = activated.len();
            let handed = crate::activation::assign(
                activated,
                &crate::listener::socket_addrs(&rt),
                &crate::quic::socket_addrs(&rt),
            )
            .map_err(|e| anyhow::anyhow!("{e}\n  fix: {}", e.fix()))?;
            tracing::info!(
                sockets = count,
                "took the listening sockets from the service manager"
            );
            (Server::start_with(rt, handed).await?, None)
        }
        Some(socket) => {
            // A binary upgrade: the runtime is built (a bad configuration has already
            // failed above), now take the sockets from the old process.
            let socket = PathBuf::from(socket);
            let (stream, handed) =
                tokio::task::spawn_blocking(move || crate::control::take_over(&socket))
                    .await?
                    .context("cannot take the sockets over from the running process")?;
            tracing::info!(
                sockets = handed.tcp.len(),
                udp = handed.udp.len(),
                "took the listening sockets over"
            );
            (Server::start_with(rt, handed).await?, Some(stream))
        }
    };
    // The certificates a start from the names cache left cold are read for QUIC, whose
    // handshake cannot wait for them: in an upgrade before this process says it serves
    // (for at most WARM_BEFORE_READY; the old process serves meanwhile), else in the
    // background.
    let warming = {
        let rt = server.runtime();
        let until = std::time::Instant::now() + WARM_BEFORE_READY;
        tokio::task::spawn_blocking(move || crate::quic::warm_certificates(&rt, until))
    };
    if let Some(stream) = takeover {
        let read = warming.await.unwrap_or(0);
        if read > 0 {
            tracing::info!(certificates = read, "read the certificates for QUIC");
        }
        tokio::task::spawn_blocking(move || crate::control::confirm(stream))
            .await?
            .context("the running process did not let go")?;
    }
    // Logged once the sockets accept: with many sites this takes a while at info level,
    // and clients need not wait for it.
    summary(&server.runtime());
    for addr in server.local_addrs() {
        tracing::info!(%addr, "listening");
    }
    let (requests, mut commands) = tokio::sync::mpsc::channel(4);
    let history = History::default();
    // The admin listener asks the serve loop through the same channel as the control
    // socket: one reload path. Its failures are logged and never stop serving.
    let mut admin = crate::admin::Admin::start(
        &server.runtime().config,
        std::sync::Arc::new(crate::admin::Context {
            runtime: server.runtime_handle(),
            shared: shared.clone(),
            requests: requests.clone(),
            history: history.clone(),
            started: runtime::unix_now(),
        }),
    );
    // Without the control socket Portico still serves (SIGHUP reloads); only `portico
    // reload` is unavailable, and the log says why.
    let mut control = match crate::control::listen(&state_dir, requests).await {
        Ok(guard) => {
            tracing::info!(socket = %crate::control::socket_path(&state_dir).display(), "control socket");
            Some(guard)
        }
        Err(e) => {
            tracing::error!(error = %e, "no control socket; `portico reload` will not reach this server");
            None
        }
    };
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut renew = every(RENEWAL_CHECK);
    let mut files = loaded_cert_files(&server.runtime().config, &shared);
    let mut watch = every(watch_period(files.len()));
    // `[[certificate]] dir` directories: an event there brings the next look forward.
    let mut dirs = crate::tls::dir::Watcher::new();
    dirs.follow(&cert_dirs(&server.runtime().config));
    let mut dir_changes = DirChanges::default();
    // The certificates the first build took from the names cache unread: their files are
    // looked at now, off the loop, and pairs changed while Portico was stopped are patched
    // in as a directory change is.
    let mut verify = {
        let shared = shared.clone();
        Some(tokio::task::spawn_blocking(move || {
            shared.changed_since_index()
        }))
    };
    // Files seen changed at the previous tick; rebuilt once they stop changing (debounce).
    let mut pending: Option<Vec<_>> = None;
    let mut upgrade = Upgrade::default();
    // ACME tasks for the configuration being served; restarted when a reload changes it.
    shared.metrics.installed(&server.runtime());
    let fleet_acme = fleet.as_ref().map(crate::cluster::Node::acme);
    // What the fleet asks this node to apply (its certificates, its local CA), and where an
    // admin change is stored first.
    let mut fleet_changes = fleet.as_mut().and_then(crate::cluster::Node::take_changes);
    let fleet_certs = fleet.as_ref().map(crate::cluster::Node::certificates);
    // Each newer fleet configuration version, from the node's watch of etcd.
    let mut pushes = match (&mut fleet, &fleet_node) {
        (Some(node), Some(_)) => {
            let rx = node.follow_config(config_state);
            // Its sealed copy: what a start while etcd is away runs.
            if let Some(ran) = &running {
                node.config_loaded(ran, None);
            }
            Some(rx)
        }
        _ => None,
    };
    // On-demand orders (acme::on_demand) send their pairs here; they take the admin API's
    // path into the certificate store (and, in a fleet, etcd).
    let (on_demand_tx, mut on_demand_issued) = tokio::sync::mpsc::unbounded_channel();
    shared
        .on_demand
        .connect(on_demand_tx, fleet_acme.clone(), server.runtime_handle());
    let mut acme = AcmeTasks::start(&server.runtime().config, &shared, issued_tx, fleet_acme);
    // Every listener is bound, the runtime installed and the control socket (which
    // `ExecReload=portico reload` talks to) is up.
    notifier.ready();
    // The one reload path: SIGHUP, the control socket and the admin API, and a new fleet
    // configuration version. It loads the file (with the newest fleet configuration on
    // a fleet's node), installs or reports, and records the outcome.
    macro_rules! reload {
        ($why:expr) => {{
            notifier.reloading();
            let built = load_off(&path, origin, latest.clone(), &shared).await;
            let outcome = install(&mut server, &shared.metrics, &history, built, $why);
            notifier.ready();
            files = loaded_cert_files(&server.runtime().config, &shared);
            watch = every(watch_period(files.len()));
            dirs.follow(&cert_dirs(&server.runtime().config));
            acme.follow(&server.runtime().config);
            admin.follow(&server.runtime().config).await;
            if let (Some(node), Some(p), true) = (&fleet, &latest, pushes.is_some()) {
                node.config_loaded(p, (!outcome.ok).then_some(&outcome.report));
            }
            outcome
        }};
    }
    let mut handed_over = false;
    // After a hand-over: the control sessions still writing their answers.
    let mut sessions = None;
    loop {
        // What the last start or change parsed goes to the names cache, so the next start
        // need not parse it again (in the background; nothing waits for it).
        if shared.names_dirty() {
            write_names(&shared, &server.runtime().config.state_dir);
        }
        tokio::select! {
            _ = hup.recv() => {
                reload!("SIGHUP");
            }
            pushed = next_push(&mut pushes) => {
                let why = format!("fleet configuration version {}", pushed.meta.version);
                latest = Some(pushed);
                reload!(&why);
            }
            Some(change) = next_fleet_change(&mut fleet_changes) => match change {
                crate::cluster::FleetChange::Certificates(changes) => {
                    apply_fleet_certificates(&mut server, &shared, &history, changes).await;
                }
                crate::cluster::FleetChange::Ca { cert, key } => {
                    apply_fleet_ca(&server, &shared, &history, cert, key).await;
                }
            },
            Some(site) = issued.recv() => {
                // Into the runtime serving, in place: no edit of the file is applied.
                let found = server.runtime().config.sites.iter().position(|s| s.name == site);
                if let Some(si) = found {
                    apply_site_certs(&server, &shared, &history, vec![si], &format!("ACME certificate for site {site}")).await;
                }
            }
            Some(issued) = on_demand_issued.recv() => {
                let issued: crate::acme::on_demand::Issued = issued;
                let change = CertChange::Put { name: issued.store_name, chain: issued.chain, key: issued.key };
                let (answer, _) = change_certificates(&mut server, &shared, &history, fleet_certs.as_deref(), vec![change], Asker::OnDemand).await;
                if let Reply::Certificate(changed, Some(outcome)) = &answer {
                    if !outcome.ok {
                        tracing::error!(host = %issued.name, ?changed, "on-demand: the issued certificate was not installed: {}", outcome.report);
                    }
                }
            }
            Some(request) = commands.recv() => match request.command {
                Command::Reload => {
                    let answer = reload!(request.source);
                    let _ = request.reply.send(Reply::Reload(answer));
                }
                Command::Inspect(query, format) => {
                    // Answered off the loop, which goes on meanwhile: at 100,000 sites a
                    // document takes a while, and nothing waits on it but its asker.
                    let rt = server.runtime();
                    tokio::spawn(async move {
                        let report = crate::config::Report::default();
                        let document = off_loop(move || crate::inspect::answer(&rt, &report, &query, format, crate::runtime::unix_now())).await;
                        let _ = request.reply.send(Reply::Answer(document));
                    });
                }
                Command::PutCertificate { name, chain, key } => {
                    let change = CertChange::Put { name, chain, key };
                    let (answer, _) = change_certificates(&mut server, &shared, &history, fleet_certs.as_deref(), vec![change], Asker::Admin).await;
                    let _ = request.reply.send(answer);
                }
                Command::DeleteCertificate { name } => {
                    let change = CertChange::Delete { name };
                    let (answer, _) = change_certificates(&mut server, &shared, &history, fleet_certs.as_deref(), vec![change], Asker::Admin).await;
                    let _ = request.reply.send(answer);
                }
                Command::Upgrade => match upgrade.start(&exe, &path, &state_dir, &notifier) {
                    Ok(()) => upgrade.client = Some(request.reply),
                    Err(e) => {
                        let _ = request.reply.send(Reply::Text(format!("FAILED {e}\n")));
                    }
                },
                Command::Handover => {
                    let sockets = server
                        .listening()
                        .into_iter()
                        .filter_map(|(k, a, fd)| Some((k, a, fd.try_clone_to_owned().ok()?)))
                        .collect();
                    let _ = request.reply.send(Reply::Sockets(sockets));
                }
                Command::HandedOver { ready: true } => {
                    tracing::info!(pid = ?upgrade.pid, "the new process serves; this one drains and exits");
                    // Let go of the control socket first: the new process binds it next.
                    if let Some(guard) = control.take() {
                        sessions = Some(guard.release());
                    }
                    // And of the admin listener, which the new process opens next.
                    admin.release().await;
                    if let Some(client) = upgrade.client.take() {
                        let pid = upgrade.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
                        let _ = client.send(Reply::Text(format!("OK upgraded: process {pid} serves now; this one drains and exits\n")));
                    }
                    let _ = request.reply.send(Reply::Text(String::new()));
                    handed_over = true;
                    break;
                }
                Command::HandedOver { ready: false } => {
                    tracing::error!("the new process did not take over; this one keeps serving");
                    if let Some(client) = upgrade.client.take() {
                        let _ = client.send(Reply::Text("FAILED the new process did not take over (see its log); this one keeps serving\n".to_string()));
                    }
                    let _ = request.reply.send(Reply::Text(String::new()));
                }
            },
            _ = upgrade.timed_out() => {
                tracing::error!("the new process did not ask for the sockets in time; this one keeps serving");
                if let Some(client) = upgrade.client.take() {
                    let _ = client.send(Reply::Text("FAILED the new process did not take over in time (see its log); this one keeps serving\n".to_string()));
                }
                upgrade.deadline = None;
            }
            _ = watch.tick() => {
                let rt = server.runtime();
                let now = {
                    let rt = rt.clone();
                    off_loop(move || cert_files(&rt.config)).await
                };
                if now == files {
                    pending = None;
                } else if pending.as_ref() == Some(&now) {
                    // Stable since the last tick: the writer is done. Rebuild from the
                    // configuration in memory; the file itself is not re-read.
                    let changed: Vec<String> = now.iter().zip(&files).filter(|(a, b)| a != b).map(|(a, _)| a.0.display().to_string()).collect();
                    tracing::info!(files = %changed.join(", "), "certificate files changed");
                    let built = build_off(rt.config.clone(), &shared).await;
                    if let Err(report) = &built {
                        for d in report.errors() {
                            tracing::error!("certificate change not applied: {d}");
                        }
                    }
                    install(&mut server, &shared.metrics, &history, built, "certificate files changed");
                    // Either way, wait for the next change before trying again.
                    files = now;
                    pending = None;
                } else {
                    // Look again once the writer has had time to finish.
                    pending = Some(now);
                    watch.reset_after(SETTLE);
                }
            }
            (checked, changed) = verified(&mut verify) => {
                verify = None;
                if changed.len() > crate::tls::dir::MAX_CHANGED {
                    // A restore that touched everything: one build, as when inotify lost events.
                    tracing::info!(pairs = changed.len(), "certificate files changed while Portico was stopped; listing the directories again");
                    let config = server.runtime().config.clone();
                    install(&mut server, &shared.metrics, &history, build_off(config, &shared).await, "certificate files changed while stopped");
                } else if !changed.is_empty() {
                    tracing::info!(pairs = changed.len(), "certificate files changed while Portico was stopped");
                    apply_dir_pairs(&server, &shared, &history, changed).await;
                }
                if checked > 0 {
                    tracing::info!(certificates = checked, "the files of the certificates known from the names cache were looked at");
                }
            }
            () = dirs.changed() => dir_changes.note(dirs.take()),
            _ = dir_changes.due() => match dir_changes.ready().await {
                None => {}
                Some(DirReady::Pairs(pairs)) => apply_dir_pairs(&server, &shared, &history, pairs).await,
                Some(DirReady::Rescan) => {
                    // inotify lost events: every directory is listed again, in a build.
                    tracing::warn!("certificate directory events were lost; listing the directories again");
                    let config = server.runtime().config.clone();
                    install(&mut server, &shared.metrics, &history, build_off(config, &shared).await, "certificate directories listed again");
                }
            },
            _ = renew.tick() => {
                // Leaves due for renewal are issued again and swapped in; the others stay.
                let sites = internal_sites(&server.runtime());
                if !sites.is_empty() {
                    apply_site_certs(&server, &shared, &history, sites, "internal certificate renewal").await;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    drop(acme);
    drop(admin);
    match upgrade.pid {
        // The new process serves on: the manager follows it, and this one's drain is no
        // stop of the service.
        Some(pid) if handed_over => notifier.main_pid(pid),
        _ => notifier.stopping(),
    }
    let drain = server.runtime().config.limits.drain_timeout;
    tracing::info!(deadline = ?drain, "draining");
    let clean = server.shutdown(drain).await;
    if !clean {
        tracing::warn!("drain deadline reached; closing remaining connections");
    }
    // `portico upgrade` gets its OK before this process is gone.
    if let Some(sessions) = sessions {
        sessions.finished(Duration::from_secs(2)).await;
    }
    Ok(ExitCode::SUCCESS)
}
