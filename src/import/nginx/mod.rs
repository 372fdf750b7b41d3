//! `portico import nginx`: nginx's configuration syntax (directives, blocks, quotes,
//! comments, `include`) and its resolution rules for TLS servers: per `listen` address, the
//! `default_server` (or the first `server` block) answers every name no block claims and
//! clients without SNI; a name claimed twice goes to the first block (nginx warns "conflicting
//! server name ... ignored").
//!
//! Relative `include` and `ssl_certificate` paths are resolved against the directory of the
//! main file, as nginx resolves them against its configuration prefix; relative `root`
//! paths against nginx's installation prefix (Debian's `/usr/share/nginx`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod syntax;

pub use syntax::{parse, Directive};

use super::resolve::{resolve_blocks, Block, BlockListen, Rules};
use super::source::Loc;
use super::{host_name, listen_address, resolve, Action, Class, Host, ImportError, Plan, Tls};

/// Where Debian's nginx resolves a relative `root` (its `--prefix`).
const PREFIX: &str = "/usr/share/nginx";

/// Directives that need no translation: Portico has its own setting or behaviour for them,
/// or they only concern logs and buffers.
const NO_EFFECT: &[&str] = &[
    "access_log",
    "error_log",
    "log_not_found",
    "ssl_session_cache",
    "ssl_session_timeout",
    "ssl_session_tickets",
    "ssl_session_ticket_key",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_dhparam",
    "ssl_ecdh_curve",
    "ssl_conf_command",
    "ssl_buffer_size",
    "ssl_early_data",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_trusted_certificate",
    "http2",
    "server_tokens",
    "sendfile",
    "tcp_nopush",
    "tcp_nodelay",
    "keepalive_timeout",
    "keepalive_requests",
    "client_header_timeout",
    "charset",
    "proxy_http_version",
    "proxy_buffering",
    "proxy_read_timeout",
    "proxy_connect_timeout",
    "proxy_send_timeout",
];

/// A `listen` directive, read.
#[derive(Debug, Clone)]
struct Listen {
    address: String,
    ssl: bool,
    default: bool,
    at: Loc,
}

/// What a `server` block says, before the resolution rules.
#[derive(Debug)]
struct Server {
    at: Loc,
    listens: Vec<Listen>,
    names: Vec<(String, Loc)>,
    certs: Vec<(String, Loc)>,
    keys: Vec<(String, Loc)>,
    reject_handshake: bool,
    action: Option<Action>,
    /// `return 301 https://$host$request_uri` and the like: the http-to-https redirect that
    /// Portico's http listeners make themselves.
    to_https: bool,
}

/// Values a `server` inherits from `http`.
#[derive(Debug, Default, Clone)]
struct Inherited {
    certs: Vec<(String, Loc)>,
    keys: Vec<(String, Loc)>,
    root: Option<(String, Loc)>,
}

/// Reads `file` into a plan.
pub fn read(file: &Path) -> Result<Plan, ImportError> {
    let tree = parse(file)?;
    let conf_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut plan = Plan::new("nginx", file);
    let mut servers = Vec::new();
    for d in &tree {
        match (d.name.as_str(), &d.block) {
            ("http", Some(block)) => {
                read_http(&mut plan, block, &mut servers);
            }
            ("stream", Some(_)) => plan.note_fix(
                Class::NotTranslated,
                Some(&d.at),
                "the stream block (TCP proxying, ssl_preread) is not translated",
                "a passthrough site (passthrough = { backend }) relays TLS by SNI without terminating it",
            ),
            ("mail", Some(_)) => plan.note(
                Class::NotTranslated,
                Some(&d.at),
                "the mail block is not translated: Portico serves HTTPS only",
            ),
            _ => {}
        }
    }
    resolve_servers(&mut plan, servers, &conf_dir);
    Ok(plan)
}

