//! A [`Plan`] as Portico's TOML, every table with a comment naming the source lines it comes
//! from. Hosts left out are written as comments saying why, so the output shows the whole
//! source.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Action, Kind, Plan};

/// A TOML string literal (quoted, escaped).
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn qp(p: &Path) -> String {
    q(&p.to_string_lossy())
}

/// `# ` before every line of `text`.
fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "# {line}");
    }
}

/// The configuration text for `plan`, to be written at `output`. `chains` are the joined
/// chain files (see [`super::chains`]): a site whose certificate has one points at it.
pub fn render(plan: &Plan, output: &Path, chains: &[(PathBuf, Vec<u8>)]) -> String {
    let _ = output;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported by `portico import {}` from {}.",
        plan.source,
        plan.file.display()
    );
    out.push_str(
        "# Every table names the source lines it comes from; the report that `portico import`\n\
         # printed lists what was not translated and what the old server serves wrongly today.\n",
    );
    let served = |address: &str, host: &str| {
        plan.sites.iter().any(|s| {
            s.listeners.iter().any(|l| l == address) && s.served_hosts().any(|h| h.name == host)
        })
    };
    for l in &plan.listeners {
        out.push_str("\n[[listener]]\n");
        let _ = writeln!(out, "# {}", l.at);
        let _ = writeln!(out, "address = {}", q(&l.address));
        if l.kind == Kind::Http {
            out.push_str("kind = \"http\"\n");
        }
        match &l.no_sni {
            Some(host) if l.kind == Kind::Https && served(&l.address, host) => {
                let _ = writeln!(
                    out,
                    "# Clients without SNI get this host's certificate, as from {}'s default site.",
                    plan.server()
                );
                let _ = writeln!(out, "no_sni = {}", q(host));
            }
            Some(host) => {
                let _ = writeln!(
                    out,
                    "# no_sni = {}: left out, the host is not served (see the report)",
                    q(host)
                );
            }
            None => {}
        }
    }
    let mut chain_of = chains.iter();
    for s in &plan.sites {
        let chain = match &s.tls {
            Some(t) if t.chain.is_some() => chain_of.next().map(|(p, _)| p.clone()),
            _ => None,
        };
        if s.served_hosts().next().is_none() {
            out.push('\n');
            comment(
                &mut out,
                &format!(
                    "{} at {}: not written, none of its hosts can be served (see the report)",
                    s.what, s.at
                ),
            );
            for h in &s.hosts {
                if let Some(why) = &h.left_out {
                    comment(&mut out, &format!("  {} ({}): {why}", h.name, h.at));
                }
            }
            continue;
        }
        out.push_str("\n[[site]]\n");
        let _ = writeln!(out, "# {} at {}", s.what, s.at);
        let _ = writeln!(out, "name = {}", q(&s.name));
        out.push_str("hosts = [\n");
        for h in &s.hosts {
            match &h.left_out {
                None => {
                    let _ = writeln!(out, "  {},  # {}", q(&h.name), h.at);
                }
                Some(why) => {
                    let _ = writeln!(out, "  # {}  left out ({}): {}", q(&h.name), h.at, why);
                }
            }
        }
        out.push_str("]\n");
        let listeners: Vec<String> = s.listeners.iter().map(|l| q(l)).collect();
        let _ = writeln!(out, "listeners = [{}]", listeners.join(", "));
        if let Some(t) = &s.tls {
            let cert = chain.as_deref().unwrap_or(&t.cert);
            let _ = writeln!(out, "# {}", t.at);
            let _ = writeln!(out, "tls = {{ cert = {}, key = {} }}", qp(cert), qp(&t.key));
        }
        match &s.action {
            Some(Action::Root(root)) => {
                let _ = writeln!(out, "root = {}", qp(root));
            }
            Some(Action::Redirect { to, status }) => {
                let _ = writeln!(out, "redirect = {{ to = {}, status = {status} }}", q(to));
            }
            Some(Action::Respond { status, body }) => {
                let _ = writeln!(out, "respond = {{ status = {status}, body = {} }}", q(body));
            }
            Some(Action::Proxy(upstreams)) => {
                let list: Vec<String> = upstreams.iter().map(|u| q(u)).collect();
                let _ = writeln!(out, "proxy = {{ upstreams = [{}] }}", list.join(", "));
            }
            None => {
                out.push_str(
                    "# What the site does was not translated (see the report): it answers 404.\n\
                     respond = { status = 404 }\n",
                );
            }
        }
    }
    out
}
