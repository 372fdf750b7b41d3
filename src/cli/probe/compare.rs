//! `portico probe --compare OLD --with NEW --names a,b`: does the new server present the
//! same certificate as the old one, for each name and for a client without SNI? After a
//! move it shows that Portico serves what the old server served, except where the old one
//! was wrong (a certificate that does not cover the name asked for).
//!
//! Coverage is [`report::CertInfo::covers`], the server's own rule; this module only
//! compares two probes.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use super::{probe, Args, Report, Sni, Target, Trust, TIMEOUT};
use crate::names::HostName;

/// How two probes of one name compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The same leaf certificate (SHA-256).
    Same,
    /// Neither presented a certificate (both refused or failed).
    BothRefuse,
    /// The old server presented a certificate that does not cover the name; the new one
    /// refuses the name, or presents one that covers it.
    Fixed,
    /// Anything else: a real difference.
    Differ,
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Same => "same",
            Outcome::BothRefuse => "same (both refuse)",
            Outcome::Fixed => "fixed",
            Outcome::Differ => "DIFFERENT",
        }
    }
}

/// Compares the probes of one name (`None`: no SNI).
pub fn judge(old: &Report, new: &Report) -> Outcome {
    let (o, n) = (old.chain.first(), new.chain.first());
    match (o, n) {
        (Some(o), Some(n)) if o.sha256 == n.sha256 => Outcome::Same,
        (None, None) => Outcome::BothRefuse,
        (Some(_), None) if old.covers == Some(false) => Outcome::Fixed,
        (Some(_), Some(_)) if old.covers == Some(false) && new.covers == Some(true) => {
            Outcome::Fixed
        }
        _ => Outcome::Differ,
    }
}

/// What one probe saw, in a few words.
fn seen(r: &Report) -> String {
    match (r.chain.first(), &r.alert, &r.error) {
        (Some(leaf), _, _) => {
            let names = if leaf.dns_names.is_empty() {
                "no DNS names".to_string()
            } else {
                leaf.dns_names.join(" ")
            };
            let covers = match r.covers {
                Some(true) => ", covers the name",
                Some(false) => ", does NOT cover the name",
                None => "",
            };
            let short: String = leaf.sha256.chars().take(23).collect();
            format!("{short}… [{names}]{covers}")
        }
        (None, Some(a), _) => format!("refused ({a})"),
        (None, None, Some(e)) => format!("failed: {e}"),
        (None, None, None) => "no certificate".to_string(),
    }
}

/// Probes both servers for every name and for no SNI; the table; whether every row is
/// the same, or fixed.
pub async fn compare(
    old: &Target,
    new: &Target,
    names: &[HostName],
    trust: &Trust,
    alpn: &[String],
) -> (String, Vec<(Option<HostName>, Outcome)>) {
    let mut rows: Vec<(Option<HostName>, Report, Report)> = Vec::new();
    let mut asks: Vec<Option<HostName>> = names.iter().cloned().map(Some).collect();
    asks.push(None);
    for n in asks {
        let sni = match &n {
            Some(n) => Sni::Name(n.clone()),
            None => Sni::Off,
        };
        let a = probe(old, &sni, trust, alpn, TIMEOUT).await;
        let b = probe(new, &sni, trust, alpn, TIMEOUT).await;
        rows.push((n, a, b));
    }
    let mut out = String::new();
    let _ = writeln!(out, "old: {old}\nnew: {new}\n");
    let mut outcomes = Vec::new();
    for (n, a, b) in &rows {
        let outcome = judge(a, b);
        let label = n
            .as_ref()
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|| "(no SNI)".to_string());
        let _ = writeln!(out, "{label}: {}", outcome.word());
        let _ = writeln!(out, "  old: {}", seen(a));
        let _ = writeln!(out, "  new: {}", seen(b));
        outcomes.push((n.clone(), outcome));
    }
    let count = |o: Outcome| outcomes.iter().filter(|(_, x)| *x == o).count();
    let _ = writeln!(
        out,
        "\n{} names: {} same, {} fixed (the old server's certificate did not cover the name), {} different",
        outcomes.len(),
        count(Outcome::Same) + count(Outcome::BothRefuse),
        count(Outcome::Fixed),
        count(Outcome::Differ)
    );
    (out, outcomes)
}

pub(super) fn run(old: &Target, new: &Target, args: &Args) -> anyhow::Result<ExitCode> {
    let trust = Trust::load(args.ca.as_deref()).context("cannot load the trust anchors")?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (text, outcomes) = tokio.block_on(compare(old, new, &args.names, &trust, &args.alpn));
    print!("{text}");
    Ok(if outcomes.iter().any(|(_, o)| *o == Outcome::Differ) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::probe::{Alert, CertInfo};

    /// A probe that saw the leaf `sha` (covering the name or not), or was refused.
    fn seen_as(leaf: Option<(&str, bool)>) -> Report {
        Report {
            target: "t:1".to_string(),
            address: None,
            sni: Some("a.test".to_string()),
            name: Some("a.test".to_string()),
            tls: None,
            chain: leaf
                .iter()
                .map(|(sha, _)| CertInfo {
                    subject: String::new(),
                    issuer: String::new(),
                    dns_names: Vec::new(),
                    not_before: 0,
                    not_after: 0,
                    sha256: sha.to_string(),
                })
                .collect(),
            covers: leaf.map(|(_, c)| c),
            verification: None,
            client_auth: None,
            over_quic: false,
            http3_status: None,
            alert: leaf.is_none().then(|| Alert {
                name: "unrecognized_name".to_string(),
                code: 112,
            }),
            error: None,
        }
    }

    #[test]
    fn two_probes_are_same_fixed_or_different() {
        let cases = [
            (Some(("A", true)), Some(("A", true)), Outcome::Same),
            // A wrong certificate presented by both is still the same certificate.
            (Some(("A", false)), Some(("A", false)), Outcome::Same),
            (None, None, Outcome::BothRefuse),
            (Some(("A", false)), None, Outcome::Fixed),
            (Some(("A", false)), Some(("B", true)), Outcome::Fixed),
            (Some(("A", true)), None, Outcome::Differ),
            (Some(("A", true)), Some(("B", true)), Outcome::Differ),
            (None, Some(("B", true)), Outcome::Differ),
            (Some(("A", false)), Some(("B", false)), Outcome::Differ),
        ];
        for (old, new, want) in cases {
            assert_eq!(
                judge(&seen_as(old), &seen_as(new)),
                want,
                "{old:?} -> {new:?}"
            );
        }
    }
}
