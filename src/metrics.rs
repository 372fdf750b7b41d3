//! Counters and histograms of the running server, and their rendering in the Prometheus
//! text format (for `GET /metrics` on the admin listener).
//!
//! Being written (issue 13): this first version renders only what the process knows
//! without the request path.

use std::time::Instant;

use crate::runtime::Runtime;

/// What outlives a runtime: the process's metrics. One per process, in `Shared`.
pub struct Metrics {
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
        }
    }
}

impl Metrics {
    /// Every metric, in the Prometheus text exposition format, for the runtime now serving.
    pub fn render(&self, rt: &Runtime) -> String {
        format!(
            "# HELP portico_uptime_seconds Seconds since the process started.\n# TYPE portico_uptime_seconds gauge\nportico_uptime_seconds {}\n# HELP portico_sites Sites in the configuration being served.\n# TYPE portico_sites gauge\nportico_sites {}\n",
            self.started.elapsed().as_secs_f64(),
            rt.sites.len()
        )
    }
}
