//! The finished event of a `cbob replicate sync` run: one item per replica, failures naming each
//! failed replica and its errors.

use std::time::Duration;

use super::{Event, Item};
use crate::replicate::ReplicaResult;

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

/// What one replica's line says: what was copied, or every error.
pub fn replica_detail(r: &ReplicaResult) -> String {
    if !r.ok() {
        return r.errors().join("; ");
    }
    let (files, bytes) = r.copied();
    let mut d = format!(
        "{files} files ({}) copied, {} stanzas",
        human_bytes(bytes),
        r.stanzas.len()
    );
    if r.server_side && r.copies.streamed == 0 && files > 0 {
        d.push_str(", server-side");
    } else if r.copies.streamed > 0 {
        d.push_str(&format!(
            ", {} streamed after the service refused server-side copy",
            r.copies.streamed
        ));
    }
    d
}

/// The event for a finished replication from `primary`. `ok` is the run's verdict (the exit
/// code's).
pub fn replicate_finished(
    results: &[ReplicaResult],
    ok: bool,
    primary: &str,
    duration: Duration,
) -> Event {
    let items: Vec<Item> = results
        .iter()
        .map(|r| Item {
            name: r.name.clone(),
            stanza: None,
            ok: r.ok(),
            detail: replica_detail(r),
        })
        .collect();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.name.as_str())
        .collect();
    let (files, bytes) = results.iter().fold((0, 0), |(f, b), r| {
        let (rf, rb) = r.copied();
        (f + rf, b + rb)
    });
    let mut summary = format!(
        "{} of {} replicas ok, {files} files ({}) copied",
        results.len() - failed.len(),
        results.len(),
        human_bytes(bytes)
    );
    if !failed.is_empty() {
        summary.push_str(&format!("; FAILED: {}", failed.join(", ")));
    }
    Event::finished("replicate", primary, ok, summary, items, duration)
}
