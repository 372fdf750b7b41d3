//! `portico import apache`: Apache httpd's configuration syntax (one directive a line,
//! `\` continuations, `#` comment lines, `<Section args>` ... `</Section>`, quoted
//! arguments, `Include`/`IncludeOptional`) and its rules for TLS virtual hosts: per
//! address, the first `VirtualHost` answers every name no `ServerName`/`ServerAlias` claims
//! and clients without SNI; a name claimed twice goes to the first.
//!
//! Relative paths (`Include`, `SSLCertificateFile`, `DocumentRoot`) are relative to
//! `ServerRoot`, as Apache resolves them; without a `ServerRoot` directive, the directory of
//! the main file (Debian's `/etc/apache2/apache2.conf` lives in its ServerRoot).
//! `<IfModule>`, `<IfDefine>` and `<IfVersion>` sections are read as if their condition held.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::resolve::{resolve_blocks, Block, BlockListen, Rules};
use super::source::{self, Loc, MAX_DEPTH};
use super::{
    host_name, listen_address, resolve, Action, Class, File, Host, ImportError, Plan, Tls,
};

/// One directive or section; names as written (compared without case).
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub at: Loc,
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Splits a line into arguments: words, or `"..."`/`'...'` strings.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            while let Some(d) = chars.next() {
                if d == '\\' {
                    if let Some(&e) = chars.peek() {
                        if e == c || e == '\\' {
                            w.push(e);
                            chars.next();
                            continue;
                        }
                    }
                }
                if d == c {
                    break;
                }
                w.push(d);
            }
        } else {
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                w.push(d);
                chars.next();
            }
        }
        out.push(w);
    }
    out
}

struct Parser {
    server_root: PathBuf,
}

impl Parser {
    fn file(
        &mut self,
        path: &Path,
        depth: usize,
        from: Option<&Loc>,
    ) -> Result<Vec<Directive>, ImportError> {
        if depth > MAX_DEPTH {
            return Err(ImportError::TooDeep {
                at: from
                    .cloned()
                    .unwrap_or_else(|| Loc::new(&Arc::from(path), 1)),
                depth: MAX_DEPTH,
            });
        }
        let text = source::read_text(path)?;
        let file: File = Arc::from(path);
        // Logical lines: continuations joined, each with its first line number.
        let mut lines: Vec<(String, usize)> = Vec::new();
        let mut pending: Option<(String, usize)> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let (mut acc, start) = pending.take().unwrap_or((String::new(), n));
            if let Some(cut) = raw.strip_suffix('\\') {
                acc.push_str(cut);
                acc.push(' ');
                pending = Some((acc, start));
                continue;
            }
            acc.push_str(raw);
            lines.push((acc, start));
        }
        if let Some(p) = pending {
            lines.push(p);
        }
        let mut pos = 0;
        let mut stack: Vec<(Directive, Vec<Directive>)> = Vec::new();
        let mut out: Vec<Directive> = Vec::new();
        while pos < lines.len() {
            let (line, n) = &lines[pos];
            pos += 1;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let at = Loc::new(&file, *n);
            if let Some(close) = t.strip_prefix("</") {
                let name = close.trim_end_matches('>').trim();
                let Some((mut open, body)) = stack.pop() else {
                    return Err(ImportError::Syntax {
                        at,
                        message: format!("</{name}> without matching <{name}> section"),
                    });
                };
                if !open.name.eq_ignore_ascii_case(name) {
                    return Err(ImportError::Syntax {
                        at,
                        message: format!(
                            "</{name}> closes <{}> (opened at {})",
                            open.name, open.at
                        ),
                    });
                }
                open.block = Some(body);
                match stack.last_mut() {
                    Some((_, parent)) => parent.push(open),
                    None => out.push(open),
                }
                continue;
            }
            if let Some(open) = t.strip_prefix('<') {
                let Some(inner) = open.strip_suffix('>') else {
                    return Err(ImportError::Syntax {
                        at,
                        message: format!("<{open} is missing its closing \">\""),
                    });
                };
                let mut w = words(inner);
                if w.is_empty() {
                    return Err(ImportError::Syntax {
                        at,
                        message: "an empty section <>".to_string(),
                    });
                }
                let name = w.remove(0);
                stack.push((
                    Directive {
                        name,
                        args: w,
                        at,
                        block: None,
                    },
                    Vec::new(),
                ));
                continue;
            }
            let mut w = words(t);
            let name = w.remove(0);
            let mut found = Vec::new();
            if name.eq_ignore_ascii_case("ServerRoot") {
                if let Some(root) = w.first() {
                    self.server_root = PathBuf::from(root);
                }
            }
            if name.eq_ignore_ascii_case("Include") || name.eq_ignore_ascii_case("IncludeOptional")
            {
                let optional = name.eq_ignore_ascii_case("IncludeOptional");
                let Some(pattern) = w.first() else {
                    return Err(ImportError::Syntax {
                        at,
                        message: format!("{name} without a file"),
                    });
                };
                let pattern = resolve(&self.server_root, pattern);
                let files = source::include(&pattern, !optional, &at)?;
                if files.is_empty() && !optional && pattern.to_string_lossy().contains('*') {
                    return Err(ImportError::Syntax {
                        at,
                        message: format!(
                            "Include {}: no file matches (Apache refuses to start; IncludeOptional may match nothing)",
                            pattern.display()
                        ),
                    });
                }
                for f in files {
                    if f.is_dir() {
                        continue;
                    }
                    found.extend(self.file(&f, depth + 1, Some(&at))?);
                }
            } else {
                found.push(Directive {
                    name,
                    args: w,
                    at,
                    block: None,
                });
            }
            match stack.last_mut() {
                Some((_, body)) => body.extend(found),
                None => out.extend(found),
            }
        }
        if let Some((open, _)) = stack.pop() {
            return Err(ImportError::Syntax {
                at: open.at.clone(),
                message: format!("<{}> is never closed", open.name),
            });
        }
        Ok(out)
    }
}

