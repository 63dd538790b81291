//! Steps up to a restored data directory: `inspect` (which backup, which binaries, in place or
//! staged), `prepare` (work directory, free space, configs), `stage`, `restore`.

use super::*;

impl StanzaRun<'_> {
    pub(super) async fn inspect(&mut self) -> Result<(Inspection, String), PgError> {
        let ctx = self.ctx;
        let s = self.stanza;
        validate_stanza_name(s).map_err(|e| failed(e.to_string()))?;
        let dest = &ctx.dest;
        let info_key = format!("backup/{s}/backup.info");
        let bytes = read_verified_info(dest, &info_key)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| {
                failed(format!(
                    "stanza {s} not found in {}: there is no {info_key} (sync it first with `cbob sync`, or check --stanza)",
                    ctx.dest_description
                ))
            })?;
        let info = BackupInfo::parse(&bytes).map_err(|e| failed(format!("{info_key}: {e}")))?;
        if info.cipher {
            return Err(failed(
                "the repository is encrypted (backup.info has a cipher passphrase); restore-check cannot restore encrypted repositories",
            ));
        }
        let entry = choose_backup(&info, ctx.options.set.as_ref(), &ctx.options.target)
            .map_err(failed)?
            .clone();
        let chain = info
            .chain(&entry.label)
            .unwrap_or_else(|| vec![entry.label.clone()]);
        let db = info.db_of(&entry).ok_or_else(|| {
            failed(format!(
                "{info_key}: backup {} names db-id {} which is not in [db:history]",
                entry.label, entry.db_id
            ))
        })?;
        let archive_id = db.archive_id();
        self.report.pg_version = Some(db.version.clone());
        self.report.backup = Some(BackupRef {
            label: entry.label.to_string(),
            kind: entry.backup_type.name().to_string(),
            chain: chain.iter().map(ToString::to_string).collect(),
            stopped_at: entry.stopped().map(|t| t.to_rfc3339()),
            size: entry.size,
            wal_start: entry.archive_start.map(|w| w.to_string()),
            wal_stop: entry.archive_stop.map(|w| w.to_string()),
        });
        self.report.recovery.target = ctx.options.target.describe();
        let archive_info = format!("archive/{s}/archive.info");
        if read_verified_info(dest, &archive_info)
            .await
            .map_err(|e| failed(e.to_string()))?
            .is_none()
        {
            return Err(failed(format!(
                "{archive_info} (and its .copy) is missing: without the WAL archive no backup can be recovered"
            )));
        }

        let bins = find_pg_binaries(
            &db.version,
            ctx.options.pg_bin_dir.as_deref(),
            CHECK_PROGRAMS,
        )?;

        let mut archive = list(dest, &format!("archive/{s}/")).await?;
        let archive_keys: Vec<String> =
            archive.iter().map(|m| m.key.as_str().to_string()).collect();
        let mut backup_files = Vec::new();
        for label in &chain {
            backup_files.extend(list(dest, &format!("backup/{s}/{label}/")).await?);
        }
        if !backup_files
            .iter()
            .any(|m| m.key.as_str() == format!("backup/{s}/{}/backup.manifest", entry.label))
            && !backup_files.iter().any(|m| {
                m.key.as_str() == format!("backup/{s}/{}/backup.manifest.copy", entry.label)
            })
        {
            return Err(failed(format!(
                "backup {} is listed in backup.info but its directory has no backup.manifest at {}",
                entry.label, ctx.dest_description
            )));
        }

        let in_place = match &ctx.local_root {
            Some(root) => self.readable_in_place(root, &archive, &backup_files),
            None => Err("the destination is an object store".to_string()),
        };
        let stage = match &in_place {
            Ok(()) => None,
            Err(_) => {
                for name in ["backup.info", "backup.info.copy"] {
                    let key = ObjectKey::new(format!("backup/{s}/{name}"))
                        .map_err(|e| failed(e.to_string()))?;
                    match dest.head(&key).await {
                        Ok(meta) => archive.push(meta),
                        Err(e) if e.kind() == StorageErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(failed(format!(
                                "reading {} at {}: {e}",
                                key.as_str(),
                                ctx.dest_description
                            )));
                        }
                    }
                }
                archive.extend(backup_files.iter().cloned());
                Some(stage::select(
                    s,
                    &archive,
                    &chain,
                    &archive_id,
                    entry.archive_start,
                ))
            }
        };
        self.report.repository = Some(match &stage {
            None => RepositoryAccess {
                mode: "in-place".into(),
                files: 0,
                bytes: 0,
            },
            Some(p) => RepositoryAccess {
                mode: "staged".into(),
                files: p.objects.len() as u64,
                bytes: p.bytes,
            },
        });
        let detail = format!(
            "backup {} ({}, PostgreSQL {}, {} database, chain of {}); {}",
            entry.label,
            entry.backup_type.name(),
            db.version,
            human_bytes(entry.size),
            chain.len(),
            match (&stage, &in_place) {
                (None, _) => "repository read in place".to_string(),
                (Some(p), Err(why)) => format!(
                    "staging {} files ({}) because {why}",
                    p.objects.len(),
                    human_bytes(p.bytes)
                ),
                (Some(p), Ok(())) => format!("staging {} files", p.objects.len()),
            }
        );
        Ok((
            Inspection {
                entry,
                chain,
                archive_id,
                bins,
                archive_keys,
                stage,
            },
            detail,
        ))
    }

    /// Whether the PostgreSQL user can read everything the restore needs where it lies; the
    /// reason when not (then the files are staged).
    fn readable_in_place(
        &self,
        root: &Path,
        archive: &[ObjectMeta],
        backup: &[ObjectMeta],
    ) -> Result<(), String> {
        let Some(user) = &self.ctx.user else {
            return Ok(());
        };
        check_reachable(root, Some(user))
            .map_err(|_| format!("the `{}` user cannot reach {}", user.name, root.display()))?;
        let mut dirs = std::collections::BTreeSet::new();
        for meta in archive.iter().chain(backup) {
            let path = root.join(meta.key.as_str());
            let md = path
                .metadata()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if !can_read(&md, user) {
                return Err(format!(
                    "the `{}` user cannot read {} (mode {:o})",
                    user.name,
                    path.display(),
                    std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777
                ));
            }
            let mut dir = path.parent();
            while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
                if !dirs.insert(d.to_path_buf()) {
                    break;
                }
                let md = d.metadata().map_err(|e| format!("{}: {e}", d.display()))?;
                if !can_enter(&md, user) {
                    return Err(format!(
                        "the `{}` user cannot enter {}",
                        user.name,
                        d.display()
                    ));
                }
                dir = d.parent();
            }
        }
        Ok(())
    }

    pub(super) fn prepare(&mut self, insp: &Inspection) -> Result<((), String), PgError> {
        let ctx = self.ctx;
        let user = ctx.user.as_ref();
        let ws = Workspace::create(&ctx.options.work_root, self.stanza, user)?;
        let staged = insp.stage.as_ref().map_or(0, |p| p.bytes);
        let need = insp.entry.size + staged;
        let avail = free_space(ws.root()).unwrap_or(u64::MAX);
        if avail < need {
            return Err(failed(format!(
                "not enough free space in {}: the restore needs about {} ({} database + {} staged), {} is available; \
                 fix: free space there, or set CBOB_BASE_PATH to a larger filesystem",
                ctx.options.work_root.display(),
                human_bytes(need),
                human_bytes(insp.entry.size),
                human_bytes(staged),
                human_bytes(avail)
            )));
        }
        let repo = match (&insp.stage, &ctx.local_root) {
            (None, Some(root)) => root.clone(),
            _ => ws.repo(),
        };
        let conf = format!(
            "[global]\nrepo1-path={repo}\nlock-path={run}/lock\nlog-path={run}/log\nspool-path={run}/spool\n\
             log-level-console=warn\nlog-level-file=detail\nprocess-max={pm}\n\
             # The repository is on local disk: retrying a file that failed its check only adds delay.\n\
             job-retry=0\n\n[{stanza}]\npg1-path={pgdata}\n",
            repo = repo.display(),
            run = ws.run_dir().display(),
            pm = ctx.process_max,
            stanza = self.stanza,
            pgdata = ws.pgdata().display(),
        );
        ws.write_file(&ws.pgbackrest_conf(), &conf)?;
        ws.write_file(
            &ws.hba_file(),
            "# cbob restore-check: the socket directory is private\nlocal all all trust\n",
        )?;
        ws.write_file(&ws.ident_file(), "")?;
        let detail = format!(
            "work directory {}, {} free, repository {}",
            ws.root().display(),
            if avail == u64::MAX {
                "?".into()
            } else {
                human_bytes(avail)
            },
            repo.display()
        );
        self.ws = Some(ws);
        Ok(((), detail))
    }

    pub(super) async fn stage(&mut self, plan: &StagePlan) -> Result<((), String), PgError> {
        let root = self.ws().repo();
        stage::stage(
            &self.ctx.dest,
            plan,
            &root,
            self.ctx.options.transfers,
            &self.ctx.cancel,
        )
        .await
        .map_err(|e| {
            if self.ctx.cancel.is_cancelled() {
                PgError::Interrupted
            } else {
                failed(e)
            }
        })?;
        Ok((
            (),
            format!(
                "copied {} files ({}) from {} into {}",
                plan.objects.len(),
                human_bytes(plan.bytes),
                self.ctx.dest_description,
                root.display()
            ),
        ))
    }

    pub(super) async fn restore(&mut self, insp: &Inspection) -> Result<((), String), PgError> {
        let ctx = self.ctx;
        let env = self.pg_env(&insp.bins);
        let ws = self.ws.as_ref().expect("workspace prepared");
        let mut cmd = env.command(&ctx.pgbackrest);
        cmd.arg(format!("--config={}", ws.pgbackrest_conf().display()))
            .arg(format!("--stanza={}", self.stanza))
            .arg(format!("--set={}", insp.entry.label))
            // Otherwise the restored server would run the source's archive_command.
            .arg("--archive-mode=off")
            .arg(format!(
                "--tablespace-map-all={}",
                ws.tablespaces().display()
            ));
        match &ctx.options.target {
            RecoveryTarget::EndOfArchive => {
                cmd.arg("--type=default");
            }
            RecoveryTarget::Time(t) => {
                cmd.arg("--type=time")
                    .arg(format!("--target={}", pg_timestamp(t)))
                    .arg("--target-action=promote");
            }
        }
        cmd.arg("restore");
        let out = run_command(cmd, "pgbackrest restore", None, &ctx.cancel).await?;
        if !out.success() {
            return Err(failed(format!(
                "pgbackrest restore of backup {} failed ({}):\n{}",
                insp.entry.label,
                out.status,
                last_lines(&out.diagnostics(), 15)
            )));
        }
        let mut cmd = env.pg_command("pg_controldata");
        cmd.arg("-D").arg(ws.pgdata());
        let out = run_command(cmd, "pg_controldata", None, &ctx.cancel).await?;
        if !out.success() {
            return Err(failed(format!(
                "pg_controldata of the restored cluster failed ({}): {}",
                out.status,
                last_lines(&out.diagnostics(), 5)
            )));
        }
        let control = ControlData::parse(&out.stdout);
        let segment_size = control.wal_segment_size().unwrap_or(16 * 1024 * 1024);
        let geometry = WalGeometry::for_pg_version(&insp.bins.version, segment_size)
            .map_err(|e| failed(format!("pg_controldata: {e}")))?;
        let detail = format!(
            "restored {} (chain {}) into {}; data checksums {}, {} WAL segments",
            insp.entry.label,
            insp.chain
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" + "),
            ws.pgdata().display(),
            if control.checksums_enabled() {
                "on"
            } else {
                "off"
            },
            human_bytes(segment_size)
        );
        self.geometry = geometry;
        self.control = Some(control);
        Ok(((), detail))
    }
}
