//! The background tasks: one per `tls = "acme"` site, each ordering a certificate when the
//! site has none or its certificate is due for renewal, retrying failures with exponential
//! backoff, telling the serve loop when a certificate was stored, and recording what it does
//! in the site's status file (`status.rs`) for `portico certs`.
//!
//! When to renew (decided here, written down in docs/acme.md):
//! - no stored certificate that is valid and covers every host: order now;
//! - the CA offers ACME Renewal Information (RFC 9773): a uniformly random time inside the
//!   window it suggests (now, if the window has started), asked again when its Retry-After
//!   says (at least every [`ARI_RECHECK_MIN`], at most every [`ARI_RECHECK_MAX`]). A CA
//!   that revokes a certificate moves its window into the past, so revocation leads to a
//!   new order at the next check;
//! - otherwise: when a third of the lifetime is left, less a random spread of up to a
//!   fifteenth of the lifetime (about six days for a 90-day certificate), so that many sites
//!   issued together do not all renew in the same minute, and never later than the
//!   one-third point.
//!
//! The random time is drawn once per certificate (and ARI window), so the plan shown to
//! operators does not move each time the task wakes.
//!
//! In a fleet (`[cluster]`), every node runs these tasks and each decides as above; before
//! ordering, a task takes the site's fleet-wide lock and first installs what etcd holds
//! (another node may just have renewed), through `cluster::acme::Fleet`, which says where
//! the account, the certificate and the challenge answers go. Without a fleet nothing of
//! that runs: the files in `state_dir` and the `flock` are all there is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{Account, CertificateIdentifier};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::status::{self, LastError, Rule, State, Status, Window};
use super::{cert_files, lock, order, AcmeError, Challenges};
use crate::cluster::acme::Fleet;
use crate::config::{Acme, Config, Site, TlsMode};
use crate::error_text::ErrorChain;
use crate::runtime::unix_now;
use crate::tls::load::Cert;

/// The first wait after a failed order; it doubles after each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between two orders for one site.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A site's task looks at its certificate at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(12 * 3600);
/// Bounds on how often the CA's renewal information is asked for, whatever it says.
const ARI_RECHECK_MIN: i64 = 60;
const ARI_RECHECK_MAX: i64 = 6 * 3600;
/// How long to wait while another process holds the site's order lock.
const LOCKED_WAIT: Duration = Duration::from_secs(5);
/// How often a fleet node tries again to store in etcd a certificate it ordered when etcd
/// did not take it.
const SHARE_RETRY: Duration = Duration::from_secs(5);

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
    /// This directory's folder in `state_dir/acme` (see `store::home`).
    home: PathBuf,
    challenges: Arc<Challenges>,
    account: tokio::sync::Mutex<Option<Account>>,
    issued: UnboundedSender<String>,
    metrics: Arc<crate::metrics::Metrics>,
    /// With `[cluster]`: the fleet, through which orders are locked and results shared.
    fleet: Option<Arc<Fleet>>,
}

impl Common {
    /// Writes a site's status file and tells the metrics when it orders next.
    fn record(&self, st: &mut Status, now: i64) {
        if st.state != State::Locked {
            st.held_by = None;
        }
        status::write(&self.home, st, now);
        self.metrics.acme_next_renewal(&st.site, st.next_renewal);
    }
}

