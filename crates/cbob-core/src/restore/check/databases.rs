//! Steps on the promoted server, then after it: `databases`, `amcheck`, `pg_dump`, `sql`,
//! `stop`, `checksums`.

use super::*;

impl StanzaRun<'_> {
    pub(super) async fn databases(&mut self) -> Result<((), String), PgError> {
        let server = self.server.as_ref().expect("server started");
        let cancel = &self.ctx.cancel;
        // Hex, so no database name can break the parsing.
        let out = server
            .query(
                "postgres",
                "SELECT encode(convert_to(datname, 'UTF8'), 'hex') FROM pg_database WHERE datallowconn ORDER BY datname",
                cancel,
            )
            .await
            .map_err(|e| failed(format!("cannot list the databases: {e}")))?;
        let names: Vec<String> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                String::from_utf8_lossy(&hex::decode(l.trim()).unwrap_or_default()).into_owned()
            })
            .collect();
        let mut reachable = Vec::new();
        let mut unreachable = Vec::new();
        for db in names {
            match server.query(&db, "SELECT 1", cancel).await {
                Ok(_) => reachable.push(db),
                Err(PgError::Interrupted) => return Err(PgError::Interrupted),
                Err(e) => {
                    let msg = e.to_string();
                    unreachable.push(format!(
                        "{db}: {msg}{}",
                        crate::pg::server::locale_hint(&msg)
                    ));
                }
            }
        }
        let detail = format!(
            "{} databases accept connections: {}",
            reachable.len(),
            reachable.join(", ")
        );
        self.report.databases = reachable;
        if unreachable.is_empty() {
            Ok(((), detail))
        } else {
            Err(failed(format!(
                "cannot connect to {} database(s): {}",
                unreachable.len(),
                unreachable.join("; ")
            )))
        }
    }

    pub(super) async fn amcheck(&mut self) -> Result<((), String), PgError> {
        let server = self.server.as_ref().expect("server started");
        let mut checked = 0u64;
        let mut failures = Vec::new();
        for db in &self.report.databases {
            let mut cmd = server.psql(db);
            cmd.arg("-f").arg("-");
            let out = run_command(
                cmd,
                "amcheck",
                Some(AMCHECK_SQL.as_bytes().to_vec()),
                &self.ctx.cancel,
            )
            .await?;
            if !out.success() {
                let diag = last_lines(&out.diagnostics(), 5);
                let hint = if diag.contains("extension \"amcheck\"") {
                    "; fix: install the PostgreSQL contrib modules (Debian: they are part of postgresql-<version>)"
                } else {
                    ""
                };
                failures.push(AmcheckFailure {
                    database: db.clone(),
                    index: "*".into(),
                    error: format!("{diag}{hint}"),
                });
                continue;
            }
            let mut lines = out.stdout.lines().filter(|l| !l.trim().is_empty());
            checked += lines
                .next()
                .and_then(|l| l.trim().parse::<u64>().ok())
                .unwrap_or(0);
            for l in lines {
                let row = String::from_utf8_lossy(&hex::decode(l.trim()).unwrap_or_default())
                    .into_owned();
                let (index, error) = row.split_once('\t').unwrap_or((&row, ""));
                failures.push(AmcheckFailure {
                    database: db.clone(),
                    index: index.to_string(),
                    error: error.to_string(),
                });
            }
        }
        self.report.indexes_checked = checked;
        let detail = format!(
            "{checked} btree indexes in {} databases checked with bt_index_parent_check(heapallindexed)",
            self.report.databases.len()
        );
        self.report.amcheck_failures = failures.clone();
        if failures.is_empty() {
            Ok(((), detail))
        } else {
            Err(failed(format!(
                "amcheck found {} corrupt index(es) ({detail}): {}",
                failures.len(),
                failures
                    .iter()
                    .take(10)
                    .map(|f| format!("{}: {}: {}", f.database, f.index, f.error))
                    .collect::<Vec<_>>()
                    .join("; ")
            )))
        }
    }

    pub(super) async fn dump(&mut self) -> Result<((), String), PgError> {
        let server = self.server.as_ref().expect("server started");
        let env = server.client_env().clone();
        let mut dumps = Vec::new();
        for db in &self.report.databases {
            let mut cmd = env.pg_command("pg_dump");
            cmd.arg("--no-password").arg("-d").arg(conninfo(db));
            let r =
                crate::pg::command::run_discarding_stdout(cmd, "pg_dump", &self.ctx.cancel).await?;
            dumps.push(match r {
                Ok(bytes) => DumpReport {
                    database: db.clone(),
                    bytes,
                    error: None,
                },
                Err(e) => DumpReport {
                    database: db.clone(),
                    bytes: 0,
                    error: Some(last_lines(&e, 5)),
                },
            });
        }
        let mut cmd = env.pg_command("pg_dumpall");
        cmd.args(["--globals-only", "--no-password"]);
        let globals =
            crate::pg::command::run_discarding_stdout(cmd, "pg_dumpall", &self.ctx.cancel).await?;
        let total: u64 = dumps.iter().map(|d| d.bytes).sum();
        let bad: Vec<String> = dumps
            .iter()
            .filter_map(|d| d.error.as_ref().map(|e| format!("{}: {e}", d.database)))
            .chain(
                globals
                    .err()
                    .map(|e| format!("pg_dumpall --globals-only: {}", last_lines(&e, 5))),
            )
            .collect();
        let detail = format!(
            "{} databases dumped to nowhere ({} of SQL)",
            dumps.len(),
            human_bytes(total)
        );
        self.report.dumps = dumps;
        if bad.is_empty() {
            Ok(((), detail))
        } else {
            Err(failed(format!(
                "pg_dump failed for {}: {}",
                bad.len(),
                bad.join("; ")
            )))
        }
    }

    pub(super) async fn sql(&mut self) -> Result<((), String), PgError> {
        let sql = self.ctx.options.sql_checks.clone().unwrap_or_default();
        let server = self.server.as_ref().expect("server started");
        let mut cmd = server.client_env().pg_command("psql");
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-v"])
            .arg(format!("stanza={}", self.stanza))
            .arg("-d")
            .arg(conninfo("postgres"))
            .args(["-f", "-"]);
        let out = run_command(cmd, "SQL checks", Some(sql.into_bytes()), &self.ctx.cancel).await?;
        if out.success() {
            let shown = last_lines(&out.stdout, 20);
            Ok((
                (),
                if shown.is_empty() {
                    "SQL checks passed".into()
                } else {
                    format!("SQL checks passed:\n{shown}")
                },
            ))
        } else {
            Err(failed(format!(
                "the SQL checks failed ({}):\n{}",
                out.status,
                last_lines(&out.diagnostics(), 15)
            )))
        }
    }

    pub(super) async fn stop(&mut self) -> Result<((), String), PgError> {
        let server = self.server.as_mut().expect("server started");
        server.stop(STOP_TIMEOUT).await?;
        Ok(((), "fast shutdown, clean".into()))
    }

    pub(super) async fn checksums(&mut self, bins: &PgBinaries) -> Result<((), String), PgError> {
        let env = self.pg_env(bins);
        let mut cmd = env.pg_command("pg_checksums");
        cmd.arg("--check").arg("-D").arg(self.ws().pgdata());
        let out = run_command(cmd, "pg_checksums", None, &self.ctx.cancel).await?;
        self.report.checksums_ok = Some(out.success());
        if out.success() {
            let summary = out
                .stdout
                .lines()
                .filter(|l| l.contains("Blocks scanned") || l.contains("Bad checksums"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(", ");
            Ok(((), format!("data checksums verified: {summary}")))
        } else {
            Err(failed(format!(
                "pg_checksums found bad pages ({}):\n{}",
                out.status,
                last_lines(&out.diagnostics(), 12)
            )))
        }
    }
}

/// amcheck in one database: every btree index, one transaction each (a database with many
/// indexes would otherwise exhaust the lock table), errors collected instead of stopping.
/// Prints the number of indexes checked, then one hex-encoded `index<TAB>error` per failure.
const AMCHECK_SQL: &str = r#"SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS amcheck;
CREATE TEMP TABLE cbob_amcheck (idx text, error text);
DO $cbob$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT c.oid, c.oid::regclass::text AS name
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
    WHERE am.amname = 'btree' AND c.relpersistence <> 't' AND i.indisready AND i.indisvalid
    ORDER BY c.oid
  LOOP
    BEGIN
      PERFORM bt_index_parent_check(r.oid, true);
      INSERT INTO cbob_amcheck VALUES (r.name, NULL);
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO cbob_amcheck VALUES (r.name, SQLERRM);
    END;
    COMMIT;
  END LOOP;
END
$cbob$;
SELECT count(*) FROM cbob_amcheck;
SELECT encode(convert_to(idx || E'\t' || error, 'UTF8'), 'hex') FROM cbob_amcheck WHERE error IS NOT NULL ORDER BY idx;
"#;
