//! `portico import`: read an nginx, Apache or IIS configuration and write the Portico
//! configuration that serves the same names with the same certificates and actions, with a
//! report of what was translated, what was not, and what the old server serves wrongly today.
//!
//! Each reader (`nginx.rs`, `apache.rs`, `iis.rs`) knows its server's syntax and resolution
//! rules and produces a [`Plan`]: listeners, sites with the source line of everything, and the
//! findings that only the source's rules show (a default server answering unclaimed names, a
//! name claimed twice, an IP binding hiding the all-addresses ones). This module renders the
//! plan as TOML and runs Portico's own check on it ([`crate::config::Config::from_str`] and
//! [`crate::runtime::build`]): a host its certificate does not cover is left out of the
//! output (the old server presents a wrong certificate for it; Portico will refuse it), and
//! what the check says is mapped back to the source lines.
//!
//! It must never judge names or certificates itself: coverage is the check's verdict, names
//! are [`crate::names::HostName`]'s. It never panics on input; a file it cannot read is an
//! [`ImportError`] naming the file and line.

pub mod apache;
pub mod iis;
pub mod nginx;
mod render;
mod resolve;
mod source;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use render::render;
pub use source::Loc;

use crate::config::{Config, Severity};
use crate::runtime::{self, Mode, Shared};

/// The configuration could not be read: exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {}", path.display(), crate::error_text::describe_io(source))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Syntax { at: Loc, message: String },
    #[error("{at}: includes nest deeper than {depth} levels (an include that includes itself?)")]
    TooDeep { at: Loc, depth: usize },
}

/// What kind of listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Https,
    Http,
}

/// One `[[listener]]` to write.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `*:443`, `10.0.0.5:443`, `[2001:db8::1]:443`.
    pub address: String,
    pub kind: Kind,
    /// The host clients without SNI get, as the source's default site gave them.
    pub no_sni: Option<String>,
    /// Where the source declared it (its first `listen` / `VirtualHost` / binding).
    pub at: Loc,
}

/// What a site does with its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Root(PathBuf),
    Redirect { to: String, status: u16 },
    Respond { status: u16, body: String },
    Proxy(Vec<String>),
}

/// A certificate a site pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A separate chain file (Apache's `SSLCertificateChainFile`): the output's `cert` is the
    /// two joined, written beside the output file.
    pub chain: Option<PathBuf>,
    pub at: Loc,
}

/// One host of a site, and where the source named it.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub at: Loc,
    /// Why it is not in `hosts` (commented out in the output), when it is not.
    pub left_out: Option<String>,
}

/// One `[[site]]` to write.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub hosts: Vec<Host>,
    /// Addresses of the listeners it is bound to.
    pub listeners: Vec<String>,
    pub tls: Option<Tls>,
    pub action: Option<Action>,
    /// The `server` block, `VirtualHost` or IIS `site` it comes from.
    pub at: Loc,
    /// What the source called it (`server block`, `<VirtualHost *:443>`, `site "Default"`).
    pub what: String,
}

impl Site {
    pub fn served_hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.left_out.is_none())
    }
}

/// How a finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The old server serves this wrongly today (a wrong certificate, a name lost).
    Wrong,
    /// Portico's check on the result: an error.
    CheckError,
    /// Portico's check on the result: a warning.
    CheckWarning,
    /// A directive or setting that was not carried over and changes what is served.
    NotTranslated,
    /// Carried over, or not needed (Portico does it itself): for the record.
    Translated,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Wrong => "wrong today",
            Class::CheckError => "error",
            Class::CheckWarning => "warning",
            Class::NotTranslated => "not translated",
            Class::Translated => "translated",
        }
    }

    /// Whether it makes the exit status 1.
    pub fn is_problem(self) -> bool {
        self != Class::Translated
    }
}