fn read_http(plan: &mut Plan, block: &[Directive], servers: &mut Vec<Server>) {
    let mut inherited = Inherited::default();
    let mut upstreams: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // http-level values apply to every server, wherever they are written in the block.
    for d in block {
        match d.name.as_str() {
            "ssl_certificate" => inherited.certs.extend(first_arg(d)),
            "ssl_certificate_key" => inherited.keys.extend(first_arg(d)),
            "root" => inherited.root = first_arg(d),
            "ssl_protocols" => old_protocols(plan, d),
            "upstream" => {
                if let (Some(name), Some(b)) = (d.args.first(), &d.block) {
                    let list = b
                        .iter()
                        .filter(|s| s.name == "server")
                        .filter_map(|s| s.args.first())
                        .map(|a| format!("http://{a}"))
                        .collect();
                    upstreams.insert(name.clone(), list);
                }
            }
            _ => {}
        }
    }
    for d in block {
        if d.name == "server" {
            if let Some(b) = &d.block {
                servers.push(read_server(plan, d, b, &inherited, &upstreams));
            }
        }
    }
}

fn first_arg(d: &Directive) -> Option<(String, Loc)> {
    d.args.first().map(|a| (a.clone(), d.at.clone()))
}

/// `ssl_protocols` with TLSv1 or TLSv1.1 in it.
fn old_protocols(plan: &mut Plan, d: &Directive) {
    let old: Vec<&str> = d
        .args
        .iter()
        .map(String::as_str)
        .filter(|p| matches!(*p, "TLSv1" | "TLSv1.1" | "SSLv3" | "SSLv2"))
        .collect();
    if !old.is_empty() {
        plan.note_fix(
            Class::Wrong,
            Some(&d.at),
            format!(
                "ssl_protocols still enables {} (deprecated, RFC 8996); Portico offers only TLS 1.2 and 1.3, so clients that cannot speak TLS 1.2 will no longer connect",
                old.join(", ")
            ),
            "nothing to change in Portico; check the access logs for clients still using these versions before the move",
        );
    }
}

fn read_server(
    plan: &mut Plan,
    d: &Directive,
    block: &[Directive],
    inherited: &Inherited,
    upstreams: &BTreeMap<String, Vec<String>>,
) -> Server {
    let mut s = Server {
        at: d.at.clone(),
        listens: Vec::new(),
        names: Vec::new(),
        certs: Vec::new(),
        keys: Vec::new(),
        reject_handshake: false,
        action: None,
        to_https: false,
    };
    let mut ssl_on = false;
    let mut had_listen = false;
    let mut root = inherited.root.clone();
    for d in block {
        match d.name.as_str() {
            "listen" => {
                had_listen = true;
                if let Some(l) = read_listen(plan, d) {
                    s.listens.push(l);
                }
            }
            "server_name" => {
                for a in &d.args {
                    s.names.push((a.clone(), d.at.clone()));
                }
            }
            "ssl_certificate" => s.certs.extend(first_arg(d)),
            "ssl_certificate_key" => s.keys.extend(first_arg(d)),
            "ssl" => ssl_on = d.args.first().is_some_and(|a| a == "on"),
            "ssl_reject_handshake" => {
                s.reject_handshake = d.args.first().is_some_and(|a| a == "on")
            }
            "ssl_protocols" => old_protocols(plan, d),
            "root" => root = first_arg(d),
            "index" => {
                if d.args.first().is_some_and(|a| a != "index.html") {
                    plan.note(
                        Class::NotTranslated,
                        Some(&d.at),
                        format!(
                            "index {}: Portico serves index.html only",
                            d.args.join(" ")
                        ),
                    );
                }
            }
            "return" => match read_return(d) {
                Some(Returned::ToHttps) => s.to_https = true,
                Some(Returned::Action(a)) => s.action = Some(a),
                None => not_translated(plan, d),
            },
            "rewrite" => match read_rewrite(d) {
                Some(a) => s.action = Some(a),
                None => plan.note_fix(
                    Class::NotTranslated,
                    Some(&d.at),
                    format!("rewrite {}: only a rewrite of every path to one URL (a plain redirect) is translated", d.args.join(" ")),
                    "rewrite the rule as a redirect site, or keep it on a backend behind a proxy site",
                ),
            },
            "location" => {
                let whole = d.args.len() == 1 && d.args[0] == "/";
                match (&d.block, whole) {
                    (Some(b), true) => {
                        read_location(plan, b, &mut root, &mut s, upstreams);
                    }
                    _ => plan.note_fix(
                        Class::NotTranslated,
                        Some(&d.at),
                        format!(
                            "location {}: a Portico site does one thing for every path",
                            d.args.join(" ")
                        ),
                        "split the path into a site of its own host, or keep the routing on a backend behind a proxy site",
                    ),
                }
            }
            "if" => plan.note_fix(
                Class::NotTranslated,
                Some(&d.at),
                format!("if {}: Portico has no conditions", d.args.join(" ")),
                "keep the logic on a backend behind a proxy site",
            ),
            n if NO_EFFECT.contains(&n) => {}
            _ => not_translated(plan, d),
        }
    }
    if ssl_on {
        for l in &mut s.listens {
            l.ssl = true;
        }
    }
    if !had_listen {
        // nginx's default: `listen *:80` (as root).
        s.listens.push(Listen {
            address: "*:80".to_string(),
            ssl: ssl_on,
            default: false,
            at: d.at.clone(),
        });
    }
    if s.certs.is_empty() {
        s.certs = inherited.certs.clone();
    }
    if s.keys.is_empty() {
        s.keys = inherited.keys.clone();
    }
    if s.action.is_none() {
        if let Some((r, _)) = root {
            s.action = Some(Action::Root(resolve(Path::new(PREFIX), &r)));
        }
    }
    s
}

