//! The `[cluster]` table: the etcd members a fleet shares its state through, the prefix its
//! keys live under, this node's name and the file holding the key that seals secrets.
//!
//! Only what the text says is judged here: URLs, the prefix, the node name, which TLS files
//! are named. Whether the key file holds a key, and whether etcd answers, are for the runtime.

use super::*;
use crate::config::{Cluster, ClusterTls, ConfigSource};

/// The prefix when none is given.
pub(crate) const DEFAULT_PREFIX: &str = "/portico";
/// The key file when none is given, next to the configuration file.
pub(crate) const DEFAULT_KEY_FILE: &str = "cluster.key";
/// The longest node name: a DNS label's length, so a host name fits.
const MAX_NODE: usize = 63;

impl Checker<'_> {
    pub(in crate::config) fn cluster(&mut self, raw: raw::RawCluster) -> Option<Cluster> {
        unknown_keys(
            self.report,
            "cluster",
            &raw.unknown,
            &["etcd", "prefix", "node", "key_file", "tls", "config"],
        );
        let config = match raw.config.as_deref() {
            None | Some("file") => ConfigSource::File,
            Some("etcd") => ConfigSource::Etcd,
            Some(other) => {
                self.report.error(
                    "cluster.config",
                    format!("unknown configuration source {other:?}"),
                    Some("set config = \"file\" (the default: this file is the whole configuration) or \"etcd\" (the fleet's, pushed with `portico cluster push`)".to_string()),
                );
                ConfigSource::File
            }
        };
        let etcd = self.etcd_urls(raw.etcd.unwrap_or_default());
        let prefix = self.prefix(raw.prefix.as_deref().unwrap_or(DEFAULT_PREFIX));
        let node = match raw.node {
            Some(node) => self.node_name("cluster.node", &node, None),
            None => {
                let host = rustix::system::uname()
                    .nodename()
                    .to_string_lossy()
                    .into_owned();
                self.node_name("cluster", &host, Some(&host))
            }
        };
        let key_file = match raw.key_file.as_deref().unwrap_or(DEFAULT_KEY_FILE) {
            "" => {
                self.report.error(
                    "cluster.key_file",
                    "the key file's path is empty",
                    Some(format!(
                        "remove key_file to use {DEFAULT_KEY_FILE:?} next to this file, or name a file"
                    )),
                );
                None
            }
            path => Some(self.path(path)),
        };
        let https = etcd.iter().flatten().any(|u| u.starts_with("https://"));
        let tls = raw.tls.and_then(|t| self.cluster_tls(t));
        if https && tls.is_none() {
            self.report.error(
                "cluster.tls",
                "the etcd URLs are https://, but [cluster] names no CA to verify the members' certificates with",
                Some("add tls = { ca = \"etcd-ca.pem\" } (and cert and key when etcd asks for client certificates)".to_string()),
            );
        }
        if !https && tls.is_some() && etcd.as_ref().is_some_and(|e| !e.is_empty()) {
            self.report.warning(
                "cluster.tls",
                "tls is not used: every etcd URL is http://",
                Some("write the URLs as https://HOST:PORT, or remove tls".to_string()),
            );
        }
        Some(Cluster {
            etcd: etcd?,
            prefix: prefix?,
            node: node?,
            key_file: key_file?,
            tls: if https { tls } else { None },
            config,
        })
    }

    fn etcd_urls(&mut self, urls: Vec<String>) -> Option<Vec<String>> {
        if urls.is_empty() {
            self.report.error(
                "cluster.etcd",
                "no etcd member is named",
                Some("list the members' client URLs: etcd = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]".to_string()),
            );
            return None;
        }
        let mut good = Vec::with_capacity(urls.len());
        let mut ok = true;
        for (i, url) in urls.iter().enumerate() {
            let at = format!("cluster.etcd[{i}]");
            match etcd_url(url) {
                Ok(u) if good.contains(&u) => self.report.warning(
                    at,
                    format!("{url:?} is listed twice"),
                    Some("remove one of them".to_string()),
                ),
                Ok(u) => good.push(u),
                Err(why) => {
                    ok = false;
                    self.report.error(
                        at,
                        format!("{url:?} is not an etcd client URL: {why}"),
                        Some("write http://HOST:PORT or https://HOST:PORT, such as \"http://10.0.0.1:2379\"".to_string()),
                    );
                }
            }
        }
        let schemes = good.iter().filter(|u| u.starts_with("https://")).count();
        if schemes != 0 && schemes != good.len() {
            ok = false;
            self.report.error(
                "cluster.etcd",
                "some etcd URLs are http:// and others https://; one connection setting serves them all",
                Some("use https:// for every member, or http:// for every member".to_string()),
            );
        }
        ok.then_some(good)
    }

    fn prefix(&mut self, prefix: &str) -> Option<String> {
        let trimmed = prefix.trim_end_matches('/');
        let why = if !prefix.starts_with('/') {
            Some("it must start with /")
        } else if trimmed.is_empty() {
            Some("it names no folder: every key of etcd would be the fleet's")
        } else if trimmed.contains("//") {
            Some("it has an empty segment (//)")
        } else if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            Some("it has a space or a character outside printable ASCII")
        } else {
            None
        };
        match why {
            None => Some(trimmed.to_string()),
            Some(why) => {
                self.report.error(
                    "cluster.prefix",
                    format!("{prefix:?} is not a key prefix: {why}"),
                    Some(format!(
                        "write a path such as \"/portico/prod\" (the default is {DEFAULT_PREFIX:?})"
                    )),
                );
                None
            }
        }
    }

    /// `name` as a node name; `host` when it is the machine's host name (no `node` given).
    fn node_name(&mut self, at: &str, name: &str, host: Option<&str>) -> Option<String> {
        let good = !name.is_empty()
            && name.len() <= MAX_NODE
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if good {
            return Some(name.to_string());
        }
        let message = match host {
            Some(h) => format!("this machine's host name {h:?} cannot name the node: a node name is 1 to {MAX_NODE} letters, digits, '.', '_' or '-'"),
            None => format!("{name:?} is not a node name: a node name is 1 to {MAX_NODE} letters, digits, '.', '_' or '-'"),
        };
        self.report.error(
            at,
            message,
            Some(
                "set node = \"edge-1\" in [cluster], a name no other node of the fleet has"
                    .to_string(),
            ),
        );
        None
    }

    fn cluster_tls(&mut self, raw: raw::RawClusterTls) -> Option<ClusterTls> {
        unknown_keys(
            self.report,
            "cluster.tls",
            &raw.unknown,
            &["ca", "cert", "key"],
        );
        let ca = match raw.ca {
            Some(ca) => Some(self.path(&ca)),
            None => {
                self.report.error(
                    "cluster.tls",
                    "ca is missing: without it the etcd members' certificates cannot be verified",
                    Some(
                        "add ca = \"etcd-ca.pem\", the CA that signed the members' certificates"
                            .to_string(),
                    ),
                );
                None
            }
        };
        let client = match (raw.cert, raw.key) {
            (None, None) => None,
            (cert, key) => self.cert_files(
                "cluster.tls",
                raw::RawCertificate {
                    cert,
                    key,
                    unknown: Unknown::new(),
                },
            ),
        };
        Some(ClusterTls { ca: ca?, client })
    }
}

