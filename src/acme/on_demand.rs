//! On-demand TLS: certificates ordered at a name's first handshake on the catch-all site
//! with `tls = { acme = true, on_demand = { ... } }` (docs/config.md, "On-demand TLS").
//!
//! A name that reaches that site without a pool certificate is asked about at the
//! permission endpoint (`GET permission?domain=NAME`; 200 is yes, anything else, or no
//! answer within [`PERMISSION_TIMEOUT`], is no), and the answer is cached, a yes for
//! `allowed_ttl` and a no for `refused_ttl`, in at most `cache_entries` entries. Look-ups
//! of one name at the same time share one request. An allowed name is queued for an
//! order; at most `max_orders` run at once and at most `orders_per_hour` start in any
//! hour (the rest wait in the queue), and a name whose order failed waits out a backoff
//! that doubles from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]. The handshake waits (async,
//! never blocking a worker) until the pool covers the name or `wait` ends; the order goes
//! on after that.
//!
//! An issued pair goes to the serve loop as a change of the admin API's certificate store
//! (`state_dir/certificates`, named `on-demand.NAME`): checked, staged, patched into the
//! pool and, with `[cluster]`, stored in etcd, where every node's watch takes it. So it
//! survives a restart and reaches the fleet by the path admin certificates take. In a
//! fleet the order runs under the fleet's per-name ACME lock, so one node orders.
//!
//! Never on this path: a name that has a pool certificate (the runtime never asks), a
//! wildcard name, a lock held across an await, or a panic on what the endpoint sends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch, Notify};

use super::{order, AcmeError, Challenges};
use crate::cluster::acme::Fleet;
use crate::config::{Acme, OnDemand, Site};
use crate::error_text::ErrorChain;
use crate::metrics::Metrics;
use crate::names::HostName;
use crate::runtime::Runtime;

/// How long the permission endpoint has to answer.
pub const PERMISSION_TIMEOUT: Duration = Duration::from_secs(3);
/// The most look-ups at the endpoint at once; more wait for a turn (within their
/// handshake's wait), so a flood of names does not become a flood of requests.
const MAX_LOOKUPS: usize = 64;
/// The most handshakes waiting at once (for a look-up or a certificate); beyond it a
/// handshake starts the look-up and the order in the background and is refused at once.
const MAX_WAITING: usize = 1024;
/// How long "the endpoint did not answer" is believed: shorter than a no.
const ERROR_TTL: Duration = Duration::from_secs(30);
/// The backoff of a name after its first failed order; it doubles after each failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// The most names waiting for an order; an allowed name beyond it is queued at a later
/// handshake.
const MAX_QUEUE: usize = 10_000;
/// Bounds on the time between two renewal sweeps over the pool.
const SWEEP_MIN: Duration = Duration::from_secs(5);
const SWEEP_MAX: Duration = Duration::from_secs(3600);
/// How often a waiting handshake looks at the pool.
const POLL: Duration = Duration::from_millis(50);
/// The prefix of the pairs' names in the certificate store.
pub const STORE_PREFIX: &str = "on-demand.";

/// An issued pair for the serve loop to put in the certificate store.
#[derive(Debug)]
pub struct Issued {
    pub name: HostName,
    /// The store's name for the pair (`on-demand.NAME`).
    pub store_name: String,
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

/// What the cache holds for a name.
#[derive(Debug, Clone)]
enum Answer {
    /// A look-up is under way; its answer comes on the channel.
    Asking(watch::Receiver<Option<bool>>),
    Yes(Instant),
    No(Instant),
}

/// Where a name's order stands.
#[derive(Debug, Clone, Copy)]
enum OrderState {
    Queued,
    Running,
    /// Failed `failures` times; no new order before `until`.
    Backoff {
        until: Instant,
        failures: u32,
    },
}

/// What `explain` can say about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Nothing known: the next handshake asks the endpoint.
    Unknown,
    Asking,
    Refused,
    /// Allowed; no order is known (the next handshake queues one).
    Allowed,
    Queued,
    Ordering,
    /// The last order failed; the next starts no sooner than in this many seconds.
    BackingOff(u64),
}

