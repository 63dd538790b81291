//! A [`Snapshot`] as Prometheus text, JSON or a table for people. Metric names and labels are
//! documented in docs/metrics.md; a test there keeps the two in step.

use super::prom::PromWriter;
use super::snapshot::Snapshot;

type Labels = Vec<(&'static str, String)>;

/// A family and its samples; families without samples are left out.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(Labels, f64)>,
}

fn write(w: &mut PromWriter, families: Vec<Family>) {
    for f in families.into_iter().filter(|f| !f.samples.is_empty()) {
        w.family(f.name, f.kind, f.help);
        for (labels, value) in &f.samples {
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            w.sample(f.name, &l, *value);
        }
    }
}

fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
        samples: Vec::new(),
    }
}

fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        kind: "counter",
        ..gauge(name, help)
    }
}

fn bool_value(ok: bool) -> f64 {
    if ok { 1.0 } else { 0.0 }
}

/// Appends the snapshot's families to `w`.
pub fn write_prometheus(w: &mut PromWriter, s: &Snapshot) {
    let mut last_ts = gauge(
        "cbob_last_run_timestamp_seconds",
        "When the last finished run of the command ended (Unix time).",
    );
    let mut last_ok = gauge(
        "cbob_last_run_success",
        "1 if the last finished run of the command succeeded, else 0.",
    );
    let mut last_dur = gauge(
        "cbob_last_run_duration_seconds",
        "Duration of the last finished run of the command.",
    );
    let mut last_bytes = gauge(
        "cbob_last_run_transferred_bytes",
        "Bytes copied by the last finished run of the command.",
    );
    let mut last_files = gauge(
        "cbob_last_run_transferred_files",
        "Files copied by the last finished run of the command.",
    );
    let mut last_errors = gauge(
        "cbob_last_run_errors",
        "Failed clusters, stanzas or replicas in the last finished run of the command.",
    );
    let mut last_success = gauge(
        "cbob_last_success_timestamp_seconds",
        "When a run of the command last succeeded (Unix time).",
    );
    let mut runs = counter("cbob_runs_total", "Finished runs of the command by result.");
    let mut bytes_total = counter(
        "cbob_transferred_bytes_total",
        "Bytes copied by every finished run of the command.",
    );
    let mut files_total = counter(
        "cbob_transferred_files_total",
        "Files copied by every finished run of the command.",
    );
    for c in &s.commands {
        let l = || vec![("command", c.command.clone())];
        if let Some(t) = c.last_finished_at {
            last_ts.samples.push((l(), t as f64));
        }
        if let Some(r) = &c.last_result {
            last_ok.samples.push((l(), bool_value(r == "success")));
        }
        if let Some(d) = c.last_duration_seconds() {
            last_dur.samples.push((l(), d as f64));
        }
        last_bytes.samples.push((l(), c.last_bytes as f64));
        last_files.samples.push((l(), c.last_files as f64));
        last_errors.samples.push((l(), c.last_errors as f64));
        if let Some(t) = c.last_success_at {
            last_success.samples.push((l(), t as f64));
        }
        for (result, n) in [("success", c.succeeded), ("failed", c.failed)] {
            runs.samples.push((
                vec![
                    ("command", c.command.clone()),
                    ("result", result.to_string()),
                ],
                n as f64,
            ));
        }
        bytes_total.samples.push((l(), c.bytes_total as f64));
        files_total.samples.push((l(), c.files_total as f64));
    }

    let mut sync_attempt = gauge(
        "cbob_sync_last_attempt_timestamp_seconds",
        "When the cluster was last synced, successfully or not (Unix time).",
    );
    let mut sync_success_ts = gauge(
        "cbob_sync_last_success_timestamp_seconds",
        "When the cluster was last synced successfully (Unix time).",
    );
    let mut sync_ok = gauge(
        "cbob_sync_last_success",
        "1 if the cluster's last sync succeeded, else 0.",
    );
    let mut sync_dur = gauge(
        "cbob_sync_last_duration_seconds",
        "Duration of the cluster's last sync.",
    );
    let mut sync_bytes = gauge(
        "cbob_sync_last_transferred_bytes",
        "Bytes copied by the cluster's last sync.",
    );
    let mut sync_files = gauge(
        "cbob_sync_last_transferred_files",
        "Files copied by the cluster's last sync.",
    );
    let mut repo_bytes = gauge(
        "cbob_repository_size_bytes",
        "Size of the cluster's stanza at the destination after its last successful sync.",
    );
    let mut repo_files = gauge(
        "cbob_repository_files",
        "Objects of the cluster's stanza at the destination after its last successful sync.",
    );
    let mut repo_backups = gauge(
        "cbob_repository_backups",
        "Backup sets of the cluster's stanza at the destination after its last successful sync.",
    );
    for c in &s.clusters {
        let l = || {
            vec![
                ("cluster", c.cluster.clone()),
                ("stanza", c.stanza.clone().unwrap_or_default()),
                ("destination", c.destination.clone()),
            ]
        };
        if let Some(t) = c.last_attempt_at {
            sync_attempt.samples.push((l(), t as f64));
        }
        if let Some(t) = c.last_success_at {
            sync_success_ts.samples.push((l(), t as f64));
        }
        if let Some(r) = &c.last_result {
            sync_ok.samples.push((l(), bool_value(r == "success")));
        }
        sync_dur
            .samples
            .push((l(), c.last_duration_ms as f64 / 1000.0));
        sync_bytes.samples.push((l(), c.last_bytes as f64));
        sync_files.samples.push((l(), c.last_files as f64));
        repo_bytes.samples.push((l(), c.repo_bytes as f64));
        repo_files.samples.push((l(), c.repo_files as f64));
        repo_backups.samples.push((l(), c.backups as f64));
    }

    let mut check_ts = gauge(
        "cbob_check_last_timestamp_seconds",
        "When the stanza was last checked by restore-check or verify (Unix time).",
    );
    let mut check_ok = gauge(
        "cbob_check_last_success",
        "1 if the stanza's last check of this kind passed, else 0.",
    );
    let mut check_dur = gauge(
        "cbob_check_last_duration_seconds",
        "Duration of the stanza's last check of this kind.",
    );
    let mut check_success_ts = gauge(
        "cbob_check_last_success_timestamp_seconds",
        "When a check of this kind last passed for the stanza (Unix time).",
    );
    for c in &s.checks {
        let l = || {
            vec![
                ("check", c.kind.clone()),
                ("stanza", c.stanza.clone()),
                ("destination", c.destination.clone()),
            ]
        };
        check_ts.samples.push((l(), c.last_at as f64));
        check_ok
            .samples
            .push((l(), bool_value(c.last_result == "success")));
        check_dur
            .samples
            .push((l(), c.last_duration_ms as f64 / 1000.0));
        if let Some(t) = c.last_success_at {
            check_success_ts.samples.push((l(), t as f64));
        }
    }

    let mut rep_attempt = gauge(
        "cbob_replica_last_attempt_timestamp_seconds",
        "When the replica was last replicated to, successfully or not (Unix time).",
    );
    let mut rep_success_ts = gauge(
        "cbob_replica_last_success_timestamp_seconds",
        "When the replica was last replicated to successfully (Unix time).",
    );
    let mut rep_ok = gauge(
        "cbob_replica_last_success",
        "1 if the replica's last replication succeeded, else 0.",
    );
    let mut rep_dur = gauge(
        "cbob_replica_last_duration_seconds",
        "Duration of the replica's last replication.",
    );
    let mut rep_bytes = gauge(
        "cbob_replica_last_transferred_bytes",
        "Bytes copied by the replica's last replication.",
    );
    let mut rep_files = gauge(
        "cbob_replica_last_transferred_files",
        "Files copied by the replica's last replication.",
    );
    let mut rep_size = gauge(
        "cbob_replica_size_bytes",
        "Size of the replica after its last successful replication.",
    );
    let mut rep_objects = gauge(
        "cbob_replica_objects",
        "Objects of the replica after its last successful replication.",
    );
    let mut rep_behind = gauge(
        "cbob_replica_objects_behind",
        "Objects the replica lacked or held at another size than the primary when last compared.",
    );
    for r in &s.replicas {
        let l = || {
            vec![
                ("replica", r.name.clone()),
                ("destination", r.destination.clone()),
            ]
        };
        if let Some(t) = r.last_attempt_at {
            rep_attempt.samples.push((l(), t as f64));
        }
        if let Some(t) = r.last_success_at {
            rep_success_ts.samples.push((l(), t as f64));
        }
        if let Some(res) = &r.last_result {
            rep_ok.samples.push((l(), bool_value(res == "success")));
        }
        rep_dur
            .samples
            .push((l(), r.last_duration_ms as f64 / 1000.0));
        rep_bytes.samples.push((l(), r.last_bytes as f64));
        rep_files.samples.push((l(), r.last_files as f64));
        rep_size.samples.push((l(), r.repo_bytes as f64));
        rep_objects.samples.push((l(), r.repo_files as f64));
        // Only a comparison knows the lag; no sample rather than a made-up 0.
        if let Some(n) = r.objects_behind {
            rep_behind.samples.push((l(), n as f64));
        }
    }

    let mut generated = gauge(
        "cbob_metrics_generated_timestamp_seconds",
        "When these metrics were read from the state database (Unix time).",
    );
    generated.samples.push((Vec::new(), s.generated_at as f64));

    write(
        w,
        vec![
            last_ts,
            last_ok,
            last_dur,
            last_bytes,
            last_files,
            last_errors,
            last_success,
            runs,
            bytes_total,
            files_total,
            sync_attempt,
            sync_success_ts,
            sync_ok,
            sync_dur,
            sync_bytes,
            sync_files,
            repo_bytes,
            repo_files,
            repo_backups,
            check_ts,
            check_ok,
            check_dur,
            check_success_ts,
            rep_attempt,
            rep_success_ts,
            rep_ok,
            rep_dur,
            rep_bytes,
            rep_files,
            rep_size,
            rep_objects,
            rep_behind,
            generated,
        ],
    );
}