/// Parses `file` and everything it includes.
pub fn parse(file: &Path) -> Result<Vec<Directive>, ImportError> {
    let server_root = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut p = Parser { server_root };
    p.file(file, 0, None)
}

/// Directives that need no translation (logs, ciphers and sessions Portico sets itself).
const NO_EFFECT: &[&str] = &[
    "errorlog",
    "customlog",
    "loglevel",
    "transferlog",
    "serveradmin",
    "sslengine",
    "sslciphersuite",
    "sslhonorcipherorder",
    "sslsessioncache",
    "sslsessioncachetimeout",
    "sslsessiontickets",
    "ssloptions",
    "sslcompression",
    "sslusestapling",
    "sslstaplingcache",
    "sslopensslconfcmd",
    "protocols",
    "proxypassreverse",
    "proxypreservehost",
    "proxyrequests",
    "rewriteengine",
    "serversignature",
    "servertokens",
    "keepalive",
    "keepalivetimeout",
    "directoryindex",
];

/// Sections that are read as if their condition held.
fn conditional(d: &Directive) -> bool {
    d.is("IfModule") || d.is("IfDefine") || d.is("IfVersion")
}

/// Reads `file` into a plan.
pub fn read(file: &Path) -> Result<Plan, ImportError> {
    let tree = parse(file)?;
    let mut plan = Plan::new("apache", file);
    let mut global = Global {
        server_root: file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        server_name: None,
        listen: Vec::new(),
    };
    let mut blocks = Vec::new();
    walk(&mut plan, &tree, &mut global, &mut blocks);
    narrower_listen(&mut plan, &blocks, &global.listen);
    resolve_blocks(&mut plan, blocks, &Rules::APACHE);
    Ok(plan)
}

struct Global {
    server_root: PathBuf,
    server_name: Option<(String, Loc)>,
    /// `Listen` directives: (address as Portico writes it, where).
    listen: Vec<(String, Loc)>,
}

