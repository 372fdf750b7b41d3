//! Choosing an upstream: round robin or least connections, skipping upstreams that are down
//! (passive health: `max_fails` failures within `fail_timeout`; active health checks).
//!
//! Everything here is atomics: the request path takes no lock to choose. Races between
//! requests only blur the counts a little, which the policies tolerate.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};

use crate::config::{LoadBalance, Upstream};

/// One upstream and what is known about it.
pub(super) struct Peer {
    pub(super) upstream: Upstream,
    pub(super) scheme: Scheme,
    pub(super) authority: Authority,
    /// Requests in flight, response bodies included (for least_conn).
    active: AtomicUsize,
    fails: AtomicU32,
    /// When the current failure window started, in ms on the balancer's clock.
    window_start: AtomicU64,
    /// Skipped until then (ms on the balancer's clock); 0 when up.
    down_until: AtomicU64,
    /// The last active health check's verdict; true until a check says otherwise.
    healthy: AtomicBool,
}

/// Counts a request as in flight on a peer until dropped.
pub(super) struct InFlight(Arc<Peer>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) struct Balancer {
    pub(super) peers: Vec<Arc<Peer>>,
    lb: LoadBalance,
    cursor: AtomicUsize,
    max_fails: u32,
    fail_timeout_ms: u64,
    clock: Instant,
}

/// Why an upstream authority cannot be made (only for hosts the config check let through,
/// so this is a bug if it happens).
#[derive(Debug, thiserror::Error)]
#[error("{upstream} does not make a URI authority: {source}")]
pub struct AuthorityError {
    upstream: String,
    source: http::uri::InvalidUri,
}

impl Balancer {
    pub(super) fn new(
        upstreams: &[Upstream],
        lb: LoadBalance,
        max_fails: u32,
        fail_timeout: Duration,
    ) -> Result<Balancer, AuthorityError> {
        let peers = upstreams
            .iter()
            .map(|u| {
                let authority =
                    Authority::try_from(u.authority()).map_err(|source| AuthorityError {
                        upstream: u.to_string(),
                        source,
                    })?;
                Ok(Arc::new(Peer {
                    upstream: u.clone(),
                    scheme: match u.scheme {
                        crate::config::Scheme::Http => Scheme::HTTP,
                        crate::config::Scheme::Https => Scheme::HTTPS,
                    },
                    authority,
                    active: AtomicUsize::new(0),
                    fails: AtomicU32::new(0),
                    window_start: AtomicU64::new(0),
                    down_until: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                }))
            })
            .collect::<Result<_, _>>()?;
        Ok(Balancer {
            peers,
            lb,
            cursor: AtomicUsize::new(0),
            max_fails,
            fail_timeout_ms: u64::try_from(fail_timeout.as_millis()).unwrap_or(u64::MAX),
            clock: Instant::now(),
        })
    }

    /// Milliseconds since the balancer was made, plus one so that 0 can mean "never".
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Whether peer `i` is chosen for requests now.
    pub(super) fn is_up(&self, i: usize) -> bool {
        self.peers.get(i).is_some_and(|p| self.up(p, self.now_ms()))
    }

    fn up(&self, p: &Peer, now: u64) -> bool {
        p.healthy.load(Ordering::Relaxed) && p.down_until.load(Ordering::Relaxed) <= now
    }

    /// The next peer to try, other than those in `tried`. Peers that are down are skipped
    /// while any other is up; when every untried peer is down they are tried anyway, since
    /// refusing without trying would turn a blip into an outage for `fail_timeout`.
    pub(super) fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.peers.len();
        if n == 0 || tried.len() >= n {
            return None;
        }
        let now = self.now_ms();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let order = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !tried.contains(i));
        let choose = |only_up: bool| -> Option<usize> {
            let mut candidates = order
                .clone()
                .filter(|&i| !only_up || self.up(&self.peers[i], now));
            match self.lb {
                LoadBalance::RoundRobin => candidates.next(),
                LoadBalance::LeastConn => {
                    candidates.min_by_key(|&i| self.peers[i].active.load(Ordering::Relaxed))
                }
            }
        };
        choose(true).or_else(|| choose(false))
    }

    pub(super) fn start(&self, i: usize) -> InFlight {
        let peer = self.peers[i].clone();
        peer.active.fetch_add(1, Ordering::Relaxed);
        InFlight(peer)
    }

    /// Counts a failure; at `max_fails` within `fail_timeout` the peer is down for
    /// `fail_timeout`.
    pub(super) fn failed(&self, i: usize) {
        if self.max_fails == 0 {
            return;
        }
        let p = &self.peers[i];
        let now = self.now_ms();
        let window = p.window_start.load(Ordering::Relaxed);
        let fails = if now.saturating_sub(window) > self.fail_timeout_ms {
            p.window_start.store(now, Ordering::Relaxed);
            p.fails.store(1, Ordering::Relaxed);
            1
        } else {
            p.fails.fetch_add(1, Ordering::Relaxed) + 1
        };
        if fails >= self.max_fails {
            p.fails.store(0, Ordering::Relaxed);
            p.window_start.store(0, Ordering::Relaxed);
            p.down_until
                .store(now.saturating_add(self.fail_timeout_ms), Ordering::Relaxed);
            tracing::warn!(
                upstream = %p.upstream,
                fails,
                skipped_for_ms = self.fail_timeout_ms,
                "upstream marked down after repeated failures"
            );
        }
    }

    pub(super) fn set_healthy(&self, i: usize, healthy: bool) {
        let p = &self.peers[i];
        if p.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!(upstream = %p.upstream, "upstream passes its health check again");
            } else {
                tracing::warn!(upstream = %p.upstream, "upstream fails its health check");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(n: u16, lb: LoadBalance, max_fails: u32) -> Balancer {
        let ups: Vec<Upstream> = (0..n)
            .map(|i| Upstream {
                scheme: crate::config::Scheme::Http,
                host: "127.0.0.1".to_string(),
                port: 1000 + i,
            })
            .collect();
        Balancer::new(&ups, lb, max_fails, Duration::from_secs(60)).expect("balancer")
    }

    #[test]
    fn round_robin_takes_turns_and_skips_tried() {
        let b = balancer(3, LoadBalance::RoundRobin, 3);
        let picks: Vec<_> = (0..6).map(|_| b.pick(&[]).expect("pick")).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(b.pick(&[0, 1, 2]), None);
        let p = b.pick(&[0]).expect("pick");
        assert_ne!(p, 0);
    }

    #[test]
    fn a_peer_failing_max_fails_times_is_skipped_while_others_are_up() {
        let b = balancer(2, LoadBalance::RoundRobin, 2);
        b.failed(0);
        assert!(
            (0..4).any(|_| b.pick(&[]) == Some(0)),
            "one failure is not enough"
        );
        b.failed(0);
        assert!((0..4).all(|_| b.pick(&[]) == Some(1)));
        // Every untried peer down: tried anyway.
        assert_eq!(b.pick(&[1]), Some(0));
    }

    #[test]
    fn least_conn_prefers_the_idle_peer() {
        let b = balancer(2, LoadBalance::LeastConn, 3);
        let busy = b.start(0);
        assert!((0..4).all(|_| b.pick(&[]) == Some(1)));
        drop(busy);
        assert!((0..4).any(|_| b.pick(&[]) == Some(0)));
    }

    #[test]
    fn unhealthy_peers_are_skipped() {
        let b = balancer(2, LoadBalance::RoundRobin, 3);
        b.set_healthy(1, false);
        assert!((0..4).all(|_| b.pick(&[]) == Some(0)));
    }
}
