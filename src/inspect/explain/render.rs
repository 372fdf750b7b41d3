//! Wording an [`Explanation`]: the numbered steps for people, and the JSON document
//! (schema in docs/cli.md). Nothing here decides anything; it only renders.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use super::*;

fn sni_kind(name: &Sni) -> &'static str {
    match name {
        Sni::Name(_) => "name",
        Sni::Absent => "absent",
        Sni::IpLiteral => "ip_literal",
        Sni::Wildcard => "wildcard",
        Sni::Invalid(_) => "invalid",
    }
}

fn outcome_key(o: &Outcome) -> &'static str {
    match o {
        Outcome::NoListener => "no_listener",
        Outcome::Refused(_) => "refused",
        Outcome::HandshakeFails => "handshake_fails",
        Outcome::Served { .. } => "served",
        Outcome::Misdirected => "misdirected",
        Outcome::Redirect { .. } => "redirect",
        Outcome::NotFound => "not_found",
        Outcome::BadRequest => "bad_request",
        Outcome::Passthrough { .. } => "passthrough",
    }
}

fn match_key(m: Match) -> &'static str {
    match m {
        Match::Exact => "exact",
        Match::Wildcard => "wildcard",
        Match::NoSni => "no_sni",
        Match::UnknownFallback => "unknown_sni_fallback",
        Match::CatchAll => "catch_all",
    }
}

fn short(cert: &Cert) -> String {
    format!(
        "{} {} (SHA-256 {})",
        cert.key_type,
        cert.subject,
        short_fingerprint(cert)
    )
}

/// The step-by-step text.
pub fn human(ex: &Explanation<'_>, opts: &Options, now: i64) -> String {
    let mut o = String::new();
    let client = if opts.rsa_only {
        "an RSA-only client"
    } else {
        "a client offering ECDSA"
    };
    let sni = ex
        .sni
        .as_deref()
        .map_or("no SNI".to_string(), |s| format!("SNI {s}"));
    let _ = writeln!(
        o,
        "explain {}: {client}, {sni}, connecting to {}",
        ex.host, ex.local
    );
    let para = |text: &str| fill("  ", text, 3);
    let _ = writeln!(o, "\n1. Name\n{}", para(&ex.name_why));
    let local = format!("local address {}: {}", ex.local, ex.local_why);
    let _ = writeln!(o, "\n2. Listener\n{}", para(&local));
    let _ = writeln!(o, "{}", para(&ex.listener_why));
    let binding = match ex.listener {
        Some(_) => ex.binding_why.as_str(),
        None => "none: no listener",
    };
    let _ = writeln!(o, "\n3. Binding\n{}", para(binding));
    let none = match &ex.resolved {
        Some(Ok(_)) => None,
        Some(Err(_)) => Some("none: the handshake is refused before a certificate is chosen"),
        None if ex.listener.is_some() => Some("none: plain HTTP"),
        None => Some("none: no listener"),
    };
    if let Some(none) = none {
        let _ = writeln!(o, "\n4. Certificate\n{}", para(none));
    }
    if matches!(ex.resolved, Some(Ok(_))) {
        let _ = writeln!(o, "\n4. Certificate\n{}", para(&ex.certs_why));
        for (i, c) in ex.candidates.iter().enumerate() {
            let m = if c.matched == How::Exact {
                "exact"
            } else {
                "wildcard"
            };
            let head = format!("candidate {} ({m}): {}", i + 1, c.why);
            let _ = writeln!(o, "{}", fill("  ", &head, 5));
            for line in cert_lines(&c.cert, now, 5) {
                let _ = writeln!(o, "{line}");
            }
            let _ = writeln!(o, "            file: {}", c.cert.cert_file.display());
            // What the runtime asked holds: with --live, the server's certificate cache.
            if !c.cert.held().is_held() {
                let _ = writeln!(
                    o,
                    "            not in memory: its files are read at its next handshake"
                );
            }
        }
        if !ex.internal_pending {
            let mark = |this: bool| if this { "  <- this client" } else { "" };
            let modern = ex.for_modern.as_deref().map_or("none".to_string(), short);
            let _ = writeln!(
                o,
                "   a client offering ECDSA gets: {modern}{}",
                mark(!opts.rsa_only)
            );
            let rsa = match ex.for_rsa_only.as_deref() {
                Some(_) if ex.rsa_only_fails => {
                    "no usable certificate: the handshake fails".to_string()
                }
                Some(c) => short(c),
                None => "none".to_string(),
            };
            let _ = writeln!(
                o,
                "   an RSA-only client gets:      {rsa}{}",
                mark(opts.rsa_only)
            );
        }
    }
    if !ex.client_auth_why.is_empty() {
        let _ = writeln!(o, "{}", para(&ex.client_auth_why));
    }
    let status = ex.status.map_or(String::new(), |s| {
        let reason = http::StatusCode::from_u16(s)
            .ok()
            .and_then(|c| c.canonical_reason());
        format!("{s} {}: ", reason.unwrap_or(""))
    });
    let request = format!("{status}{}", ex.outcome_why);
    let _ = writeln!(o, "\n5. Request with Host: {}\n{}", ex.host, para(&request));
    if !ex.http3_why.is_empty() {
        let _ = writeln!(o, "{}", para(&ex.http3_why));
    }
    o
}

