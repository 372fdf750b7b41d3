//! `portico serve`: build the runtime, bind, serve; SIGHUP reloads, SIGTERM/SIGINT drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, Report, TlsMode};
use crate::listener::Server;
use crate::runtime::{self, format_time, Mode, Runtime, Shared};

/// How often internal certificates are looked at for renewal.
const RENEWAL_CHECK: Duration = Duration::from_secs(6 * 3600);

pub(super) fn run(path: &Path) -> anyhow::Result<ExitCode> {
    super::init_logging();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(serve(path.to_path_buf()))
}

/// Loads and builds a runtime, logging every diagnostic.
pub fn load(path: &Path, shared: &Shared) -> Result<Runtime, Report> {
    let (config, mut report) = Config::load(path);
    let rt = config.and_then(|config| {
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
    rt.ok_or(report)
}

fn summary(rt: &Runtime) {
    for l in &rt.listeners {
        tracing::info!(listener = %l.config.name, address = %l.config.address, kind = ?l.config.kind, hosts = l.table.len(), "listener");
    }
    for (i, s) in rt.sites.iter().enumerate() {
        let cfg = &rt.config.sites[i];
        let hosts: Vec<&str> = cfg.hosts.iter().map(|h| h.as_str()).collect();
        tracing::info!(site = %s.name, hosts = %hosts.join(","), tls = ?cfg.tls, "site");
    }
    let mut seen = std::collections::HashSet::new();
    let certs = rt.pool.certs().iter().chain(rt.site_certs.iter().flatten());
    for c in certs {
        if seen.insert(c.sha256) {
            tracing::info!(subject = %c.subject, names = c.names.len(), key = %c.key_type, not_after = %format_time(c.not_after), file = %c.cert_file.display(), "certificate");
        }
    }
    if rt.config.sites.iter().any(|s| s.tls == TlsMode::Internal) {
        tracing::info!(ca = %crate::tls::internal_ca::ca_cert_path(&rt.config.state_dir).display(), "local CA (trust this file to verify internal certificates)");
    }
}

fn reload(server: &Server, path: &Path, shared: &Shared, why: &str) {
    match load(path, shared) {
        Ok(rt) => {
            let old: Vec<_> = crate::listener::socket_addrs(&server.runtime());
            if crate::listener::socket_addrs(&rt) != old {
                tracing::warn!(
                    "listener addresses changed; new addresses are bound only at the next start"
                );
            }
            server.swap(rt);
            tracing::info!(reason = why, "reloaded");
        }
        Err(report) => tracing::error!(
            reason = why,
            errors = report.errors().count(),
            "reload failed; the previous configuration keeps serving"
        ),
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<ExitCode> {
    let shared = Shared::new().context("cannot set up TLS session tickets")?;
    let rt = match load(&path, &shared) {
        Ok(rt) => rt,
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
    summary(&rt);
    let drain = rt.config.limits.drain_timeout;
    let server = Server::start(rt).await?;
    for addr in server.local_addrs() {
        tracing::info!(%addr, "listening");
    }
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut renew = tokio::time::interval(RENEWAL_CHECK);
    renew.tick().await;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&server, &path, &shared, "SIGHUP"),
            _ = renew.tick() => {
                if server.runtime().config.sites.iter().any(|s| s.tls == TlsMode::Internal) {
                    reload(&server, &path, &shared, "internal certificate renewal");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(deadline = ?drain, "draining");
    let clean = server.shutdown(drain).await;
    if !clean {
        tracing::warn!("drain deadline reached; closing remaining connections");
    }
    Ok(ExitCode::SUCCESS)
}
