//! `portico cluster status`: what the store says about the fleet. The etcd members, the
//! nodes that are up (their records, `members.rs`), who holds which lock, the ticket key
//! generation, whether this machine's cluster key is the fleet's, and the fleet's pushed
//! configuration: its version, who pushed it and when, and which version each node runs
//! (or failed to).

use std::fmt::Write as _;

use super::members::{Record, FOLDER};
use crate::config::Cluster;
use crate::inspect::json::Json;
use crate::runtime::format_time;
use crate::store::{ClusterKey, Etcd, StoreError};

/// The fleet as one look at the store found it.
#[derive(Debug)]
pub struct Status {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// The store revision of the look.
    pub revision: i64,
    pub members: Vec<(String, Vec<String>)>,
    /// Records that do not parse are left out (and counted).
    pub nodes: Vec<Record>,
    pub unreadable_nodes: usize,
    /// Lock name -> the node holding it.
    pub holders: Vec<(String, String)>,
    pub tickets: Tickets,
    /// This machine's key: its id, or why it could not be read.
    pub key: Result<String, String>,
    /// Whether it opens the fleet's check value (None: no key, or no check value yet).
    pub key_is_the_fleets: Option<bool>,
    /// The fleet's pushed configuration (`PREFIX/config/meta`), if any.
    pub config: Option<super::pushed::Meta>,
}

/// What the store holds of the ticket keys.
#[derive(Debug, PartialEq, Eq)]
pub enum Tickets {
    None,
    /// The newest key's generation and creation time, and how many are kept.
    Set {
        generation: u32,
        created: i64,
        kept: usize,
    },
    /// Sealed with a key this machine does not have (or did not read).
    Sealed,
}

/// Reads the fleet's state.
pub async fn gather(cluster: &Cluster) -> Result<Status, StoreError> {
    let store = Etcd::connect(cluster).await?;
    let key = ClusterKey::load(&cluster.key_file).map_err(|e| e.to_string());
    let members = store.members().await?;
    let listing = store.list(FOLDER).await?;
    let mut nodes = Vec::new();
    let mut unreadable_nodes = 0;
    for (_, value) in &listing.items {
        match serde_json::from_slice::<Record>(value) {
            Ok(r) => nodes.push(r),
            Err(_) => unreadable_nodes += 1,
        }
    }
    let holders = store
        .list("holders")
        .await?
        .items
        .into_iter()
        .map(|(lock, node)| (lock, String::from_utf8_lossy(&node).into_owned()))
        .collect();
    let set_key = format!("{}/{}", super::tickets::NAME, super::tickets::SET);
    let tickets = match store.get(&set_key).await? {
        None => Tickets::None,
        Some(sealed) => match key
            .as_ref()
            .ok()
            .and_then(|k| super::tickets::open_with(k, &store.key(&set_key), &sealed))
        {
            Some(set) => Tickets::Set {
                generation: set.first().map_or(0, |k| k.id),
                created: set.first().map_or(0, |k| k.created),
                kept: set.len(),
            },
            None => Tickets::Sealed,
        },
    };
    let check = store.get(super::KEY_CHECK).await?;
    let key_is_the_fleets = match (&key, check) {
        (Ok(k), Some(check)) => Some(super::opens_check(k, &store.key(super::KEY_CHECK), &check)),
        _ => None,
    };
    let config = store
        .get(&format!("{}/meta", super::pushed::FOLDER))
        .await?
        .and_then(|m| serde_json::from_slice(&m).ok());
    Ok(Status {
        config,
        endpoints: cluster.etcd.clone(),
        prefix: cluster.prefix.clone(),
        revision: listing.revision,
        members,
        nodes,
        unreadable_nodes,
        holders,
        tickets,
        key: key.map(|k| k.id().to_string()),
        key_is_the_fleets,
    })
}

