//! The dashboard's short memory: every [`INTERVAL`] a sampler reads the runtime's counters
//! and keeps what changed since the previous sample, [`KEPT`] samples (15 minutes) in a
//! ring. A sample holds each listener's handshake outcomes and the requests of the sites
//! that served, at most [`TOP_SITES`] of them by count, the rest summed in one "other"
//! bucket; so the ring's size does not grow with the number of sites.
//!
//! It never touches the request path: it reads the same atomics the scrape reads, from the
//! sampler's task, and its lock is taken only by the sampler and the admin API. The
//! previous totals it subtracts are kept per site name (one entry per site, dropped when a
//! reload removes the site), the one part that grows with the configuration.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use super::{Handshake, ListenerCounters, SiteCounters};
use crate::runtime::Runtime;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: 15 minutes at [`INTERVAL`].
pub const KEPT: usize = 90;
/// Sites named in one sample; the rest are summed in `other_requests`.
pub const TOP_SITES: usize = 20;

/// The handshake outcomes' labels, in the order of [`ListenerSample::handshakes`].
pub fn outcomes() -> impl Iterator<Item = &'static str> {
    Handshake::ALL.iter().map(|h| h.label())
}

/// What changed during one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the interval ended, in Unix seconds.
    pub at: i64,
    /// How long the interval was, in seconds (the first sample's is the time since start).
    pub seconds: f64,
    pub listeners: Vec<ListenerSample>,
    /// The sites with the most requests in the interval, most first; none with zero.
    pub sites: Vec<(String, u64)>,
    /// Requests of the sites not in `sites`.
    pub other_requests: u64,
    /// How many sites those were.
    pub other_sites: u64,
}

/// One listener's handshakes during an interval, by outcome ([`outcomes`]' order).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSample {
    pub name: String,
    pub handshakes: [u64; Handshake::ALL.len()],
}

/// The totals seen at the previous sample, and in which round each name was last seen (a
/// name not seen in a round has left the configuration).
#[derive(Debug, Default)]
struct Previous {
    round: u64,
    /// Seconds on the sampler's clock at the previous sample.
    at: Option<f64>,
    listeners: HashMap<String, ([u64; Handshake::ALL.len()], u64)>,
    sites: HashMap<String, (u64, u64)>,
}

/// A counter's growth since `before`. A smaller value means the counter was replaced (a
/// site whose histogram setting changed gets new counters): then all of it is new.
fn growth(now: u64, before: u64) -> u64 {
    now.checked_sub(before).unwrap_or(now)
}