/// What the serve loop connects.
struct Out {
    issued: mpsc::UnboundedSender<Issued>,
    fleet: Option<Arc<Fleet>>,
    runtime: Arc<arc_swap::ArcSwap<Runtime>>,
}

/// What an order needs, from the runtime a handshake ran on.
struct Ctx {
    od: Arc<OnDemand>,
    acme: Acme,
    home: std::path::PathBuf,
    site: Site,
    challenges: Arc<Challenges>,
    metrics: Arc<Metrics>,
    rt: Weak<Runtime>,
}

#[derive(Default)]
struct Inner {
    answers: HashMap<HostName, Answer>,
    orders: HashMap<HostName, OrderState>,
    queue: VecDeque<HostName>,
    /// When each order of the last hour started.
    started: VecDeque<Instant>,
    running: usize,
    ctx: Option<Arc<Ctx>>,
    /// When the store's on-demand certificates are looked at next for renewal.
    next_sweep: Option<Instant>,
}

/// The process's on-demand orders (one, in `Shared`): the permission cache, the queue and
/// the orders running. It outlives runtimes; each handshake brings its runtime's settings.
#[derive(Default)]
pub struct Orders {
    inner: Mutex<Inner>,
    wake: Notify,
    /// Set by the serve loop: where issued pairs go, and the fleet.
    /// Set by the serve loop: where issued pairs go, the fleet, the runtime serving.
    out: OnceLock<Out>,
    account: tokio::sync::Mutex<Option<instant_acme::Account>>,
    client: OnceLock<Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>>,
    lookups: OnceLock<tokio::sync::Semaphore>,
    /// Handshakes in [`Orders::wait`] now.
    waiting: std::sync::atomic::AtomicUsize,
}

/// One handshake counted in `Orders::waiting` while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Orders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Orders")
            .field("answers", &inner.answers.len())
            .field("queued", &inner.queue.len())
            .field("running", &inner.running)
            .finish()
    }
}

impl Orders {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing here panics while holding the lock; a poisoned one still has valid maps.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called once by the serve loop: issued pairs are sent on `issued`; with `fleet`,
    /// orders take its per-name lock. Without it (`check`, tests of the runtime alone)
    /// nothing is ordered.
    pub fn connect(
        self: &Arc<Self>,
        issued: mpsc::UnboundedSender<Issued>,
        fleet: Option<Arc<Fleet>>,
        runtime: Arc<arc_swap::ArcSwap<Runtime>>,
    ) {
        let out = Out {
            issued,
            fleet,
            runtime,
        };
        if self.out.set(out).is_ok() {
            tokio::spawn(self.clone().dispatch());
        }
    }

    /// Where `name` stands, for `explain`.
    pub fn standing(&self, name: &HostName) -> Standing {
        let now = Instant::now();
        let inner = self.lock();
        match inner.orders.get(name) {
            Some(OrderState::Queued) => return Standing::Queued,
            Some(OrderState::Running) => return Standing::Ordering,
            Some(OrderState::Backoff { until, .. }) if *until > now => {
                return Standing::BackingOff(until.duration_since(now).as_secs())
            }
            _ => {}
        }
        match inner.answers.get(name) {
            Some(Answer::Asking(_)) => Standing::Asking,
            Some(Answer::Yes(until)) if *until > now => Standing::Allowed,
            Some(Answer::No(until)) if *until > now => Standing::Refused,
            _ => Standing::Unknown,
        }
    }

