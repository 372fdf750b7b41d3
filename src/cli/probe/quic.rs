//! `portico probe --http3`: the same probe over QUIC (RFC 9000) with ALPN `h3`, then one
//! `HEAD /` over HTTP/3 for the answer's status. The chain is recorded by the same verifier
//! as over TCP (`verify.rs`), the name judged by the same rule, and the report is the TCP
//! probe's, so every rendering and the verdict stay one.
//!
//! A server that does not answer QUIC sends nothing back (UDP has no refused connection,
//! and an ICMP port-unreachable is not reported by the QUIC stack): the probe says so after
//! its deadline instead of waiting for QUIC's idle timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::AlertDescription;

use super::{client_cert, verify, Alert, CertInfo, Host, Negotiated, Report, Sni, Target, Trust};
use super::{client_config, resolve, Verification};

/// The QUIC error code range that carries a TLS alert (RFC 9001 4.8: 0x100 + the alert).
const CRYPTO_ERROR: std::ops::RangeInclusive<u64> = 0x100..=0x1ff;

/// Probes `target` once over QUIC. Never fails: every problem is in the report.
pub async fn probe(target: &Target, sni: &Sni, trust: &Trust, timeout: Duration) -> Report {
    let (sni, name) = super::names(sni, target);
    let mut report = Report::new(target, &sni, &name);
    report.over_quic = true;
    let recorder = Arc::new(verify::Recorder::new(trust.webpki.clone()));
    // A client certificate is never asked for over QUIC by Portico; none is offered.
    let asked = Arc::new(client_cert::Asked::new(None));
    let config = client_config(recorder.clone(), asked, &["h3".to_string()], sni.is_some())
        .map_err(|e| e.to_string())
        .and_then(|c| {
            quinn::crypto::rustls::QuicClientConfig::try_from(c).map_err(|e| e.to_string())
        });
    let config = match config {
        Ok(c) => quinn::ClientConfig::new(Arc::new(c)),
        Err(e) => {
            report.error = Some(format!("cannot configure QUIC: {e}"));
            return report;
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let addr = match tokio::time::timeout_at(deadline, resolve(target)).await {
        Ok(Ok(addr)) => addr,
        Ok(Err(e)) => {
            report.error = Some(format!("cannot resolve {}: {e}", report.target));
            return report;
        }
        Err(_) => {
            report.error = Some(format!("no answer within {} s", timeout.as_secs()));
            return report;
        }
    };
    report.address = Some(addr);
    let local = match addr.ip() {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let endpoint = match quinn::Endpoint::client(local) {
        Ok(e) => e,
        Err(e) => {
            report.error = Some(format!("cannot open a UDP socket: {e}"));
            return report;
        }
    };
    // The name quinn hands rustls; with no SNI to send, rustls leaves it out of the hello.
    let server_name = match (&sni, &target.host) {
        (Some(n), _) | (None, Host::Name(n)) => n.as_str().to_string(),
        (None, Host::Ip(ip)) => ip.to_string(),
    };
    let authority = match &name {
        Some(n) => format!("{n}:{}", target.port),
        None => target.to_string(),
    };
    let outcome = tokio::time::timeout_at(deadline, async {
        let conn = endpoint
            .connect_with(config, addr, &server_name)
            .map_err(|e| Failed::Other(format!("cannot connect to {addr}: {e}")))?
            .await
            .map_err(Failed::from)?;
        let alpn = conn
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol)
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        let status = head(conn.clone(), &authority).await;
        conn.close(quinn::VarInt::from_u32(0x100), b"");
        Ok::<_, Failed>((alpn, status))
    })
    .await;
    match outcome {
        Err(_) => {
            report.error = Some(format!(
                "no QUIC answer from {addr} within {} s: nothing serves HTTP/3 (QUIC on UDP) there, or UDP is filtered",
                timeout.as_secs()
            ))
        }
        Ok(Err(Failed::Alert(a))) => report.alert = Some(Alert::new(a)),
        Ok(Err(Failed::Other(e))) => report.error = Some(e),
        Ok(Ok((alpn, status))) => {
            report.tls = Some(Negotiated {
                // QUIC carries TLS 1.3 only; quinn does not say which suite it agreed.
                version: "TLS 1.3 over QUIC".to_string(),
                cipher_suite: String::new(),
                alpn,
            });
            match status {
                Ok(s) => report.http3_status = Some(s),
                Err(e) => report.error = Some(format!("HTTP/3 HEAD / failed: {e}")),
            }
        }
    }
    // Whatever the handshake came to, the endpoint has nothing more to send.
    endpoint.close(quinn::VarInt::from_u32(0x100), b"");
    if let Some(seen) = recorder.take() {
        report.chain = seen.chain.iter().map(|c| CertInfo::from_der(c)).collect();
        report.verification = Some(match seen.verdict {
            Ok(()) => Verification::Verified,
            Err(e) => Verification::Failed(e.to_string()),
        });
        report.covers = match (&name, report.chain.first()) {
            (Some(n), Some(leaf)) => Some(leaf.covers(n)),
            _ => None,
        };
    }
    report
}

/// Why a QUIC handshake did not complete.
enum Failed {
    /// The server closed it with a TLS alert (a refused name, no certificate).
    Alert(AlertDescription),
    Other(String),
}

impl From<quinn::ConnectionError> for Failed {
    fn from(e: quinn::ConnectionError) -> Failed {
        if let quinn::ConnectionError::ConnectionClosed(close) = &e {
            let code = u64::from(close.error_code);
            if CRYPTO_ERROR.contains(&code) {
                if let Ok(alert) = u8::try_from(code - 0x100) {
                    return Failed::Alert(AlertDescription::from(alert));
                }
            }
        }
        Failed::Other(format!("QUIC handshake failed: {e}"))
    }
}

/// Sends `HEAD /` for `authority` over HTTP/3 and returns the answer's status.
async fn head(conn: quinn::Connection, authority: &str) -> Result<u16, String> {
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| e.to_string())?;
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let request = http::Request::head(format!("https://{authority}/"))
        .body(())
        .map_err(|e| e.to_string())?;
    let answer = async {
        let mut stream = send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        stream.finish().await.map_err(|e| e.to_string())?;
        let response = stream.recv_response().await.map_err(|e| e.to_string())?;
        // The body of a HEAD answer is empty; what arrives is read and dropped.
        while let Some(_chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {}
        Ok(response.status().as_u16())
    }
    .await;
    drive.abort();
    answer
}