/// The snapshot as a Prometheus text document.
pub fn prometheus(s: &Snapshot) -> String {
    let mut w = PromWriter::new();
    write_prometheus(&mut w, s);
    w.finish()
}

/// The snapshot as pretty JSON (the [`Snapshot`] structure; stable, see docs/metrics.md).
pub fn json(s: &Snapshot) -> String {
    let mut out = serde_json::to_string_pretty(s).expect("snapshots serialize");
    out.push('\n');
    out
}

fn when(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "never".into())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Tables for people; times in UTC.
pub fn text(s: &Snapshot) -> String {
    let mut out = String::new();
    if s.commands.is_empty() {
        out.push_str("no runs recorded yet\n");
    } else {
        out.push_str("COMMAND         LAST RUN (UTC)       RESULT   DURATION  LAST SUCCESS (UTC)   RUNS OK/FAILED\n");
        for c in &s.commands {
            out.push_str(&format!(
                "{:<15} {:<20} {:<8} {:>7}s  {:<20} {}/{}\n",
                c.command,
                when(c.last_finished_at),
                c.last_result.as_deref().unwrap_or("-"),
                c.last_duration_seconds().unwrap_or(0),
                when(c.last_success_at),
                c.succeeded,
                c.failed
            ));
        }
    }
    if !s.clusters.is_empty() {
        out.push_str("\nCLUSTER         STANZA          RESULT   LAST SUCCESS (UTC)   REPO SIZE   BACKUPS  DESTINATION\n");
        for c in &s.clusters {
            out.push_str(&format!(
                "{:<15} {:<15} {:<8} {:<20} {:>10}  {:>7}  {}\n",
                c.cluster,
                c.stanza.as_deref().unwrap_or("-"),
                c.last_result.as_deref().unwrap_or("-"),
                when(c.last_success_at),
                human_bytes(c.repo_bytes),
                c.backups,
                c.destination
            ));
        }
    }
    if !s.checks.is_empty() {
        out.push_str("\nCHECK           STANZA          RESULT   LAST CHECK (UTC)     LAST SUCCESS (UTC)   DESTINATION\n");
        for c in &s.checks {
            out.push_str(&format!(
                "{:<15} {:<15} {:<8} {:<20} {:<20} {}\n",
                c.kind,
                c.stanza,
                c.last_result,
                when(Some(c.last_at)),
                when(c.last_success_at),
                c.destination
            ));
        }
    }
    if !s.replicas.is_empty() {
        out.push_str("\nREPLICA         RESULT   LAST SUCCESS (UTC)   DURATION  COPIED            SIZE        OBJECTS  BEHIND  DESTINATION\n");
        for r in &s.replicas {
            out.push_str(&format!(
                "{:<15} {:<8} {:<20} {:>7.1}s  {:<16}  {:>10}  {:>7}  {:>6}  {}\n",
                r.name,
                r.last_result.as_deref().unwrap_or("-"),
                when(r.last_success_at),
                r.last_duration_ms as f64 / 1000.0,
                format!("{} / {}", r.last_files, human_bytes(r.last_bytes)),
                human_bytes(r.repo_bytes),
                r.repo_files,
                r.objects_behind
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.destination
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{DaemonStatus, JobStatus};
    use crate::metrics::{CheckStatus, CommandRuns};
    use crate::state::{ClusterStatus, ReplicaStatus};

    fn full_snapshot() -> Snapshot {
        Snapshot {
            generated_at: 1_795_500_000,
            commands: vec![CommandRuns {
                command: "sync".into(),
                last_started_at: Some(1_795_499_990),
                last_finished_at: Some(1_795_500_000),
                last_result: Some("success".into()),
                last_success_at: Some(1_795_500_000),
                succeeded: 3,
                failed: 1,
                ..CommandRuns::default()
            }],
            clusters: vec![ClusterStatus {
                cluster: "abc123".into(),
                destination: "local:/d".into(),
                stanza: Some("abc123".into()),
                last_attempt_at: Some(1),
                last_success_at: Some(1),
                last_result: Some("success".into()),
                last_error: None,
                last_files: 1,
                last_bytes: 2,
                last_duration_ms: 1500,
                repo_files: 3,
                repo_bytes: 4,
                backups: 5,
                latest_backup: None,
            }],
            checks: vec![CheckStatus {
                stanza: "abc123".into(),
                destination: "local:/d".into(),
                kind: "restore-check".into(),
                last_at: 1,
                last_result: "failed".into(),
                last_duration_ms: 10,
                last_success_at: Some(0),
            }],
            replicas: vec![ReplicaStatus {
                name: "eu \"west\"".into(),
                destination: "s3://r/p".into(),
                last_attempt_at: Some(1),
                last_success_at: Some(1),
                last_result: Some("success".into()),
                last_error: None,
                last_files: 1,
                last_bytes: 1,
                last_duration_ms: 1,
                stanzas: 1,
                repo_files: 1,
                repo_bytes: 1,
                objects_behind: Some(0),
                compared_at: Some(1),
            }],
        }
    }

    /// docs/metrics.md lists every family cbob can emit, and nothing it does not.
    #[test]
    fn every_metric_is_documented() {
        let mut w = PromWriter::new();
        write_prometheus(&mut w, &full_snapshot());
        let status = DaemonStatus::new(vec![JobStatus {
            name: "sync".into(),
            next_run_at: Some(1),
            last_finished_at: Some(1),
            last_duration_seconds: Some(1.0),
            ..JobStatus::default()
        }]);
        status.write_prometheus(&mut w);
        let text = w.finish();
        let doc = include_str!("../../../../docs/metrics.md");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(names.len(), 42, "{names:?}");
        for n in &names {
            assert!(
                doc.contains(&format!("| `{n}`")) || doc.contains(&format!("| `{n}{{")),
                "{n} is not documented in docs/metrics.md"
            );
        }
        for documented in doc.lines().filter_map(|l| l.strip_prefix("| `cbob_")) {
            let name = format!("cbob_{}", documented.split(['`', '{']).next().unwrap());
            assert!(
                names.contains(&name.as_str()),
                "{name} is documented but never emitted"
            );
        }
        assert!(text.contains("replica=\"eu \\\"west\\\"\""), "{text}");
    }

    #[test]
    fn replica_lag_is_emitted_only_when_known() {
        let mut s = full_snapshot();
        s.replicas[0].name = "eu".into();
        s.replicas[0].last_files = 12;
        s.replicas[0].repo_files = 1354;
        s.replicas[0].objects_behind = Some(3);
        let text = prometheus(&s);
        let l = "{replica=\"eu\",destination=\"s3://r/p\"}";
        for line in [
            format!("cbob_replica_last_transferred_files{l} 12"),
            format!("cbob_replica_objects{l} 1354"),
            format!("cbob_replica_objects_behind{l} 3"),
        ] {
            assert!(text.lines().any(|x| x == line), "no {line:?} in:\n{text}");
        }
        s.replicas[0].objects_behind = None;
        let text = prometheus(&s);
        assert!(!text.contains("cbob_replica_objects_behind"), "{text}");
        assert!(text.contains("cbob_replica_objects{"), "{text}");
    }
}
