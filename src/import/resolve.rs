//! The resolution rules nginx and Apache share, applied to their blocks (`server`,
//! `VirtualHost`): per address, one block is the default that answers names no block claims
//! and clients without SNI (nginx: `default_server`, else the first; Apache: the first); a
//! name claimed twice on one address goes to the first block. The result is Portico's
//! listeners and sites, and a finding for everything the old server serves wrongly.

use std::collections::BTreeMap;

use super::{Action, Class, Host, Kind, Loc, Plan, Site, Tls};

/// One `listen` / `VirtualHost` address of a block.
#[derive(Debug, Clone)]
pub(super) struct BlockListen {
    /// As Portico writes it: `*:443`, `10.0.0.5:443`.
    pub address: String,
    pub tls: bool,
    /// nginx's `default_server`.
    pub default: bool,
    pub at: Loc,
}

/// A `server` block or a `VirtualHost`, read.
#[derive(Debug, Clone)]
pub(super) struct Block {
    pub at: Loc,
    pub listens: Vec<BlockListen>,
    /// Normalized; those the source ignores are marked later.
    pub hosts: Vec<Host>,
    pub tls: Option<Tls>,
    pub action: Option<Action>,
    /// A plain-HTTP block that only redirects to https: Portico's http listener does that.
    pub to_https: bool,
    /// nginx's `ssl_reject_handshake on`.
    pub reject_handshake: bool,
}

/// How one server words its rules.
pub(super) struct Rules {
    pub server: &'static str,
    pub block: &'static str,
    /// How the source treats a name claimed a second time.
    pub twice: &'static str,
}

impl Rules {
    pub(super) const NGINX: Rules = Rules {
        server: "nginx",
        block: "server block",
        twice: "nginx serves it from the first and ignores this one (\"conflicting server name\" warning at start)",
    };
    pub(super) const APACHE: Rules = Rules {
        server: "Apache",
        block: "VirtualHost",
        twice: "Apache serves it from the first and ignores this one, without a warning",
    };
}

/// Listeners and sites for `blocks`, with what the source serves wrongly.
pub(super) fn resolve_blocks(plan: &mut Plan, mut blocks: Vec<Block>, rules: &Rules) {
    // The default block of each TLS address: the one marked default, else the first.
    let mut defaults: BTreeMap<String, usize> = BTreeMap::new();
    let mut marked: BTreeMap<String, usize> = BTreeMap::new();
    for (i, b) in blocks.iter().enumerate() {
        for l in b.listens.iter().filter(|l| l.tls) {
            defaults.entry(l.address.clone()).or_insert(i);
            if l.default {
                marked.entry(l.address.clone()).or_insert(i);
            }
        }
    }
    defaults.extend(marked);
    let mut claimed: BTreeMap<(String, String), Loc> = BTreeMap::new();
    let mut to_https: Vec<(String, String, Loc)> = Vec::new();
    for (i, b) in blocks.iter_mut().enumerate() {
        let https: Vec<BlockListen> = b.listens.iter().filter(|l| l.tls).cloned().collect();
        let http: Vec<BlockListen> = b.listens.iter().filter(|l| !l.tls).cloned().collect();
        if https.is_empty() {
            if b.to_https {
                for l in &http {
                    for h in &b.hosts {
                        to_https.push((l.address.clone(), h.name.clone(), l.at.clone()));
                    }
                }
                plan.note(
                    Class::Translated,
                    Some(&b.at),
                    format!("the plain-HTTP {} redirecting to https: Portico's http listener redirects every site bound to it", rules.block),
                );
            } else {
                plan.note_fix(
                    Class::NotTranslated,
                    Some(&b.at),
                    format!("a plain-HTTP {}: Portico serves sites over HTTPS only, and redirects plain HTTP to them", rules.block),
                    "serve the site over https; Portico's http listener redirects its plain-HTTP requests",
                );
            }
            continue;
        }
        if b.reject_handshake {
            if b.hosts.is_empty() {
                plan.note(
                    Class::Translated,
                    Some(&b.at),
                    "ssl_reject_handshake on: Portico refuses names no site claims (unknown_sni = \"reject\", the default)",
                );
            } else {
                plan.note(
                    Class::NotTranslated,
                    Some(&b.at),
                    "ssl_reject_handshake on for a server with names: they are not served",
                );
            }
            continue;
        }
        for h in &mut b.hosts {
            for l in &https {
                let key = (l.address.clone(), h.name.clone());
                match claimed.get(&key) {
                    Some(first) if h.left_out.is_none() => {
                        let first = first.clone();
                        plan.note_fix(
                            Class::Wrong,
                            Some(&h.at),
                            format!(
                                "{} is claimed twice on {}: first at {first}; {}",
                                h.name, l.address, rules.twice
                            ),
                            format!("remove the name from one of the two {}s", rules.block),
                        );
                        h.left_out = Some(format!("claimed first at {first}"));
                    }
                    Some(_) => {}
                    None => {
                        claimed.insert(key, h.at.clone());
                    }
                }
            }
        }
        let name = b
            .hosts
            .iter()
            .find(|h| h.left_out.is_none())
            .or(b.hosts.first())
            .map(|h| h.name.clone())
            .unwrap_or_else(|| "default".to_string());
        let name = plan.site_name(&name);
        let mut listeners = Vec::new();
        for l in https.iter().chain(&http) {
            let kind = if l.tls { Kind::Https } else { Kind::Http };
            plan.listener(&l.address, kind, &l.at);
            if !listeners.contains(&l.address) {
                listeners.push(l.address.clone());
            }
        }
        if !http.is_empty() {
            plan.note(
                Class::Translated,
                Some(&http[0].at),
                format!(
                    "{} also serves this {} over plain HTTP on {}; Portico's http listener redirects it to https instead",
                    rules.server, rules.block, http[0].address
                ),
            );
        }
        if b.action.is_none() {
            plan.note(
                Class::NotTranslated,
                Some(&b.at),
                format!(
                    "the {} has nothing that could be translated as what it serves (a document root, a redirect, a proxy); the site answers 404",
                    rules.block
                ),
            );
        }
        let index = plan.sites.len();
        plan.sites.push(Site {
            name,
            hosts: b.hosts.clone(),
            listeners,
            tls: b.tls.clone(),
            action: b.action.clone(),
            at: b.at.clone(),
            what: rules.block.to_string(),
        });
        for l in &https {
            if defaults.get(&l.address) == Some(&i) {
                default_block(plan, index, l, rules);
            }
        }
    }
    hidden(plan, rules);
    for (address, name, at) in to_https {
        let bound = plan
            .sites
            .iter()
            .any(|s| s.hosts.iter().any(|h| h.name == name));
        if bound {
            plan.listener(&address, Kind::Http, &at);
            for s in &mut plan.sites {
                if s.hosts.iter().any(|h| h.name == name) && !s.listeners.contains(&address) {
                    s.listeners.push(address.clone());
                }
            }
        }
    }
}

