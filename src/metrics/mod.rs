//! Counters and histograms of the running server, and their rendering in the Prometheus
//! text format (for `GET /metrics` on the admin listener).
//!
//! The request and handshake paths only add to atomics they reach through the runtime
//! (`ListenerRt::metrics`, `SiteRt::metrics`), found when the runtime was built: no lock,
//! no map lookup by label, no allocation. The counters of a listener or site are kept by
//! name in [`Metrics`] (process lifetime), so a reload hands the same counters to the new
//! runtime and they survive it; those of sites a reload removed are dropped then.
//!
//! Cardinality, decided here: listeners and sites are labels (bounded by the
//! configuration); outcomes, protocols and status classes are fixed lists; series that
//! are still zero are not rendered, so 100,000 sites cost a line per site that served.
//! Per-site latency histograms are kept up to [`PER_SITE_HISTOGRAMS_UP_TO`] sites unless
//! `[metrics] per_site_histograms` says otherwise; above, one histogram per listener.
//!
//! `samples.rs` keeps the last 15 minutes of a few of these counters, sampled every 10 s,
//! for the dashboard's charts; bounded whatever the number of sites.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use crate::runtime::{Runtime, SiteAction};

mod render;
pub mod samples;

/// Above this many sites, request latency is kept per listener by default.
pub const PER_SITE_HISTOGRAMS_UP_TO: usize = 1000;

/// How a connection's handshake ended, the `outcome` label of
/// `portico_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok,
    Resumed,
    RefusedUnknownSni,
    RefusedNoSni,
    /// No certificate for the client's signature schemes, or none yet (ACME pending).
    NoCertificate,
    Failed,
    Timeout,
    Passthrough,
    AcmeChallenge,
}

impl Handshake {
    const ALL: [Handshake; 9] = [
        Handshake::Ok,
        Handshake::Resumed,
        Handshake::RefusedUnknownSni,
        Handshake::RefusedNoSni,
        Handshake::NoCertificate,
        Handshake::Failed,
        Handshake::Timeout,
        Handshake::Passthrough,
        Handshake::AcmeChallenge,
    ];

    fn label(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Resumed => "resumed",
            Handshake::RefusedUnknownSni => "refused_unknown_sni",
            Handshake::RefusedNoSni => "refused_no_sni",
            Handshake::NoCertificate => "no_certificate",
            Handshake::Failed => "failed",
            Handshake::Timeout => "timeout",
            Handshake::Passthrough => "passthrough",
            Handshake::AcmeChallenge => "acme_challenge",
        }
    }
}

/// What a connection carried, the `protocol` label of `portico_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    Http1,
    H2,
    Passthrough,
    /// HTTP/3 over QUIC.
    H3,
    /// Nothing: the connection ended before a protocol (refused, failed handshake).
    Nothing,
}

impl Carried {
    const ALL: [Carried; 5] = [
        Carried::Http1,
        Carried::H2,
        Carried::Passthrough,
        Carried::Nothing,
        Carried::H3,
    ];

    fn label(self) -> &'static str {
        match self {
            Carried::Http1 => "http/1.1",
            Carried::H2 => "h2",
            Carried::Passthrough => "passthrough",
            Carried::Nothing => "none",
            Carried::H3 => "h3",
        }
    }
}

/// Upper bounds of the latency histograms' buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of atomics (prometheus-client's takes a lock per observation).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn encode(&self, encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        let mut encoder = encoder;
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BOUNDS.len() + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            buckets.push((BOUNDS.get(i).copied().unwrap_or(f64::MAX), cumulative));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum, cumulative, &buckets, None,
        )
    }
}

/// One listener's counters.
#[derive(Debug)]
pub struct ListenerCounters {
    pub name: String,
    handshakes: [AtomicU64; Handshake::ALL.len()],
    pub handshake_seconds: Histogram,
    open: AtomicI64,
    connections: [AtomicU64; Carried::ALL.len()],
    misdirected: AtomicU64,
    /// Request latency of this listener's sites, when not kept per site.
    pub request_seconds: Histogram,
}

impl ListenerCounters {
    fn new(name: &str) -> ListenerCounters {
        ListenerCounters {
            name: name.to_string(),
            handshakes: Default::default(),
            handshake_seconds: Histogram::default(),
            open: AtomicI64::new(0),
            connections: Default::default(),
            misdirected: AtomicU64::new(0),
            request_seconds: Histogram::default(),
        }
    }

