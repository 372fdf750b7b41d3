//! A node of a fleet whose configuration is pushed (`[cluster] config = "etcd"`,
//! docs/cluster.md): its own file keeps the node-local part, the fleet's pushed file the
//! rest, and the two are merged here, as text, into one configuration that the one
//! `Checker` judges. Nothing here reads etcd: the pushed text is given.
//!
//! The node-local part is [`NODE_LOCAL`] (`state_dir`, `[admin]`, `[log]`, `[cluster]`)
//! plus `[[listener]]` tables that each change the pushed listener of the same name (a
//! per-node address, say). A pushed file that sets a node-local key, and a node's file
//! that sets anything else, are errors: nothing is silently ignored. Relative paths, the
//! pushed file's included, resolve against the node's file's directory.

use std::path::{Path, PathBuf};

use super::check::Checker;
use super::raw::RawConfig;
use super::{Cluster, Config, Origin, Report};

/// The top-level keys that only a node's own file sets.
pub const NODE_LOCAL: &[&str] = &["state_dir", "admin", "log", "cluster"];

/// What a node needs before its configuration: where the fleet is and its `state_dir`.
#[derive(Debug, Clone)]
pub struct NodeLocal {
    pub cluster: Cluster,
    pub state_dir: PathBuf,
}

/// The pushed configuration `pushed` with the node's own `local` part: the node-local keys
/// from `local`, its `[[listener]]` tables' keys over the pushed listener's of that name,
/// everything else from `pushed`. Every key in the wrong file is an error in `report`.
pub fn merge(local: toml::Table, mut pushed: toml::Table, report: &mut Report) -> toml::Table {
    for key in NODE_LOCAL {
        if pushed.remove(*key).is_some() {
            report.error(
                *key,
                format!("the pushed configuration sets {key}, which belongs to each node's own file"),
                Some("remove it from the pushed file; each node's own file sets state_dir, [admin], [log] and [cluster]".to_string()),
            );
        }
    }
    for (key, value) in local {
        if NODE_LOCAL.contains(&key.as_str()) {
            pushed.insert(key, value);
        } else if key == "listener" {
            listeners(value, &mut pushed, report);
        } else {
            report.error(
                key.clone(),
                format!("{key} comes from the fleet's pushed configuration ([cluster] config = \"etcd\"), not from this file"),
                Some("move it into the file you push with `portico cluster push`; a node's own file sets only state_dir, [admin], [log], [cluster] and [[listener]] tables that change a pushed listener".to_string()),
            );
        }
    }
    pushed
}

/// Applies a node's `[[listener]]` tables to the pushed ones, by name.
fn listeners(local: toml::Value, pushed: &mut toml::Table, report: &mut Report) {
    let toml::Value::Array(local) = local else {
        report.error(
            "listener",
            "listener is not a list of [[listener]] tables",
            None,
        );
        return;
    };
    let names: Vec<Option<String>> = match pushed.get("listener") {
        Some(toml::Value::Array(list)) => list.iter().map(listener_name).collect(),
        _ => Vec::new(),
    };
    for (i, l) in local.into_iter().enumerate() {
        let at = format!("listener[{i}]");
        let toml::Value::Table(l) = l else {
            report.error(at, "a [[listener]] entry is not a table", None);
            continue;
        };
        let Some(name) = l
            .get("name")
            .and_then(toml::Value::as_str)
            .map(str::to_string)
        else {
            report.error(
                format!("{at}.name"),
                "a node's listener has no name: it changes the pushed listener of the same name",
                Some("add name = \"...\", the name (or the address, if it has no name) of a listener in the pushed configuration".to_string()),
            );
            continue;
        };
        let Some(j) = names
            .iter()
            .position(|n| n.as_deref() == Some(name.as_str()))
        else {
            let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
            report.error(
                format!("{at}.name"),
                format!("the pushed configuration has no listener named {name:?}"),
                Some(format!(
                    "name one of the pushed listeners ({}), or remove this table",
                    if known.is_empty() {
                        "it has none".to_string()
                    } else {
                        known.join(", ")
                    }
                )),
            );
            continue;
        };
        if let Some(toml::Value::Array(list)) = pushed.get_mut("listener") {
            if let Some(toml::Value::Table(target)) = list.get_mut(j) {
                target.extend(l);
            }
        }
    }
}

/// A listener table's name as the checker gives it: `name`, or else its address.
fn listener_name(l: &toml::Value) -> Option<String> {
    let l = l.as_table()?;
    l.get("name")
        .or_else(|| l.get("address"))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
}