fn walk(plan: &mut Plan, list: &[Directive], g: &mut Global, blocks: &mut Vec<Block>) {
    for d in list {
        if d.is("ServerRoot") {
            if let Some(r) = d.args.first() {
                g.server_root = PathBuf::from(r);
            }
        } else if d.is("ServerName") {
            g.server_name = d.args.first().map(|n| (n.clone(), d.at.clone()));
        } else if d.is("Listen") {
            let Some(a) = d.args.first() else { continue };
            let address = match a.parse::<u16>() {
                Ok(port) => listen_address("*", port),
                Err(_) => a
                    .rsplit_once(':')
                    .and_then(|(h, p)| listen_address(h, p.parse().ok()?)),
            };
            if let Some(address) = address {
                g.listen.push((address, d.at.clone()));
            }
        } else if d.is("SSLProtocol") {
            protocols(plan, d);
        } else if d.is("VirtualHost") {
            if let Some(body) = &d.block {
                if let Some(b) = vhost(plan, d, body, g) {
                    blocks.push(b);
                }
            }
        } else if conditional(d) {
            if let Some(body) = &d.block {
                walk(plan, body, g, blocks);
            }
        }
    }
}

/// `SSLProtocol` that leaves TLS 1.0 or 1.1 on.
fn protocols(plan: &mut Plan, d: &Directive) {
    let all = ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
    let mut on: Vec<&str> = Vec::new();
    for (i, a) in d.args.iter().enumerate() {
        let (sign, p) = match a.chars().next() {
            Some('+') => ('+', &a[1..]),
            Some('-') => ('-', &a[1..]),
            _ => (' ', a.as_str()),
        };
        let names: Vec<&str> = if p.eq_ignore_ascii_case("all") {
            // Apache 2.4: all is +TLSv1 +TLSv1.1 +TLSv1.2 (+TLSv1.3), no SSLv3.
            all[1..].to_vec()
        } else {
            all.iter()
                .copied()
                .filter(|n| n.eq_ignore_ascii_case(p))
                .collect()
        };
        if sign == ' ' && i == 0 {
            on.clear();
        }
        for n in names {
            if sign == '-' {
                on.retain(|x| *x != n);
            } else if !on.contains(&n) {
                on.push(n);
            }
        }
    }
    let old: Vec<&str> = on
        .iter()
        .copied()
        .filter(|p| matches!(*p, "SSLv3" | "TLSv1" | "TLSv1.1"))
        .collect();
    if !old.is_empty() {
        plan.note_fix(
            Class::Wrong,
            Some(&d.at),
            format!(
                "SSLProtocol {} still enables {} (deprecated, RFC 8996; OpenSSL's security level may refuse them too); Portico offers only TLS 1.2 and 1.3, so clients that cannot speak TLS 1.2 will no longer connect",
                d.args.join(" "),
                old.join(", ")
            ),
            "nothing to change in Portico; check the access logs for clients still using these versions before the move",
        );
    }
}

fn not_translated(plan: &mut Plan, d: &Directive, why: &str) {
    let text = if d.args.is_empty() {
        d.name.clone()
    } else {
        format!("{} {}", d.name, d.args.join(" "))
    };
    let shown = if d.block.is_some() {
        format!("<{text}>")
    } else {
        text
    };
    plan.note(
        Class::NotTranslated,
        Some(&d.at),
        format!("{shown}: not translated{why}"),
    );
}

/// A `<Directory>` that only grants access (what every Debian site has) changes nothing.
fn grants_only(body: &[Directive]) -> bool {
    body.iter().all(|d| {
        d.is("Options")
            || d.is("AllowOverride")
            || (d.is("Require")
                && d.args
                    .iter()
                    .map(|a| a.to_ascii_lowercase())
                    .eq(["all", "granted"]))
    })
}

#[derive(Default)]
struct VhostSeen {
    names: Vec<(String, Loc)>,
    ssl: bool,
    cert: Option<(String, Loc)>,
    key: Option<(String, Loc)>,
    chain: Option<(String, Loc)>,
    root: Option<(String, Loc)>,
    action: Option<Action>,
    to_https: bool,
}