    pub fn handshake(&self, outcome: Handshake) {
        self.handshakes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn carried(&self, what: Carried) {
        self.connections[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn misdirected(&self) {
        self.misdirected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the connection open until the guard drops.
    pub fn open(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self.clone())
    }
}

/// An open connection, for `portico_connections_open`.
pub struct OpenGuard(Arc<ListenerCounters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The protocol of a request, the `protocol` label of `portico_http_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2,
    H3,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Http1, Protocol::H2, Protocol::H3];

    pub fn of(version: http::Version) -> Protocol {
        match version {
            http::Version::HTTP_2 => Protocol::H2,
            http::Version::HTTP_3 => Protocol::H3,
            _ => Protocol::Http1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1.1",
            Protocol::H2 => "h2",
            Protocol::H3 => "h3",
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One site's counters.
#[derive(Debug)]
pub struct SiteCounters {
    pub name: String,
    requests: [[AtomicU64; CLASSES.len()]; Protocol::ALL.len()],
    /// Request latency, when kept per site.
    pub request_seconds: Option<Histogram>,
    /// Bytes relayed for a passthrough site: to the backend, from the backend.
    passthrough: [AtomicU64; 2],
    /// Handshakes under the site's `client_auth`: verified certificates, and refusals by
    /// reason (`client_auth::Refused::ALL` order).
    client_certs_verified: AtomicU64,
    client_certs_refused: [AtomicU64; crate::tls::client_auth::Refused::ALL.len()],
}

impl SiteCounters {
    fn new(name: &str, histogram: bool) -> SiteCounters {
        SiteCounters {
            name: name.to_string(),
            requests: Default::default(),
            request_seconds: histogram.then(Histogram::default),
            passthrough: Default::default(),
            client_certs_verified: AtomicU64::new(0),
            client_certs_refused: Default::default(),
        }
    }

    /// A handshake whose client certificate the site's policy verified.
    pub fn client_cert_verified(&self) {
        self.client_certs_verified.fetch_add(1, Ordering::Relaxed);
    }

    /// A handshake the site's policy refused, and why.
    pub fn client_cert_refused(&self, why: crate::tls::client_auth::Refused) {
        self.client_certs_refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request answered with `status`.
    pub fn request(&self, protocol: Protocol, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.requests[protocol as usize][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes a passthrough relay moved: client to backend, backend to client.
    pub fn relayed(&self, up: u64, down: u64) {
        self.passthrough[0].fetch_add(up, Ordering::Relaxed);
        self.passthrough[1].fetch_add(down, Ordering::Relaxed);
    }
}

/// How a request sent to an upstream ended, the `outcome` label of
/// `portico_upstream_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// The upstream sent a response (whatever its status).
    Ok,
    /// No response: the connection could not be made, or broke.
    Failed,
    /// No response head within the site's `response_timeout`.
    Timeout,
}

impl UpstreamOutcome {
    const ALL: [UpstreamOutcome; 3] = [
        UpstreamOutcome::Ok,
        UpstreamOutcome::Failed,
        UpstreamOutcome::Timeout,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::Failed => "failed",
            UpstreamOutcome::Timeout => "timeout",
        }
    }
}

/// One upstream's counters, per site.
#[derive(Debug)]
pub struct UpstreamCounters {
    pub site: String,
    pub upstream: String,
    outcomes: [AtomicU64; UpstreamOutcome::ALL.len()],
}

impl UpstreamCounters {
    pub fn sent(&self, outcome: UpstreamOutcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The outcome label of reloads and ACME orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
}

/// On-demand TLS (`acme::on_demand`): a few process-wide atomics; the labels are fixed
/// sets (no host name is ever a label, so a flood of names adds no series).
#[derive(Debug, Default)]
pub struct OnDemandCounters {
    /// Permission look-ups by answer: yes, no, error.
    lookups: [AtomicU64; 3],
    /// Answers taken from the permission cache.
    cache_hits: AtomicU64,
    /// Orders by outcome: issued, failed, elsewhere.
    orders: [AtomicU64; 3],
    /// Names waiting for an order now.
    queued: AtomicU64,
}

impl OnDemandCounters {
    pub fn lookup(&self, answer: crate::acme::on_demand::Lookup) {
        self.lookups[answer as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn order(&self, outcome: crate::acme::on_demand::OrderOutcome) {
        self.orders[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_queued(&self, n: usize) {
        self.queued.store(n as u64, Ordering::Relaxed);
    }

    /// (lookups, cache hits, orders, queued), for a scrape.
    pub(crate) fn load(&self) -> ([u64; 3], u64, [u64; 3], u64) {
        let l = |a: &[AtomicU64; 3]| a.each_ref().map(|x| x.load(Ordering::Relaxed));
        (
            l(&self.lookups),
            self.cache_hits.load(Ordering::Relaxed),
            l(&self.orders),
            self.queued.load(Ordering::Relaxed),
        )
    }
}

/// The process's metrics: what outlives a runtime. One per process, in `Shared`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    listeners: Mutex<HashMap<String, Arc<ListenerCounters>>>,
    sites: Mutex<HashMap<String, Arc<SiteCounters>>>,
    upstreams: Mutex<HashMap<(String, String), Arc<UpstreamCounters>>>,
    reloads: [AtomicU64; 2],
    acme_orders: [AtomicU64; 2],
    /// When each ACME site's task orders next (unix seconds), as it last said.
    acme_next: Mutex<HashMap<String, i64>>,
    /// Unix seconds when the configuration now serving was installed.
    config_loaded: AtomicU64,
    /// On-demand TLS: permission look-ups, cache hits, orders, the queue.
    pub on_demand: OnDemandCounters,
    /// The last 15 minutes, sampled for the dashboard's charts.
    pub samples: samples::Samples,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            listeners: Mutex::default(),
            sites: Mutex::default(),
            upstreams: Mutex::default(),
            reloads: Default::default(),
            acme_orders: Default::default(),
            acme_next: Mutex::default(),
            config_loaded: AtomicU64::new(0),
            on_demand: OnDemandCounters::default(),
            samples: samples::Samples::default(),
        }
    }
}

impl Metrics {
    /// The counters for listener `name` (build time only: takes a lock).
    pub fn listener(&self, name: &str) -> Arc<ListenerCounters> {
        let mut map = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| Arc::new(ListenerCounters::new(name)))
            .clone()
    }

    /// The counters for site `name` (build time only). A site whose histogram setting
    /// changed gets new counters.
    pub fn site(&self, name: &str, histogram: bool) -> Arc<SiteCounters> {
        let mut map = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(name) {
            Some(c) if c.request_seconds.is_some() == histogram => c.clone(),
            _ => {
                let c = Arc::new(SiteCounters::new(name, histogram));
                map.insert(name.to_string(), c.clone());
                c
            }
        }
    }

    /// The counters for `upstream` of site `site` (build time only).
    pub fn upstream(&self, site: &str, upstream: &str) -> Arc<UpstreamCounters> {
        let mut map = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((site.to_string(), upstream.to_string()))
            .or_insert_with(|| {
                Arc::new(UpstreamCounters {
                    site: site.to_string(),
                    upstream: upstream.to_string(),
                    outcomes: Default::default(),
                })
            })
            .clone()
    }

    /// After `rt` was installed: forget the counters of listeners and sites it does not
    /// have, and note the time.
    pub fn installed(&self, rt: &Runtime) {
        let listeners: std::collections::HashSet<&str> = rt
            .listeners
            .iter()
            .map(|l| l.metrics.name.as_str())
            .collect();
        let sites: std::collections::HashSet<&str> =
            rt.sites.iter().map(|s| s.metrics.name.as_str()).collect();
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| listeners.contains(name.as_str()));
        self.sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| sites.contains(name.as_str()));
        let upstreams: std::collections::HashSet<(&str, &str)> = rt
            .sites
            .iter()
            .filter_map(|s| match &s.action {
                SiteAction::Proxy(up) => Some(up.counters()),
                _ => None,
            })
            .flatten()
            .map(|c| (c.site.as_str(), c.upstream.as_str()))
            .collect();
        self.upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(site, up), _| upstreams.contains(&(site.as_str(), up.as_str())));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.config_loaded.store(now, Ordering::Relaxed);
    }

