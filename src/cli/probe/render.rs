//! The probe's output: the human report for one name, the table for `--names`, and the JSON
//! document (schema in docs/probe.md). Rendering only formats a [`Report`]; it judges nothing.

use std::fmt::Write;

use super::{CertInfo, Report, Target, Trust, TrustSource, Verdict, Verification};
use crate::inspect::json::Json;
use crate::runtime::format_time;

/// How a verdict reads in text: `ok`, `mismatch`, `not verified`, `refused(ALERT)`, `error`.
pub fn label(v: &Verdict) -> String {
    match v {
        Verdict::Refused(a) => format!("refused({})", a.name),
        Verdict::NotVerified => "not verified".to_string(),
        v => v.word().to_string(),
    }
}

fn trust_text(trust: &Trust) -> String {
    let n = trust.certificates;
    let s = if n == 1 { "" } else { "s" };
    match &trust.source {
        TrustSource::CaFile(p) => format!("--ca {} ({n} certificate{s})", p.display()),
        TrustSource::System(p) => {
            format!("the system roots in {} ({n} certificate{s})", p.display())
        }
    }
}

fn days_left(not_after: i64, now: i64) -> String {
    let days = (not_after - now).div_euclid(86_400);
    match days {
        d if not_after < now => format!("expired {} days ago", -d - 1),
        1 => "1 day left".to_string(),
        d => format!("{d} days left"),
    }
}

/// The report for one probe, as `key  value` lines. `now` (unix seconds) is used for the days
/// left on each certificate.
pub fn render_human(r: &Report, trust: &Trust, now: i64) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results of `writeln!` are ignored below.
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(out, "{key:<10} {value}");
    };
    match r.address {
        Some(a) if a.to_string() != r.target => line("target", &format!("{} ({a})", r.target)),
        _ => line("target", &r.target),
    }
    line("sni", r.sni.as_deref().unwrap_or("(none sent)"));
    if let Some(t) = &r.tls {
        let alpn = t.alpn.as_deref().unwrap_or("none");
        // Over QUIC the suite is not known (quinn does not say).
        let suite = if t.cipher_suite.is_empty() {
            String::new()
        } else {
            format!("{}, ", t.cipher_suite)
        };
        line("tls", &format!("{}, {suite}ALPN {alpn}", t.version));
    }
    if let Some(status) = r.http3_status {
        line("http/3", &format!("HEAD / answered {status}"));
    }
    if let Some(c) = &r.client_auth {
        let cas = if c.acceptable.is_empty() {
            String::new()
        } else {
            format!(" (acceptable CAs: {})", c.acceptable.join("; "))
        };
        let sent = match &c.sent {
            Some(subject) => format!("presented {subject}"),
            None => "presented none (no --cert)".to_string(),
        };
        line(
            "client",
            &format!("the server asked for a client certificate{cas}; {sent}"),
        );
    }
    if let Some(a) = &r.alert {
        line("refused", &format!("the server sent the alert {a}"));
    }
    if let Some(e) = &r.error {
        line("error", e);
    }
    match r.chain.len() {
        0 if r.tls.is_some() => line("chain", "none presented"),
        0 => {}
        1 => line("chain", "1 certificate"),
        n => line("chain", &format!("{n} certificates, leaf first")),
    }
    for (i, c) in r.chain.iter().enumerate() {
        write_cert(&mut out, i, c, now);
    }
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(out, "{key:<10} {value}");
    };
    match (&r.name, r.covers) {
        (Some(n), Some(true)) => line("name", &format!("{n} is covered by the leaf")),
        (Some(n), Some(false)) => line("name", &format!("{n} is NOT covered by the leaf")),
        (None, Some(_)) | (None, None) if !r.chain.is_empty() => line(
            "name",
            "not checked: no SNI was sent and HOST is an IP address",
        ),
        _ => {}
    }
    match &r.verification {
        Some(Verification::Verified) => line("verified", &format!("yes, to {}", trust_text(trust))),
        Some(Verification::Failed(e)) => line(
            "verified",
            &format!("NO, not to {}: {e}", trust_text(trust)),
        ),
        None => {}
    }
    line("result", &label(&r.verdict()));
    out
}

fn write_cert(out: &mut String, i: usize, c: &CertInfo, now: i64) {
    let names = if c.dns_names.is_empty() {
        "-".to_string()
    } else {
        c.dns_names.join(", ")
    };
    let rows = [
        ("subject", c.subject.clone()),
        ("dns names", names),
        ("issuer", c.issuer.clone()),
        ("not before", format_time(c.not_before)),
        (
            "not after",
            format!(
                "{} ({})",
                format_time(c.not_after),
                days_left(c.not_after, now)
            ),
        ),
        ("sha256", c.sha256.clone()),
    ];
    for (j, (k, v)) in rows.iter().enumerate() {
        let head = if j == 0 {
            format!("[{i}]")
        } else {
            String::new()
        };
        let _ = writeln!(out, "  {head:<4}{k:<11} {v}");
    }
}

