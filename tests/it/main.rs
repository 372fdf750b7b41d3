//! Portico's integration tests: real TLS over loopback, certificates made at test time.

mod support;

mod access_log;
mod acme;
mod admin;
mod admin_certificates;
mod bad_input;
mod blocking_pool;
mod cluster_acme;
mod cluster_certs;
mod cluster_store;
mod cluster_tickets;
mod config_file;
mod dashboard;
mod hardening;
mod http;
mod inspect;
mod lifecycle;
mod metrics;
mod package;
mod passthrough;
mod probe;
mod prometheus;
mod proxy;
mod proxy_balance;
mod proxy_h2;
mod quickstart;
mod reload;
mod scale;
mod setup;
mod sni;
mod systemd;
