//! One scrape: the counters of the runtime now serving, the certificates in use and the
//! process's own figures, written through prometheus-client's encoder. Zero series are left
//! out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{
    Carried, Handshake, ListenerCounters, Metrics, Protocol, SiteCounters, UpstreamCounters,
    UpstreamOutcome, CLASSES,
};
use crate::config::TlsMode;
use crate::runtime::{Runtime, SiteAction};
use crate::tls::load::Cert;

/// What one scrape renders: the counters reached from the runtime, taken as `Arc`s (the
/// collector must own what it reads), and the process-wide figures.
#[derive(Debug)]
pub(super) struct Scrape {
    listeners: Vec<Arc<ListenerCounters>>,
    sites: Vec<Arc<SiteCounters>>,
    /// Every proxy site's upstreams, with whether each is up now.
    upstreams: Vec<(Arc<UpstreamCounters>, bool)>,
    /// The certificates in use that expire first, at most [`CERT_SERIES`]: (fingerprint,
    /// subject, source, not_after), the soonest first.
    certs: Vec<(String, String, &'static str, i64)>,
    /// All of them, counted.
    counts: CertCounts,
    reloads: [u64; 2],
    acme_orders: [u64; 2],
    /// ACME sites of the runtime and when each orders next.
    acme_next: Vec<(String, i64)>,
    config_loaded: u64,
    uptime: f64,
    /// Access log lines dropped because the log's output did not keep up.
    log_dropped: u64,
    /// The certificate cache: entries, capacity, reads of evicted certificates.
    cache: [u64; 3],
    /// On-demand TLS, when a site orders on demand: lookups, cache hits, orders, queued.
    on_demand: Option<([u64; 3], u64, [u64; 3], u64)>,
}

impl Scrape {
    pub(super) fn take(m: &Metrics, rt: &Runtime) -> Scrape {
        // Every certificate in use is counted; only the soonest to expire get a series each,
        // so a pool of a million is a scrape of a thousand lines, not a million.
        let pool = rt.pool();
        let mut soonest = std::collections::BinaryHeap::new();
        let mut counts = CertCounts {
            now: crate::runtime::unix_now(),
            ..CertCounts::default()
        };
        let mut add = |c: &Arc<Cert>, source: &'static str| {
            counts.add(source, c.not_after);
            soonest.push((c.not_after, Entry(source, c.clone())));
            if soonest.len() > CERT_SERIES {
                soonest.pop();
            }
        };
        for c in pool.certs() {
            add(c, if rt.is_stored(c) { "admin" } else { "file" });
        }
        for (si, c) in rt.site_only_certs(&pool) {
            let source = match rt.config.sites[si].tls {
                TlsMode::Internal => "internal",
                TlsMode::Acme => "acme",
                TlsMode::Pinned(_) | TlsMode::Pool => "file",
            };
            add(&c, source);
        }
        // Two pool files holding one certificate would be one series twice: once each.
        let mut shown = std::collections::HashSet::new();
        let certs = soonest
            .into_sorted_vec()
            .into_iter()
            .filter(|(_, Entry(source, c))| shown.insert((c.sha256, *source)))
            .map(|(not_after, Entry(source, c))| {
                (c.fingerprint(), c.subject.clone(), source, not_after)
            })
            .collect();
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
            counts,
            reloads: load(&m.reloads),
            acme_orders: load(&m.acme_orders),
            acme_next,
            config_loaded: m.config_loaded.load(Ordering::Relaxed),
            uptime: m.started.elapsed().as_secs_f64(),
            log_dropped: crate::logging::dropped(),
            cache: [rt.keys.len(), rt.keys.capacity(), rt.keys.reloads()].map(|n| n as u64),
            on_demand: rt
                .config
                .sites
                .iter()
                .any(|s| s.on_demand.is_some())
                .then(|| m.on_demand.load()),
        }
    }
}

/// How many certificates get a `portico_certificate_not_after_seconds` series: the ones
/// that expire first.
const CERT_SERIES: usize = 1000;

/// What the certificate sources are, in the order their series are written.
const SOURCES: [&str; 4] = ["file", "admin", "internal", "acme"];

/// The windows `portico_certificates_expiring` counts certificates in, in days.
const EXPIRING_DAYS: [i64; 3] = [7, 14, 30];