/// The site at `index` is the default block on `l`: what that serves wrongly today, and the
/// `no_sni` host that keeps clients without SNI on its certificate.
fn default_block(plan: &mut Plan, index: usize, l: &BlockListen, rules: &Rules) {
    let site = &plan.sites[index];
    let first_host = site
        .hosts
        .iter()
        .find(|h| h.left_out.is_none() && !h.name.starts_with("*."))
        .map(|h| h.name.clone());
    let how = if l.default {
        format!("its default_server, the {} at {}", rules.block, site.at)
    } else {
        format!("its first {}, at {}", rules.block, site.at)
    };
    let message = format!(
        "on {}, {} answers every name no {} claims, and clients without SNI, with {how} and its certificate; Portico refuses names no site claims (alert unrecognized_name) and gives clients without SNI {}",
        l.address,
        rules.server,
        rules.block,
        match &first_host {
            Some(h) => format!("{h}'s certificate (no_sni)"),
            None => "nothing (the default has no name to bind)".to_string(),
        }
    );
    let at = site.at.clone();
    plan.note_fix(
        Class::Wrong,
        Some(&at),
        message,
        "nothing to do if those names should not be served; otherwise add them to a site",
    );
    if let Some(i) = plan.listeners.iter().position(|x| x.address == l.address) {
        if plan.listeners[i].no_sni.is_none() {
            plan.listeners[i].no_sni = first_host;
        }
    }
}

/// A host on `*:port` that is not on an `IP:port` of the same port: connections to that IP
/// go to the IP's blocks only (in nginx and Apache as in Portico), so the host gets the IP's
/// default block and its certificate there.
fn hidden(plan: &mut Plan, rules: &Rules) {
    let https: Vec<String> = plan
        .listeners
        .iter()
        .filter(|l| l.kind == Kind::Https)
        .map(|l| l.address.clone())
        .collect();
    let mut notes = Vec::new();
    for ip in https.iter().filter(|a| !a.starts_with("*:")) {
        let Some((_, port)) = ip.rsplit_once(':') else {
            continue;
        };
        let all = format!("*:{port}");
        if !https.contains(&all) {
            continue;
        }
        for s in &plan.sites {
            if !s.listeners.contains(&all) || s.listeners.contains(ip) {
                continue;
            }
            for h in s.served_hosts() {
                notes.push((
                    h.at.clone(),
                    ip.clone(),
                    format!(
                        "{} is served on {all}, but the {} on {ip} hides it there: {} gives connections to that IP the default {} of {ip} and its certificate; Portico refuses the name on {ip}",
                        h.name, rules.block, rules.server, rules.block
                    ),
                ));
            }
        }
    }
    for (at, ip, message) in notes {
        plan.note_fix(
            Class::Wrong,
            Some(&at),
            message,
            format!(
                "if clients reach the name at that IP, add {ip} to the site's listeners (and to the {} in {})",
                rules.block, rules.server
            ),
        );
    }
}