fn not_translated(plan: &mut Plan, d: &Directive) {
    let mut text = d.name.clone();
    for a in &d.args {
        text.push(' ');
        text.push_str(a);
    }
    plan.note(
        Class::NotTranslated,
        Some(&d.at),
        format!("{text}: not translated"),
    );
}

/// `location / { ... }`: what it does for every path.
fn read_location(
    plan: &mut Plan,
    block: &[Directive],
    root: &mut Option<(String, Loc)>,
    s: &mut Server,
    upstreams: &BTreeMap<String, Vec<String>>,
) {
    for d in block {
        match d.name.as_str() {
            "root" => *root = first_arg(d),
            "proxy_pass" => match d.args.first().and_then(|u| proxy_target(u, upstreams)) {
                Some(list) => s.action = Some(Action::Proxy(list)),
                None => plan.note_fix(
                    Class::NotTranslated,
                    Some(&d.at),
                    format!(
                        "proxy_pass {}: not a plain http(s)://host:port or upstream",
                        d.args.join(" ")
                    ),
                    "write the site's proxy = { upstreams = [...] } by hand",
                ),
            },
            "proxy_set_header" => {
                let standard = matches!(
                    d.args.first().map(|h| h.to_ascii_lowercase()).as_deref(),
                    Some(
                        "host"
                            | "x-real-ip"
                            | "x-forwarded-for"
                            | "x-forwarded-proto"
                            | "x-forwarded-host"
                            | "forwarded"
                    )
                );
                if !standard {
                    not_translated(plan, d);
                }
            }
            "return" => match read_return(d) {
                Some(Returned::ToHttps) => s.to_https = true,
                Some(Returned::Action(a)) => s.action = Some(a),
                None => not_translated(plan, d),
            },
            // What Portico's static files do anyway: the file, a directory's index, or 404.
            "try_files"
                if matches!(
                    d.args
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice(),
                    ["$uri", "=404"] | ["$uri", "$uri/", "=404"]
                ) => {}
            "try_files" => plan.note(
                Class::NotTranslated,
                Some(&d.at),
                format!(
                    "try_files {}: Portico has no fallback files",
                    d.args.join(" ")
                ),
            ),
            "index" => {}
            n if NO_EFFECT.contains(&n) => {}
            _ => not_translated(plan, d),
        }
    }
}

