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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::TlsMode;
use crate::runtime::{Runtime, SiteAction};
use crate::tls::load::Cert;

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
    /// Nothing: the connection ended before a protocol (refused, failed handshake).
    Nothing,
}

impl Carried {
    const ALL: [Carried; 4] = [
        Carried::Http1,
        Carried::H2,
        Carried::Passthrough,
        Carried::Nothing,
    ];

    fn label(self) -> &'static str {
        match self {
            Carried::Http1 => "http/1.1",
            Carried::H2 => "h2",
            Carried::Passthrough => "passthrough",
            Carried::Nothing => "none",
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
}

impl Protocol {
    const ALL: [Protocol; 2] = [Protocol::Http1, Protocol::H2];

    pub fn of(version: http::Version) -> Protocol {
        if version == http::Version::HTTP_2 {
            Protocol::H2
        } else {
            Protocol::Http1
        }
    }

    fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1.1",
            Protocol::H2 => "h2",
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
}

impl SiteCounters {
    fn new(name: &str, histogram: bool) -> SiteCounters {
        SiteCounters {
            name: name.to_string(),
            requests: Default::default(),
            request_seconds: histogram.then(Histogram::default),
            passthrough: Default::default(),
        }
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
        registry.register_collector(Box::new(Scrape::take(self, rt)));
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "metrics: cannot encode");
        }
        out
    }
}