    /// A handshake for `name`, which reached `site` of `rt` (the catch-all site with
    /// on_demand) and has no pool certificate: asks for permission (or takes the cached
    /// answer), queues an order if allowed, and waits until the pool covers the name, the
    /// order fails, `wait` ends or `deadline` (the handshake's) comes. Whether the pool
    /// covers it now.
    pub async fn wait(
        self: &Arc<Self>,
        rt: &Arc<Runtime>,
        site: usize,
        name: &HostName,
        deadline: tokio::time::Instant,
    ) -> bool {
        let Some(ctx) = self.ctx(rt, site) else {
            return false;
        };
        if name.is_wildcard() {
            return false;
        }
        let waiting = self
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        if waiting >= MAX_WAITING {
            // Too many wait already: this one is refused now, and what it would have
            // waited for goes on, so a later try may be served.
            let this = self.clone();
            let name = name.clone();
            tokio::spawn(async move {
                if this.permitted(&ctx, &name).await {
                    this.request(&ctx, &name);
                }
            });
            return false;
        }
        let deadline = deadline.into_std().min(Instant::now() + ctx.od.wait);
        let allowed = tokio::time::timeout_at(deadline.into(), self.permitted(&ctx, name))
            .await
            .unwrap_or(false);
        if !allowed {
            return false;
        }
        if !self.request(&ctx, name) {
            return rt.pool().covers(name);
        }
        loop {
            if rt.pool().covers(name) {
                return true;
            }
            // Gone from `orders`: issued, and not in the pool yet (the patch is coming).
            if let Some(OrderState::Backoff { .. }) = self.lock().orders.get(name) {
                return false;
            }
            if Instant::now() + POLL > deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The context of the runtime serving, if it has an on-demand site.
    fn current_ctx(&self) -> Option<Arc<Ctx>> {
        let rt = self.out.get()?.runtime.load_full();
        let site = rt.config.sites.iter().position(|s| s.on_demand.is_some())?;
        self.ctx(&rt, site)
    }

    /// The context for `rt`, made once per runtime.
    fn ctx(&self, rt: &Arc<Runtime>, site: usize) -> Option<Arc<Ctx>> {
        let mut inner = self.lock();
        if let Some(ctx) = &inner.ctx {
            // (A live Weak: a freed runtime's address may be reused by the next.)
            if ctx.rt.strong_count() > 0 && std::ptr::eq(ctx.rt.as_ptr(), Arc::as_ptr(rt)) {
                return Some(ctx.clone());
            }
        }
        let s = rt.config.sites.get(site)?;
        let od = s.on_demand.clone()?;
        let acme = rt.config.acme.clone()?;
        let ctx = Arc::new(Ctx {
            home: super::store::home(&rt.config.state_dir, &acme.directory),
            od,
            acme,
            site: s.clone(),
            challenges: rt.challenges.clone(),
            metrics: rt.metrics.clone(),
            rt: Arc::downgrade(rt),
        });
        // The cache follows the newest bound.
        evict(&mut inner.answers, ctx.od.cache_entries);
        inner.ctx = Some(ctx.clone());
        Some(ctx)
    }

    /// The endpoint's answer for `name`, from the cache or asked once for every handshake
    /// that wants it now.
    async fn permitted(self: &Arc<Self>, ctx: &Arc<Ctx>, name: &HostName) -> bool {
        let now = Instant::now();
        let mut rx = {
            let mut inner = self.lock();
            match inner.answers.get(name) {
                Some(Answer::Yes(until)) if *until > now => {
                    ctx.metrics.on_demand.cache_hit();
                    return true;
                }
                Some(Answer::No(until)) if *until > now => {
                    ctx.metrics.on_demand.cache_hit();
                    return false;
                }
                Some(Answer::Asking(rx)) => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    evict(&mut inner.answers, ctx.od.cache_entries.saturating_sub(1));
                    inner
                        .answers
                        .insert(name.clone(), Answer::Asking(rx.clone()));
                    // Its own task: a handshake that gives up does not leave the name
                    // "asking" for ever.
                    let this = self.clone();
                    let ctx = ctx.clone();
                    let name = name.clone();
                    tokio::spawn(async move {
                        let (yes, ttl) = this.ask(&ctx, &name).await;
                        let until = Instant::now() + ttl;
                        let mut inner = this.lock();
                        let answer = if yes {
                            Answer::Yes(until)
                        } else {
                            Answer::No(until)
                        };
                        inner.answers.insert(name, answer);
                        drop(inner);
                        let _ = tx.send(Some(yes));
                    });
                    rx
                }
            }
        };
        let answer = match rx.wait_for(Option::is_some).await {
            Ok(answer) => answer.unwrap_or(false),
            Err(_) => false,
        };
        answer
    }

    /// One look-up at the endpoint: the answer and how long to believe it.
    async fn ask(&self, ctx: &Ctx, name: &HostName) -> (bool, Duration) {
        let client = self.client.get_or_init(|| {
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(4)
                .build_http()
        });
        let turns = self
            .lookups
            .get_or_init(|| tokio::sync::Semaphore::new(MAX_LOOKUPS));
        // The semaphore is never closed.
        let _turn = turns.acquire().await.ok();
        let url = format!("{}?domain={}", ctx.od.permission, name.as_str());
        let counters = &ctx.metrics.on_demand;
        let uri = match url.parse::<hyper::Uri>() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(%url, error = %e, "on-demand: cannot make the permission URL; treating as no");
                counters.lookup(Lookup::Error);
                return (false, ERROR_TTL.min(ctx.od.refused_ttl));
            }
        };
        match tokio::time::timeout(PERMISSION_TIMEOUT, client.get(uri)).await {
            Ok(Ok(response)) if response.status() == hyper::StatusCode::OK => {
                tracing::info!(host = %name, "on-demand: the permission endpoint allows it");
                counters.lookup(Lookup::Yes);
                (true, ctx.od.allowed_ttl)
            }
            Ok(Ok(response)) => {
                tracing::info!(host = %name, status = response.status().as_u16(), "on-demand: the permission endpoint refuses it");
                counters.lookup(Lookup::No);
                (false, ctx.od.refused_ttl)
            }
            Ok(Err(e)) => {
                tracing::warn!(host = %name, endpoint = %ctx.od.permission, error = %ErrorChain(&e), "on-demand: the permission endpoint did not answer; treating as no");
                counters.lookup(Lookup::Error);
                (false, ERROR_TTL.min(ctx.od.refused_ttl))
            }
            Err(_) => {
                tracing::warn!(host = %name, endpoint = %ctx.od.permission, timeout_s = PERMISSION_TIMEOUT.as_secs(), "on-demand: the permission endpoint did not answer in time; treating as no");
                counters.lookup(Lookup::Error);
                (false, ERROR_TTL.min(ctx.od.refused_ttl))
            }
        }
    }

    /// Queues an order for an allowed name, unless one is queued or running (true: worth
    /// waiting for) or it is backing off (false). False too when nothing orders here.
    fn request(&self, ctx: &Ctx, name: &HostName) -> bool {
        if self.out.get().is_none() {
            return false;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.orders.get(name) {
            Some(OrderState::Queued | OrderState::Running) => return true,
            Some(OrderState::Backoff { until, .. }) if *until > now => return false,
            _ => {}
        }
        if inner.queue.len() >= MAX_QUEUE {
            tracing::warn!(host = %name, queued = inner.queue.len(), "on-demand: the order queue is full; a later handshake queues it");
            return false;
        }
        inner.orders.insert(name.clone(), OrderState::Queued);
        inner.queue.push_back(name.clone());
        ctx.metrics.on_demand.set_queued(inner.queue.len());
        drop(inner);
        self.wake.notify_one();
        true
    }

    /// Starts queued orders within the bounds, for the life of the process.
    async fn dispatch(self: Arc<Self>) {
        let hour = Duration::from_secs(3600);
        loop {
            let step = self.step(hour);
            match step {
                Step::Start(ctx, name) => {
                    tokio::spawn(self.clone().order(ctx, name));
                }
                Step::Sweep(ctx) => self.sweep(ctx).await,
                Step::Until(at) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
            }
        }
    }

    /// What the dispatcher does next, decided under the lock.
    fn step(&self, hour: Duration) -> Step {
        let ctx = self.current_ctx();
        let mut inner = self.lock();
        let now = Instant::now();
        while inner
            .started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= hour)
        {
            inner.started.pop_front();
        }
        let Some(ctx) = ctx.or_else(|| inner.ctx.clone()) else {
            return Step::Until(now + SWEEP_MAX);
        };
        let sweep_at = match inner.next_sweep {
            Some(at) if at > now => at,
            _ => {
                inner.next_sweep = Some(now + SWEEP_MAX);
                return Step::Sweep(ctx);
            }
        };
        let hourly_full = inner.started.len() >= ctx.od.orders_per_hour;
        if !hourly_full && inner.running < ctx.od.max_orders {
            match inner.queue.pop_front() {
                Some(name) => {
                    inner.orders.insert(name.clone(), OrderState::Running);
                    inner.running += 1;
                    inner.started.push_back(now);
                    ctx.metrics.on_demand.set_queued(inner.queue.len());
                    Step::Start(ctx, name)
                }
                None => Step::Until(sweep_at),
            }
        } else if hourly_full && !inner.queue.is_empty() {
            let first = inner.started.front().copied().unwrap_or(now);
            Step::Until((first + hour).min(sweep_at))
        } else {
            Step::Until(sweep_at)
        }
    }

    /// Renewal: the store's on-demand certificates past their renewal time (a third of
    /// their lifetime left) are queued again, if the endpoint still allows the name (its
    /// cached answer counts). The next sweep is at the next renewal time, within
    /// [`SWEEP_MIN`] and [`SWEEP_MAX`].
    async fn sweep(self: &Arc<Self>, ctx: Arc<Ctx>) {
        let Some(out) = self.out.get() else { return };
        let rt = out.runtime.load_full();
        // A pass over the pool: off the threads that run connections.
        let found = tokio::task::spawn_blocking(move || {
            let now = crate::runtime::unix_now();
            let mut due = Vec::new();
            let mut next = i64::MAX;
            for c in rt.pool().certs() {
                if !rt.is_stored(c) {
                    continue;
                }
                let stem = c.cert_file.file_stem().and_then(|s| s.to_str());
                if !stem.is_some_and(|s| s.starts_with(STORE_PREFIX)) {
                    continue;
                }
                // What the pair was ordered for: its one name (the store's name may be
                // shortened, see `store_name`).
                let Some(name) = c.names.first().filter(|n| !n.is_wildcard()).cloned() else {
                    continue;
                };
                let at = renew_at(c);
                if at <= now {
                    due.push(name);
                } else {
                    next = next.min(at);
                }
            }
            (due, next.saturating_sub(now))
        })
        .await;
        let (due, next) = found.unwrap_or_default();
        let wait =
            Duration::from_secs(u64::try_from(next).unwrap_or(0)).clamp(SWEEP_MIN, SWEEP_MAX);
        self.lock().next_sweep = Some(Instant::now() + wait);
        for name in due {
            tracing::info!(host = %name, "on-demand: the certificate is due for renewal");
            let this = self.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if this.permitted(&ctx, &name).await {
                    this.request(&ctx, &name);
                }
            });
        }
    }

    /// One order for `name`; its outcome recorded, the pair sent to the serve loop.
    async fn order(self: Arc<Self>, ctx: Arc<Ctx>, name: HostName) {
        let result = self.issue(&ctx, &name).await;
        let mut inner = self.lock();
        inner.running = inner.running.saturating_sub(1);
        match result {
            Ok(Some(issued)) => {
                inner.orders.remove(&name);
                // The next sweep finds it in the pool and plans its renewal.
                let soon = Instant::now() + SWEEP_MIN;
                inner.next_sweep = Some(inner.next_sweep.map_or(soon, |at| at.min(soon)));
                drop(inner);
                ctx.metrics.on_demand.order(OrderOutcome::Issued);
                tracing::info!(host = %name, store = %issued.store_name, "on-demand: certificate issued");
                if let Some(out) = self.out.get() {
                    let _ = out.issued.send(issued);
                }
            }
            Ok(None) => {
                // Another node holds the name's lock, or the pool has it already: its
                // certificate comes through the store.
                inner.orders.remove(&name);
                drop(inner);
                ctx.metrics.on_demand.order(OrderOutcome::Elsewhere);
            }
            Err(e) => {
                let failures = match inner.orders.get(&name) {
                    Some(OrderState::Backoff { failures, .. }) => failures + 1,
                    _ => 1,
                };
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(MAX_BACKOFF);
                inner.orders.insert(
                    name.clone(),
                    OrderState::Backoff {
                        until: Instant::now() + backoff,
                        failures,
                    },
                );
                // Failed names are bounded like answers.
                evict_failed(&mut inner.orders, ctx.od.cache_entries);
                drop(inner);
                ctx.metrics.on_demand.order(OrderOutcome::Failed);
                tracing::warn!(host = %name, error = %ErrorChain(&e), failures, retry_in_s = backoff.as_secs(), "on-demand: order failed");
            }
        }
        self.wake.notify_one();
    }

    /// Orders the certificate (under the fleet's lock in a fleet); None when not this
    /// node's to order.
    async fn issue(&self, ctx: &Ctx, name: &HostName) -> Result<Option<Issued>, AcmeError> {
        // Another node's order, or a pair put in the store meanwhile, may have covered it.
        if let Some(out) = self.out.get() {
            let pool = out.runtime.load().pool();
            let now = crate::runtime::unix_now();
            if pool.candidates(name).0.iter().any(|c| renew_at(c) > now) {
                return Ok(None);
            }
        }
        let store_name = store_name(name);
        let fleet = self.out.get().and_then(|o| o.fleet.clone());
        let lock = match &fleet {
            Some(fleet) => match fleet.lock(&ctx.home, &store_name).await? {
                Some(lock) => Some(lock),
                None => return Ok(None),
            },
            None => None,
        };
        let result = async {
            let account = self.account(ctx, fleet.as_deref()).await?;
            let site = Site {
                hosts: vec![name.clone()],
                ..ctx.site.clone()
            };
            let dir = ctx.home.join("on-demand");
            let files = crate::tls::dir::files(&dir, &store_name);
            crate::state::private_dir(&dir).map_err(|source| AcmeError::Io {
                what: "cannot create",
                path: dir.clone(),
                source,
            })?;
            order::issue(
                &account,
                &site,
                &ctx.acme.challenges,
                &ctx.challenges,
                &files,
                None,
                lock.as_ref(),
            )
            .await?;
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|source| AcmeError::Io {
                    what: "cannot read",
                    path: path.to_path_buf(),
                    source,
                })
            };
            Ok(Issued {
                name: name.clone(),
                chain: read(&files.cert)?,
                key: read(&files.key)?,
                store_name,
            })
        }
        .await;
        if let Some(lock) = lock {
            lock.release().await;
        }
        result.map(Some)
    }

    async fn account(
        &self,
        ctx: &Ctx,
        fleet: Option<&Fleet>,
    ) -> Result<instant_acme::Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = &*slot {
            return Ok(a.clone());
        }
        let account = match fleet {
            Some(fleet) => fleet.account(&ctx.acme, &ctx.home).await?,
            None => order::account(&ctx.acme, &ctx.home).await?,
        };
        *slot = Some(account.clone());
        Ok(account)
    }
}