fn vhost(plan: &mut Plan, d: &Directive, body: &[Directive], g: &Global) -> Option<Block> {
    let mut seen = VhostSeen::default();
    vhost_body(plan, body, &mut seen);
    let mut listens = Vec::new();
    for a in &d.args {
        let (host, port) = match a.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                (h.to_string(), p.parse::<u16>().unwrap_or(0))
            }
            _ => {
                plan.note_fix(
                    Class::NotTranslated,
                    Some(&d.at),
                    format!("<VirtualHost {a}>: an address without a port (it matches every port Apache listens on)"),
                    "write the address with its port, as in *:443",
                );
                continue;
            }
        };
        match listen_address(&host, port) {
            Some(address) => listens.push(BlockListen {
                address,
                tls: seen.ssl,
                default: false,
                at: d.at.clone(),
            }),
            None => plan.note_fix(
                Class::NotTranslated,
                Some(&d.at),
                format!("<VirtualHost {a}>: Portico listens on IP:port or *:port only"),
                "give the IP address the name resolves to",
            ),
        }
    }
    if listens.is_empty() {
        return None;
    }
    if seen.names.is_empty() {
        // No ServerName: Apache gives the VirtualHost the main server's.
        if let Some(n) = &g.server_name {
            seen.names.push(n.clone());
        }
    }
    let mut hosts = Vec::new();
    for (written, at) in &seen.names {
        // ServerName may carry a scheme and a port: https://www.example.com:443.
        let bare = written.split_once("://").map(|(_, r)| r).unwrap_or(written);
        let bare = match bare.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => bare,
        };
        if bare.contains('?') || (bare.contains('*') && !bare.starts_with("*.")) {
            plan.note_fix(
                Class::NotTranslated,
                Some(at),
                format!("{written}: a pattern Portico cannot bind (its wildcard is *.name only)"),
                "list the names it should match",
            );
            continue;
        }
        match host_name(bare) {
            Ok(name) => hosts.push(Host {
                name,
                at: at.clone(),
                left_out: None,
            }),
            Err(why) => plan.note(
                Class::NotTranslated,
                Some(at),
                format!("{written}: not a host name Portico can bind ({why})"),
            ),
        }
    }
    let tls = seen.cert.as_ref().map(|(cert, at)| {
        let cert_path = resolve(&g.server_root, cert);
        Tls {
            key: seen
                .key
                .as_ref()
                .map(|(k, _)| resolve(&g.server_root, k))
                .unwrap_or_else(|| cert_path.clone()),
            cert: cert_path,
            chain: seen.chain.as_ref().map(|(c, _)| resolve(&g.server_root, c)),
            at: at.clone(),
        }
    });
    let action = seen.action.or_else(|| {
        seen.root
            .as_ref()
            .map(|(r, _)| Action::Root(resolve(&g.server_root, r)))
    });
    Some(Block {
        at: d.at.clone(),
        listens,
        hosts,
        tls,
        action,
        to_https: seen.to_https,
        reject_handshake: false,
    })
}

fn vhost_body(plan: &mut Plan, body: &[Directive], seen: &mut VhostSeen) {
    for d in body {
        let lower = d.name.to_ascii_lowercase();
        match lower.as_str() {
            "servername" => seen
                .names
                .extend(d.args.first().map(|n| (n.clone(), d.at.clone()))),
            "serveralias" => {
                for a in &d.args {
                    seen.names.push((a.clone(), d.at.clone()));
                }
            }
            "sslengine" => seen.ssl = d.args.first().is_some_and(|a| a.eq_ignore_ascii_case("on")),
            "sslcertificatefile" => seen.cert = d.args.first().map(|a| (a.clone(), d.at.clone())),
            "sslcertificatekeyfile" => seen.key = d.args.first().map(|a| (a.clone(), d.at.clone())),
            "sslcertificatechainfile" => {
                seen.chain = d.args.first().map(|a| (a.clone(), d.at.clone()))
            }
            "sslprotocol" => protocols(plan, d),
            "documentroot" => seen.root = d.args.first().map(|a| (a.clone(), d.at.clone())),
            "redirect" | "redirectpermanent" | "redirecttemp" => redirect(plan, d, seen),
            "proxypass" => match d.args.as_slice() {
                [path, url, ..]
                    if path == "/"
                        && (url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    let url = url.trim_end_matches('/');
                    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
                    if rest.contains('/') {
                        not_translated(plan, d, ": a backend URL with a path");
                    } else {
                        seen.action = Some(Action::Proxy(vec![format!("{scheme}://{rest}")]));
                    }
                }
                _ => not_translated(
                    plan,
                    d,
                    ": only ProxyPass / http(s)://host:port is translated",
                ),
            },
            "rewriterule" => {
                let to_https = d.args.get(1).is_some_and(|to| {
                    to.starts_with("https://%{HTTP_HOST}")
                        || to.starts_with("https://%{SERVER_NAME}")
                });
                if to_https {
                    seen.to_https = true;
                } else {
                    not_translated(
                        plan,
                        d,
                        ": Portico has no rewrite rules (a redirect site redirects every path)",
                    );
                }
            }
            "rewritecond" => {
                let about_https = d.args.first().is_some_and(|c| {
                    c.eq_ignore_ascii_case("%{HTTPS}") || c.eq_ignore_ascii_case("%{SERVER_PORT}")
                });
                if !about_https {
                    not_translated(plan, d, "");
                }
            }
            "directory" if d.block.as_deref().is_some_and(grants_only) => {}
            n if NO_EFFECT.contains(&n) => {}
            _ if conditional(d) => {
                if let Some(b) = &d.block {
                    vhost_body(plan, b, seen);
                }
            }
            _ => not_translated(plan, d, ""),
        }
    }
}