/// What one scrape renders: the counters reached from the runtime, taken as `Arc`s (the
/// collector must own what it reads), and the process-wide figures.
#[derive(Debug)]
struct Scrape {
    listeners: Vec<Arc<ListenerCounters>>,
    sites: Vec<Arc<SiteCounters>>,
    /// Every proxy site's upstreams, with whether each is up now.
    upstreams: Vec<(Arc<UpstreamCounters>, bool)>,
    /// Certificates in use: (fingerprint, subject, source, not_after).
    certs: Vec<(String, String, &'static str, i64)>,
    reloads: [u64; 2],
    acme_orders: [u64; 2],
    /// ACME sites of the runtime and when each orders next.
    acme_next: Vec<(String, i64)>,
    config_loaded: u64,
    uptime: f64,
}

impl Scrape {
    fn take(m: &Metrics, rt: &Runtime) -> Scrape {
        let mut seen = std::collections::HashSet::new();
        let mut certs = Vec::new();
        let mut add = |c: &Arc<Cert>, source: &'static str| {
            if seen.insert(c.sha256) {
                certs.push((c.fingerprint(), c.subject.clone(), source, c.not_after));
            }
        };
        for c in rt.pool.certs() {
            add(c, "file");
        }
        for (site, cert) in rt.config.sites.iter().zip(&rt.site_certs) {
            if let Some(c) = cert {
                let source = match site.tls {
                    TlsMode::Internal => "internal",
                    TlsMode::Acme => "acme",
                    TlsMode::Pinned(_) | TlsMode::Pool => "file",
                };
                add(c, source);
            }
        }
        let acme_next = {
            let next = m.acme_next.lock().unwrap_or_else(|p| p.into_inner());
            rt.config
                .sites
                .iter()
                .filter(|s| s.tls == TlsMode::Acme)
                .filter_map(|s| Some((s.name.clone(), *next.get(&s.name)?)))
                .collect()
        };
        let load =
            |a: &[AtomicU64; 2]| [a[0].load(Ordering::Relaxed), a[1].load(Ordering::Relaxed)];
        Scrape {
            listeners: rt.listeners.iter().map(|l| l.metrics.clone()).collect(),
            sites: rt.sites.iter().map(|s| s.metrics.clone()).collect(),
            upstreams: rt
                .sites
                .iter()
                .filter_map(|s| match &s.action {
                    SiteAction::Proxy(up) => Some(
                        up.counters()
                            .iter()
                            .enumerate()
                            .map(|(i, c)| (c.clone(), up.is_up(i)))
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .flatten()
                .collect(),
            certs,
            reloads: load(&m.reloads),
            acme_orders: load(&m.acme_orders),
            acme_next,
            config_loaded: m.config_loaded.load(Ordering::Relaxed),
            uptime: m.started.elapsed().as_secs_f64(),
        }
    }
}

/// Writes one counter series.
fn counter<L: prometheus_client::encoding::EncodeLabelSet>(
    family: &mut prometheus_client::encoding::MetricEncoder,
    labels: &L,
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(family.encode_family(labels)?)
}

fn gauge<L: prometheus_client::encoding::EncodeLabelSet>(
    family: &mut prometheus_client::encoding::MetricEncoder,
    labels: &L,
    value: f64,
) -> std::fmt::Result {
    ConstGauge::new(value).encode(family.encode_family(labels)?)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let mut f = e.encode_descriptor(
            "portico_tls_handshakes",
            "TLS connections by how their handshake ended.",
            None,
            MetricType::Counter,
        )?;
        for l in &self.listeners {
            for outcome in Handshake::ALL {
                let n = l.handshakes[outcome as usize].load(Ordering::Relaxed);
                if n > 0 {
                    let labels = [("listener", l.name.as_str()), ("outcome", outcome.label())];
                    counter(&mut f, &labels, n)?;
                }
            }
        }
        let mut f = e.encode_descriptor(
            "portico_tls_handshake_duration_seconds",
            "From accepting a connection to the end of its TLS handshake.",
            None,
            MetricType::Histogram,
        )?;
        for l in self
            .listeners
            .iter()
            .filter(|l| l.handshake_seconds.count() > 0)
        {
            l.handshake_seconds
                .encode(f.encode_family(&[("listener", l.name.as_str())])?)?;
        }
        let mut f = e.encode_descriptor(
            "portico_connections_open",
            "Connections open now.",
            None,
            MetricType::Gauge,
        )?;
        for l in &self.listeners {
            let open = l.open.load(Ordering::Relaxed) as f64;
            gauge(&mut f, &[("listener", l.name.as_str())], open)?;
        }
        let mut f = e.encode_descriptor(
            "portico_connections",
            "Connections accepted, by what they carried.",
            None,
            MetricType::Counter,
        )?;
        for l in &self.listeners {
            for what in Carried::ALL {
                let n = l.connections[what as usize].load(Ordering::Relaxed);
                if n > 0 {
                    let labels = [("listener", l.name.as_str()), ("protocol", what.label())];
                    counter(&mut f, &labels, n)?;
                }
            }
        }
        let mut f = e.encode_descriptor(
            "portico_http_misdirected",
            "Requests answered 421: the connection's certificate does not cover the host, or the host is not bound on the listener.",
            None,
            MetricType::Counter,
        )?;
        for l in &self.listeners {
            let n = l.misdirected.load(Ordering::Relaxed);
            counter(&mut f, &[("listener", l.name.as_str())], n)?;
        }
        let mut f = e.encode_descriptor(
            "portico_http_requests",
            "Requests answered by a site, by status class and protocol.",
            None,
            MetricType::Counter,
        )?;
        for s in &self.sites {
            for p in Protocol::ALL {
                for (class, label) in CLASSES.iter().enumerate() {
                    let n = s.requests[p as usize][class].load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = [
                            ("site", s.name.as_str()),
                            ("code", label),
                            ("protocol", p.label()),
                        ];
                        counter(&mut f, &labels, n)?;
                    }
                }
            }
        }
        let mut f = e.encode_descriptor(
            "portico_http_request_duration_seconds",
            "From a request's head to its response's head: per site, or per listener above 1,000 sites.",
            None,
            MetricType::Histogram,
        )?;
        for s in &self.sites {
            if let Some(h) = s.request_seconds.as_ref().filter(|h| h.count() > 0) {
                h.encode(f.encode_family(&[("site", s.name.as_str())])?)?;
            }
        }
        for l in self
            .listeners
            .iter()
            .filter(|l| l.request_seconds.count() > 0)
        {
            l.request_seconds
                .encode(f.encode_family(&[("listener", l.name.as_str())])?)?;
        }
        let mut f = e.encode_descriptor(
            "portico_passthrough_bytes",
            "Bytes relayed for passthrough sites: up is client to backend, down the other way.",
            None,
            MetricType::Counter,
        )?;
        for s in &self.sites {
            for (i, direction) in ["up", "down"].into_iter().enumerate() {
                let n = s.passthrough[i].load(Ordering::Relaxed);
                if n > 0 {
                    let labels = [("site", s.name.as_str()), ("direction", direction)];
                    counter(&mut f, &labels, n)?;
                }
            }
        }
        let mut f = e.encode_descriptor(
            "portico_upstream_requests",
            "Requests sent to a proxy site's upstreams, by how they ended.",
            None,
            MetricType::Counter,
        )?;
        for (u, _) in &self.upstreams {
            for outcome in UpstreamOutcome::ALL {
                let n = u.outcomes[outcome as usize].load(Ordering::Relaxed);
                if n > 0 {
                    let labels = [
                        ("site", u.site.as_str()),
                        ("upstream", u.upstream.as_str()),
                        ("outcome", outcome.label()),
                    ];
                    counter(&mut f, &labels, n)?;
                }
            }
        }
        let mut f = e.encode_descriptor(
            "portico_upstream_healthy",
            "1 while an upstream is chosen for requests (its health check passes and it is not marked down after failures), else 0.",
            None,
            MetricType::Gauge,
        )?;
        for (u, up) in &self.upstreams {
            let labels = [("site", u.site.as_str()), ("upstream", u.upstream.as_str())];
            gauge(&mut f, &labels, if *up { 1.0 } else { 0.0 })?;
        }
        let mut f = e.encode_descriptor(
            "portico_certificate_not_after_seconds",
            "When each certificate in use expires, in Unix seconds.",
            None,
            MetricType::Gauge,
        )?;
        for (fingerprint, subject, source, not_after) in &self.certs {
            let labels = [
                ("fingerprint", fingerprint.as_str()),
                ("subject", subject.as_str()),
                ("source", source),
            ];
            gauge(&mut f, &labels, *not_after as f64)?;
        }
        if let Some(soonest) = self.certs.iter().map(|c| c.3).min() {
            let f = e.encode_descriptor(
                "portico_certificate_soonest_expiry_seconds",
                "When the first certificate in use expires, in Unix seconds.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(soonest as f64).encode(f)?;
        }
        for (name, help, values) in [
            (
                "portico_reloads",
                "Reloads (SIGHUP, portico reload, the admin API), by outcome.",
                self.reloads,
            ),
            (
                "portico_acme_orders",
                "ACME orders, by outcome.",
                self.acme_orders,
            ),
        ] {
            let mut f = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (i, outcome) in ["ok", "failed"].into_iter().enumerate() {
                counter(&mut f, &[("outcome", outcome)], values[i])?;
            }
        }
        let mut f = e.encode_descriptor(
            "portico_acme_next_renewal_seconds",
            "When each ACME site's certificate is ordered next (renewal, or the retry after a failure), in Unix seconds; absent while an order runs.",
            None,
            MetricType::Gauge,
        )?;
        for (site, at) in &self.acme_next {
            gauge(&mut f, &[("site", site.as_str())], *at as f64)?;
        }
        let f = e.encode_descriptor(
            "portico_config_loaded_timestamp_seconds",
            "When the configuration now serving was installed, in Unix seconds.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.config_loaded as f64).encode(f)?;
        let f = e.encode_descriptor(
            "portico_uptime_seconds",
            "Seconds since the process started.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.uptime).encode(f)?;
        process(&mut e)
    }
}

/// The process's CPU time, resident memory and open files, read from /proc at each scrape
/// (names as Prometheus' own client libraries use them).
fn process(e: &mut DescriptorEncoder) -> std::fmt::Result {
    let ticks = 100.0; // USER_HZ on Linux.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The fields after the command name, which is in parentheses and may hold spaces.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let cpu = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
            if let (Some(user), Some(system)) = (cpu(11), cpu(12)) {
                let f = e.encode_descriptor(
                    "process_cpu_seconds",
                    "User and system CPU time, in seconds.",
                    None,
                    MetricType::Counter,
                )?;
                ConstCounter::new((user + system) / ticks).encode(f)?;
            }
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kib) = kib {
            let f = e.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory, in bytes.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(kib * 1024.0).encode(f)?;
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let f = e.encode_descriptor(
            "process_open_fds",
            "Open file descriptors.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(fds.count() as f64).encode(f)?;
    }
    Ok(())
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