impl Manager {
    /// Starts one task per ACME site of `config`. Each sends the site's name on `issued`
    /// after storing a certificate. With `fleet`, orders go through the fleet.
    pub fn start(
        config: &Config,
        challenges: Arc<Challenges>,
        issued: UnboundedSender<String>,
        metrics: Arc<crate::metrics::Metrics>,
        fleet: Option<Arc<Fleet>>,
    ) -> Manager {
        let Some(acme) = config.acme.clone() else {
            return Manager::default();
        };
        let common = Arc::new(Common {
            home: super::store::home(&config.state_dir, &acme.directory),
            acme,
            challenges,
            account: tokio::sync::Mutex::new(None),
            issued,
            metrics,
            fleet,
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

/// The site's stored certificate, if it loads, is valid now and covers every host.
fn usable(common: &Common, site: &Site, now: i64) -> Option<Cert> {
    let files = cert_files(&common.home, &site.name);
    let cert = crate::tls::load::load(&files.cert, &files.key).ok()?;
    (cert.is_valid_at(now) && site.hosts.iter().all(|h| cert.covers(h))).then_some(cert)
}

async fn account(common: &Common) -> Result<Account, super::AcmeError> {
    // One account for all sites: the first task to get here creates or loads it.
    let mut slot = common.account.lock().await;
    if let Some(a) = &*slot {
        return Ok(a.clone());
    }
    let a = match &common.fleet {
        Some(fleet) => fleet.account(&common.acme, &common.home).await?,
        None => order::account(&common.acme, &common.home).await?,
    };
    *slot = Some(a.clone());
    Ok(a)
}

/// A uniformly random number in `0..=max` (0 if the system generator fails, which only
/// loses the spread).
fn random_upto(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0;
    }
    // The modulo bias is below 2^-40 for any spread a certificate lifetime gives.
    u64::from_le_bytes(bytes) % (max + 1)
}

/// The random spread for the one-third rule: up to a fifteenth of the lifetime.
fn one_third_time(not_before: i64, not_after: i64, random: impl Fn(u64) -> u64) -> i64 {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    let spread = u64::try_from(lifetime / 15).unwrap_or(0);
    let jitter = i64::try_from(random(spread)).unwrap_or(0);
    not_after - lifetime / 3 - jitter
}

/// A time in an ARI window: uniformly random inside it, or now if it has started.
fn ari_time(window: Window, now: i64, random: impl Fn(u64) -> u64) -> i64 {
    if window.start <= now {
        return now;
    }
    let span = u64::try_from(window.end.saturating_sub(window.start)).unwrap_or(0);
    window.start + i64::try_from(random(span)).unwrap_or(0)
}

/// When to order next for one certificate.
#[derive(Debug, Clone)]
struct Plan {
    /// The certificate planned for (SHA-256), None when there is no usable one.
    cert: Option<[u8; 32]>,
    at: i64,
    rule: Rule,
    window: Option<Window>,
    explanation: Option<String>,
    /// When to ask the CA's renewal information again (ARI plans only).
    recheck: Option<i64>,
    /// The certificate as ARI names it, for the order's `replaces`.
    id: Option<CertificateIdentifier<'static>>,
}

/// Makes the plan for `cert`: ARI if the CA offers it, else the one-third rule.
async fn plan(common: &Common, site: &Site, cert: Option<&Cert>, now: i64) -> Plan {
    let Some(cert) = cert else {
        return Plan {
            cert: None,
            at: now,
            rule: Rule::NoCertificate,
            window: None,
            explanation: None,
            recheck: None,
            id: None,
        };
    };
    let one_third = Plan {
        cert: Some(cert.sha256),
        at: one_third_time(cert.not_before, cert.not_after, random_upto),
        rule: Rule::OneThird,
        window: None,
        explanation: None,
        recheck: None,
        id: None,
    };
    let Some(chain) = cert.in_memory() else {
        return one_third;
    };
    let Some(leaf) = chain.cert.first() else {
        return one_third;
    };
    let id = match CertificateIdentifier::try_from(leaf) {
        Ok(id) => id.into_owned(),
        Err(e) => {
            tracing::debug!(site = %site.name, error = %e, "no ARI identifier for the certificate; renewing at one third of its lifetime");
            return one_third;
        }
    };
    let info = match account(common).await {
        Ok(account) => account.renewal_info(&id).await,
        Err(e) => {
            tracing::warn!(site = %site.name, error = %ErrorChain(&e), "cannot reach the ACME account to ask for renewal information; renewing at one third of the certificate's lifetime for now");
            return Plan {
                recheck: Some(now + ARI_RECHECK_MAX),
                ..one_third
            };
        }
    };
    match info {
        Ok((info, retry_after)) => {
            let window = Window {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
            };
            let retry = i64::try_from(retry_after.as_secs()).unwrap_or(ARI_RECHECK_MAX);
            Plan {
                cert: Some(cert.sha256),
                at: ari_time(window, now, random_upto),
                rule: Rule::Ari,
                window: Some(window),
                explanation: info.explanation_url,
                recheck: Some(now + retry.clamp(ARI_RECHECK_MIN, ARI_RECHECK_MAX)),
                id: Some(id),
            }
        }
        // The CA's directory has no renewalInfo: the one-third rule is the plan.
        Err(instant_acme::Error::Unsupported(_)) => one_third,
        Err(e) => {
            tracing::warn!(site = %site.name, error = %ErrorChain(&e), "the CA's renewal information could not be read; renewing at one third of the certificate's lifetime for now");
            Plan {
                recheck: Some(now + ARI_RECHECK_MIN.max(300)),
                ..one_third
            }
        }
    }
}

/// The wait until `at` (unix seconds), zero if it has passed.
fn until(at: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

async fn site_task(common: Arc<Common>, site: Site) {
    let files = cert_files(&common.home, &site.name);
    let hosts = site.hosts.iter().map(|h| h.to_string()).collect();
    let mut st = Status::new(&site.name, hosts);
    // A restart keeps showing the last failure until an order succeeds.
    if let Some(old) = status::read(&common.home, &site.name) {
        st.attempts = old.attempts;
        st.last_attempt = old.last_attempt;
        st.last_success = old.last_success;
        st.last_error = old.last_error;
    }
    let mut backoff = FIRST_BACKOFF;
    let mut current: Option<Plan> = None;
    // In a fleet: a certificate this node ordered but could not store in etcd yet.
    let mut unshared = false;
    loop {
        // Taken before the look at the certificate, so an install after it is not missed.
        let installed = common.fleet.as_ref().map(|f| f.installed());
        let now = unix_now();
        let cert = usable(&common, &site, now);
        let stale = match &current {
            None => true,
            Some(p) => {
                p.cert != cert.as_ref().map(|c| c.sha256) || p.recheck.is_some_and(|r| r <= now)
            }
        };
        if stale {
            current = Some(plan(&common, &site, cert.as_ref(), now).await);
            fleet_issuer(&common, &site, cert.as_ref(), &mut st).await;
        }
        let Some(p) = current.clone() else {
            continue;
        };
        let now = unix_now();
        if p.at > now {
            st.state = State::Waiting;
            st.next_renewal = Some(p.at);
            st.rule = p.rule;
            st.ari_window = p.window;
            st.ari_explanation = p.explanation.clone();
            common.record(&mut st, now);
            let mut wake = p.recheck.map_or(p.at, |r| r.min(p.at));
            if unshared {
                if let Some(fleet) = &common.fleet {
                    unshared = !share_again(&common, fleet, &site).await;
                }
                if unshared {
                    wake = wake.min(now + SHARE_RETRY.as_secs() as i64);
                }
            }
            let sleep = tokio::time::sleep(until(wake, now).min(MAX_SLEEP));
            match installed {
                // In a fleet, a certificate another node ordered wakes the task: its plan
                // and status follow at once.
                Some(installed) => {
                    tokio::select! {
                        _ = sleep => {}
                        _ = Fleet::wait_installed(installed, &site.name) => {}
                    }
                }
                None => sleep.await,
            }
            continue;
        }
        // In a fleet, one node orders for the site; the others wait and install its result.
        let fleet_lock = match &common.fleet {
            None => None,
            Some(fleet) => match fleet_lock(&common, fleet, &site, &mut st).await {
                Some(l) => Some(l),
                None => continue,
            },
        };
        // Another process (a binary upgrade in progress) may be ordering this certificate.
        let _lock = match lock::try_lock(&common.home, &site.name) {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                if let Some(l) = fleet_lock {
                    l.release().await;
                }
                tracing::info!(site = %site.name, "another process is ordering this site's certificate; waiting");
                st.state = State::Locked;
                st.next_renewal = Some(now + LOCKED_WAIT.as_secs() as i64);
                common.record(&mut st, now);
                tokio::time::sleep(LOCKED_WAIT).await;
                continue;
            }
            Err(e) => {
                // The lock only guards against a rare double order: go on without it.
                tracing::warn!(site = %site.name, error = %ErrorChain(&e), "cannot take the ACME order lock");
                None
            }
        };
        // The other process, or node, may have stored a certificate while this one waited
        // (valid from a moment ago: the time is taken again).
        let now = unix_now();
        if usable(&common, &site, now).map(|c| c.sha256) != p.cert {
            if let Some(l) = fleet_lock {
                l.release().await;
            }
            current = None;
            continue;
        }
        tracing::info!(site = %site.name, directory = %common.acme.directory, rule = ?p.rule, "ACME order started");
        st.state = State::Ordering;
        st.next_renewal = None;
        st.last_attempt = Some(now);
        common.record(&mut st, now);
        if let Some(fleet) = &common.fleet {
            let mut shared = st.clone();
            shared.held_by = Some(fleet.node().to_string());
            fleet.share_status(&common.home, &shared).await;
        }
        // Name the certificate being replaced only on a first try: a CA may refuse a
        // second order that replaces the same one.
        let replaces = p.id.clone().filter(|_| st.attempts == 0);
        let result = match account(&common).await {
            Ok(account) => {
                order::issue(
                    &account,
                    &site,
                    &common.acme.challenges,
                    &common.challenges,
                    &files,
                    replaces,
                    fleet_lock.as_ref(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        drop(_lock);
        let now = unix_now();
        if let (Some(fleet), Some(l)) = (&common.fleet, fleet_lock) {
            unshared = !share_result(&common, fleet, &site, &st, &result, l, now).await;
        }
        common.metrics.acme_order(if result.is_ok() {
            crate::metrics::Outcome::Ok
        } else {
            crate::metrics::Outcome::Failed
        });
        match result {
            Ok(()) => {
                tracing::info!(site = %site.name, cert = %files.cert.display(), "ACME certificate stored");
                st.attempts = 0;
                st.last_success = Some(now);
                st.last_error = None;
                st.issued_by = common.fleet.as_ref().map(|f| f.node().to_string());
                current = None;
                if common.issued.send(site.name.clone()).is_err() {
                    return;
                }
                if usable(&common, &site, now).is_none() {
                    // Issued but not usable (the CA left out a name): back off rather than
                    // order again at once.
                    tracing::warn!(site = %site.name, retry_in = ?backoff, "the issued ACME certificate does not cover every host or is not valid now");
                    back_off(&common, &mut st, now, &mut backoff).await;
                } else {
                    backoff = FIRST_BACKOFF;
                }
            }
            Err(e) => {
                let problem = e
                    .problem()
                    .map(|p| serde_json::to_string(&status::Problem::from(p)).unwrap_or_default());
                tracing::warn!(site = %site.name, error = %ErrorChain(&e), problem = problem.as_deref().unwrap_or(""), retry_in = ?backoff, "ACME order failed");
                st.attempts += 1;
                st.last_error = Some(LastError::new(now, &e));
                back_off(&common, &mut st, now, &mut backoff).await;
            }
        }
    }
}

/// In a fleet: takes the site's order lock and installs what etcd holds. None (recorded in
/// the status, and after a wait) when another node holds the lock or etcd does not answer.
async fn fleet_lock(
    common: &Common,
    fleet: &Fleet,
    site: &Site,
    st: &mut Status,
) -> Option<crate::cluster::acme::OrderLock> {
    let failed = match fleet.lock(&common.home, &site.name).await {
        Ok(Some(l)) => match fleet.install_stored(&common.home, &site.name).await {
            // Installed or not, the caller's look at the certificate tells what to do.
            Ok(_) => return Some(l),
            Err(e) => {
                l.release().await;
                e
            }
        },
        Ok(None) => {
            let holder = fleet
                .shared_status(&common.home, &site.name)
                .await
                .filter(|s| s.state == State::Ordering)
                .and_then(|s| s.held_by);
            tracing::info!(site = %site.name, holder = holder.as_deref().unwrap_or("?"), "another fleet node is ordering this site's certificate; waiting for it");
            st.state = State::Locked;
            st.held_by = holder;
            st.next_renewal = None;
            common.record(st, unix_now());
            return None;
        }
        Err(e) => e,
    };
    tracing::warn!(site = %site.name, error = %ErrorChain(&failed), retry_in = ?LOCKED_WAIT, "cannot take the fleet's ACME order lock, or read the fleet's certificate under it; not ordering without them");
    st.state = State::Locked;
    st.held_by = None;
    let now = unix_now();
    st.next_renewal = Some(now + LOCKED_WAIT.as_secs() as i64);
    common.record(st, now);
    tokio::time::sleep(LOCKED_WAIT).await;
    None
}

/// In a fleet, after an order: stores a new certificate in etcd, shares the status, and
/// lets go of the lock. False when a new certificate could not be stored.
async fn share_result(
    common: &Common,
    fleet: &Fleet,
    site: &Site,
    st: &Status,
    result: &Result<(), AcmeError>,
    lock: crate::cluster::acme::OrderLock,
    now: i64,
) -> bool {
    let files = cert_files(&common.home, &site.name);
    let mut shared = st.clone();
    shared.held_by = None;
    let mut stored = true;
    match result {
        Ok(()) => {
            if let Err(e) = fleet
                .store_issued(&lock, &common.home, &site.name, &files)
                .await
            {
                stored = false;
                tracing::error!(site = %site.name, error = %ErrorChain(&e), retry_in = ?SHARE_RETRY, "the new ACME certificate serves on this node but is not in etcd yet: other nodes that need one order their own meanwhile");
            }
            shared.state = State::Waiting;
            shared.attempts = 0;
            shared.last_success = Some(now);
            shared.last_error = None;
            shared.issued_by = Some(fleet.node().to_string());
            shared.certificate = crate::tls::load::load(&files.cert, &files.key)
                .ok()
                .map(|c| c.fingerprint());
        }
        Err(e) => {
            shared.state = State::Backoff;
            shared.attempts += 1;
            shared.last_error = Some(LastError::new(now, e));
        }
    }
    shared.updated = now;
    fleet.share_status_held(&lock, &common.home, &shared).await;
    lock.release().await;
    stored
}

/// In a fleet: stores the certificate this node ordered but could not store then, under
/// the site's lock (after installing what etcd holds, which wins when it is newer).
/// Whether it is in etcd now.
async fn share_again(common: &Common, fleet: &Fleet, site: &Site) -> bool {
    let Ok(Some(lock)) = fleet.lock(&common.home, &site.name).await else {
        return false;
    };
    let files = cert_files(&common.home, &site.name);
    let stored = match fleet.install_stored(&common.home, &site.name).await {
        Ok(_) => match fleet
            .store_issued(&lock, &common.home, &site.name, &files)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(site = %site.name, error = %ErrorChain(&e), "the ACME certificate is still not in etcd; retrying");
                false
            }
        },
        Err(e) => {
            tracing::warn!(site = %site.name, error = %ErrorChain(&e), "cannot read the fleet's ACME certificate; retrying");
            false
        }
    };
    lock.release().await;
    if stored {
        tracing::info!(site = %site.name, "the ACME certificate is in etcd now: the fleet serves it");
    }
    stored
}

/// In a fleet: who ordered the certificate this node has, from the fleet's status (when it
/// describes this certificate).
async fn fleet_issuer(common: &Common, site: &Site, cert: Option<&Cert>, st: &mut Status) {
    let (Some(fleet), Some(cert)) = (&common.fleet, cert) else {
        return;
    };
    let Some(shared) = fleet.shared_status(&common.home, &site.name).await else {
        return;
    };
    if shared.certificate.as_deref() == Some(cert.fingerprint().as_str()) {
        st.issued_by = shared.issued_by;
        st.last_success = st.last_success.max(shared.last_success);
    }
}

/// Records that the site waits `backoff` before its next order, waits, and doubles the
/// wait for next time (up to [`MAX_BACKOFF`]).
async fn back_off(common: &Common, st: &mut Status, now: i64, backoff: &mut Duration) {
    st.state = State::Backoff;
    st.rule = Rule::Retry;
    st.next_renewal = Some(now + backoff.as_secs() as i64);
    common.record(st, now);
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

#[cfg(test)]
mod tests {
    use super::{ari_time, one_third_time, random_upto, Window};

    #[test]
    fn one_third_rule_spreads_before_the_one_third_point_never_after() {
        let (nb, na) = (0, 90 * 86_400);
        let latest = na - 30 * 86_400;
        assert_eq!(one_third_time(nb, na, |_| 0), latest);
        assert_eq!(one_third_time(nb, na, |max| max), latest - 6 * 86_400);
        for _ in 0..100 {
            let t = one_third_time(nb, na, random_upto);
            assert!((latest - 6 * 86_400..=latest).contains(&t), "{t}");
        }
    }

    #[test]
    fn ari_time_is_inside_the_window_or_now_once_it_started() {
        let w = Window {
            start: 1_000,
            end: 2_000,
        };
        assert_eq!(ari_time(w, 500, |_| 0), 1_000);
        assert_eq!(ari_time(w, 500, |max| max), 2_000);
        assert_eq!(ari_time(w, 1_500, |max| max), 1_500);
        // A window in the past (a revoked certificate): now.
        let past = Window { start: 10, end: 20 };
        assert_eq!(ari_time(past, 500, |max| max), 500);
        for _ in 0..100 {
            let t = ari_time(w, 0, random_upto);
            assert!((1_000..=2_000).contains(&t), "{t}");
        }
    }

    #[test]
    fn random_upto_stays_in_range() {
        assert_eq!(random_upto(0), 0);
        assert!((0..100).map(|_| random_upto(3)).all(|r| r <= 3));
        // Not constant (the chance that 100 draws from 0..=1000 are equal is nil).
        let first = random_upto(1000);
        assert!((0..100).any(|_| random_upto(1000) != first));
    }
}
