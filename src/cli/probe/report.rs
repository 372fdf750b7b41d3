//! What a probe found: the chain as shown to the user, what was negotiated, the alert, and
//! the one-word verdict. Plain data; judging names is [`HostName::covers`]'s job alone.

use std::fmt;
use std::net::SocketAddr;

use rustls::AlertDescription;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::names::HostName;

/// One certificate of the chain presented, as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// SAN DNS names as written in the certificate.
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the DER, colon-separated upper-case hex.
    pub sha256: String,
}

impl CertInfo {
    /// Describes one DER certificate; a certificate that does not parse is still listed.
    pub fn from_der(der: &[u8]) -> CertInfo {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let sha256 = digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        match X509Certificate::from_der(der) {
            Ok((_, x)) => CertInfo {
                subject: x.subject().to_string(),
                issuer: x.issuer().to_string(),
                dns_names: x
                    .subject_alternative_name()
                    .ok()
                    .flatten()
                    .map(|san| {
                        san.value
                            .general_names
                            .iter()
                            .filter_map(|g| match g {
                                GeneralName::DNSName(d) => Some(d.to_string()),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                not_before: x.validity().not_before.timestamp(),
                not_after: x.validity().not_after.timestamp(),
                sha256,
            },
            Err(e) => CertInfo {
                subject: format!("(cannot parse the certificate: {e})"),
                issuer: String::new(),
                dns_names: Vec::new(),
                not_before: 0,
                not_after: 0,
                sha256,
            },
        }
    }

    /// Whether this certificate's SAN DNS names cover `name`, by the server's own rule.
    pub fn covers(&self, name: &HostName) -> bool {
        self.dns_names
            .iter()
            .filter_map(|d| HostName::parse(d).ok())
            .any(|d| d.covers(name))
    }
}

/// What was negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// "TLS 1.3" or "TLS 1.2".
    pub version: String,
    /// The IANA-style name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    pub alpn: Option<String>,
}

/// A TLS alert received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The RFC 8446 name, e.g. `unrecognized_name`.
    pub name: String,
    pub code: u8,
}

impl Alert {
    pub(super) fn new(a: AlertDescription) -> Alert {
        let code = u8::from(a);
        Alert {
            name: alert_name(code).to_string(),
            code,
        }
    }
}

/// The alert's name as the TLS RFCs spell it (rustls' `Debug` names differ, as in
/// `UnrecognisedName`).
fn alert_name(code: u8) -> &'static str {
    match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        121 => "ech_required",
        _ => "unknown",
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.code)
    }
}

/// Whether the chain verified to the trust anchors. The name is judged separately
/// ([`Report::covers`]), so a chain for another name still verifies here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified,
    Failed(String),
}

/// Everything one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// HOST:PORT as given.
    pub target: String,
    /// The address connected to; None when HOST did not resolve.
    pub address: Option<SocketAddr>,
    /// The SNI sent.
    pub sni: Option<String>,
    /// The name the leaf must cover: the SNI, else HOST when it is a name.
    pub name: Option<String>,
    pub tls: Option<Negotiated>,
    /// Leaf first, as presented; empty if the server presented none.
    pub chain: Vec<CertInfo>,
    /// None when there is no name to check or no chain.
    pub covers: Option<bool>,
    /// None when no chain was presented.
    pub verification: Option<Verification>,
    pub alert: Option<Alert>,
    /// A failure other than an alert: resolution, connection, timeout, protocol error.
    pub error: Option<String>,
    /// Set when the server asked for a client certificate.
    pub client_auth: Option<ClientAuthSeen>,
    /// Probed over QUIC (`--http3`) rather than TCP.
    pub over_quic: bool,
    /// Over QUIC, the status HTTP/3 answered `HEAD /` with.
    pub http3_status: Option<u16>,
}

/// What a server that asked for a client certificate was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthSeen {
    /// The CA names the server listed as acceptable (RFC 8446 4.2.4), as distinguished names.
    pub acceptable: Vec<String>,
    /// The subject of the certificate presented (`--cert`); None: none was sent.
    pub sent: Option<String>,
}

/// The one-word outcome of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Mismatch,
    NotVerified,
    Refused(Alert),
    Error,
}

impl Verdict {
    /// The stable word used in the table and in JSON.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Mismatch => "mismatch",
            Verdict::NotVerified => "not_verified",
            Verdict::Refused(_) => "refused",
            Verdict::Error => "error",
        }
    }
}

impl Report {
    /// A report of nothing found yet, for `target` with this SNI and name to check.
    pub fn new(target: &super::Target, sni: &Option<HostName>, name: &Option<HostName>) -> Report {
        Report {
            target: target.to_string(),
            address: None,
            sni: sni.as_ref().map(|n| n.as_str().to_string()),
            name: name.as_ref().map(|n| n.as_str().to_string()),
            tls: None,
            chain: Vec::new(),
            covers: None,
            verification: None,
            alert: None,
            error: None,
            client_auth: None,
            over_quic: false,
            http3_status: None,
        }
    }

    /// Refusal, then other errors, then a name mismatch, then a verification failure.
    pub fn verdict(&self) -> Verdict {
        if let Some(a) = &self.alert {
            return Verdict::Refused(a.clone());
        }
        if self.error.is_some() || self.tls.is_none() {
            return Verdict::Error;
        }
        if self.covers == Some(false) {
            return Verdict::Mismatch;
        }
        match self.verification {
            Some(Verification::Verified) => Verdict::Ok,
            _ => Verdict::NotVerified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_use_the_rfc_names() {
        let a = Alert::new(AlertDescription::UnrecognisedName);
        assert_eq!(a.to_string(), "unrecognized_name (112)");
        assert_eq!(
            Alert::new(AlertDescription::HandshakeFailure).name,
            "handshake_failure"
        );
        assert_eq!(Alert::new(AlertDescription::Unknown(200)).name, "unknown");
    }
}