/// `Redirect [status] / URL`: the whole site, to one place.
fn redirect(plan: &mut Plan, d: &Directive, seen: &mut VhostSeen) {
    let lower = d.name.to_ascii_lowercase();
    let mut args: Vec<&str> = d.args.iter().map(String::as_str).collect();
    let mut status = match lower.as_str() {
        "redirectpermanent" => 301,
        _ => 302,
    };
    if lower == "redirect" && args.len() == 3 {
        status = match args[0].to_ascii_lowercase().as_str() {
            "permanent" => 301,
            "temp" => 302,
            "seeother" => 303,
            code => match code.parse::<u16>() {
                Ok(c @ (301 | 302 | 303 | 307 | 308)) => c,
                _ => {
                    not_translated(
                        plan,
                        d,
                        ": Portico redirects with 301, 302, 303, 307 or 308",
                    );
                    return;
                }
            },
        };
        args.remove(0);
    }
    match args.as_slice() {
        ["/", url] if url.starts_with("https://") || url.starts_with("http://") => {
            let host = url
                .split_once("://")
                .map(|(_, r)| r.split('/').next().unwrap_or(""))
                .unwrap_or("");
            let own = seen.names.iter().any(|(n, _)| n.eq_ignore_ascii_case(host));
            if url.starts_with("https://") && own {
                seen.to_https = true;
            } else {
                seen.action = Some(Action::Redirect {
                    to: url.trim_end_matches('/').to_string(),
                    status,
                });
            }
        }
        _ => not_translated(plan, d, ": only a redirect of / (every path) is translated"),
    }
}

/// A `<VirtualHost *:PORT>` where Apache `Listen`s on that port only on given IPs: it is
/// reachable on those IPs only, while the output's `*:PORT` listens on every address.
fn narrower_listen(plan: &mut Plan, blocks: &[Block], listen: &[(String, Loc)]) {
    let mut said = Vec::new();
    for b in blocks {
        for l in &b.listens {
            let Some(port) = l.address.strip_prefix("*:") else {
                continue;
            };
            let on_port: Vec<&(String, Loc)> = listen
                .iter()
                .filter(|(a, _)| a.rsplit_once(':').is_some_and(|(_, p)| p == port))
                .collect();
            if on_port.is_empty() || on_port.iter().any(|(a, _)| a.starts_with("*:")) {
                continue;
            }
            if said.contains(&l.address) {
                continue;
            }
            said.push(l.address.clone());
            let ips: Vec<&str> = on_port.iter().map(|(a, _)| a.as_str()).collect();
            plan.note_fix(
                Class::NotTranslated,
                Some(&on_port[0].1),
                format!(
                    "Apache listens on port {port} only at {}, so its VirtualHosts *:{port} are reachable there only; the output's listener {} accepts on every address",
                    ips.join(", "),
                    l.address
                ),
                format!("write the listener's address as {} if only that address should be served", ips[0]),
            );
        }
    }
}