/// The JSON document (schema in docs/cli.md).
pub fn json(rt: &Runtime, ex: &Explanation<'_>, opts: &Options, config: &Path, now: i64) -> Json {
    let cert = |c: Option<&Arc<Cert>>| c.map_or(Json::Null, |c| cert_json(c, now));
    let listener = ex.listener.map_or(Json::Null, |li| {
        let l = &rt.listeners[li].config;
        Json::Obj(vec![
            ("name", Json::str(&l.name)),
            ("address", Json::str(l.address.to_string())),
            (
                "kind",
                Json::str(if l.kind == ListenerKind::Https {
                    "https"
                } else {
                    "http"
                }),
            ),
        ])
    });
    let binding = match &ex.resolved {
        None => Json::Null,
        Some(r) => {
            let (result, host, site, alert) = match r {
                Ok(r) => (
                    match_key(r.by),
                    Some(r.binding.host.as_str()),
                    rt.sites.get(r.binding.site).map(|s| s.name.as_str()),
                    Json::Null,
                ),
                Err(f) => (
                    "refused",
                    None,
                    None,
                    Json::Obj(vec![
                        ("alert", Json::str(alert_name(f))),
                        ("code", Json::Int(f.alert().into())),
                    ]),
                ),
            };
            Json::Obj(vec![
                ("result", Json::str(result)),
                ("host", Json::opt_str(host)),
                ("site", Json::opt_str(site)),
                ("alert", alert),
                ("why", Json::str(&ex.binding_why)),
            ])
        }
    };
    let certificates = if matches!(ex.resolved, Some(Ok(_))) {
        let candidates = ex
            .candidates
            .iter()
            .map(|c| {
                Json::Obj(vec![
                    (
                        "match",
                        Json::str(if c.matched == How::Exact {
                            "exact"
                        } else {
                            "wildcard"
                        }),
                    ),
                    ("chosen", Json::Bool(c.chosen)),
                    ("why", Json::str(&c.why)),
                    ("certificate", cert_json(&c.cert, now)),
                ])
            })
            .collect();
        Json::Obj(vec![
            ("how", Json::opt_str(ex.how.map(how_key))),
            ("internal_pending", Json::Bool(ex.internal_pending)),
            ("why", Json::str(&ex.certs_why)),
            ("candidates", Json::Arr(candidates)),
            ("for_ecdsa_client", cert(ex.for_modern.as_ref())),
            ("for_rsa_only_client", cert(ex.for_rsa_only.as_ref())),
            ("rsa_only_client_fails", Json::Bool(ex.rsa_only_fails)),
            (
                "client_auth",
                client_auth_json(
                    rt,
                    ex.client_auth,
                    ex.resolved
                        .as_ref()
                        .and_then(|r| r.as_ref().ok())
                        .map(|r| r.binding.site),
                ),
            ),
            ("client_auth_why", Json::str(&ex.client_auth_why)),
        ])
    } else {
        Json::Null
    };
    let site = match &ex.outcome {
        Outcome::Served { site } | Outcome::Redirect { site, .. } => {
            rt.sites.get(*site).map(|s| s.name.as_str())
        }
        _ => None,
    };
    Json::Obj(vec![
        ("version", Json::Int(1)),
        ("config", Json::str(config.display().to_string())),
        ("host", Json::str(&ex.host)),
        (
            "name",
            Json::Obj(vec![
                ("kind", Json::str(sni_kind(&ex.name))),
                (
                    "normalized",
                    Json::opt_str(match &ex.name {
                        Sni::Name(n) => Some(n.as_str()),
                        _ => None,
                    }),
                ),
                ("why", Json::str(&ex.name_why)),
            ]),
        ),
        (
            "client",
            Json::Obj(vec![
                ("sni", Json::opt_str(ex.sni.as_deref())),
                ("rsa_only", Json::Bool(opts.rsa_only)),
            ]),
        ),
        ("local", Json::str(ex.local.to_string())),
        ("listener", listener),
        ("listener_why", Json::str(&ex.listener_why)),
        ("binding", binding),
        ("certificates", certificates),
        ("presented", cert(ex.presented.as_ref())),
        (
            "request",
            Json::Obj(vec![
                ("outcome", Json::str(outcome_key(&ex.outcome))),
                (
                    "status",
                    ex.status.map_or(Json::Null, |s| Json::Int(s.into())),
                ),
                ("site", Json::opt_str(site)),
                ("why", Json::str(&ex.outcome_why)),
            ]),
        ),
        (
            "http3",
            match ex.http3_why.is_empty() {
                true => Json::Null,
                false => Json::str(&ex.http3_why),
            },
        ),
    ])
}
