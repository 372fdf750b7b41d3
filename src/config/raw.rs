//! The configuration file exactly as written: serde structs, no meaning attached yet.
//!
//! Unknown keys are captured (not rejected by serde) so that every one of them can be reported
//! with its path in a single run; `config::check` turns these into typed values.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Keys nobody asked for, kept to be reported.
pub(crate) type Unknown = BTreeMap<String, toml::Value>;

#[derive(Debug, Deserialize, Default)]
pub(crate) struct RawConfig {
    pub(crate) state_dir: Option<String>,
    #[serde(default)]
    pub(crate) listener: Vec<RawListener>,
    #[serde(default)]
    pub(crate) certificate: Vec<RawPoolCertificate>,
    #[serde(default)]
    pub(crate) site: Vec<RawSite>,
    pub(crate) limits: Option<RawLimits>,
    pub(crate) acme: Option<RawAcme>,
    pub(crate) metrics: Option<RawMetrics>,
    pub(crate) admin: Option<RawAdmin>,
    pub(crate) log: Option<RawLog>,
    pub(crate) cluster: Option<RawCluster>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawCluster {
    pub(crate) etcd: Option<Vec<String>>,
    pub(crate) prefix: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) tls: Option<RawClusterTls>,
    pub(crate) config: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawClusterTls {
    pub(crate) ca: Option<String>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawLog {
    pub(crate) format: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawMetrics {
    pub(crate) per_site_histograms: Option<bool>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawAdmin {
    pub(crate) enabled: Option<bool>,
    pub(crate) address: Option<String>,
    pub(crate) token_file: Option<String>,
    pub(crate) tls: Option<RawCertificate>,
    pub(crate) hosts: Option<Vec<String>>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawAcme {
    pub(crate) directory: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) ca: Option<String>,
    pub(crate) challenges: Option<Vec<String>>,
    pub(crate) eab_kid: Option<String>,
    pub(crate) eab_hmac_key: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawListener {
    pub(crate) name: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) no_sni: Option<String>,
    pub(crate) unknown_sni: Option<String>,
    pub(crate) alpn: Option<Vec<String>>,
    pub(crate) max_connections: Option<i64>,
    pub(crate) default_passthrough: Option<RawPassthrough>,
    pub(crate) proxy_protocol_from: Option<Vec<String>>,
    pub(crate) http3: Option<bool>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawPassthrough {
    pub(crate) backend: Option<String>,
    pub(crate) proxy_protocol: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

/// A `[[certificate]]` table: a pair of files, or a directory of pairs.
#[derive(Debug, Deserialize)]
pub(crate) struct RawPoolCertificate {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) dir: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawCertificate {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "tls is \"internal\", \"acme\", a table { cert = ..., key = ... } or { acme = true, on_demand = { ... } }"
)]
pub(crate) enum RawTls {
    Mode(String),
    Table(Box<RawTlsTable>),
}

/// A site's `tls` table: a pinned pair (`cert`, `key`), or on a catch-all site
/// `{ acme = true, on_demand = { ... } }`.
#[derive(Debug, Deserialize)]
pub(crate) struct RawTlsTable {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) acme: Option<bool>,
    pub(crate) on_demand: Option<RawOnDemand>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

/// `on_demand = { permission, wait, allowed_ttl, refused_ttl, cache_entries, max_orders,
/// orders_per_hour }`.
#[derive(Debug, Deserialize)]
pub(crate) struct RawOnDemand {
    pub(crate) permission: Option<String>,
    pub(crate) wait: Option<String>,
    pub(crate) allowed_ttl: Option<String>,
    pub(crate) refused_ttl: Option<String>,
    pub(crate) cache_entries: Option<i64>,
    pub(crate) max_orders: Option<i64>,
    pub(crate) orders_per_hour: Option<i64>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawSite {
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    pub(crate) listeners: Option<Vec<String>>,
    pub(crate) tls: Option<RawTls>,
    pub(crate) root: Option<String>,
    pub(crate) proxy: Option<RawProxy>,
    pub(crate) passthrough: Option<RawPassthrough>,
    pub(crate) redirect: Option<RawRedirect>,
    pub(crate) respond: Option<RawRespond>,
    pub(crate) client_auth: Option<RawClientAuth>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

/// A site's `client_auth = { ca, required, crl, subject_header }`.
#[derive(Debug, Deserialize)]
pub(crate) struct RawClientAuth {
    pub(crate) ca: Option<String>,
    pub(crate) required: Option<bool>,
    pub(crate) crl: Option<Vec<String>>,
    pub(crate) subject_header: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawProxy {
    pub(crate) upstreams: Option<Vec<String>>,
    pub(crate) ca: Option<String>,
    pub(crate) server_name: Option<String>,
    pub(crate) lb: Option<String>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) response_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) max_fails: Option<i64>,
    pub(crate) fail_timeout: Option<String>,
    pub(crate) health_check: Option<RawHealthCheck>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    pub(crate) host: Option<String>,
    pub(crate) max_body_bytes: Option<i64>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawHealthCheck {
    pub(crate) path: Option<String>,
    pub(crate) interval: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawRedirect {
    pub(crate) to: Option<String>,
    pub(crate) status: Option<i64>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawRespond {
    pub(crate) status: Option<i64>,
    pub(crate) body: Option<String>,
    pub(crate) content_type: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawLimits {
    pub(crate) handshake_timeout: Option<String>,
    pub(crate) header_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) drain_timeout: Option<String>,
    pub(crate) max_header_bytes: Option<i64>,
    pub(crate) max_headers: Option<i64>,
    pub(crate) max_connections: Option<i64>,
    pub(crate) certificate_cache: Option<i64>,
    pub(crate) max_concurrent_streams: Option<i64>,
    #[serde(flatten)]
    pub(crate) unknown: Unknown,
}