/// Removes entries until `answers` has at most `bound` (never a look-up under way). Which
/// go is up to the map's order, which no client chooses: a flood of names cannot keep
/// one name's entry in or out.
fn evict(answers: &mut HashMap<HostName, Answer>, bound: usize) {
    if answers.len() <= bound {
        return;
    }
    let now = Instant::now();
    answers.retain(|_, a| match a {
        Answer::Asking(_) => true,
        Answer::Yes(until) | Answer::No(until) => *until > now,
    });
    let excess = answers.len().saturating_sub(bound);
    if excess > 0 {
        // A sixteenth at a time, so a full cache under a flood is not scanned per name.
        let gone: Vec<HostName> = answers
            .iter()
            .filter(|(_, a)| !matches!(a, Answer::Asking(_)))
            .map(|(n, _)| n.clone())
            .take(excess.max(bound / 16))
            .collect();
        for n in gone {
            answers.remove(&n);
        }
    }
}

/// Forgets backoffs that ended, beyond `bound` entries.
fn evict_failed(orders: &mut HashMap<HostName, OrderState>, bound: usize) {
    if orders.len() <= bound {
        return;
    }
    let now = Instant::now();
    orders.retain(|_, s| !matches!(s, OrderState::Backoff { until, .. } if *until <= now));
}

