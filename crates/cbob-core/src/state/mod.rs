//! cbob's own state: a SQLite database at `$CBOB_BASE_PATH/state.db` (WAL mode, migrations
//! versioned in code by `PRAGMA user_version`). It records runs, each cluster's last sync, and
//! later issues add their tables through new migrations.

mod migrations;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// A failure to open or use the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "state database {path}: schema version {found} is newer than this cbob understands ({supported}); upgrade cbob"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("creating {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How a run or a cluster's sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
        }
    }
}

/// What one cluster's sync recorded.
#[derive(Debug, Clone)]
pub struct ClusterSyncRecord<'a> {
    pub cluster: &'a str,
    pub destination: &'a str,
    pub stanza: Option<&'a str>,
    pub outcome: Outcome,
    pub error: Option<&'a str>,
    pub files: u64,
    pub bytes: u64,
    pub duration: Duration,
    /// Objects and bytes of the stanza at the destination after the sync.
    pub repo_files: u64,
    pub repo_bytes: u64,
    pub backups: u64,
    pub latest_backup: Option<&'a str>,
}

/// A cluster's sync status, as `sync --status` and metrics show it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub destination: String,
    pub stanza: Option<String>,
    pub last_attempt_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_files: u64,
    pub last_bytes: u64,
    pub last_duration_ms: u64,
    pub repo_files: u64,
    pub repo_bytes: u64,
    pub backups: u64,
    pub latest_backup: Option<String>,
}

/// A finished (or running) run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub command: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub result: String,
    pub files: u64,
    pub bytes: u64,
    pub errors: u64,
    pub destination: Option<String>,
}

/// A restore-check or verify result of one stanza.
#[derive(Debug, Clone, Serialize)]
pub struct StanzaCheck {
    pub stanza: String,
    pub destination: String,
    /// `restore-check` or `verify`.
    pub kind: String,
    pub at: i64,
    pub result: String,
    pub duration_ms: u64,
    /// Free-form JSON detail (the report), or `None`.
    pub detail: Option<String>,
}

/// What one replica's replication run recorded.
#[derive(Debug, Clone)]
pub struct ReplicaRecord<'a> {
    pub name: &'a str,
    pub destination: &'a str,
    pub outcome: Outcome,
    pub error: Option<&'a str>,
    pub files: u64,
    pub bytes: u64,
    pub duration: Duration,
    pub stanzas: u64,
    pub repo_files: u64,
    pub repo_bytes: u64,
    /// Objects the replica still lacked (or held at another size) when compared with the
    /// primary after the run; `None` when the run did not compare.
    pub objects_behind: Option<u64>,
}

/// A replica's status, as `replicate status` and metrics show it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub name: String,
    pub destination: String,
    pub last_attempt_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_files: u64,
    pub last_bytes: u64,
    pub last_duration_ms: u64,
    pub stanzas: u64,
    pub repo_files: u64,
    pub repo_bytes: u64,
    /// Objects behind the primary at the last comparison (`replicate sync --verify`,
    /// `replicate status`, `replicate verify`); `None` when never compared.
    pub objects_behind: Option<u64>,
    /// When that comparison was made.
    pub compared_at: Option<i64>,
}

/// The open state database.
pub struct StateDb {
    conn: Connection,
    path: PathBuf,
}

impl StateDb {
    /// Opens (creating and migrating) `<base>/state.db`.
    pub fn open_in(base: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(base).map_err(|source| StateError::Io {
            path: base.to_path_buf(),
            source,
        })?;
        Self::open(&base.join("state.db"))
    }