/// One line of the report: what, where in the source, and what to do.
#[derive(Debug, Clone)]
pub struct Finding {
    pub class: Class,
    pub at: Option<Loc>,
    /// For check findings: the path in the output (`site[2].hosts[0]`).
    pub path: Option<String>,
    pub message: String,
    pub fix: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.class.label())?;
        match (&self.at, &self.path) {
            (Some(at), Some(path)) => write!(f, "{at}: {path}: ")?,
            (Some(at), None) => write!(f, "{at}: ")?,
            (None, Some(path)) => write!(f, "{path}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

/// What a reader made of the source.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `nginx`, `apache`, `iis`.
    pub source: &'static str,
    /// The file given on the command line.
    pub file: PathBuf,
    pub listeners: Vec<Listener>,
    pub sites: Vec<Site>,
    pub findings: Vec<Finding>,
}

impl Plan {
    pub fn new(source: &'static str, file: &Path) -> Plan {
        Plan {
            source,
            file: file.to_path_buf(),
            listeners: Vec::new(),
            sites: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// The server's name as people write it: nginx, Apache, IIS.
    pub fn server(&self) -> &'static str {
        match self.source {
            "apache" => "Apache",
            "iis" => "IIS",
            other => other,
        }
    }

    pub fn note(&mut self, class: Class, at: Option<&Loc>, message: impl Into<String>) {
        self.findings.push(Finding {
            class,
            at: at.cloned(),
            path: None,
            message: message.into(),
            fix: None,
        });
    }

    pub fn note_fix(
        &mut self,
        class: Class,
        at: Option<&Loc>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            class,
            at: at.cloned(),
            path: None,
            message: message.into(),
            fix: Some(fix.into()),
        });
    }

    /// The listener with this address, added (at `at`) when there is none yet.
    pub fn listener(&mut self, address: &str, kind: Kind, at: &Loc) -> usize {
        if let Some(i) = self.listeners.iter().position(|l| l.address == address) {
            return i;
        }
        self.listeners.push(Listener {
            address: address.to_string(),
            kind,
            no_sni: None,
            at: at.clone(),
        });
        self.listeners.len() - 1
    }

    /// A site name not used yet, made from `base`.
    pub fn site_name(&self, base: &str) -> String {
        let base = if base.is_empty() { "site" } else { base };
        let taken = |n: &str| self.sites.iter().any(|s| s.name == n);
        if !taken(base) {
            return base.to_string();
        }
        (2..)
            .map(|i| format!("{base}-{i}"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| base.to_string())
    }
}

/// The outcome: the configuration text, and the report.
#[derive(Debug)]
pub struct Outcome {
    pub toml: String,
    pub plan: Plan,
    /// Chain files to write (path, contents): a certificate joined with its chain file.
    pub chains: Vec<(PathBuf, Vec<u8>)>,
}

impl Outcome {
    pub fn problems(&self) -> usize {
        self.plan
            .findings
            .iter()
            .filter(|f| f.class.is_problem())
            .count()
    }

    /// The report, findings sorted worst first, in the source's order within a class, and
    /// the summary line.
    pub fn report(&self) -> String {
        let mut findings: Vec<&Finding> = self.plan.findings.iter().collect();
        findings.sort_by_key(|f| f.class);
        let mut out = String::new();
        for f in &findings {
            out.push_str(&f.to_string());
            out.push('\n');
        }
        let count = |c: Class| findings.iter().filter(|f| f.class == c).count();
        let hosts: usize = self
            .plan
            .sites
            .iter()
            .map(|s| s.served_hosts().count())
            .sum();
        out.push_str(&format!(
            "{}: {} configuration: {} listeners, {} sites, {} hosts translated; {} served wrongly today, {} not translated, {} errors and {} warnings from portico check\n",
            self.plan.file.display(),
            self.plan.source,
            self.plan.listeners.len(),
            self.plan.sites.iter().filter(|s| s.served_hosts().next().is_some()).count(),
            hosts,
            count(Class::Wrong),
            count(Class::NotTranslated),
            count(Class::CheckError),
            count(Class::CheckWarning),
        ));
        out
    }
}

/// The longest a site's hosts list gets re-checked: every round leaves out at least one host.
const MAX_ROUNDS: usize = 64;

/// Renders `plan` as the configuration at `output` (relative paths in it are relative to its
/// directory), runs Portico's check on it, leaves out the hosts that no certificate covers
/// (reporting them as served wrongly today), and maps the check's other findings back to
/// the source. `chains` are [`chains`]'s, already written (the check reads them).
pub fn finish(mut plan: Plan, output: &Path, chains: Vec<(PathBuf, Vec<u8>)>) -> Outcome {
    let mut report;
    let mut rounds = 0;
    loop {
        let text = render(&plan, output, &chains);
        report = check(&text, output);
        rounds += 1;
        // The output's site and host indexes, as rendered this round.
        let served: Vec<(usize, Vec<usize>)> = plan
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let hosts = s
                    .hosts
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.left_out.is_none())
                    .map(|(j, _)| j)
                    .collect::<Vec<_>>();
                (i, hosts)
            })
            .filter(|(_, hosts)| !hosts.is_empty())
            .collect();
        let mut left_out = false;
        for d in &report.items {
            if d.severity != Severity::Error || !uncovered(&d.message) {
                continue;
            }
            let Some((n, m)) = site_host(&d.path) else {
                continue;
            };
            let Some((i, hosts)) = served.get(n) else {
                continue;
            };
            let Some(&j) = hosts.get(m) else { continue };
            if let Some(h) = plan.sites.get_mut(*i).and_then(|s| s.hosts.get_mut(j)) {
                h.left_out = Some(d.message.clone());
                left_out = true;
            }
        }
        if !left_out || rounds >= MAX_ROUNDS {
            break;
        }
    }
    // Every host left out: the old server presents a certificate that does not cover it,
    // or no certificate of it could be carried over.
    let mut wrong = Vec::new();
    for s in &plan.sites {
        for h in &s.hosts {
            let Some(why) = &h.left_out else { continue };
            if !uncovered(why) {
                continue;
            }
            if s.tls.is_some() {
                wrong.push(Finding {
                    class: Class::Wrong,
                    at: Some(h.at.clone()),
                    path: None,
                    message: format!(
                        "{} today presents a certificate that does not cover {} ({}); left out of the output, so Portico refuses the name until it has a certificate: {why}",
                        plan.server(), h.name, s.what
                    ),
                    fix: Some(format!(
                        "get a certificate that covers {} and add it to site {:?} (tls) or as a [[certificate]]",
                        h.name, s.name
                    )),
                });
            } else {
                wrong.push(Finding {
                    class: Class::NotTranslated,
                    at: Some(h.at.clone()),
                    path: None,
                    message: format!(
                        "{}: no certificate of the {} could be carried over (see the other findings); left out of the output",
                        h.name, s.what
                    ),
                    fix: Some(format!(
                        "give site {:?} a certificate (tls = {{ cert, key }}) and add the host back",
                        s.name
                    )),
                });
            }
        }
    }
    plan.findings.extend(wrong);
    // What was carried over, site by site.
    let mut done = Vec::new();
    for s in plan
        .sites
        .iter()
        .filter(|s| s.served_hosts().next().is_some())
    {
        let hosts: Vec<&str> = s.served_hosts().map(|h| h.name.as_str()).collect();
        let action = match &s.action {
            Some(Action::Root(r)) => format!("files from {}", r.display()),
            Some(Action::Redirect { to, status }) => format!("a {status} redirect to {to}"),
            Some(Action::Respond { status, .. }) => format!("a fixed {status} response"),
            Some(Action::Proxy(u)) => format!("a proxy to {}", u.join(", ")),
            None => "404 (nothing translated)".to_string(),
        };
        let tls = match &s.tls {
            Some(t) => format!(", certificate {}", t.cert.display()),
            None => String::new(),
        };
        done.push(Finding {
            class: Class::Translated,
            at: Some(s.at.clone()),
            path: None,
            message: format!(
                "{} -> site {:?}: {} on {}{tls}, serving {action}",
                s.what,
                s.name,
                hosts.join(", "),
                s.listeners.join(", ")
            ),
            fix: None,
        });
    }
    plan.findings.extend(done);
    let text = render(&plan, output, &chains);
    for d in report.items {
        // The hosts left out were reported above; what remains is the final check's.
        if d.severity == Severity::Error && uncovered(&d.message) && site_host(&d.path).is_some() {
            continue;
        }
        let at = source_of(&plan, &d.path);
        plan.findings.push(Finding {
            class: match d.severity {
                Severity::Error => Class::CheckError,
                Severity::Warning => Class::CheckWarning,
            },
            at,
            path: (!d.path.is_empty()).then(|| d.path.clone()),
            message: d.message,
            fix: d.fix,
        });
    }
    Outcome {
        toml: text,
        plan,
        chains,
    }
}