/// The certificate store's name for `name`'s pair: `on-demand.NAME`, or for a name too
/// long for the store (`tls::dir::MAX_NAME`) its start and a hash of the whole.
pub fn store_name(name: &HostName) -> String {
    let whole = format!("{STORE_PREFIX}{}", name.as_str());
    if whole.len() <= crate::tls::dir::MAX_NAME {
        return whole;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_str().as_bytes());
    let hash = crate::hex::encode(&digest.as_ref()[..8]);
    // 64 = prefix (10) + start + "-" + 16 hex digits.
    let keep = crate::tls::dir::MAX_NAME - STORE_PREFIX.len() - 1 - hash.len();
    let start: String = name.as_str().chars().take(keep).collect();
    format!("{STORE_PREFIX}{}-{hash}", start.trim_end_matches('.'))
}

/// The dispatcher's next step.
enum Step {
    Start(Arc<Ctx>, HostName),
    Sweep(Arc<Ctx>),
    Until(Instant),
}

/// When a certificate is renewed: when a third of its lifetime is left (the rule of
/// `tls = "acme"` sites without ARI, without their random spread).
fn renew_at(c: &crate::tls::load::Cert) -> i64 {
    c.not_after - (c.not_after - c.not_before) / 3
}

/// The answer label of permission look-ups.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    Yes,
    No,
    Error,
}

