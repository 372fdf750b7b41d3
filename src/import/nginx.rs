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
use std::sync::Arc;

use super::resolve::{resolve_blocks, Block, BlockListen, Rules};
use super::source::{self, Loc, MAX_DEPTH};
use super::{
    host_name, listen_address, resolve, Action, Class, File, Host, ImportError, Plan, Tls,
};

/// Where Debian's nginx resolves a relative `root` (its `--prefix`).
const PREFIX: &str = "/usr/share/nginx";

/// One directive: `name args...;` or `name args... { block }`.
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub at: Loc,
    pub block: Option<Vec<Directive>>,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

/// Splits nginx configuration text into tokens with their lines.
fn tokens(text: &str, file: &File) -> Result<Vec<(Token, usize)>, ImportError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            ';' => out.push((Token::Semicolon, line)),
            '{' => out.push((Token::Open, line)),
            '}' => out.push((Token::Close, line)),
            '"' | '\'' => {
                let start = line;
                let mut word = String::new();
                let mut closed = false;
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                if e == '\n' {
                                    line += 1;
                                }
                                match e {
                                    '"' | '\'' | '\\' => word.push(e),
                                    'n' => word.push('\n'),
                                    't' => word.push('\t'),
                                    'r' => word.push('\r'),
                                    other => {
                                        word.push('\\');
                                        word.push(other);
                                    }
                                }
                            }
                        }
                        d if d == c => {
                            closed = true;
                            break;
                        }
                        '\n' => {
                            line += 1;
                            word.push('\n');
                        }
                        d => word.push(d),
                    }
                }
                if !closed {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, start),
                        message: format!("the string opened with {c} here is never closed"),
                    });
                }
                out.push((Token::Word(word), start));
            }
            c => {
                let mut word = String::new();
                let mut first = Some(c);
                loop {
                    let d = match first.take() {
                        Some(d) => d,
                        None => match chars.peek() {
                            Some(&d) if !(d.is_whitespace() || matches!(d, ';' | '{' | '}')) => {
                                chars.next();
                                d
                            }
                            _ => break,
                        },
                    };
                    // As nginx: \" \' \\ \t \r \n are escapes; any other backslash stays.
                    if d == '\\' {
                        match chars.next() {
                            Some(e @ ('"' | '\'' | '\\')) => word.push(e),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some('n') => word.push('\n'),
                            Some(e) => {
                                if e == '\n' {
                                    line += 1;
                                }
                                word.push('\\');
                                word.push(e);
                            }
                            None => word.push('\\'),
                        }
                        continue;
                    }
                    // `${var}` keeps its braces.
                    if d == '$' {
                        word.push(d);
                        if chars.peek() == Some(&'{') {
                            for e in chars.by_ref() {
                                word.push(e);
                                if e == '}' {
                                    break;
                                }
                            }
                        }
                        continue;
                    }
                    word.push(d);
                }
                out.push((Token::Word(word), line));
            }
        }
    }
    Ok(out)
}

/// Parses one file (following its includes) into directives.
fn parse_file(
    path: &Path,
    conf_dir: &Path,
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
    let toks = tokens(&text, &file)?;
    let mut pos = 0;
    let out = parse_block(&toks, &mut pos, &file, conf_dir, depth, false)?;
    Ok(out)
}

fn parse_block(
    toks: &[(Token, usize)],
    pos: &mut usize,
    file: &File,
    conf_dir: &Path,
    depth: usize,
    nested: bool,
) -> Result<Vec<Directive>, ImportError> {
    let mut out = Vec::new();
    let mut words: Vec<(String, usize)> = Vec::new();
    while let Some((tok, line)) = toks.get(*pos) {
        *pos += 1;
        match tok {
            Token::Word(w) => words.push((w.clone(), *line)),
            Token::Semicolon => {
                let Some(((name, l), args)) = words.split_first() else {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, *line),
                        message: "unexpected \";\"".to_string(),
                    });
                };
                let at = Loc::new(file, *l);
                let args: Vec<String> = args.iter().map(|(a, _)| a.clone()).collect();
                if name == "include" {
                    let Some(pattern) = args.first() else {
                        return Err(ImportError::Syntax {
                            at,
                            message: "include without a file".to_string(),
                        });
                    };
                    let pattern = resolve(conf_dir, pattern);
                    for f in source::include(&pattern, true, &at)? {
                        out.extend(parse_file(&f, conf_dir, depth + 1, Some(&at))?);
                    }
                } else {
                    out.push(Directive {
                        name: name.clone(),
                        args,
                        at,
                        block: None,
                    });
                }
                words.clear();
            }
            Token::Open => {
                let Some(((name, l), args)) = words.split_first() else {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, *line),
                        message: "a block \"{\" without a directive name".to_string(),
                    });
                };
                let at = Loc::new(file, *l);
                let args = args.iter().map(|(a, _)| a.clone()).collect();
                let name = name.clone();
                words.clear();
                let block = parse_block(toks, pos, file, conf_dir, depth, true)?;
                out.push(Directive {
                    name,
                    args,
                    at,
                    block: Some(block),
                });
            }
            Token::Close => {
                if !words.is_empty() {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, *line),
                        message: format!("\"{}\" is not terminated by \";\"", words[0].0),
                    });
                }
                if !nested {
                    return Err(ImportError::Syntax {
                        at: Loc::new(file, *line),
                        message: "unexpected \"}\"".to_string(),
                    });
                }
                return Ok(out);
            }
        }
    }
    if let Some((w, l)) = words.first() {
        return Err(ImportError::Syntax {
            at: Loc::new(file, *l),
            message: format!("\"{w}\" is not terminated by \";\" before the end of the file"),
        });
    }
    if nested {
        let last = toks.last().map(|(_, l)| *l).unwrap_or(1);
        return Err(ImportError::Syntax {
            at: Loc::new(file, last),
            message: "unexpected end of file, expecting \"}\"".to_string(),
        });
    }
    Ok(out)
}

/// Parses `file` and everything it includes.
pub fn parse(file: &Path) -> Result<Vec<Directive>, ImportError> {
    let conf_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse_file(file, &conf_dir, 0, None)
}

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