/// Whether the check's message says a host has no certificate covering it (runtime.rs).
fn uncovered(message: &str) -> bool {
    message.contains("is not covered by the site's certificate")
        || message.contains("no certificate in the pool covers host")
}

/// Portico's check of `text` as the file `output`: the file's checks and the certificates'.
fn check(text: &str, output: &Path) -> crate::config::Report {
    let mut report = crate::config::Report::default();
    let Some(config) = Config::from_str(text, output, &mut report) else {
        return report;
    };
    let (_, more) = runtime::build(config, Mode::Check, &Shared::new());
    report.extend(more);
    report
}

/// `site[N].hosts[M]` -> (N, M).
fn site_host(path: &str) -> Option<(usize, usize)> {
    let rest = path.strip_prefix("site[")?;
    let (n, rest) = rest.split_once(']')?;
    let rest = rest.strip_prefix(".hosts[")?;
    let (m, _) = rest.split_once(']')?;
    Some((n.parse().ok()?, m.parse().ok()?))
}

/// `site[N]...` or `listener[N]...` -> the source line of that site (host) or listener.
fn source_of(plan: &Plan, path: &str) -> Option<Loc> {
    if let Some((n, m)) = site_host(path) {
        let site = plan
            .sites
            .iter()
            .filter(|s| s.served_hosts().next().is_some())
            .nth(n)?;
        return site.served_hosts().nth(m).map(|h| h.at.clone());
    }
    let index = |prefix: &str| -> Option<usize> {
        path.strip_prefix(prefix)?.split_once(']')?.0.parse().ok()
    };
    if let Some(n) = index("site[") {
        return plan
            .sites
            .iter()
            .filter(|s| s.served_hosts().next().is_some())
            .nth(n)
            .map(|s| s.at.clone());
    }
    if let Some(n) = index("listener[") {
        return plan.listeners.get(n).map(|l| l.at.clone());
    }
    None
}