/// One table for `--names`: a row per name, then the names that got a mismatch.
pub fn render_table(target: &Target, trust: &Trust, reports: &[Report]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "RESULT".to_string(),
        "LEAF SUBJECT".to_string(),
        "SANS".to_string(),
        "EXPIRES".to_string(),
    ]];
    for r in reports {
        let v = r.verdict();
        let result = match v {
            Verdict::Mismatch => "MISMATCH".to_string(),
            ref v => label(v),
        };
        let leaf = r.chain.first();
        rows.push([
            r.name.clone().unwrap_or_else(|| "-".to_string()),
            result,
            leaf.map_or("-".to_string(), |c| c.subject.clone()),
            leaf.map_or("-".to_string(), |c| c.dns_names.join(",")),
            leaf.map_or("-".to_string(), |c| {
                format_time(c.not_after).chars().take(10).collect()
            }),
        ]);
    }
    let mut widths = [0; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "target {}, verified against {}\n\n",
        target,
        trust_text(trust)
    );
    for row in &rows {
        let mut l = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    let count = |f: fn(&Verdict) -> bool| reports.iter().filter(|r| f(&r.verdict())).count();
    let _ = writeln!(
        out,
        "\n{} names: {} ok, {} mismatch, {} not verified, {} refused, {} error",
        reports.len(),
        count(|v| *v == Verdict::Ok),
        count(|v| *v == Verdict::Mismatch),
        count(|v| *v == Verdict::NotVerified),
        count(|v| matches!(v, Verdict::Refused(_))),
        count(|v| *v == Verdict::Error),
    );
    let mismatched: Vec<&str> = reports
        .iter()
        .filter(|r| r.covers == Some(false))
        .filter_map(|r| r.name.as_deref())
        .collect();
    if !mismatched.is_empty() {
        let _ = writeln!(
            out,
            "mismatch: the leaf does not cover {}",
            mismatched.join(", ")
        );
    }
    out
}

/// The JSON document for one or more probes (docs/probe.md, schema 1).
pub fn render_json(target: &Target, trust: &Trust, reports: &[Report]) -> String {
    let (source, path) = match &trust.source {
        TrustSource::CaFile(p) => ("ca_file", p),
        TrustSource::System(p) => ("system", p),
    };
    let ok = reports.iter().all(|r| r.verdict() == Verdict::Ok);
    Json::Obj(vec![
        ("schema", Json::Int(1)),
        ("target", Json::str(target.to_string())),
        (
            "trust",
            Json::Obj(vec![
                ("source", Json::str(source)),
                ("path", Json::str(path.display().to_string())),
                ("certificates", Json::Int(trust.certificates as i64)),
            ]),
        ),
        ("ok", Json::Bool(ok)),
        (
            "probes",
            Json::Arr(reports.iter().map(report_json).collect()),
        ),
    ])
    .pretty()
}

fn report_json(r: &Report) -> Json {
    let (verified, verification_error) = match &r.verification {
        Some(Verification::Verified) => (Json::Bool(true), Json::Null),
        Some(Verification::Failed(e)) => (Json::Bool(false), Json::str(e.clone())),
        None => (Json::Null, Json::Null),
    };
    Json::Obj(vec![
        ("address", Json::opt_str(r.address.map(|a| a.to_string()))),
        ("sni", Json::opt_str(r.sni.clone())),
        ("name", Json::opt_str(r.name.clone())),
        ("result", Json::str(r.verdict().word())),
        (
            "alert",
            r.alert.as_ref().map_or(Json::Null, |a| {
                Json::Obj(vec![
                    ("name", Json::str(a.name.clone())),
                    ("code", Json::Int(i64::from(a.code))),
                ])
            }),
        ),
        ("error", Json::opt_str(r.error.clone())),
        (
            "client_certificate",
            r.client_auth.as_ref().map_or(Json::Null, |c| {
                Json::Obj(vec![
                    (
                        "acceptable_cas",
                        Json::Arr(c.acceptable.iter().map(|a| Json::str(a.clone())).collect()),
                    ),
                    ("sent", Json::opt_str(c.sent.clone())),
                ])
            }),
        ),
        (
            "tls",
            r.tls.as_ref().map_or(Json::Null, |t| {
                Json::Obj(vec![
                    ("version", Json::str(t.version.clone())),
                    ("cipher_suite", Json::str(t.cipher_suite.clone())),
                    ("alpn", Json::opt_str(t.alpn.clone())),
                ])
            }),
        ),
        (
            "transport",
            Json::str(if r.over_quic { "quic" } else { "tcp" }),
        ),
        (
            "http3_status",
            r.http3_status
                .map_or(Json::Null, |s| Json::Int(i64::from(s))),
        ),
        ("chain", Json::Arr(r.chain.iter().map(cert_json).collect())),
        ("covers", r.covers.map_or(Json::Null, Json::Bool)),
        ("verified", verified),
        ("verification_error", verification_error),
    ])
}

fn cert_json(c: &CertInfo) -> Json {
    Json::Obj(vec![
        ("subject", Json::str(c.subject.clone())),
        ("issuer", Json::str(c.issuer.clone())),
        (
            "dns_names",
            Json::Arr(c.dns_names.iter().map(|d| Json::str(d.clone())).collect()),
        ),
        ("not_before", Json::str(format_time(c.not_before))),
        ("not_after", Json::str(format_time(c.not_after))),
        ("sha256", Json::str(c.sha256.clone())),
    ])
}