/// A certificate and its source, all equal in order: the heap of the soonest to expire
/// orders by `not_after` alone.
struct Entry(&'static str, Arc<Cert>);

impl PartialEq for Entry {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[derive(Debug, Default)]
struct CertCounts {
    /// When the counting started, in Unix seconds.
    now: i64,
    by_source: [u64; 4],
    expiring: [u64; 3],
    soonest: Option<i64>,
}

impl CertCounts {
    fn add(&mut self, source: &str, not_after: i64) {
        if let Some(i) = SOURCES.iter().position(|s| *s == source) {
            self.by_source[i] += 1;
        }
        for (n, days) in self.expiring.iter_mut().zip(EXPIRING_DAYS) {
            *n += u64::from(not_after - self.now < days * 86_400);
        }
        self.soonest = Some(self.soonest.map_or(not_after, |s| s.min(not_after)));
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
            "portico_client_certificates",
            "Handshakes on sites with client_auth, by outcome: verified (a certificate the site's CA issued) or the reason for the refusal (certificate_required, unknown_ca, certificate_revoked, certificate_expired, bad_certificate).",
            None,
            MetricType::Counter,
        )?;
        for s in &self.sites {
            let verified = s.client_certs_verified.load(Ordering::Relaxed);
            if verified > 0 {
                counter(
                    &mut f,
                    &[("site", s.name.as_str()), ("outcome", "verified")],
                    verified,
                )?;
            }
            for why in crate::tls::client_auth::Refused::ALL {
                let n = s.client_certs_refused[why as usize].load(Ordering::Relaxed);
                if n > 0 {
                    let labels = [("site", s.name.as_str()), ("outcome", why.as_str())];
                    counter(&mut f, &labels, n)?;
                }
            }
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
        if let Some(soonest) = self.counts.soonest {
            let f = e.encode_descriptor(
                "portico_certificate_soonest_expiry_seconds",
                "When the first certificate in use expires, in Unix seconds.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(soonest as f64).encode(f)?;
        }
        let mut f = e.encode_descriptor(
            "portico_certificates",
            "Certificates in use, by source.",
            None,
            MetricType::Gauge,
        )?;
        for (source, n) in SOURCES.iter().zip(self.counts.by_source) {
            gauge(&mut f, &[("source", *source)], n as f64)?;
        }
        let mut f = e.encode_descriptor(
            "portico_certificates_expiring",
            "Certificates in use that expire within this many days (or have expired).",
            None,
            MetricType::Gauge,
        )?;
        for (days, n) in EXPIRING_DAYS.iter().zip(self.counts.expiring) {
            gauge(&mut f, &[("days", days.to_string())], n as f64)?;
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
        if let Some((lookups, hits, orders, queued)) = self.on_demand {
            let mut f = e.encode_descriptor(
                "portico_on_demand_permission_lookups",
                "On-demand TLS: questions to the permission endpoint, by answer (error: no answer, taken as no).",
                None,
                MetricType::Counter,
            )?;
            for (i, answer) in ["yes", "no", "error"].into_iter().enumerate() {
                counter(&mut f, &[("answer", answer)], lookups[i])?;
            }
            let f = e.encode_descriptor(
                "portico_on_demand_permission_cache_hits",
                "On-demand TLS: permission answers taken from the cache instead of the endpoint.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(hits).encode(f)?;
            let mut f = e.encode_descriptor(
                "portico_on_demand_orders",
                "On-demand TLS: certificate orders, by outcome (elsewhere: another node held the name's lock, or the certificate was there).",
                None,
                MetricType::Counter,
            )?;
            for (i, outcome) in ["issued", "failed", "elsewhere"].into_iter().enumerate() {
                counter(&mut f, &[("outcome", outcome)], orders[i])?;
            }
            let f = e.encode_descriptor(
                "portico_on_demand_orders_queued",
                "On-demand TLS: allowed names waiting for an order (max_orders, orders_per_hour).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(queued as f64).encode(f)?;
        }
        let f = e.encode_descriptor(
            "portico_log_lines_dropped",
            "Access log lines dropped because the log's output (stderr) did not keep up.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.log_dropped).encode(f)?;
        for (name, help, value) in [
            ("portico_certificate_cache_entries", "Certificates whose chain and key are in memory (limits.certificate_cache bounds it).", self.cache[0]),
            ("portico_certificate_cache_capacity", "limits.certificate_cache: how many certificates may keep their chain and key in memory.", self.cache[1]),
        ] {
            let f = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as f64).encode(f)?;
        }
        let f = e.encode_descriptor(
            "portico_certificate_cache_reloads",
            "Evicted certificates read again from their files for a handshake.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.cache[2]).encode(f)?;
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
