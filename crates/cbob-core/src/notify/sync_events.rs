//! The finished event of a `cbob sync` run, from its report: one item per cluster or stanza.

use super::{Event, Item};
use crate::sync::RunReport;

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

/// The event for a finished sync. `ok` is the run's verdict (the exit code's), which may also
/// count prune failures the report does not hold.
pub fn sync_finished(report: &RunReport, ok: bool, destination: &str) -> Event {
    let items: Vec<Item> = report
        .units
        .iter()
        .map(|u| Item {
            name: u.name.clone(),
            stanza: u.stanza.clone(),
            ok: u.ok(),
            detail: match (&u.outcome, u.error()) {
                (_, Some(e)) => e,
                (Ok(r), None) => format!(
                    "{} files ({}) copied, {} backups{}",
                    r.copied_files,
                    human_bytes(r.copied_bytes),
                    r.backups.len(),
                    r.backups
                        .last()
                        .map(|b| format!(", latest {b}"))
                        .unwrap_or_default()
                ),
                (Err(e), None) => e.clone(),
            },
        })
        .collect();
    let (files, bytes) = report.copied();
    let mut summary = format!(
        "{} of {} clusters ok, {files} files ({}) copied",
        report.units.len() - report.failed(),
        report.units.len(),
        human_bytes(bytes)
    );
    if let Some(fatal) = &report.fatal {
        summary = format!("sync failed before any cluster: {fatal}; {summary}");
    } else if !ok && report.ok() {
        summary.push_str("; pruning failed");
    }
    Event::finished("sync", destination, ok, summary, items, report.duration)
}