/// `proxy_pass URL` -> the upstream URLs (an `upstream` block's servers).
fn proxy_target(url: &str, upstreams: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    if url.contains('$') {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !path.is_empty() && path != "/" {
        return None;
    }
    if let Some(list) = upstreams.get(host) {
        if scheme == "http" && !list.is_empty() {
            return Some(list.clone());
        }
        return Some(
            list.iter()
                .map(|u| u.replacen("http://", &format!("{scheme}://"), 1))
                .collect(),
        );
    }
    Some(vec![format!("{scheme}://{host}")])
}

enum Returned {
    ToHttps,
    Action(Action),
}

/// `return CODE [URL|TEXT]` or `return URL`.
fn read_return(d: &Directive) -> Option<Returned> {
    let (code, rest) = match d.args.as_slice() {
        [url] if url.starts_with("http://") || url.starts_with("https://") => (302, Some(url)),
        [code] => (code.parse::<u16>().ok()?, None),
        [code, rest] => (code.parse::<u16>().ok()?, Some(rest)),
        _ => return None,
    };
    if matches!(code, 301 | 302 | 303 | 307 | 308) {
        let url = rest?;
        if url.starts_with("https://$host$request_uri")
            || url.starts_with("https://$server_name$request_uri")
            || url.starts_with("https://$http_host$request_uri")
        {
            return Some(Returned::ToHttps);
        }
        let to = url.strip_suffix("$request_uri").unwrap_or(url);
        if to.contains('$') {
            return None;
        }
        return Some(Returned::Action(Action::Redirect {
            to: to.trim_end_matches('/').to_string(),
            status: code,
        }));
    }
    if (200..=599).contains(&code) {
        let body = rest.cloned().unwrap_or_default();
        if body.contains('$') {
            return None;
        }
        return Some(Returned::Action(Action::Respond { status: code, body }));
    }
    None
}

/// `rewrite ^ URL permanent;` and its common spellings -> a redirect.
fn read_rewrite(d: &Directive) -> Option<Action> {
    let [regex, to, flag] = d.args.as_slice() else {
        return None;
    };
    let status = match flag.as_str() {
        "permanent" => 301,
        "redirect" => 302,
        _ => return None,
    };
    let base = match regex.as_str() {
        "^" | "^.*$" | "^.*" => to.strip_suffix("$request_uri")?,
        "^(.*)$" | "^(.*)" => to.strip_suffix("$1")?,
        "^/(.*)$" | "^/(.*)" => to.strip_suffix("/$1")?,
        _ => return None,
    };
    if base.contains('$') || !(base.starts_with("https://") || base.starts_with("http://")) {
        return None;
    }
    Some(Action::Redirect {
        to: base.trim_end_matches('/').to_string(),
        status,
    })
}

fn read_listen(plan: &mut Plan, d: &Directive) -> Option<Listen> {
    let Some(first) = d.args.first() else {
        plan.note(
            Class::NotTranslated,
            Some(&d.at),
            "listen without an address",
        );
        return None;
    };
    let (host, port) = if let Ok(port) = first.parse::<u16>() {
        ("*".to_string(), port)
    } else if let Some(rest) = first.strip_prefix('[') {
        let (h, p) = rest.split_once(']')?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().ok(),
            None => Some(80),
        };
        (format!("[{h}]"), port.unwrap_or(0))
    } else if let Some((h, p)) = first.rsplit_once(':') {
        (h.to_string(), p.parse().unwrap_or(0))
    } else {
        (first.clone(), 80)
    };
    let address = if first.starts_with("unix:") || port == 0 {
        None
    } else {
        listen_address(&host, port)
    };
    let Some(address) = address else {
        plan.note_fix(
            Class::NotTranslated,
            Some(&d.at),
            format!("listen {first}: Portico listens on IP:port or *:port only"),
            "give the IP address the name resolves to",
        );
        return None;
    };
    let flags = &d.args[1..];
    if flags.iter().any(|f| f == "quic") {
        plan.note(
            Class::NotTranslated,
            Some(&d.at),
            format!("listen {first} quic: HTTP/3 is not translated"),
        );
        return None;
    }
    if flags.iter().any(|f| f == "proxy_protocol") {
        plan.note_fix(
            Class::NotTranslated,
            Some(&d.at),
            format!("listen {first} proxy_protocol: not translated"),
            "set proxy_protocol_from on the listener to the load balancers' addresses",
        );
    }
    Some(Listen {
        address,
        ssl: flags.iter().any(|f| f == "ssl"),
        default: flags
            .iter()
            .any(|f| f == "default_server" || f == "default"),
        at: d.at.clone(),
    })
}