fn parse(text: &str, what: &str, report: &mut Report) -> Option<toml::Table> {
    match text.parse::<toml::Table>() {
        Ok(t) => Some(t),
        Err(e) => {
            report.error(
                "",
                format!("{what} is not valid: {}", super::toml_error(&e, text)),
                Some("fix the TOML at the line and column shown".to_string()),
            );
            None
        }
    }
}

fn base_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Config {
    /// The `[cluster]` table and `state_dir` of `file`, checked; None (the report says
    /// why) when the file cannot be read, they have errors, or there is no `[cluster]`.
    pub fn node_local(file: &Path, origin: Origin) -> (Option<NodeLocal>, Report) {
        let mut report = Report::default();
        let Some(text) = Config::read(file, origin, &mut report) else {
            return (None, report);
        };
        let Some(mut table) = parse(&text, &file.display().to_string(), &mut report) else {
            return (None, report);
        };
        let mut only = toml::Table::new();
        for key in ["state_dir", "cluster"] {
            if let Some(v) = table.remove(key) {
                only.insert(key.to_string(), v);
            }
        }
        let raw = match toml::Value::Table(only).try_into::<RawConfig>() {
            Ok(raw) => raw,
            Err(e) => {
                report.error("", format!("{} is not valid: {e}", file.display()), None);
                return (None, report);
            }
        };
        let base = base_of(file);
        let state_dir = base.join(raw.state_dir.as_deref().unwrap_or("state"));
        let cluster = raw.cluster.and_then(|c| {
            Checker {
                base,
                report: &mut report,
            }
            .cluster(c)
        });
        let local = cluster
            .filter(|_| !report.has_errors())
            .map(|cluster| NodeLocal { cluster, state_dir });
        (local, report)
    }

    /// Whether `file` takes its configuration from the fleet (`[cluster] config =
    /// "etcd"`): its node-local part then, else None. Errors in `[cluster]` count as None
    /// here; the full load reports them.
    pub fn fleet_node(file: &Path) -> Option<NodeLocal> {
        // Such a file names etcd, and is small (it holds no site); any other, with 100,000
        // sites say, is not parsed a second time for this.
        let text = std::fs::read_to_string(file).ok()?;
        if !text.contains("etcd") {
            return None;
        }
        Config::node_local(file, Origin::Given)
            .0
            .filter(|l| l.cluster.config == super::ConfigSource::Etcd)
    }

    /// `file` (a node's own) merged with the fleet's `pushed` text and checked as one
    /// configuration read from `file`; like [`Config::load_partial_as`], what could be
    /// read even with errors (for `check`).
    pub fn load_fleet_partial_as(
        file: &Path,
        origin: Origin,
        pushed: &str,
    ) -> (Option<Config>, Report) {
        let mut report = Report::default();
        let Some(text) = Config::read(file, origin, &mut report) else {
            return (None, report);
        };
        let config = Config::from_fleet_str(&text, file, pushed, &mut report);
        (config, report)
    }

    /// [`Config::load_fleet_partial_as`], the configuration only without errors.
    pub fn load_fleet_as(file: &Path, origin: Origin, pushed: &str) -> (Option<Config>, Report) {
        let (config, report) = Config::load_fleet_partial_as(file, origin, pushed);
        (config.filter(|_| !report.has_errors()), report)
    }

    /// Checks the node's own `local` text (read from `file`) merged with the fleet's
    /// `pushed` text; relative paths resolve against `file`'s directory.
    pub fn from_fleet_str(
        local: &str,
        file: &Path,
        pushed: &str,
        report: &mut Report,
    ) -> Option<Config> {
        let local = parse(local, &file.display().to_string(), report);
        let pushed = parse(pushed, "the fleet's pushed configuration", report);
        let merged = merge(local?, pushed?, report);
        let raw = match toml::Value::Table(merged).try_into::<RawConfig>() {
            Ok(raw) => raw,
            Err(e) => {
                report.error(
                    "",
                    format!("the pushed configuration with this node's file is not valid: {e}"),
                    Some("fix the value of the wrong type".to_string()),
                );
                return None;
            }
        };
        Some(
            Checker {
                base: base_of(file),
                report,
            }
            .check(raw, file),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = r#"
state_dir = "node-state"
[[listener]]
name = "https"
address = "127.0.0.2:8443"
[admin]
enabled = false
[cluster]
etcd = ["http://127.0.0.1:2379"]
node = "edge-1"
config = "etcd"
"#;

    const PUSHED: &str = r#"
[[listener]]
name = "https"
address = "*:8443"
no_sni = "a.test"
[[listener]]
address = "*:8080"
kind = "http"
[[site]]
name = "a"
hosts = ["a.test"]
root = "www/a"
"#;

    fn load(local: &str, pushed: &str) -> (Option<Config>, Report) {
        let mut report = Report::default();
        let file = Path::new("/etc/portico/portico.toml");
        let c = Config::from_fleet_str(local, file, pushed, &mut report);
        (c.filter(|_| !report.has_errors()), report)
    }

    fn errors(local: &str, pushed: &str) -> Vec<String> {
        let (_, report) = load(local, pushed);
        report.errors().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_node_keeps_its_own_part_and_changes_a_pushed_listener_by_name() {
        let (config, report) = load(LOCAL, PUSHED);
        let config = config.unwrap_or_else(|| panic!("{report}"));
        assert_eq!(config.state_dir, Path::new("/etc/portico/node-state"));
        assert!(config.admin.is_none());
        assert_eq!(
            config.cluster.as_ref().map(|c| c.config),
            Some(super::super::ConfigSource::Etcd)
        );
        // The address is the node's; the rest of the listener is the fleet's.
        let https = &config.listeners[0];
        assert_eq!(https.address.to_string(), "127.0.0.2:8443");
        assert!(matches!(&https.no_sni, super::super::NoSni::Host(h) if h.as_str() == "a.test"));
        assert_eq!(config.listeners[1].address.to_string(), "*:8080");
        // The pushed file's relative paths resolve against the node's file.
        assert!(matches!(
            &config.sites[0].action,
            super::super::Action::Root(p) if p == Path::new("/etc/portico/www/a")
        ));
    }

    #[test]
    fn a_listener_is_named_by_its_address_when_it_has_no_name() {
        let local =
            format!("{LOCAL}\n[[listener]]\nname = \"*:8080\"\naddress = \"127.0.0.2:8080\"\n");
        let (config, report) = load(&local, PUSHED);
        let config = config.unwrap_or_else(|| panic!("{report}"));
        assert_eq!(config.listeners[1].address.to_string(), "127.0.0.2:8080");
    }

    #[test]
    fn every_key_in_the_wrong_file_is_an_error() {
        let rows: &[(&str, &str, &str)] = &[
            // The pushed file sets a node-local key.
            (
                LOCAL,
                "[cluster]\netcd = [\"http://x:1\"]\n",
                "cluster: the pushed configuration sets cluster",
            ),
            (
                LOCAL,
                "state_dir = \"s\"\n",
                "state_dir: the pushed configuration sets state_dir",
            ),
            (
                LOCAL,
                "[log]\nformat = \"json\"\n",
                "log: the pushed configuration sets log",
            ),
            // The node's file sets what the fleet pushes.
            (
                "[[site]]\nname = \"x\"\n[cluster]\netcd = [\"http://x:1\"]\n",
                PUSHED,
                "site comes from the fleet's pushed configuration",
            ),
            (
                "[limits]\nidle_timeout = \"5s\"\n",
                PUSHED,
                "limits comes from the fleet's pushed configuration",
            ),
            // A node's listener names no pushed one, or has no name.
            (
                "[[listener]]\nname = \"htps\"\naddress = \"127.0.0.2:1\"\n",
                PUSHED,
                "listener[0].name: the pushed configuration has no listener named \"htps\"",
            ),
            (
                "[[listener]]\naddress = \"127.0.0.2:1\"\n",
                PUSHED,
                "listener[0].name: a node's listener has no name",
            ),
        ];
        for (local, pushed, want) in rows {
            let got = errors(local, pushed);
            assert!(
                got.iter().any(|e| e.contains(want)),
                "want {want:?} in {got:#?}"
            );
        }
    }

    #[test]
    fn bad_toml_in_either_file_is_named() {
        assert!(errors(LOCAL, "[[site]\n")
            .iter()
            .any(|e| e.contains("the fleet's pushed configuration is not valid")));
        assert!(errors("state_dir = \n", PUSHED)
            .iter()
            .any(|e| e.contains("portico.toml is not valid")));
        // A value of the wrong type only shows after the merge.
        assert!(errors(LOCAL, "[[site]]\nname = 3\n")
            .iter()
            .any(|e| e.contains("is not valid")));
    }

    #[test]
    fn only_a_file_with_config_etcd_is_a_fleet_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("portico.toml");
        std::fs::write(&file, LOCAL).expect("write");
        let node = Config::fleet_node(&file).expect("a fleet node");
        assert_eq!(node.cluster.node, "edge-1");
        assert_eq!(node.state_dir, dir.path().join("node-state"));
        std::fs::write(&file, LOCAL.replace("config = \"etcd\"", "")).expect("write");
        assert!(Config::fleet_node(&file).is_none());
        std::fs::write(&file, PUSHED).expect("write");
        assert!(Config::fleet_node(&file).is_none());
    }
}