/// For each site whose certificate has a separate chain file, the joined chain to write
/// beside `output` (`chains/SITE.pem`) before [`finish`] checks the output. A file that
/// cannot be read is reported and the certificate is used without it.
pub fn chains(plan: &mut Plan, output: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = output
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("chains");
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for s in &mut plan.sites {
        let Some(tls) = &mut s.tls else { continue };
        let Some(chain) = tls.chain.clone() else {
            continue;
        };
        let read = |p: &Path| std::fs::read(p).map_err(|e| (p.to_path_buf(), e));
        match read(&tls.cert).and_then(|mut c| {
            let more = read(&chain)?;
            if !c.ends_with(b"\n") {
                c.push(b'\n');
            }
            c.extend(more);
            Ok(c)
        }) {
            Ok(joined) => {
                let path = dir.join(format!("{}.pem", file_stem(&s.name)));
                notes.push(Finding {
                    class: Class::Translated,
                    at: Some(tls.at.clone()),
                    path: None,
                    message: format!(
                        "the certificate {} and its chain file {} are joined into {} (Portico reads one chain file, leaf first)",
                        tls.cert.display(),
                        chain.display(),
                        path.display()
                    ),
                    fix: None,
                });
                out.push((path, joined));
            }
            Err((p, e)) => {
                tls.chain = None;
                notes.push(Finding {
                    class: Class::NotTranslated,
                    at: Some(tls.at.clone()),
                    path: None,
                    message: format!(
                        "cannot read {} to join the chain: {}; the certificate is used without its chain",
                        p.display(),
                        crate::error_text::describe_io(&e)
                    ),
                    fix: None,
                });
            }
        }
    }
    plan.findings.extend(notes);
    out
}

/// A site name as a file name: letters, digits, `-`, `_` and `.`; the rest becomes `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Which server the file is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Nginx,
    Apache,
    Iis,
}

/// Options of `portico import iis`.
#[derive(Debug, Clone, Default)]
pub struct IisFiles {
    /// The output of `netsh http show sslcert`.
    pub sslcert: Option<PathBuf>,
    /// Where the certificates are, as `THUMBPRINT.pem` and `THUMBPRINT.key`.
    pub cert_dir: Option<PathBuf>,
}

/// Reads `file` as `source` says into a plan.
pub fn read(source: Source, file: &Path, iis: &IisFiles) -> Result<Plan, ImportError> {
    match source {
        Source::Nginx => nginx::read(file),
        Source::Apache => apache::read(file),
        Source::Iis => iis::read(file, iis),
    }
}

/// Shared by the readers: a path as written, made absolute against `base`.
pub(crate) fn resolve(base: &Path, written: &str) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A file name shared by many findings.
pub(crate) type File = Arc<Path>;

#[cfg(test)]
mod tests;

/// A listen address as Portico writes it: `*:port` for every address (nginx's `443`,
/// `0.0.0.0:443` and `[::]:443`, Apache's `*` and `_default_`, IIS's `*`), `IP:port` or
/// `[IPv6]:port`. None when `host` is a name, which Portico does not listen on.
pub(crate) fn listen_address(host: &str, port: u16) -> Option<String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if matches!(bare, "" | "*" | "_default_" | "0.0.0.0" | "::") {
        return Some(format!("*:{port}"));
    }
    match bare.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(ip) => Some(format!("{ip}:{port}")),
        std::net::IpAddr::V6(ip) => Some(match ip.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{port}"),
            None => format!("[{ip}]:{port}"),
        }),
    }
}

/// A host name as the source wrote it, normalized, or why it is not one Portico can bind.
pub(crate) fn host_name(written: &str) -> Result<String, String> {
    crate::names::HostName::parse(written)
        .map(|h| h.as_str().to_string())
        .map_err(|e| e.to_string())
}