    /// Opens (creating and migrating) a database file.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let err = |source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let mut db = Self {
            conn,
            path: path.to_path_buf(),
        };
        migrations::migrate(&mut db.conn, path)?;
        Ok(db)
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the start of a run; returns its id.
    pub fn start_run(&self, command: &str, destination: Option<&str>) -> Result<i64, StateError> {
        self.conn
            .execute(
                "INSERT INTO runs (command, started_at, result, destination, pid) VALUES (?1, ?2, 'running', ?3, ?4)",
                params![command, now(), destination, std::process::id()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records how a run ended.
    pub fn finish_run(
        &self,
        id: i64,
        outcome: Outcome,
        files: u64,
        bytes: u64,
        errors: u64,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, result = ?3, files = ?4, bytes = ?5, errors = ?6 WHERE id = ?1",
                params![id, now(), outcome.as_str(), files as i64, bytes as i64, errors as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The most recent runs of a command, newest first.
    pub fn recent_runs(&self, command: &str, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, command, started_at, finished_at, result, files, bytes, errors, destination
                 FROM runs WHERE command = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![command, limit as i64], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    result: r.get(4)?,
                    files: r.get::<_, i64>(5)? as u64,
                    bytes: r.get::<_, i64>(6)? as u64,
                    errors: r.get::<_, i64>(7)? as u64,
                    destination: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records one cluster's sync; a success also updates `last_success_at` and the sizes.
    pub fn record_cluster_sync(&self, rec: &ClusterSyncRecord<'_>) -> Result<(), StateError> {
        let t = now();
        let success = rec.outcome == Outcome::Success;
        self.conn
            .execute(
                "INSERT INTO cluster_sync (cluster, destination, stanza, last_attempt_at, last_success_at, last_result,
                     last_error, last_files, last_bytes, last_duration_ms, repo_files, repo_bytes, backups, latest_backup)
                 VALUES (?1, ?2, ?3, ?4, CASE WHEN ?5 THEN ?4 END, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (cluster, destination) DO UPDATE SET
                     stanza = COALESCE(excluded.stanza, stanza),
                     last_attempt_at = excluded.last_attempt_at,
                     last_success_at = CASE WHEN ?5 THEN excluded.last_attempt_at ELSE last_success_at END,
                     last_result = excluded.last_result,
                     last_error = excluded.last_error,
                     last_files = excluded.last_files,
                     last_bytes = excluded.last_bytes,
                     last_duration_ms = excluded.last_duration_ms,
                     repo_files = CASE WHEN ?5 THEN excluded.repo_files ELSE repo_files END,
                     repo_bytes = CASE WHEN ?5 THEN excluded.repo_bytes ELSE repo_bytes END,
                     backups = CASE WHEN ?5 THEN excluded.backups ELSE backups END,
                     latest_backup = CASE WHEN ?5 THEN excluded.latest_backup ELSE latest_backup END",
                params![
                    rec.cluster,
                    rec.destination,
                    rec.stanza,
                    t,
                    success,
                    rec.outcome.as_str(),
                    rec.error,
                    rec.files as i64,
                    rec.bytes as i64,
                    rec.duration.as_millis() as i64,
                    rec.repo_files as i64,
                    rec.repo_bytes as i64,
                    rec.backups as i64,
                    rec.latest_backup,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every cluster's status at a destination (all destinations when `None`), least recently
    /// synced first.
    pub fn cluster_statuses(
        &self,
        destination: Option<&str>,
    ) -> Result<Vec<ClusterStatus>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT cluster, destination, stanza, last_attempt_at, last_success_at, last_result, last_error,
                        last_files, last_bytes, last_duration_ms, repo_files, repo_bytes, backups, latest_backup
                 FROM cluster_sync WHERE ?1 IS NULL OR destination = ?1
                 ORDER BY COALESCE(last_success_at, 0), cluster",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![destination], |r| {
                let u = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0) as u64);
                Ok(ClusterStatus {
                    cluster: r.get(0)?,
                    destination: r.get(1)?,
                    stanza: r.get(2)?,
                    last_attempt_at: r.get(3)?,
                    last_success_at: r.get(4)?,
                    last_result: r.get(5)?,
                    last_error: r.get(6)?,
                    last_files: u(7)?,
                    last_bytes: u(8)?,
                    last_duration_ms: u(9)?,
                    repo_files: u(10)?,
                    repo_bytes: u(11)?,
                    backups: u(12)?,
                    latest_backup: r.get(13)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records a restore-check or verify result (`kind`) of one stanza.
    pub fn record_check(
        &self,
        stanza: &str,
        destination: &str,
        kind: &str,
        outcome: Outcome,
        duration: Duration,
        detail: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO stanza_checks (stanza, destination, kind, at, result, duration_ms, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    stanza,
                    destination,
                    kind,
                    now(),
                    outcome.as_str(),
                    duration.as_millis() as i64,
                    detail
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The latest result of each (stanza, destination, kind), optionally for one kind.
    pub fn latest_checks(&self, kind: Option<&str>) -> Result<Vec<StanzaCheck>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT stanza, destination, kind, at, result, duration_ms, detail FROM stanza_checks c
                 WHERE (?1 IS NULL OR kind = ?1)
                   AND id = (SELECT max(id) FROM stanza_checks d
                             WHERE d.stanza = c.stanza AND d.destination = c.destination AND d.kind = c.kind)
                 ORDER BY stanza, kind",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![kind], |r| {
                Ok(StanzaCheck {
                    stanza: r.get(0)?,
                    destination: r.get(1)?,
                    kind: r.get(2)?,
                    at: r.get(3)?,
                    result: r.get(4)?,
                    duration_ms: r.get::<_, i64>(5)? as u64,
                    detail: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records one replica's replication result; a success also updates the sizes.
    pub fn record_replica(&self, rec: &ReplicaRecord<'_>) -> Result<(), StateError> {
        let success = rec.outcome == Outcome::Success;
        self.conn
            .execute(
                "INSERT INTO replica_status (name, destination, last_attempt_at, last_success_at, last_result, last_error,
                     last_files, last_bytes, last_duration_ms, stanzas, repo_files, repo_bytes,
                     objects_behind, compared_at)
                 VALUES (?1, ?2, ?3, CASE WHEN ?4 THEN ?3 END, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                     ?13, CASE WHEN ?13 IS NOT NULL THEN ?3 END)
                 ON CONFLICT (name) DO UPDATE SET
                     destination = excluded.destination,
                     last_attempt_at = excluded.last_attempt_at,
                     last_success_at = CASE WHEN ?4 THEN excluded.last_attempt_at ELSE last_success_at END,
                     last_result = excluded.last_result,
                     last_error = excluded.last_error,
                     last_files = excluded.last_files,
                     last_bytes = excluded.last_bytes,
                     last_duration_ms = excluded.last_duration_ms,
                     stanzas = CASE WHEN ?4 THEN excluded.stanzas ELSE stanzas END,
                     repo_files = CASE WHEN ?4 THEN excluded.repo_files ELSE repo_files END,
                     repo_bytes = CASE WHEN ?4 THEN excluded.repo_bytes ELSE repo_bytes END,
                     objects_behind = CASE WHEN ?13 IS NOT NULL THEN ?13 ELSE objects_behind END,
                     compared_at = CASE WHEN ?13 IS NOT NULL THEN excluded.last_attempt_at ELSE compared_at END",
                params![
                    rec.name,
                    rec.destination,
                    now(),
                    success,
                    rec.outcome.as_str(),
                    rec.error,
                    rec.files as i64,
                    rec.bytes as i64,
                    rec.duration.as_millis() as i64,
                    rec.stanzas as i64,
                    rec.repo_files as i64,
                    rec.repo_bytes as i64,
                    rec.objects_behind.map(|n| n as i64),
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every replica's status, by name.
    pub fn replica_statuses(&self) -> Result<Vec<ReplicaStatus>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, destination, last_attempt_at, last_success_at, last_result, last_error,
                        last_files, last_bytes, last_duration_ms, stanzas, repo_files, repo_bytes,
                        objects_behind, compared_at
                 FROM replica_status ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let u = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0) as u64);
                Ok(ReplicaStatus {
                    name: r.get(0)?,
                    destination: r.get(1)?,
                    last_attempt_at: r.get(2)?,
                    last_success_at: r.get(3)?,
                    last_result: r.get(4)?,
                    last_error: r.get(5)?,
                    last_files: u(6)?,
                    last_bytes: u(7)?,
                    last_duration_ms: u(8)?,
                    stanzas: u(9)?,
                    repo_files: u(10)?,
                    repo_bytes: u(11)?,
                    objects_behind: r.get::<_, Option<i64>>(12)?.map(|v| v.max(0) as u64),
                    compared_at: r.get(13)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records how far a replica was behind its primary when compared outside a run
    /// (`replicate status`, `replicate verify`). A replica never replicated has no row and is
    /// left alone; returns whether a row was updated.
    pub fn record_replica_lag(&self, name: &str, objects_behind: u64) -> Result<bool, StateError> {
        let n = self
            .conn
            .execute(
                "UPDATE replica_status SET objects_behind = ?2, compared_at = ?3 WHERE name = ?1",
                params![name, objects_behind as i64, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Test hook and operator escape hatch: pretend a replica last succeeded at `at`.
    pub fn set_replica_success_time(&self, name: &str, at: i64) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE replica_status SET last_success_at = ?2, last_attempt_at = ?2 WHERE name = ?1",
                params![name, at],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// When a cluster last synced successfully to a destination.
    pub fn last_success(
        &self,
        cluster: &str,
        destination: &str,
    ) -> Result<Option<i64>, StateError> {
        self.conn
            .query_row(
                "SELECT last_success_at FROM cluster_sync WHERE cluster = ?1 AND destination = ?2",
                params![cluster, destination],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// Orders clusters so that never-synced ones come first, then the least recently synced.
    pub fn order_by_staleness(
        &self,
        clusters: &mut [String],
        destination: &str,
    ) -> Result<(), StateError> {
        let mut keyed = Vec::with_capacity(clusters.len());
        for c in clusters.iter() {
            keyed.push((
                self.last_success(c, destination)?.unwrap_or(i64::MIN),
                c.clone(),
            ));
        }
        keyed.sort();
        for (slot, (_, c)) in clusters.iter_mut().zip(keyed) {
            *slot = c;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(cluster: &'a str, outcome: Outcome, bytes: u64) -> ClusterSyncRecord<'a> {
        ClusterSyncRecord {
            cluster,
            destination: "local:/d",
            stanza: Some("st"),
            outcome,
            error: (outcome == Outcome::Failed).then_some("boom"),
            files: 3,
            bytes,
            duration: Duration::from_millis(1500),
            repo_files: 10,
            repo_bytes: bytes * 2,
            backups: 2,
            latest_backup: Some("20261124-000000F"),
        }
    }

    #[test]
    fn records_runs_and_cluster_syncs_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open_in(dir.path()).unwrap();
            let run = db.start_run("sync", Some("local:/d")).unwrap();
            db.record_cluster_sync(&rec("aaa", Outcome::Success, 100))
                .unwrap();
            db.record_cluster_sync(&rec("bbb", Outcome::Failed, 5))
                .unwrap();
            db.finish_run(run, Outcome::Failed, 6, 105, 1).unwrap();
        }
        let db = StateDb::open_in(dir.path()).unwrap();
        let runs = db.recent_runs("sync", 10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].result.as_str(), runs[0].bytes, runs[0].errors),
            ("failed", 105, 1)
        );
        let st = db.cluster_statuses(None).unwrap();
        assert_eq!(st.len(), 2);
        // Never succeeded sorts first.
        assert_eq!(st[0].cluster, "bbb");
        assert_eq!(st[0].last_success_at, None);
        assert_eq!(st[0].last_error.as_deref(), Some("boom"));
        assert_eq!(st[1].repo_bytes, 200);
        // A failure keeps the last good sizes and success time.
        db.record_cluster_sync(&rec("aaa", Outcome::Failed, 1))
            .unwrap();
        let a = db
            .cluster_statuses(None)
            .unwrap()
            .into_iter()
            .find(|s| s.cluster == "aaa")
            .unwrap();
        assert_eq!(a.last_result.as_deref(), Some("failed"));
        assert_eq!(a.repo_bytes, 200);
        assert!(a.last_success_at.is_some());
        let mut order = vec!["aaa".to_string(), "ccc".to_string(), "bbb".to_string()];
        db.order_by_staleness(&mut order, "local:/d").unwrap();
        assert_eq!(
            order[2], "aaa",
            "the only cluster with a success goes last: {order:?}"
        );
    }

    #[test]
    fn records_the_latest_check_per_stanza_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open_in(dir.path()).unwrap();
        let d = Duration::from_millis(10);
        db.record_check("a", "local:/d", "verify", Outcome::Failed, d, Some("{}"))
            .unwrap();
        db.record_check("a", "local:/d", "verify", Outcome::Success, d, None)
            .unwrap();
        db.record_check("a", "local:/d", "restore-check", Outcome::Failed, d, None)
            .unwrap();
        db.record_check("b", "local:/d", "verify", Outcome::Success, d, None)
            .unwrap();
        let all = db.latest_checks(None).unwrap();
        assert_eq!(all.len(), 3);
        let verify = db.latest_checks(Some("verify")).unwrap();
        assert_eq!(verify.len(), 2);
        assert!(verify.iter().all(|c| c.result == "success"));
    }

    #[test]
    fn records_replicas_and_keeps_the_last_known_lag() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open_in(dir.path()).unwrap();
        let rec = |outcome, behind| ReplicaRecord {
            name: "eu",
            destination: "s3://r/p",
            outcome,
            error: None,
            files: 3,
            bytes: 30,
            duration: Duration::from_millis(1500),
            stanzas: 1,
            repo_files: if outcome == Outcome::Success { 10 } else { 1 },
            repo_bytes: 100,
            objects_behind: behind,
        };
        assert!(!db.record_replica_lag("eu", 5).unwrap(), "no row yet");
        db.record_replica(&rec(Outcome::Success, Some(0))).unwrap();
        let s = &db.replica_statuses().unwrap()[0];
        assert_eq!((s.objects_behind, s.repo_files), (Some(0), 10));
        assert!(s.compared_at.is_some());
        // A failed run that did not compare keeps the last comparison and the last good size.
        db.record_replica(&rec(Outcome::Failed, None)).unwrap();
        let s = &db.replica_statuses().unwrap()[0];
        assert_eq!(
            (s.objects_behind, s.repo_files, s.last_result.as_deref()),
            (Some(0), 10, Some("failed"))
        );
        assert!(db.record_replica_lag("eu", 7).unwrap());
        assert_eq!(db.replica_statuses().unwrap()[0].objects_behind, Some(7));
    }

    #[test]
    fn a_version_3_database_gains_the_lag_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut c = Connection::open(&path).unwrap();
            let tx = c.transaction().unwrap();
            for sql in &migrations_for_test()[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.commit().unwrap();
            c.execute(
                "INSERT INTO replica_status (name, destination, last_result) VALUES ('old', 'x', 'success')",
                [],
            )
            .unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        let s = &db.replica_statuses().unwrap()[0];
        assert_eq!((s.name.as_str(), s.objects_behind), ("old", None));
    }

    fn migrations_for_test() -> &'static [&'static str] {
        migrations::MIGRATIONS
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(StateDb::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
        drop(c);
        assert!(matches!(
            StateDb::open(&path),
            Err(StateError::TooNew { found: 999, .. })
        ));
    }
}
