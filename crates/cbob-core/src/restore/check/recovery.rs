//! Steps from a restored data directory to a promoted server, and the proof that recovery used
//! the whole archive: `wal-archive`, `start`, `recover`, `recovery-end`.

use super::*;

impl StanzaRun<'_> {
    pub(super) async fn wal_archive(&mut self, insp: &Inspection) -> Result<((), String), PgError> {
        let (Some(start), Some(stop)) = (insp.entry.archive_start, insp.entry.archive_stop) else {
            return Ok((
                (),
                "offline backup: it needs no WAL to be consistent".into(),
            ));
        };
        let contents = ArchiveContents::from_keys(
            insp.archive_keys.iter().map(String::as_str),
            self.stanza,
            &insp.archive_id,
        );
        let history = match contents.newest_timeline() {
            Some(tli) if tli > start.timeline => {
                let key = format!(
                    "archive/{}/{}/{tli:08X}.history",
                    self.stanza, insp.archive_id
                );
                let k = ObjectKey::new(key.clone()).map_err(|e| failed(e.to_string()))?;
                let bytes = crate::storage::read_to_bytes(self.ctx.dest.as_ref(), &k)
                    .await
                    .map_err(|e| failed(format!("reading {key}: {e}")))?;
                Some(
                    wal::parse_history(&String::from_utf8_lossy(&bytes))
                        .map_err(|e| failed(format!("{key}: {e}")))?,
                )
            }
            _ => None,
        };
        let plan =
            wal::plan(start, stop, &contents, history.as_deref(), self.geometry).map_err(failed)?;
        self.report.recovery.archive_max = plan.archive_max.map(|s| s.to_string());
        self.report.recovery.missing_segments = plan
            .missing
            .iter()
            .take(100)
            .map(ToString::to_string)
            .collect();
        let max = plan
            .archive_max
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        let missing = plan.missing.clone();
        let required = plan.required;
        self.plan = Some(plan);
        if missing.is_empty() {
            return Ok((
                (),
                format!(
                    "all {required} WAL segments from the backup's start {start} to the newest archived {max} are present"
                ),
            ));
        }
        let list = missing
            .iter()
            .take(10)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let more = if missing.len() > 10 {
            format!(" and {} more", missing.len() - 10)
        } else {
            String::new()
        };
        let msg = format!(
            "{} of {required} WAL segments between the backup's start {start} and the newest archived segment {max} are missing from the archive: {list}{more}",
            missing.len()
        );
        match self.ctx.options.target {
            RecoveryTarget::EndOfArchive => Err(failed(format!(
                "{msg}; recovery cannot replay past the first gap"
            ))),
            // Segments after the target time are not needed; PostgreSQL itself refuses to
            // promote when the target was not reached.
            RecoveryTarget::Time(_) => Ok((
                (),
                format!("{msg} (only a problem if they precede the target time)"),
            )),
        }
    }

    pub(super) async fn start(&mut self, insp: &Inspection) -> Result<((), String), PgError> {
        let ws = self.ws();
        let sock = ws.socket_dir();
        let (hba, ident) = (ws.hba_file(), ws.ident_file());
        let listen = Listen {
            port: self.port,
            socket_dir: &sock,
            tcp_localhost: false,
            hba_file: &hba,
            ident_file: &ident,
            max_connections: 20,
        };
        let mut settings = server_settings(&listen, self.control.as_ref());
        settings.extend(throwaway_settings());
        let conf = ws.server_conf();
        ws.write_file(&conf, &render_conf(&settings))?;
        let env = self.pg_env(&insp.bins);
        let server = Server::spawn(
            &env,
            &ws.pgdata(),
            &conf,
            &settings,
            self.port,
            &sock,
            &ws.server_log(),
        )?;
        let pid = server.pid();
        let server = self.server.insert(server);
        server
            .wait_listening(START_TIMEOUT, &self.ctx.cancel)
            .await?;
        Ok((
            (),
            format!(
                "PostgreSQL {} (PID {pid}) started on the private socket {}/.s.PGSQL.{}",
                insp.bins.version,
                sock.display(),
                self.port
            ),
        ))
    }

    pub(super) async fn recover(&mut self) -> Result<((), String), PgError> {
        let timeout = self.ctx.options.recovery_timeout;
        let stanza = self.stanza.to_string();
        let server = self.server.as_mut().expect("server started");
        let log = server.log_file.clone();
        server
            .wait_promoted(timeout, &self.ctx.cancel, |elapsed| {
                let (n, last) = restored_wal(&log);
                tracing::info!(stanza = %stanza, seconds = elapsed.as_secs(), restored = n, last = last.as_deref().unwrap_or("-"), "still recovering");
            })
            .await?;
        let (n, last) = restored_wal(&log);
        self.report.recovery.wal_restored = n;
        Ok((
            (),
            format!(
                "recovery replayed {n} files restored from the archive (last {}) and the server promoted",
                last.as_deref().unwrap_or("-")
            ),
        ))
    }

    pub(super) async fn recovery_end(&mut self) -> Result<((), String), PgError> {
        let server = self.server.as_ref().expect("server started");
        let hex = server
            .query(
                "postgres",
                "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
                &self.ctx.cancel,
            )
            .await?;
        let hex = hex.trim();
        let tli = u32::from_str_radix(hex, 16)
            .map_err(|_| failed(format!("unexpected timeline {hex:?}")))?;
        let path = server.pgdata.join("pg_wal").join(format!("{hex}.history"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            failed(format!(
                "cannot read {} after promotion to timeline {tli}: {e}",
                path.display()
            ))
        })?;
        let entries =
            wal::parse_history(&text).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let end: HistoryEntry = entries
            .last()
            .cloned()
            .ok_or_else(|| failed(format!("{} is empty", path.display())))?;
        let reached = wal::switch_segment(&end, self.geometry);
        self.report.recovery.timeline = Some(tli);
        self.report.recovery.reason = Some(end.reason.clone());
        self.report.recovery.end_segment = Some(reached.to_string());
        let result = match &self.ctx.options.target {
            RecoveryTarget::EndOfArchive => match &self.plan {
                Some(plan) => wal::check_end(plan, &end, self.geometry),
                None => Ok(format!("recovery ended in {reached} (archive not planned)")),
            },
            RecoveryTarget::Time(t) => {
                if end.reason.starts_with("no recovery target") {
                    Err(format!(
                        "recovery ran out of WAL in {reached} before reaching --target-time {}",
                        pg_timestamp(t)
                    ))
                } else {
                    Ok(format!(
                        "recovery stopped at the target ({}) in {reached}",
                        end.reason
                    ))
                }
            }
        };
        self.report.recovery.reached = Some(result.is_ok());
        match result {
            Ok(detail) => Ok(((), format!("{detail}; promoted to timeline {tli}"))),
            Err(e) => {
                let fetch_errors = archive_get_errors(&server.log_file);
                Err(failed(if fetch_errors.is_empty() {
                    e
                } else {
                    format!("{e}\narchive-get reported:\n{fetch_errors}")
                }))
            }
        }
    }
}

/// pgBackRest errors (`ERROR: [042]: ...`) that `archive-get` wrote to the server log.
fn archive_get_errors(log: &PathBuf) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR: [")).collect();
    errors[errors.len().saturating_sub(3)..].join("\n")
}
