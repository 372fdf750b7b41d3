//! The background tasks: one per `tls = "acme"` site, each ordering a certificate when the
//! site has none (or its certificate is due for renewal), retrying failures with exponential
//! backoff, and telling the serve loop when a certificate was stored.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::Account;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::{cert_files, order, Challenges};
use crate::config::{Acme, Config, Site, TlsMode};
use crate::runtime::unix_now;

/// The first wait after a failed order; it doubles after each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between two orders for one site.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A site's task looks at its certificate at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(12 * 3600);

/// The running ACME tasks for one configuration; dropping it stops them.
#[derive(Default)]
pub struct Manager {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Manager {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What every site's task shares: the account, made once.
struct Common {
    acme: Acme,
    state_dir: PathBuf,
    challenges: Arc<Challenges>,
    account: tokio::sync::Mutex<Option<Account>>,
    issued: UnboundedSender<String>,
}

impl Manager {
    /// Starts one task per ACME site of `config`. Each sends the site's name on `issued`
    /// after storing a certificate.
    pub fn start(
        config: &Config,
        challenges: Arc<Challenges>,
        issued: UnboundedSender<String>,
    ) -> Manager {
        let Some(acme) = config.acme.clone() else {
            return Manager::default();
        };
        let common = Arc::new(Common {
            acme,
            state_dir: config.state_dir.clone(),
            challenges,
            account: tokio::sync::Mutex::new(None),
            issued,
        });
        let tasks = config
            .sites
            .iter()
            .filter(|s| s.tls == TlsMode::Acme)
            .map(|s| tokio::spawn(site_task(common.clone(), s.clone())))
            .collect();
        Manager { tasks }
    }
}

/// How long until `site` needs a new certificate: zero when it has none that loads and
/// covers its hosts, else until a third of its lifetime is left.
fn due_in(common: &Common, site: &Site) -> Duration {
    let files = cert_files(&common.state_dir, &site.name);
    let Ok(cert) = crate::tls::load::load(&files.cert, &files.key) else {
        return Duration::ZERO;
    };
    if !site.hosts.iter().all(|h| cert.covers(h)) {
        return Duration::ZERO;
    }
    let lifetime = cert.not_after.saturating_sub(cert.not_before).max(0);
    let renew_at = cert.not_after.saturating_sub(lifetime / 3);
    Duration::from_secs(u64::try_from(renew_at.saturating_sub(unix_now())).unwrap_or(0))
}

async fn account(common: &Common) -> Result<Account, super::AcmeError> {
    // One account for all sites: the first task to get here creates or loads it.
    let mut slot = common.account.lock().await;
    if let Some(a) = &*slot {
        return Ok(a.clone());
    }
    let a = order::account(&common.acme, &common.state_dir).await?;
    *slot = Some(a.clone());
    Ok(a)
}

async fn site_task(common: Arc<Common>, site: Site) {
    let files = cert_files(&common.state_dir, &site.name);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let due = due_in(&common, &site);
        if !due.is_zero() {
            tokio::time::sleep(due.min(MAX_SLEEP)).await;
            continue;
        }
        tracing::info!(site = %site.name, directory = %common.acme.directory, "ACME order started");
        let result = match account(&common).await {
            Ok(account) => {
                order::issue(
                    &account,
                    &site,
                    &common.acme.challenges,
                    &common.challenges,
                    &files,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(site = %site.name, cert = %files.cert.display(), "ACME certificate stored");
                if common.issued.send(site.name.clone()).is_err() {
                    return;
                }
                if due_in(&common, &site).is_zero() {
                    // Issued but still not usable (the CA left out a name, or it is already
                    // due): back off rather than order again at once.
                    tracing::warn!(site = %site.name, retry_in = ?backoff, "the issued ACME certificate does not cover every host or is already due for renewal");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                } else {
                    backoff = FIRST_BACKOFF;
                }
            }
            Err(e) => {
                tracing::warn!(site = %site.name, error = %e, retry_in = ?backoff, "ACME order failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