/// The outcome label of on-demand orders.
#[derive(Debug, Clone, Copy)]
pub enum OrderOutcome {
    Issued,
    Failed,
    /// Not ordered here: another node held the name's lock, or the pool had it already.
    Elsewhere,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize) -> HostName {
        HostName::parse(&format!("n{i}.flood.test")).expect("a name")
    }

    #[test]
    fn the_permission_cache_stays_within_its_bound_and_keeps_look_ups_under_way() {
        let mut answers = HashMap::new();
        let later = Instant::now() + Duration::from_secs(600);
        let (_tx, rx) = watch::channel(None);
        for i in 0..10 {
            answers.insert(name(i), Answer::Asking(rx.clone()));
        }
        for i in 10..2000 {
            answers.insert(name(i), Answer::No(later));
            evict(&mut answers, 1000);
            assert!(answers.len() <= 1000, "{}", answers.len());
        }
        for i in 0..10 {
            assert!(matches!(answers.get(&name(i)), Some(Answer::Asking(_))));
        }
    }

    #[test]
    fn store_names_fit_the_store() {
        let short = HostName::parse("shop.customer.test").expect("name");
        assert_eq!(store_name(&short), "on-demand.shop.customer.test");
        let long = HostName::parse(&format!(
            "{}.{}.customer.test",
            "a".repeat(60),
            "b".repeat(60)
        ))
        .expect("name");
        let stored = store_name(&long);
        assert!(stored.len() <= crate::tls::dir::MAX_NAME, "{stored}");
        assert_eq!(crate::tls::dir::check_name(&stored), Ok(()), "{stored}");
        assert!(stored.starts_with("on-demand.aaaa"), "{stored}");
    }

    #[test]
    fn expired_answers_go_first() {
        let mut answers = HashMap::new();
        let past = Instant::now();
        let later = past + Duration::from_secs(600);
        for i in 0..100 {
            let a = if i % 2 == 0 {
                Answer::Yes(past)
            } else {
                Answer::No(later)
            };
            answers.insert(name(i), a);
        }
        std::thread::sleep(Duration::from_millis(5));
        evict(&mut answers, 60);
        assert_eq!(answers.len(), 50);
        assert!(answers.values().all(|a| matches!(a, Answer::No(_))));
    }
}