impl Previous {
    /// The sample ending at `at` (Unix seconds; `clock` in seconds on a monotonic clock),
    /// from every listener's and site's totals now. With `keep`, these totals become the
    /// base of the next sample; without, nothing changes (a look at the interval so far).
    fn sample<'a>(
        &mut self,
        at: i64,
        clock: f64,
        listeners: impl Iterator<Item = (&'a str, [u64; Handshake::ALL.len()])>,
        sites: impl Iterator<Item = (&'a str, u64)>,
        keep: bool,
    ) -> Sample {
        let round = self.round + 1;
        let mut out = Vec::new();
        for (name, totals) in listeners {
            let before = self
                .listeners
                .get(name)
                .map(|(t, _)| *t)
                .unwrap_or_default();
            let mut handshakes = [0; Handshake::ALL.len()];
            for (d, (now, then)) in handshakes.iter_mut().zip(totals.iter().zip(before)) {
                *d = growth(*now, then);
            }
            if keep {
                match self.listeners.get_mut(name) {
                    Some(entry) => *entry = (totals, round),
                    None => {
                        self.listeners.insert(name.to_string(), (totals, round));
                    }
                }
            }
            out.push(ListenerSample {
                name: name.to_string(),
                handshakes,
            });
        }
        // The top sites by requests: a bounded list, kept sorted, most first.
        let mut top: Vec<(&str, u64)> = Vec::with_capacity(TOP_SITES + 1);
        let (mut other_requests, mut other_sites) = (0, 0);
        for (name, total) in sites {
            let delta = match self.sites.get_mut(name) {
                Some(entry) => {
                    let delta = growth(total, entry.0);
                    if keep {
                        *entry = (total, round);
                    }
                    delta
                }
                None => {
                    if keep {
                        self.sites.insert(name.to_string(), (total, round));
                    }
                    total
                }
            };
            if delta == 0 {
                continue;
            }
            let at = top.partition_point(|&(_, d)| d >= delta);
            if at < TOP_SITES {
                top.insert(at, (name, delta));
                if top.len() > TOP_SITES {
                    if let Some((_, d)) = top.pop() {
                        other_requests += d;
                        other_sites += 1;
                    }
                }
            } else {
                other_requests += delta;
                other_sites += 1;
            }
        }
        // The clock starts with the counters (both at process start), so the first sample
        // covers the time since then: requests made before it are in it, with their time.
        let seconds = (clock - self.at.unwrap_or(0.0)).max(0.0);
        if keep {
            self.round = round;
            self.at = Some(clock);
            self.listeners.retain(|_, (_, r)| *r == round);
            self.sites.retain(|_, (_, r)| *r == round);
        }
        Sample {
            at,
            seconds,
            listeners: out,
            sites: top.into_iter().map(|(n, d)| (n.to_string(), d)).collect(),
            other_requests,
            other_sites,
        }
    }
}

/// The ring of samples and the totals of the last one.
#[derive(Debug)]
pub struct Samples {
    state: Mutex<State>,
    /// The sampler's monotonic clock starts here.
    epoch: std::time::Instant,
}

#[derive(Debug, Default)]
struct State {
    previous: Previous,
    ring: VecDeque<Sample>,
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            state: Mutex::default(),
            epoch: std::time::Instant::now(),
        }
    }
}

fn handshake_totals(c: &ListenerCounters) -> [u64; Handshake::ALL.len()] {
    let mut out = [0; Handshake::ALL.len()];
    for (o, h) in out.iter_mut().zip(&c.handshakes) {
        *o = h.load(Ordering::Relaxed);
    }
    out
}

fn request_total(c: &SiteCounters) -> u64 {
    c.requests
        .iter()
        .flatten()
        .map(|r| r.load(Ordering::Relaxed))
        .sum()
}

impl Samples {
    /// Takes the sample ending now from `rt`'s counters and keeps it (the oldest goes once
    /// [`KEPT`] are kept). Walks every site: call it off the threads that run connections.
    pub fn take(&self, rt: &Runtime, now: i64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let sample = self.sample(&mut state.previous, rt, now, true);
        push(&mut state.ring, sample);
    }

    /// The samples kept, oldest first, and what the interval under way holds so far (not
    /// kept). Walks every site, like [`Samples::take`].
    pub fn read(&self, rt: &Runtime, now: i64) -> (Vec<Sample>, Sample) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.sample(&mut state.previous, rt, now, false);
        (state.ring.iter().cloned().collect(), current)
    }

    fn sample(&self, previous: &mut Previous, rt: &Runtime, now: i64, keep: bool) -> Sample {
        previous.sample(
            now,
            self.epoch.elapsed().as_secs_f64(),
            rt.listeners
                .iter()
                .map(|l| (l.metrics.name.as_str(), handshake_totals(&l.metrics))),
            rt.sites
                .iter()
                .map(|s| (s.metrics.name.as_str(), request_total(&s.metrics))),
            keep,
        )
    }
}