/// `url` as `scheme://host:port`, or why it is not one.
fn etcd_url(url: &str) -> Result<String, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "it does not parse as a URL")?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        Some(_) => return Err("the scheme must be http or https"),
        None => return Err("it has no scheme"),
    };
    let authority = uri.authority().ok_or("it names no host")?;
    if authority.as_str().contains('@') {
        return Err("it carries a user name; etcd's user names are not supported");
    }
    if authority.host().is_empty() {
        return Err("it names no host");
    }
    if authority.port_u16().is_none() {
        return Err("it has no port (etcd's client port is usually 2379)");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("it has a path; an etcd client URL is only scheme, host and port");
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::etcd_url;
    use crate::config::{Config, Report};

    fn check(cluster: &str) -> (Option<crate::config::Cluster>, Report) {
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:8443\"\n[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\ntls = \"internal\"\nrespond = {{ body = \"a\" }}\n[cluster]\n{cluster}\n"
        );
        let mut report = Report::default();
        let config = Config::from_str(
            &text,
            std::path::Path::new("/etc/portico/p.toml"),
            &mut report,
        );
        (config.and_then(|c| c.cluster), report)
    }

    #[test]
    fn a_cluster_table_with_defaults_and_its_mistakes() {
        let (c, report) = check("etcd = [\"http://127.0.0.1:2379\"]\nnode = \"edge-1\"");
        assert!(!report.has_errors(), "{report}");
        let c = c.expect("a cluster");
        assert_eq!(c.prefix, "/portico");
        assert_eq!(c.key_file, std::path::Path::new("/etc/portico/cluster.key"));
        assert_eq!(c.node, "edge-1");
        assert_eq!(c.tls, None);
        assert_eq!(c.config, crate::config::ConfigSource::File);
        let (c, _) = check("etcd = [\"http://a:1\"]\nnode = \"n\"\nconfig = \"etcd\"");
        assert_eq!(
            c.expect("cluster").config,
            crate::config::ConfigSource::Etcd
        );
        let (c, _) =
            check("etcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/p/prod/\"\nnode = \"n\"");
        assert_eq!(
            c.expect("cluster").prefix,
            "/p/prod",
            "a trailing / is dropped"
        );

        for (table, path, says) in [
            ("node = \"n\"", "cluster.etcd", "no etcd member"),
            (
                "etcd = [\"127.0.0.1:2379\"]\nnode = \"n\"",
                "cluster.etcd[0]",
                "no scheme",
            ),
            (
                "etcd = [\"http://a:1\", \"https://b:1\"]\nnode = \"n\"\ntls = { ca = \"ca.pem\" }",
                "cluster.etcd",
                "one connection setting",
            ),
            (
                "etcd = [\"https://a:1\"]\nnode = \"n\"",
                "cluster.tls",
                "names no CA",
            ),
            (
                "etcd = [\"http://a:1\"]\nnode = \"n\"\nconfig = \"push\"",
                "cluster.config",
                "unknown configuration source \"push\"",
            ),
            (
                "etcd = [\"http://a:1\"]\nnode = \"n\"\nprefix = \"portico\"",
                "cluster.prefix",
                "must start with /",
            ),
            (
                "etcd = [\"http://a:1\"]\nnode = \"n\"\nprefix = \"/\"",
                "cluster.prefix",
                "names no folder",
            ),
            (
                "etcd = [\"http://a:1\"]\nnode = \"edge 1\"",
                "cluster.node",
                "not a node name",
            ),
            (
                "etcd = [\"http://a:1\"]\nnode = \"n\"\nkey_file = \"\"",
                "cluster.key_file",
                "empty",
            ),
            (
                "etcd = [\"https://a:1\"]\nnode = \"n\"\ntls = { cert = \"c.pem\" }",
                "cluster.tls",
                "ca is missing",
            ),
            (
                "etcd = [\"http://a:1\"]\nnode = \"n\"\nnodes = 3",
                "cluster.nodes",
                "unknown",
            ),
        ] {
            let (_, report) = check(table);
            let found = report
                .items
                .iter()
                .any(|d| d.path == path && d.message.contains(says));
            assert!(found, "{table}: expected {path}: {says}; got\n{report}");
        }
        let (_, report) = check("etcd = [\"http://a:1\"]\nnode = \"n\"\ntls = { ca = \"ca.pem\" }");
        assert!(!report.has_errors(), "{report}");
        assert!(
            report
                .warnings()
                .any(|d| d.message.contains("tls is not used")),
            "{report}"
        );
    }

    #[test]
    fn etcd_urls_are_scheme_host_and_port() {
        assert_eq!(
            etcd_url("http://127.0.0.1:2379"),
            Ok("http://127.0.0.1:2379".to_string())
        );
        assert_eq!(
            etcd_url("https://etcd-1.example:2379/"),
            Ok("https://etcd-1.example:2379".to_string())
        );
        assert_eq!(
            etcd_url("http://[::1]:2379"),
            Ok("http://[::1]:2379".to_string())
        );
        for bad in [
            "127.0.0.1:2379",
            "grpc://127.0.0.1:2379",
            "http://127.0.0.1",
            "http://127.0.0.1:2379/v3",
            "http://user@127.0.0.1:2379",
            "http://:2379",
            "",
        ] {
            assert!(etcd_url(bad).is_err(), "{bad:?}");
        }
    }
}