/// One server_name value -> the Portico hosts it becomes, or why none.
fn names_of(written: &str) -> Result<Vec<String>, String> {
    if written.starts_with('~') {
        return Err("a regular expression".to_string());
    }
    if written.contains('$') {
        return Err("a variable".to_string());
    }
    if let Some(base) = written.strip_prefix('.') {
        // `.example.com` is nginx's example.com and every name under it.
        let exact = host_name(base)?;
        let wild = host_name(&format!("*.{base}"))?;
        return Ok(vec![exact, wild]);
    }
    if written.ends_with(".*") {
        return Err("a wildcard at the end (Portico's wildcard is *.name only)".to_string());
    }
    Ok(vec![host_name(written)?])
}

/// nginx's servers as the blocks the common rules resolve.
fn resolve_servers(plan: &mut Plan, servers: Vec<Server>, conf_dir: &Path) {
    let mut blocks = Vec::new();
    for s in servers {
        let mut hosts = Vec::new();
        for (written, at) in &s.names {
            match names_of(written) {
                Ok(names) => {
                    for name in names {
                        hosts.push(Host {
                            name,
                            at: at.clone(),
                            left_out: None,
                        });
                    }
                }
                Err(_) if written.is_empty() || written == "_" || written == "localhost" => {}
                Err(why) => plan.note_fix(
                    Class::NotTranslated,
                    Some(at),
                    format!("server_name {written}: {why}, not a name Portico can bind"),
                    "list the names it should match, exact or *.name",
                ),
            }
        }
        let tls = match s.certs.first() {
            Some((cert, at)) if cert.contains('$') => {
                plan.note(
                    Class::NotTranslated,
                    Some(at),
                    format!("ssl_certificate {cert}: a certificate chosen by a variable is not translated; the pool ([[certificate]]) chooses by name"),
                );
                None
            }
            Some((cert, at)) => {
                let cert_path = resolve(conf_dir, cert);
                let key_path = s
                    .keys
                    .first()
                    .map(|(k, _)| resolve(conf_dir, k))
                    .unwrap_or_else(|| cert_path.clone());
                Some(Tls {
                    cert: cert_path,
                    key: key_path,
                    chain: None,
                    at: at.clone(),
                })
            }
            None => None,
        };
        for (cert, at) in s.certs.iter().skip(1) {
            plan.note_fix(
                Class::NotTranslated,
                Some(at),
                format!("a second ssl_certificate ({cert}): a site pins one certificate"),
                "add it as a [[certificate]] and let the site use the pool (tls = \"pool\"), which keeps an RSA and an ECDSA certificate side by side",
            );
        }
        blocks.push(Block {
            at: s.at,
            listens: s
                .listens
                .into_iter()
                .map(|l| BlockListen {
                    address: l.address,
                    tls: l.ssl,
                    default: l.default,
                    at: l.at,
                })
                .collect(),
            hosts,
            tls,
            action: s.action,
            to_https: s.to_https,
            reject_handshake: s.reject_handshake,
        });
    }
    resolve_blocks(plan, blocks, &Rules::NGINX);
}
