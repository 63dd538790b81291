//! Schema migrations, applied in order inside one transaction each. Never edit a released
//! migration; add a new one.

use std::path::Path;

use rusqlite::Connection;

use super::StateError;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: runs and per-cluster sync state.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        result TEXT NOT NULL,
        files INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        destination TEXT,
        pid INTEGER
    );
    CREATE INDEX runs_by_command ON runs (command, id);
    CREATE TABLE cluster_sync (
        cluster TEXT NOT NULL,
        destination TEXT NOT NULL,
        stanza TEXT,
        last_attempt_at INTEGER,
        last_success_at INTEGER,
        last_result TEXT,
        last_error TEXT,
        last_files INTEGER,
        last_bytes INTEGER,
        last_duration_ms INTEGER,
        repo_files INTEGER,
        repo_bytes INTEGER,
        backups INTEGER,
        latest_backup TEXT,
        PRIMARY KEY (cluster, destination)
    );",
    // 2: results of restore-check and verify per stanza (latest per kind, plus history).
    "CREATE TABLE stanza_checks (
        id INTEGER PRIMARY KEY,
        stanza TEXT NOT NULL,
        destination TEXT NOT NULL,
        kind TEXT NOT NULL,
        at INTEGER NOT NULL,
        result TEXT NOT NULL,
        duration_ms INTEGER NOT NULL DEFAULT 0,
        detail TEXT
    );
    CREATE INDEX stanza_checks_latest ON stanza_checks (stanza, destination, kind, id);",
    // 3: replication status per replica.
    "CREATE TABLE replica_status (
        name TEXT PRIMARY KEY,
        destination TEXT NOT NULL,
        last_attempt_at INTEGER,
        last_success_at INTEGER,
        last_result TEXT,
        last_error TEXT,
        last_files INTEGER,
        last_bytes INTEGER,
        last_duration_ms INTEGER,
        stanzas INTEGER,
        repo_files INTEGER,
        repo_bytes INTEGER
    );",
    // 4: how many objects a replica was behind its primary when last compared (NULL: unknown).
    "ALTER TABLE replica_status ADD COLUMN objects_behind INTEGER;
    ALTER TABLE replica_status ADD COLUMN compared_at INTEGER;",
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let err = |source| StateError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if current > VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: current,
            supported: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}
