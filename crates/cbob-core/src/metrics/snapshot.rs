//! Everything the metrics say, read from the state database in one go: per command (runs and
//! their totals), per cluster (last sync, repository size), per stanza check (restore-check,
//! verify) and per replica.
//!
//! Per-entity rows come from [`StateDb`]'s own queries; the per-command aggregates (counts,
//! totals, last success) are read-only SQL over the `runs` and `stanza_checks` tables, on a
//! connection of their own so that a long-lived [`StateDb`] handle is not needed.

use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;

use crate::state::{ClusterStatus, ReplicaStatus, StateDb, StateError};

/// One command's runs (`sync`, `restore-check`, ...).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandRuns {
    pub command: String,
    /// The last finished run.
    pub last_started_at: Option<i64>,
    pub last_finished_at: Option<i64>,
    pub last_result: Option<String>,
    pub last_files: u64,
    pub last_bytes: u64,
    pub last_errors: u64,
    /// When a run last ended in success.
    pub last_success_at: Option<i64>,
    /// Finished runs by result.
    pub succeeded: u64,
    pub failed: u64,
    /// Sums over every finished run.
    pub files_total: u64,
    pub bytes_total: u64,
}

impl CommandRuns {
    pub fn last_duration_seconds(&self) -> Option<i64> {
        Some(self.last_finished_at? - self.last_started_at?)
    }
}

/// The latest restore-check or verify of one stanza at one destination.
#[derive(Debug, Clone, Serialize)]
pub struct CheckStatus {
    pub stanza: String,
    pub destination: String,
    pub kind: String,
    pub last_at: i64,
    pub last_result: String,
    pub last_duration_ms: u64,
    pub last_success_at: Option<i64>,
}

/// A point-in-time view of the state database.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub generated_at: i64,
    pub commands: Vec<CommandRuns>,
    pub clusters: Vec<ClusterStatus>,
    pub checks: Vec<CheckStatus>,
    pub replicas: Vec<ReplicaStatus>,
}

impl Snapshot {
    /// Reads everything from an open state database.
    pub fn collect(db: &StateDb) -> Result<Self, StateError> {
        let err = |source| StateError::Sqlite {
            path: db.path().to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            db.path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        let commands = command_runs(&conn).map_err(err)?;
        let checks = checks(db, &conn)?;
        Ok(Self {
            generated_at: crate::state::now(),
            commands,
            clusters: db.cluster_statuses(None)?,
            checks,
            replicas: db.replica_statuses()?,
        })
    }

    /// An empty snapshot (no state database yet).
    pub fn empty() -> Self {
        Self {
            generated_at: crate::state::now(),
            commands: Vec::new(),
            clusters: Vec::new(),
            checks: Vec::new(),
            replicas: Vec::new(),
        }
    }
}

fn u(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

fn command_runs(conn: &Connection) -> rusqlite::Result<Vec<CommandRuns>> {
    let mut out: Vec<CommandRuns> = Vec::new();
    let mut totals = conn.prepare(
        "SELECT command, result, count(*), sum(files), sum(bytes), max(finished_at)
         FROM runs WHERE finished_at IS NOT NULL GROUP BY command, result ORDER BY command",
    )?;
    let rows = totals.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    for row in rows {
        let (command, result, count, files, bytes, last) = row?;
        let idx = match out.iter().position(|c| c.command == command) {
            Some(i) => i,
            None => {
                out.push(CommandRuns {
                    command: command.clone(),
                    ..CommandRuns::default()
                });
                out.len() - 1
            }
        };
        let c = &mut out[idx];
        if result == "success" {
            c.succeeded += count as u64;
            c.last_success_at = last;
        } else {
            c.failed += count as u64;
        }
        c.files_total += u(files);
        c.bytes_total += u(bytes);
    }
    let mut last = conn.prepare(
        "SELECT started_at, finished_at, result, files, bytes, errors FROM runs
         WHERE command = ?1 AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
    )?;
    for c in &mut out {
        last.query_row(params![c.command], |r| {
            c.last_started_at = r.get(0)?;
            c.last_finished_at = r.get(1)?;
            c.last_result = r.get(2)?;
            c.last_files = u(r.get(3)?);
            c.last_bytes = u(r.get(4)?);
            c.last_errors = u(r.get(5)?);
            Ok(())
        })?;
    }
    Ok(out)
}

fn checks(db: &StateDb, conn: &Connection) -> Result<Vec<CheckStatus>, StateError> {
    let err = |source| StateError::Sqlite {
        path: db.path().to_path_buf(),
        source,
    };
    let mut success = conn
        .prepare(
            "SELECT max(at) FROM stanza_checks
             WHERE stanza = ?1 AND destination = ?2 AND kind = ?3 AND result = 'success'",
        )
        .map_err(err)?;
    db.latest_checks(None)?
        .into_iter()
        .map(|c| {
            let last_success_at = success
                .query_row(params![c.stanza, c.destination, c.kind], |r| r.get(0))
                .map_err(err)?;
            Ok(CheckStatus {
                stanza: c.stanza,
                destination: c.destination,
                kind: c.kind,
                last_at: c.at,
                last_result: c.result,
                last_duration_ms: c.duration_ms,
                last_success_at,
            })
        })
        .collect()
}
