//! TLS passthrough: relay a connection's raw bytes to a backend without terminating TLS,
//! replaying the ClientHello Portico already read, optionally after a PROXY protocol header.
//!
//! The backend presents its own certificate; Portico never sees the plaintext. A failed
//! backend closes this one connection and nothing else.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{Backend, ProxyProtocol};
use crate::proxy_protocol;

/// Why a relay ended badly.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect to backend {backend}: {source}")]
    Connect { backend: String, source: io::Error },
    #[error("backend {backend} did not accept the connection within {timeout:?}")]
    ConnectTimeout { backend: String, timeout: Duration },
    #[error("relaying to backend {backend}: {source}")]
    Relay { backend: String, source: io::Error },
}

/// What a finished relay moved.
#[derive(Debug, Clone, Copy)]
pub struct Relayed {
    pub to_backend: u64,
    pub to_client: u64,
}

/// Connects to `backend`, sends the PROXY header if configured (`client` is the real client,
/// `local` the address it connected to), replays `prefix`, then copies both ways until either
/// side closes.
pub async fn relay(
    mut downstream: TcpStream,
    prefix: &[u8],
    backend: &Backend,
    client: SocketAddr,
    local: SocketAddr,
    connect_timeout: Duration,
) -> Result<Relayed, RelayError> {
    let name = backend.to_string();
    let connect = TcpStream::connect((backend.host.as_str(), backend.port));
    let mut upstream = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Err(RelayError::Connect {
                backend: name,
                source,
            })
        }
        Err(_) => {
            return Err(RelayError::ConnectTimeout {
                backend: name,
                timeout: connect_timeout,
            })
        }
    };
    let _ = upstream.set_nodelay(true);
    let header = match backend.proxy_protocol {
        None => Vec::new(),
        Some(ProxyProtocol::V1) => proxy_protocol::encode_v1(client, local),
        Some(ProxyProtocol::V2) => proxy_protocol::encode_v2(client, local),
    };
    // One write for header and hello, so a backend reading the header sees the hello follow.
    let first = [header.as_slice(), prefix].concat();
    let relayed = async {
        upstream.write_all(&first).await?;
        tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await
    };
    match relayed.await {
        Ok((up, down)) => Ok(Relayed {
            to_backend: up + first.len() as u64,
            to_client: down,
        }),
        Err(source) => Err(RelayError::Relay {
            backend: name,
            source,
        }),
    }
}

/// Relays and writes one log line for the connection.
// The connection's own facts, each needed once; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    downstream: TcpStream,
    prefix: Vec<u8>,
    backend: &Backend,
    client: SocketAddr,
    local: SocketAddr,
    connect_timeout: Duration,
    sni: Option<&str>,
    counters: Option<&crate::metrics::SiteCounters>,
) {
    let started = Instant::now();
    let relayed = relay(downstream, &prefix, backend, client, local, connect_timeout).await;
    if let (Ok(r), Some(counters)) = (&relayed, counters) {
        counters.relayed(r.to_backend, r.to_client);
    }
    match relayed {
        // The JSON field names (docs/config.md, `[log]`): the client split as in the request
        // line, byte counts named for their direction, the duration in seconds.
        Ok(r) if crate::logging::json() => tracing::info!(
            target: "access",
            client_ip = %client.ip(),
            client_port = client.port(),
            sni,
            backend = %backend,
            bytes_to_backend = r.to_backend,
            bytes_to_client = r.to_client,
            duration = started.elapsed().as_secs_f64(),
            "passthrough"
        ),
        Ok(r) => tracing::info!(
            target: "access",
            %client,
            sni = sni.unwrap_or("-"),
            backend = %backend,
            to_backend = r.to_backend,
            to_client = r.to_client,
            duration_us = started.elapsed().as_micros() as u64,
            "passthrough"
        ),
        Err(e) => {
            tracing::warn!(%client, sni = sni.unwrap_or("-"), error = %e, "passthrough failed")
        }
    }
}
