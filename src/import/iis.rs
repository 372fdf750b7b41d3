//! `portico import iis`: the sites and `https` bindings of IIS's `applicationHost.config`,
//! the certificates http.sys binds (`netsh http show sslcert`), and http.sys's rules: a
//! binding with the SNI flag (`sslFlags` bit 1) gets its `Hostname:port` certificate; one
//! without gets the `IP:port` certificate of its address (`0.0.0.0:443` for `*`), which is
//! so presented to every host on that address; and a connection to an IP with its own
//! `IP:port` certificate gets that certificate whatever name it asks for, which hides the
//! SNI bindings on that IP.
//!
//! Certificates are read from `--cert-dir` as `THUMBPRINT.pem` and `THUMBPRINT.key` (any
//! case), as exported from the Windows store. The XML is read with roxmltree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::source::Loc;
use super::{
    host_name, listen_address, Action, Class, File, Host, IisFiles, ImportError, Kind, Plan, Site,
    Tls,
};
use crate::names::HostName;

/// One `netsh http show sslcert` entry.
#[derive(Debug, Clone)]
pub struct SslCert {
    pub key: SslKey,
    pub thumbprint: String,
    pub at: Loc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslKey {
    /// `IP:port : 0.0.0.0:443`, as a Portico address (`*:443`, `10.0.0.5:443`).
    Ip(String),
    /// `Hostname:port : www.example.com:443`: (host, port).
    Host(String, u16),
    /// `Central Certificate Store : 443`.
    Ccs(u16),
}

/// The text of a netsh output file: UTF-16 when PowerShell's `>` wrote it, else UTF-8.
fn netsh_text(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// `host:port` -> (host, port).
fn port_of(s: &str) -> Option<(&str, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    Some((h, p.parse::<u16>().ok()?))
}

/// Parses the output of `netsh http show sslcert`.
pub fn parse_sslcert(path: &Path) -> Result<Vec<SslCert>, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = netsh_text(&bytes);
    let file: File = Arc::from(path);
    let mut out = Vec::new();
    let mut current: Option<(SslKey, Loc)> = None;
    for (i, line) in text.lines().enumerate() {
        let Some((k, v)) = line.split_once(" : ").or_else(|| line.split_once(": ")) else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let at = Loc::new(&file, i + 1);
        match k.to_ascii_lowercase().as_str() {
            "ip:port" => {
                let Some((ip, port)) = port_of(v) else {
                    return Err(ImportError::Syntax {
                        at,
                        message: format!("{v:?} is not IP:port"),
                    });
                };
                let Some(address) = listen_address(ip, port) else {
                    return Err(ImportError::Syntax {
                        at,
                        message: format!("{v:?} is not IP:port"),
                    });
                };
                current = Some((SslKey::Ip(address), at));
            }
            "hostname:port" => {
                let Some((host, port)) = port_of(v) else {
                    return Err(ImportError::Syntax {
                        at,
                        message: format!("{v:?} is not hostname:port"),
                    });
                };
                current = Some((SslKey::Host(host.to_ascii_lowercase(), port), at));
            }
            "central certificate store" => {
                let port = v.parse::<u16>().unwrap_or(0);
                current = Some((SslKey::Ccs(port), at));
            }
            "certificate hash" => {
                if let Some((key, at)) = current.take() {
                    out.push(SslCert {
                        key,
                        thumbprint: v.to_ascii_lowercase(),
                        at,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One `https` binding of a site.
#[derive(Debug, Clone)]
struct Binding {
    /// Portico address: `*:443` or `10.0.0.5:443`.
    address: String,
    port: u16,
    host: Option<String>,
    sni: bool,
    at: Loc,
}

/// A certificate found in --cert-dir: its files and the names it covers.
struct Found {
    cert: PathBuf,
    key: PathBuf,
    names: Vec<HostName>,
}

fn find_cert(dir: Option<&Path>, thumbprint: &str) -> Option<Found> {
    let dir = dir?;
    let entries = std::fs::read_dir(dir).ok()?;
    let mut cert = None;
    let mut key = None;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_ascii_lowercase();
        if name == format!("{thumbprint}.pem") {
            cert = Some(e.path());
        } else if name == format!("{thumbprint}.key") {
            key = Some(e.path());
        }
    }
    let cert = cert?;
    let key = key.unwrap_or_else(|| cert.clone());
    let names = crate::tls::load::load(&cert, &key)
        .map(|c| c.names.clone())
        .unwrap_or_default();
    Some(Found { cert, key, names })
}

/// Reads `applicationHost.config` (and the sslcert listing) into a plan.
pub fn read(file: &Path, files: &IisFiles) -> Result<Plan, ImportError> {
    let text = super::source::read_text(file)?;
    let path: File = Arc::from(file);
    let doc = roxmltree::Document::parse(&text).map_err(|e| ImportError::Syntax {
        at: Loc::new(&path, e.pos().row as usize),
        message: format!("not valid XML: {e}"),
    })?;
    let loc = |n: roxmltree::Node| Loc::new(&path, doc.text_pos_at(n.range().start).row as usize);
    let certs = match &files.sslcert {
        Some(p) => parse_sslcert(p)?,
        None => Vec::new(),
    };
    let mut plan = Plan::new("iis", file);
    if files.sslcert.is_none() {
        plan.note_fix(
            Class::NotTranslated,
            None,
            "no --sslcert: without http.sys's certificate bindings no site has a certificate",
            "run `netsh http show sslcert > sslcert.txt` on the server and pass --sslcert sslcert.txt --cert-dir DIR",
        );
    }
    for c in &certs {
        if let SslKey::Ccs(port) = c.key {
            plan.note_fix(
                Class::NotTranslated,
                Some(&c.at),
                format!("the Central Certificate Store on port {port} is not translated"),
                "export its certificates as THUMBPRINT.pem and THUMBPRINT.key and use a [[certificate]] dir",
            );
        }
    }
    let ip_cert = |address: &str| {
        certs
            .iter()
            .find(|c| c.key == SslKey::Ip(address.to_string()))
    };
    let host_cert = |host: &str, port: u16| {
        certs
            .iter()
            .find(|c| c.key == SslKey::Host(host.to_string(), port))
    };
    let mut found: BTreeMap<String, Option<Found>> = BTreeMap::new();
    for c in &certs {
        if !found.contains_key(&c.thumbprint) {
            found.insert(
                c.thumbprint.clone(),
                find_cert(files.cert_dir.as_deref(), &c.thumbprint),
            );
        }
    }
    let lookup = |t: &str| found.get(t).is_some_and(Option::is_some);
    let mut missing: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    // The sites and their https bindings.
    let mut sites = Vec::new();
    for site in doc.descendants().filter(|n| n.has_tag_name("site")) {
        let name = site.attribute("name").unwrap_or("site").to_string();
        let root = site
            .children()
            .filter(|n| n.has_tag_name("application") && n.attribute("path") == Some("/"))
            .flat_map(|a| a.children())
            .find(|n| n.has_tag_name("virtualDirectory") && n.attribute("path") == Some("/"))
            .and_then(|v| v.attribute("physicalPath").map(|p| (p.to_string(), loc(v))));
        let mut bindings = Vec::new();
        for b in site.descendants().filter(|n| n.has_tag_name("binding")) {
            let at = loc(b);
            let protocol = b.attribute("protocol").unwrap_or("");
            let info = b.attribute("bindingInformation").unwrap_or("");
            if !protocol.eq_ignore_ascii_case("https") {
                if !protocol.eq_ignore_ascii_case("http") {
                    plan.note(
                        Class::NotTranslated,
                        Some(&at),
                        format!("the {protocol} binding {info:?} is not translated"),
                    );
                }
                continue;
            }
            // IP:port:host; IPv6 addresses come in brackets.
            let mut parts = info.rsplitn(3, ':');
            let host = parts.next().unwrap_or("");
            let port = parts.next().and_then(|p| p.parse::<u16>().ok());
            let ip = parts.next().unwrap_or("");
            let (Some(port), Some(address)) = (port, port.and_then(|p| listen_address(ip, p)))
            else {
                plan.note(
                    Class::NotTranslated,
                    Some(&at),
                    format!("bindingInformation {info:?} is not IP:port:host"),
                );
                continue;
            };
            let sni = b
                .attribute("sslFlags")
                .and_then(|f| f.parse::<u32>().ok())
                .is_some_and(|f| f & 1 == 1);
            let host = if host.is_empty() {
                None
            } else {
                match host_name(host) {
                    Ok(h) => Some(h),
                    Err(why) => {
                        plan.note(
                            Class::NotTranslated,
                            Some(&at),
                            format!("the binding's host {host:?} is not a name Portico can bind ({why})"),
                        );
                        continue;
                    }
                }
            };
            bindings.push(Binding {
                address,
                port,
                host,
                sni,
                at,
            });
        }
        if !bindings.is_empty() {
            sites.push((name, loc(site), root, bindings));
        }
    }
    // Which certificate http.sys presents for each binding, and what that gets wrong.
    for (name, site_at, root, bindings) in &sites {
        let action = match root {
            Some((p, _)) if p.starts_with('/') && Path::new(p).is_dir() => {
                Some(Action::Root(PathBuf::from(p)))
            }
            Some((p, at)) => {
                plan.note_fix(
                    Class::NotTranslated,
                    Some(at),
                    format!("physicalPath {p}: a Windows folder; the site answers 404 until its files are copied"),
                    "copy the site's files to this machine and set root to their folder",
                );
                None
            }
            None => {
                plan.note(
                    Class::NotTranslated,
                    Some(site_at),
                    "the site has no root application with a physicalPath; it answers 404",
                );
                None
            }
        };
        // Group the bindings by the certificate presented for them.
        let mut groups: Vec<(Option<SslCert>, Vec<Binding>)> = Vec::new();
        for b in bindings {
            let cert = match (&b.host, b.sni) {
                (Some(h), true) => host_cert(h, b.port),
                _ => ip_cert(&b.address).or_else(|| ip_cert(&format!("*:{}", b.port))),
            };
            if cert.is_none() && files.sslcert.is_some() {
                plan.note(
                    Class::Wrong,
                    Some(&b.at),
                    format!(
                        "no certificate is bound in http.sys for this binding ({}); IIS cannot serve it",
                        match (&b.host, b.sni) {
                            (Some(h), true) => format!("Hostname:port {h}:{}", b.port),
                            _ => format!("IP:port {}", b.address),
                        }
                    ),
                );
            }
            match groups
                .iter_mut()
                .find(|(c, _)| c.as_ref().map(|c| &c.thumbprint) == cert.map(|c| &c.thumbprint))
            {
                Some((_, list)) => list.push(b.clone()),
                None => groups.push((cert.cloned(), vec![b.clone()])),
            }
        }
        for (cert, bindings) in groups {
            let tls = cert.as_ref().and_then(|c| {
                if !lookup(&c.thumbprint) {
                    // Said once per certificate, however many sites use it.
                    if !missing.insert(c.thumbprint.clone()) {
                        return None;
                    }
                    plan.note_fix(
                        Class::NotTranslated,
                        Some(&c.at),
                        format!(
                            "certificate {} is not in --cert-dir as {}.pem and {}.key",
                            c.thumbprint, c.thumbprint, c.thumbprint
                        ),
                        "export it from the Windows store (see docs/import.md) into the --cert-dir",
                    );
                    return None;
                }
                let f = found.get(&c.thumbprint)?.as_ref()?;
                Some(Tls {
                    cert: f.cert.clone(),
                    key: f.key.clone(),
                    chain: None,
                    at: c.at.clone(),
                })
            });
            let names: Vec<HostName> = cert
                .as_ref()
                .and_then(|c| found.get(&c.thumbprint))
                .and_then(|f| f.as_ref())
                .map(|f| f.names.clone())
                .unwrap_or_default();
            let mut hosts: Vec<Host> = Vec::new();
            let mut listeners: Vec<String> = Vec::new();
            for b in &bindings {
                match &b.host {
                    Some(h) => {
                        if !hosts.iter().any(|x| &x.name == h) {
                            hosts.push(Host {
                                name: h.clone(),
                                at: b.at.clone(),
                                left_out: None,
                            });
                        }
                        if !b.sni {
                            if let Some(c) = &cert {
                                plan.note(
                                    Class::Wrong,
                                    Some(&b.at),
                                    format!(
                                        "the binding for {h} has no SNI flag (sslFlags): http.sys presents the IP:port certificate of {} ({}, at {}), the one every host on that address without SNI gets",
                                        b.address, c.thumbprint, c.at
                                    ),
                                );
                            }
                        }
                    }
                    None => {
                        // A binding for every name: the certificate's own names are what it
                        // can serve; clients without SNI get it.
                        for n in names.iter() {
                            if !hosts.iter().any(|x| x.name == n.as_str()) {
                                hosts.push(Host {
                                    name: n.as_str().to_string(),
                                    at: b.at.clone(),
                                    left_out: None,
                                });
                            }
                        }
                        let first = names
                            .iter()
                            .find(|n| !n.is_wildcard())
                            .map(|n| n.as_str().to_string());
                        let i = plan.listener(&b.address, Kind::Https, &b.at);
                        if plan.listeners[i].no_sni.is_none() {
                            plan.listeners[i].no_sni = first;
                        }
                        if let Some(c) = &cert {
                            plan.note_fix(
                                Class::Wrong,
                                Some(&c.at),
                                format!(
                                    "the IP:port certificate {} on {} is presented to every name on that address that has no SNI binding of its own, and to clients without SNI; Portico serves it only for the names it covers ({}) and refuses other names",
                                    c.thumbprint,
                                    b.address,
                                    if names.is_empty() { "none known".to_string() } else { names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ") }
                                ),
                                "nothing to do if no other name should be served there",
                            );
                        }
                    }
                }
                plan.listener(&b.address, Kind::Https, &b.at);
                if !listeners.contains(&b.address) {
                    listeners.push(b.address.clone());
                }
            }
            let site_name = plan.site_name(name);
            plan.sites.push(Site {
                name: site_name,
                hosts,
                listeners,
                tls,
                action: action.clone(),
                at: site_at.clone(),
                what: format!("site {name:?}"),
            });
        }
    }
    shadowing(&mut plan, &certs, &found);
    Ok(plan)
}

/// An IP with its own `IP:port` certificate: http.sys presents it for every name asked on
/// that IP, hiding the SNI bindings. Portico binds those hosts on the IP's listener too,
/// each with its own certificate.
fn shadowing(plan: &mut Plan, certs: &[SslCert], found: &BTreeMap<String, Option<Found>>) {
    let ip_listeners: Vec<String> = plan
        .listeners
        .iter()
        .map(|l| l.address.clone())
        .filter(|a| !a.starts_with("*:"))
        .collect();
    for address in ip_listeners {
        let port = address
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        let all = format!("*:{port}");
        let Some(c) = certs.iter().find(|c| c.key == SslKey::Ip(address.clone())) else {
            continue;
        };
        let names: Vec<HostName> = found
            .get(&c.thumbprint)
            .and_then(|f| f.as_ref())
            .map(|f| f.names.clone())
            .unwrap_or_default();
        let mut notes = Vec::new();
        for s in &mut plan.sites {
            if !s.listeners.contains(&all) || s.listeners.contains(&address) {
                continue;
            }
            for h in &s.hosts {
                let covered = HostName::parse(&h.name)
                    .map(|n| names.iter().any(|x| x.covers(&n)))
                    .unwrap_or(false);
                let same = s.tls.as_ref().is_some_and(|t| {
                    t.cert
                        .file_stem()
                        .map(|f| f.to_string_lossy().to_ascii_lowercase())
                        == Some(c.thumbprint.clone())
                });
                if !same {
                    notes.push((
                        h.at.clone(),
                        format!(
                            "on {address}, the IP:port certificate {} (at {}) hides {}'s SNI binding: IIS presents it to clients asking for {} there{}; Portico binds {} on {address} too, with its own certificate",
                            c.thumbprint,
                            c.at,
                            h.name,
                            h.name,
                            match (names.is_empty(), covered) {
                                (true, _) => "",
                                (false, true) => " (it covers the name, but it is not the site's own)",
                                (false, false) => ", and it does not cover the name",
                            },
                            h.name
                        ),
                    ));
                }
            }
            s.listeners.push(address.clone());
        }
        for (at, message) in notes {
            plan.note_fix(
                Class::Wrong,
                Some(&at),
                message,
                "remove the IP:port certificate binding, or give the IP's sites SNI bindings",
            );
        }
    }
}