    pub fn reload(&self, outcome: Outcome) {
        self.reloads[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// An ACME task's next order time; None while an order runs.
    pub fn acme_next_renewal(&self, site: &str, at: Option<i64>) {
        let mut map = self.acme_next.lock().unwrap_or_else(|p| p.into_inner());
        match at {
            Some(at) => {
                map.insert(site.to_string(), at);
            }
            None => {
                map.remove(site);
            }
        }
    }

    pub fn acme_order(&self, outcome: Outcome) {
        self.acme_orders[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every metric, in the Prometheus text exposition format (0.0.4), for the runtime
    /// now serving.
    pub fn render(&self, rt: &Runtime) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(render::Scrape::take(self, rt)));
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "metrics: cannot encode");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_in_seconds() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        assert_eq!(h.count(), 3);
        assert_eq!(h.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[3].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[BOUNDS.len()].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn status_classes_clamp_to_1xx_and_5xx() {
        let s = SiteCounters::new("s", false);
        s.request(Protocol::H2, http::StatusCode::OK);
        s.request(
            Protocol::H2,
            http::StatusCode::from_u16(599).expect("status"),
        );
        s.request(Protocol::Http1, http::StatusCode::CONTINUE);
        assert_eq!(s.requests[1][1].load(Ordering::Relaxed), 1);
        assert_eq!(s.requests[1][4].load(Ordering::Relaxed), 1);
        assert_eq!(s.requests[0][0].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn counters_are_kept_by_name_across_builds() {
        let m = Metrics::default();
        let a = m.site("a", true);
        a.request(Protocol::Http1, http::StatusCode::OK);
        assert!(Arc::ptr_eq(&a, &m.site("a", true)));
        assert!(
            !Arc::ptr_eq(&a, &m.site("a", false)),
            "a new histogram setting"
        );
        assert!(Arc::ptr_eq(&m.listener("l"), &m.listener("l")));
    }
}