fn ago(now: i64, then: i64) -> String {
    let s = (now - then).max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// The status for people.
pub fn text(st: &Status, now: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "etcd {} (prefix {}), revision {}",
        st.endpoints.join(", "),
        st.prefix,
        st.revision
    );
    let _ = writeln!(out, "\netcd members ({}):", st.members.len());
    for (name, urls) in &st.members {
        let _ = writeln!(out, "  {name:<12} {}", urls.join(", "));
    }
    let _ = writeln!(out, "\nPortico nodes up ({}):", st.nodes.len());
    for n in &st.nodes {
        let _ = writeln!(
            out,
            "  {:<12} {} pid {}, up {}, cluster key {}, ticket keys generation {}, synced to revision {}, configuration {}, seen {} ago",
            n.node,
            n.version,
            n.pid,
            ago(now, n.started),
            n.key_id,
            n.tickets_generation,
            n.synced_revision,
            n.config_version
                .map_or_else(|| "from its own file".to_string(), |v| format!("version {v}")),
            ago(now, n.updated)
        );
    }
    for n in &st.nodes {
        if let Some(f) = &n.config_failed {
            let _ = writeln!(
                out,
                "  {:<12} fleet configuration version {} FAILED here; it runs {}:",
                n.node,
                f.version,
                n.config_version
                    .map_or_else(|| "none".to_string(), |v| format!("version {v}"))
            );
            for e in &f.errors {
                let _ = writeln!(out, "    {}", e.replace('\n', "\n    "));
            }
        }
    }
    if st.unreadable_nodes > 0 {
        let _ = writeln!(out, "  ({} records that do not parse)", st.unreadable_nodes);
    }
    let _ = match &st.config {
        None => writeln!(out, "\nfleet configuration: none pushed"),
        Some(m) => writeln!(
            out,
            "\nfleet configuration: version {}, pushed by {} on {} ({} ago), sha256 {}",
            m.version,
            m.by,
            format_time(m.at),
            ago(now, m.at),
            m.sha256
        ),
    };
    let _ = writeln!(out, "\nlocks held ({}):", st.holders.len());
    for (lock, node) in &st.holders {
        let _ = writeln!(out, "  {lock:<24} {node}");
    }
    let tickets = match &st.tickets {
        Tickets::None => "none stored yet".to_string(),
        Tickets::Set {
            generation,
            created,
            kept,
        } => format!(
            "generation {generation}, made {} ({} ago), {kept} kept",
            format_time(*created),
            ago(now, *created)
        ),
        Tickets::Sealed => "stored, sealed with a key this machine does not have".to_string(),
    };
    let _ = writeln!(out, "\nticket keys: {tickets}");
    let key = match (&st.key, st.key_is_the_fleets) {
        (Err(e), _) => format!("not read: {e}"),
        (Ok(id), Some(true)) => format!("{id}, the fleet's"),
        (Ok(id), Some(false)) => {
            format!("{id}, NOT the fleet's: this machine cannot open what the fleet sealed")
        }
        (Ok(id), None) => format!("{id} (no node has checked a key yet)"),
    };
    let _ = writeln!(out, "this machine's cluster key: {key}");
    out
}

/// A configuration version in JSON (counted from 1, far below i64's end).
fn version(v: u64) -> Json {
    Json::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The status as JSON (schema in docs/cluster.md).
pub fn json(st: &Status, now: i64) -> Json {
    let nodes = st
        .nodes
        .iter()
        .map(|n| {
            Json::Obj(vec![
                ("node", Json::str(&n.node)),
                ("version", Json::str(&n.version)),
                ("pid", Json::Int(i64::from(n.pid))),
                ("started", Json::str(format_time(n.started))),
                ("key_id", Json::str(&n.key_id)),
                (
                    "tickets_generation",
                    Json::Int(i64::from(n.tickets_generation)),
                ),
                ("synced_revision", Json::Int(n.synced_revision)),
                ("updated", Json::str(format_time(n.updated))),
                ("seconds_since_update", Json::Int((now - n.updated).max(0))),
                (
                    "config_version",
                    n.config_version.map_or(Json::Null, version),
                ),
                (
                    "config_failed",
                    n.config_failed.as_ref().map_or(Json::Null, |f| {
                        Json::Obj(vec![
                            ("version", version(f.version)),
                            (
                                "errors",
                                Json::Arr(f.errors.iter().map(Json::str).collect()),
                            ),
                        ])
                    }),
                ),
            ])
        })
        .collect();
    let tickets = match &st.tickets {
        Tickets::None => Json::Null,
        Tickets::Set {
            generation,
            created,
            kept,
        } => Json::Obj(vec![
            ("generation", Json::Int(i64::from(*generation))),
            ("created", Json::str(format_time(*created))),
            ("kept", Json::Int(*kept as i64)),
        ]),
        Tickets::Sealed => Json::str("sealed"),
    };
    Json::Obj(vec![
        ("version", Json::Int(1)),
        ("now", Json::str(format_time(now))),
        (
            "etcd",
            Json::Arr(st.endpoints.iter().map(Json::str).collect()),
        ),
        ("prefix", Json::str(&st.prefix)),
        ("revision", Json::Int(st.revision)),
        (
            "members",
            Json::Arr(
                st.members
                    .iter()
                    .map(|(name, urls)| {
                        Json::Obj(vec![
                            ("name", Json::str(name)),
                            (
                                "client_urls",
                                Json::Arr(urls.iter().map(Json::str).collect()),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("nodes", Json::Arr(nodes)),
        (
            "locks",
            Json::Arr(
                st.holders
                    .iter()
                    .map(|(lock, node)| {
                        Json::Obj(vec![("lock", Json::str(lock)), ("node", Json::str(node))])
                    })
                    .collect(),
            ),
        ),
        ("tickets", tickets),
        (
            "config",
            st.config.as_ref().map_or(Json::Null, |m| {
                Json::Obj(vec![
                    ("version", version(m.version)),
                    ("sha256", Json::str(&m.sha256)),
                    ("by", Json::str(&m.by)),
                    ("at", Json::str(format_time(m.at))),
                ])
            }),
        ),
        (
            "key",
            Json::Obj(vec![
                ("id", st.key.as_ref().map_or(Json::Null, Json::str)),
                ("error", st.key.as_ref().err().map_or(Json::Null, Json::str)),
                (
                    "is_the_fleets",
                    st.key_is_the_fleets.map_or(Json::Null, Json::Bool),
                ),
            ]),
        ),
    ])
}
