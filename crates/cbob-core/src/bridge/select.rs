//! Which clusters a run works on (SPEC §4): `--cluster` flags, else `CBOB_CRUNCHY_CLUSTERS`,
//! else every primary cluster of every team minus `CBOB_IGNORE_CLUSTERS`.
//!
//! An explicit list is honoured as given (the ignore list does not apply to it; `config validate`
//! warns when an id is in both), but every id is validated before any request is made.

use std::collections::HashSet;

use super::client::BridgeClient;
use super::error::BridgeError;
use super::model::Cluster;

/// Checks a Crunchy Bridge cluster id: lowercase ASCII letters and digits, not empty.
pub fn validate_cluster_id(id: &str) -> Result<(), BridgeError> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(BridgeError::InvalidClusterId { id: id.to_string() })
    }
}

/// Checks a pgBackRest stanza name: `[A-Za-z0-9._-]+`, and not `.` or `..` (it becomes a
/// directory name under `archive/` and `backup/`).
pub fn validate_stanza(stanza: &str) -> Result<(), String> {
    let ok = !stanza.is_empty()
        && stanza != "."
        && stanza != ".."
        && stanza
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid stanza {stanza:?}: stanza names are letters, digits, '.', '_' and '-'"
        ))
    }
}

/// Where the cluster list of a run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSelection {
    /// `--cluster` flags.
    Flags(Vec<String>),
    /// `CBOB_CRUNCHY_CLUSTERS`.
    Configured(Vec<String>),
    /// Every primary of every team, minus these ids.
    Discover { ignore: Vec<String> },
}

impl ClusterSelection {
    /// Decides the selection from the flags, the configured list and the ignore list,
    /// validating every id and dropping duplicates (first occurrence kept).
    pub fn new(
        flags: &[String],
        configured: &[String],
        ignore: &[String],
    ) -> Result<Self, BridgeError> {
        let clean = |ids: &[String]| -> Result<Vec<String>, BridgeError> {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for id in ids {
                let id = id.trim();
                validate_cluster_id(id)?;
                if seen.insert(id.to_string()) {
                    out.push(id.to_string());
                }
            }
            Ok(out)
        };
        let ignore = clean(ignore)?;
        if !flags.is_empty() {
            Ok(Self::Flags(clean(flags)?))
        } else if !configured.is_empty() {
            Ok(Self::Configured(clean(configured)?))
        } else {
            Ok(Self::Discover { ignore })
        }
    }

    /// Resolves the selection to cluster ids, asking the API only when discovering.
    pub async fn resolve(&self, client: &BridgeClient) -> Result<SelectedClusters, BridgeError> {
        match self {
            Self::Flags(ids) | Self::Configured(ids) => Ok(SelectedClusters {
                ids: ids.clone(),
                discovery: None,
            }),
            Self::Discover { ignore } => {
                let d = client.discover(ignore).await?;
                Ok(SelectedClusters {
                    ids: d.primaries.iter().map(|c| c.id.clone()).collect(),
                    discovery: Some(d),
                })
            }
        }
    }
}

/// The clusters a run works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedClusters {
    /// Validated cluster ids, in the order given or discovered.
    pub ids: Vec<String>,
    /// What discovery saw, when the list was discovered (for logs and `sync --status`).
    pub discovery: Option<Discovery>,
}

/// The result of walking every team's clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Primary clusters to work on: not replicas, not ignored, valid ids, each once.
    pub primaries: Vec<Cluster>,
    /// Ids of replicas skipped (by `parent_id` or listed under another cluster's `replicas`).
    pub replicas: Vec<String>,
    /// Ids of primaries skipped because of `CBOB_IGNORE_CLUSTERS`.
    pub ignored: Vec<String>,
    /// Ids the API returned that are not valid cluster ids; never used in a request or path.
    /// The caller should report them as failures rather than lose them silently.
    pub invalid: Vec<String>,
    /// Distinct clusters seen across all teams.
    pub total: usize,
}

/// Sorts the clusters of every team into primaries, replicas, ignored and invalid.
pub(crate) fn classify(all: Vec<Cluster>, ignore: &[String]) -> Discovery {
    let replica_ids: HashSet<String> = all
        .iter()
        .flat_map(|c| c.replicas.iter().map(|r| r.id.clone()))
        .collect();
    let mut seen = HashSet::new();
    let mut d = Discovery::default();
    for c in all {
        if !seen.insert(c.id.clone()) {
            continue; // the same cluster listed by two teams or two pages
        }
        d.total += 1;
        if validate_cluster_id(&c.id).is_err() {
            d.invalid.push(c.id);
        } else if c.is_replica() || replica_ids.contains(&c.id) {
            d.replicas.push(c.id);
        } else if ignore.contains(&c.id) {
            d.ignored.push(c.id);
        } else {
            d.primaries.push(c);
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::model::ClusterRef;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn cluster(id: &str, parent: Option<&str>, replicas: &[&str]) -> Cluster {
        Cluster {
            id: id.into(),
            team_id: None,
            name: format!("name-{id}"),
            parent_id: parent.map(Into::into),
            major_version: Some(16),
            provider_id: None,
            region_id: None,
            replicas: replicas
                .iter()
                .map(|r| ClusterRef { id: r.to_string() })
                .collect(),
        }
    }

    #[test]
    fn ids_and_stanzas() {
        assert!(validate_cluster_id("abc123").is_ok());
        for bad in ["", "ABC", "a-b", "a/b", "a b", "../x", "é"] {
            assert!(validate_cluster_id(bad).is_err(), "{bad}");
        }
        assert!(validate_stanza("Main.db_1-x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a\\b", "ü"] {
            assert!(validate_stanza(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn precedence_and_validation() {
        let sel = ClusterSelection::new(&s(&["b", "a", "b"]), &s(&["c"]), &s(&["a"])).unwrap();
        assert_eq!(
            sel,
            ClusterSelection::Flags(s(&["b", "a"])),
            "flags win, as given, deduplicated"
        );
        let sel = ClusterSelection::new(&[], &s(&["c", " d "]), &[]).unwrap();
        assert_eq!(sel, ClusterSelection::Configured(s(&["c", "d"])));
        let sel = ClusterSelection::new(&[], &[], &s(&["x"])).unwrap();
        assert_eq!(sel, ClusterSelection::Discover { ignore: s(&["x"]) });
        assert!(matches!(
            ClusterSelection::new(&s(&["Bad"]), &[], &[]),
            Err(BridgeError::InvalidClusterId { id }) if id == "Bad"
        ));
        assert!(
            ClusterSelection::new(&[], &[], &s(&["../etc"])).is_err(),
            "ignore list validated too"
        );
    }

    #[test]
    fn classify_skips_replicas_ignored_and_invalid() {
        let all = vec![
            cluster("p1", None, &["r2"]),
            cluster("r1", Some("p1"), &[]),
            cluster("r2", None, &[]), // a replica known only from p1's `replicas`
            cluster("p2", None, &[]),
            cluster("p3", None, &[]),
            cluster("p1", None, &[]), // listed twice
            cluster("Bad/Id", None, &[]),
        ];
        let d = classify(all, &s(&["p2"]));
        assert_eq!(
            d.primaries
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>(),
            ["p1", "p3"]
        );
        assert_eq!(d.replicas, s(&["r1", "r2"]));
        assert_eq!(d.ignored, s(&["p2"]));
        assert_eq!(d.invalid, s(&["Bad/Id"]));
        assert_eq!(d.total, 6);
    }
}
