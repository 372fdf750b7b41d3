//! A site's `tls` table: a pinned pair `{ cert, key }`, or on the catch-all site
//! `{ acme = true, on_demand = { ... } }` (certificates ordered at a name's first
//! handshake, docs/config.md).

use super::*;
use crate::config::proxy::duration;
use crate::config::raw::{RawOnDemand, RawTlsTable};
use crate::config::OnDemand;

/// Defaults of `on_demand` (docs/config.md says why).
const WAIT: Duration = Duration::from_secs(5);
const ALLOWED_TTL: Duration = Duration::from_secs(3600);
const REFUSED_TTL: Duration = Duration::from_secs(600);
const CACHE_ENTRIES: usize = 100_000;
const MAX_ORDERS: usize = 4;
const ORDERS_PER_HOUR: usize = 100;
/// The permission look-up's own deadline, at most: a handshake never waits longer for it.
const MAX_WAIT: Duration = Duration::from_secs(60);

impl Checker<'_> {
    /// The tls table at `at`: its mode, and the on-demand settings when it has them.
    pub(super) fn tls_table(&mut self, at: &str, raw: RawTlsTable) -> (TlsMode, Option<OnDemand>) {
        unknown_keys(
            self.report,
            at,
            &raw.unknown,
            &["cert", "key", "acme", "on_demand"],
        );
        if raw.acme.is_none() && raw.on_demand.is_none() {
            let files = raw::RawCertificate {
                cert: raw.cert,
                key: raw.key,
                unknown: Default::default(),
            };
            let tls = self
                .cert_files(at, files)
                .map(TlsMode::Pinned)
                .unwrap_or(TlsMode::Pool);
            return (tls, None);
        }
        if raw.cert.is_some() || raw.key.is_some() {
            self.report.error(
                at,
                "a tls table pins cert and key, or orders with acme and on_demand; not both",
                Some("keep { cert = \"...\", key = \"...\" } or { acme = true, on_demand = { permission = \"http://...\" } }".to_string()),
            );
        }
        match (raw.acme, raw.on_demand) {
            (Some(true), Some(od)) => {
                // The certificates go to the pool, where the catch-all site takes them.
                let od = self.on_demand(&format!("{at}.on_demand"), od);
                (TlsMode::Pool, od)
            }
            (Some(true), None) => {
                self.report.error(
                    format!("{at}.acme"),
                    "acme = true in a tls table needs on_demand = { permission = \"http://...\" }",
                    Some("write tls = \"acme\" for a site's own names, or add on_demand for the catch-all site".to_string()),
                );
                (TlsMode::Pool, None)
            }
            (_, _) => {
                self.report.error(
                    format!("{at}.acme"),
                    "on_demand orders certificates with ACME: it needs acme = true",
                    Some("write tls = { acme = true, on_demand = { ... } }".to_string()),
                );
                (TlsMode::Pool, None)
            }
        }
    }

    fn on_demand(&mut self, at: &str, raw: RawOnDemand) -> Option<OnDemand> {
        unknown_keys(
            self.report,
            at,
            &raw.unknown,
            &[
                "permission",
                "wait",
                "allowed_ttl",
                "refused_ttl",
                "cache_entries",
                "max_orders",
                "orders_per_hour",
            ],
        );
        let permission = match raw.permission {
            None => {
                self.report.error(
                    format!("{at}.permission"),
                    "permission is missing: without it any name would get a certificate",
                    Some("give the URL of your service that answers 200 for names to serve: permission = \"http://127.0.0.1:3000/allowed\"".to_string()),
                );
                None
            }
            Some(url) => match url.parse::<http::Uri>() {
                Ok(u)
                    if u.scheme_str() == Some("http")
                        && u.host().is_some()
                        && u.query().is_none() =>
                {
                    Some(url)
                }
                _ => {
                    self.report.error(
                        format!("{at}.permission"),
                        format!("{url:?} is not an http:// URL without a query"),
                        Some("write \"http://HOST:PORT/PATH\"; Portico adds ?domain=NAME (https endpoints are not supported: run it on loopback)".to_string()),
                    );
                    None
                }
            },
        };
        let wait = duration(
            self.report,
            &format!("{at}.wait"),
            raw.wait.as_deref(),
            WAIT,
        );
        if wait > MAX_WAIT {
            self.report.error(
                format!("{at}.wait"),
                format!(
                    "a handshake may wait at most {}s for its certificate",
                    MAX_WAIT.as_secs()
                ),
                Some("clients give up sooner anyway; the order goes on after the wait".to_string()),
            );
        }
        let allowed_ttl = duration(
            self.report,
            &format!("{at}.allowed_ttl"),
            raw.allowed_ttl.as_deref(),
            ALLOWED_TTL,
        );
        let refused_ttl = duration(
            self.report,
            &format!("{at}.refused_ttl"),
            raw.refused_ttl.as_deref(),
            REFUSED_TTL,
        );
        let mut count = |key: &str, value: Option<i64>, default: usize| match value {
            None => default,
            Some(n) if (1..=10_000_000).contains(&n) => n as usize,
            Some(n) => {
                self.report.error(
                    format!("{at}.{key}"),
                    format!("{n} is not a count between 1 and 10000000"),
                    Some(format!("the default is {default}")),
                );
                default
            }
        };
        let cache_entries = count("cache_entries", raw.cache_entries, CACHE_ENTRIES);
        let max_orders = count("max_orders", raw.max_orders, MAX_ORDERS);
        let orders_per_hour = count("orders_per_hour", raw.orders_per_hour, ORDERS_PER_HOUR);
        Some(OnDemand {
            permission: permission?,
            wait,
            allowed_ttl,
            refused_ttl,
            cache_entries,
            max_orders,
            orders_per_hour,
        })
    }
}