fn push(ring: &mut VecDeque<Sample>, sample: Sample) {
    if ring.len() == KEPT {
        ring.pop_front();
    }
    ring.push_back(sample);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO: [u64; 9] = [0; 9];

    fn ok(n: u64) -> [u64; 9] {
        let mut h = NO;
        h[Handshake::Ok as usize] = n;
        h
    }

    #[test]
    fn the_ring_keeps_the_last_ninety_samples() {
        let mut ring = VecDeque::new();
        let mut previous = Previous::default();
        for i in 0..(KEPT as u64 + 15) {
            let s = previous.sample(
                i as i64,
                i as f64 * 10.0,
                [("https", ok(i * 2))].into_iter(),
                [("a", i * 3)].into_iter(),
                true,
            );
            push(&mut ring, s);
        }
        assert_eq!(ring.len(), KEPT);
        assert_eq!(
            ring.front().map(|s| s.at),
            Some(15),
            "the oldest were dropped"
        );
        assert_eq!(ring.back().map(|s| s.at), Some(KEPT as i64 + 14));
        // Each sample is the growth over its interval, not the total.
        let last = ring.back().expect("a sample");
        assert_eq!(last.listeners[0].handshakes, ok(2));
        assert_eq!(last.sites, vec![("a".to_string(), 3)]);
        assert_eq!(last.seconds, 10.0);
    }

    #[test]
    fn a_site_a_reload_dropped_is_forgotten_and_one_that_returns_starts_afresh() {
        let mut p = Previous::default();
        p.sample(
            0,
            0.0,
            [].into_iter(),
            [("a", 5), ("b", 7)].into_iter(),
            true,
        );
        assert_eq!(p.sites.len(), 2);
        // A reload removed b: it is no longer sampled, and its totals are forgotten.
        let s = p.sample(1, 10.0, [].into_iter(), [("a", 9)].into_iter(), true);
        assert_eq!(s.sites, vec![("a".to_string(), 4)]);
        assert_eq!(p.sites.len(), 1, "b's totals were dropped");
        // b comes back with new counters (kept by name: removed sites lose theirs).
        let s = p.sample(
            2,
            20.0,
            [].into_iter(),
            [("a", 9), ("b", 2)].into_iter(),
            true,
        );
        assert_eq!(s.sites, vec![("b".to_string(), 2)], "a served nothing");
        // Counters replaced under the same name (smaller than before) count from zero.
        let s = p.sample(
            3,
            30.0,
            [].into_iter(),
            [("a", 1), ("b", 2)].into_iter(),
            true,
        );
        assert_eq!(s.sites, vec![("a".to_string(), 1)]);
    }

    #[test]
    fn a_sample_names_the_top_twenty_sites_and_sums_the_rest() {
        let mut p = Previous::default();
        let names: Vec<String> = (0..100).map(|i| format!("s{i:03}")).collect();
        p.sample(
            0,
            0.0,
            [].into_iter(),
            names.iter().map(|n| (n.as_str(), 0)),
            true,
        );
        // Site i served i requests: s099 most, s000 none.
        let s = p.sample(
            1,
            10.0,
            [].into_iter(),
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i as u64)),
            true,
        );
        assert_eq!(s.sites.len(), TOP_SITES);
        assert_eq!(s.sites[0], ("s099".to_string(), 99));
        assert_eq!(s.sites[TOP_SITES - 1], ("s080".to_string(), 80));
        assert!(s.sites.windows(2).all(|w| w[0].1 >= w[1].1), "most first");
        // s001..s079 are the other bucket; s000 served nothing and is not counted.
        assert_eq!(s.other_sites, 79);
        assert_eq!(s.other_requests, (1..80).sum::<u64>());
    }

    #[test]
    fn a_look_at_the_interval_so_far_changes_nothing() {
        let mut p = Previous::default();
        p.sample(
            0,
            0.0,
            [("l", ok(1))].into_iter(),
            [("a", 1)].into_iter(),
            true,
        );
        let look = p.sample(
            5,
            5.0,
            [("l", ok(4))].into_iter(),
            [("a", 3)].into_iter(),
            false,
        );
        assert_eq!(look.listeners[0].handshakes, ok(3));
        assert_eq!(look.sites, vec![("a".to_string(), 2)]);
        assert_eq!(look.seconds, 5.0);
        let next = p.sample(
            10,
            10.0,
            [("l", ok(6))].into_iter(),
            [("a", 3)].into_iter(),
            true,
        );
        assert_eq!(
            next.listeners[0].handshakes,
            ok(5),
            "measured from the last kept sample"
        );
        assert_eq!(next.sites, vec![("a".to_string(), 2)]);
        assert_eq!(next.seconds, 10.0);
    }
}
