//! Replication: the primary destination copied to every replica with the sync engine itself, so
//! each replica gets the same inventory, publish order and streaming verification as `cbob sync`.
//! Replicas run in parallel; one failing never stops the others. A replica of the same service
//! and account as the primary gets its objects copied by the service (`copy_from`), with a
//! fallback to streaming, verified like any other transfer, when the service refuses (see
//! `copy.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use tokio::sync::Semaphore;

use super::compare::{Comparison, compare};
use super::config::{ReplicaConfig, ReplicationSettings};
use super::copy::{CopyFallback, CopyStats};
use crate::layers::{BandwidthLimiter, Layers, RetryPolicy};
use crate::state::{Outcome, ReplicaRecord, StateDb};
use crate::storage::{DynProvider, ProviderRegistry, PutOptions};
use crate::sync::{PruneReport, prune_stanza};
use crate::sync::{
    StanzaJob, StanzaReport, SyncObserver, SyncOptions, discover_stanzas, sync_stanza,
};

/// What a replication run needs.
pub struct ReplicateRequest {
    pub primary: DynProvider,
    pub replicas: Vec<ReplicaConfig>,
    pub settings: ReplicationSettings,
    pub registry: Arc<ProviderRegistry>,
    /// Replicas worked on at once (`--parallel`).
    pub parallel: usize,
    pub dry_run: bool,
    /// Validate each replica and compare it with the primary after copying (`--verify` or
    /// `settings.verify_after_sync`).
    pub verify: bool,
    /// After a replica's copy succeeded, remove from it the backups and WAL the primary has
    /// expired, in pgBackRest's expire order (`--prune`); a dry run only reports them.
    pub prune: bool,
    pub state: Option<Arc<Mutex<StateDb>>>,
}

/// One replica's result.
#[derive(Debug)]
pub struct ReplicaResult {
    pub name: String,
    pub destination: String,
    pub stanzas: Vec<StanzaReport>,
    /// Why the replica failed before or besides its stanzas (provider, listing, comparison).
    pub error: Option<String>,
    pub comparison: Option<Comparison>,
    pub duration: Duration,
    /// Whether the primary and this replica are the same service and account, so objects were
    /// copied by the service (`settings.server_side_copy` on).
    pub server_side: bool,
    /// How the copies went (server-side, or streamed after the service refused).
    pub copies: CopyStats,
    /// What `--prune` removed (or would remove, in a dry run), per stanza.
    pub pruned: Vec<(String, PruneReport)>,
}

impl ReplicaResult {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.stanzas.iter().all(StanzaReport::ok)
    }

    /// Objects the replica still needed after the run, when it was compared with the primary.
    pub fn objects_behind(&self) -> Option<u64> {
        self.comparison.as_ref().map(Comparison::behind)
    }

    /// Objects already at the replica before the run (left alone).
    pub fn unchanged(&self) -> (u64, u64) {
        self.stanzas.iter().fold((0, 0), |(f, b), r| {
            (f + r.unchanged_files, b + r.unchanged_bytes)
        })
    }

    /// Files and bytes the plans said would move (what a dry run reports).
    pub fn planned(&self) -> (u64, u64) {
        self.stanzas.iter().fold((0, 0), |(f, b), r| {
            (f + r.planned_files, b + r.planned_bytes)
        })
    }

    pub fn copied(&self) -> (u64, u64) {
        self.stanzas
            .iter()
            .fold((0, 0), |(f, b), r| (f + r.copied_files, b + r.copied_bytes))
    }

    /// Every failure, one per line.
    pub fn errors(&self) -> Vec<String> {
        let mut v: Vec<String> = self.error.iter().cloned().collect();
        for s in &self.stanzas {
            if let Some(e) = &s.error {
                v.push(format!("stanza {}: {e}", s.stanza));
            }
        }
        v
    }
}

/// Runs replication to every replica in `req` and records the results.
pub async fn replicate(
    req: ReplicateRequest,
    observer: Arc<dyn SyncObserver>,
) -> Vec<ReplicaResult> {
    let stanzas = discover_stanzas(&req.primary)
        .await
        .map_err(|e| e.to_string());
    let bandwidth = req
        .settings
        .bandwidth_limit
        .map(|r| BandwidthLimiter::new(r.bytes_per_second()));
    let retry = RetryPolicy::new(req.settings.retry_attempts, req.settings.retry_delay);
    let req = &req;
    let stanzas = &stanzas;
    let bandwidth = &bandwidth;
    let observer = &observer;
    let mut results: Vec<ReplicaResult> = futures::stream::iter(req.replicas.iter())
        .map(|replica| async move {
            let started = Instant::now();
            let mut result = one_replica(
                req,
                replica,
                stanzas,
                bandwidth.clone(),
                retry,
                observer.clone(),
            )
            .await;
            result.duration = started.elapsed();
            record(req, &result);
            result
        })
        .buffer_unordered(req.parallel.max(1))
        .collect()
        .await;
    results.sort_by(|a, b| a.name.cmp(&b.name));
    results
}

async fn one_replica(
    req: &ReplicateRequest,
    replica: &ReplicaConfig,
    stanzas: &Result<Vec<String>, String>,
    bandwidth: Option<Arc<BandwidthLimiter>>,
    retry: RetryPolicy,
    observer: Arc<dyn SyncObserver>,
) -> ReplicaResult {
    let mut result = ReplicaResult {
        name: replica.name.clone(),
        destination: String::new(),
        stanzas: Vec::new(),
        error: None,
        comparison: None,
        duration: Duration::ZERO,
        server_side: false,
        copies: CopyStats::default(),
        pruned: Vec::new(),
    };
    let spec = match replica.store.provider_spec() {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    result.destination = spec.describe();
    let dest: DynProvider = match req.registry.build(&spec).await {
        Ok(p) => Layers {
            retry: Some(retry),
            ..Layers::default()
        }
        .apply(p),
        Err(e) => {
            result.error = Some(format!("{}: {e}", spec.describe()));
            return result;
        }
    };
    let stanzas = match stanzas {
        Ok(s) if s.is_empty() => {
            result.error = Some(format!(
                "the primary {} holds no stanza",
                req.primary.describe()
            ));
            return result;
        }
        Ok(s) => s,
        Err(e) => {
            result.error = Some(format!("listing the primary: {e}"));
            return result;
        }
    };
    result.server_side = req.settings.server_side_copy
        && req
            .primary
            .copy_source()
            .is_some_and(|s| dest.can_copy_from(&s));
    let copier = CopyFallback::new(dest.clone());
    let dest: DynProvider = copier.clone();
    let options = SyncOptions {
        transfers: Arc::new(Semaphore::new(req.settings.parallel_transfers.max(1))),
        retry,
        bandwidth,
        dry_run: req.dry_run,
        validate: req.verify,
        put_options: PutOptions {
            storage_class: replica.store.storage_class.clone(),
        },
        server_side_copy: req.settings.server_side_copy,
    };
    for stanza in stanzas {
        let job = StanzaJob {
            name: format!("{}/{stanza}", replica.name),
            stanza: stanza.clone(),
            source: req.primary.clone(),
            dest: dest.clone(),
        };
        result
            .stanzas
            .push(sync_stanza(&job, &options, observer.clone()).await);
    }
    result.copies = copier.stats();
    if req.prune && result.ok() {
        // Only after every stanza copied: the replica's backup.info is then the primary's, and
        // what it no longer lists is what the primary expired.
        let name = replica.name.clone();
        let audit = move |action: &str, detail: &str| {
            tracing::info!(replica = %name, action, detail, "prune");
        };
        for stanza in stanzas {
            match prune_stanza(&dest, stanza, req.dry_run, &audit).await {
                Ok(r) => result.pruned.push((stanza.clone(), r)),
                Err(e) => {
                    result.error = Some(format!("pruning stanza {stanza}: {e}"));
                    break;
                }
            }
        }
    }
    if req.verify && !req.dry_run && result.ok() {
        match compare(&req.primary, &dest, stanzas).await {
            Ok(c) => {
                if c.behind() > 0 {
                    result.error = Some(format!(
                        "after copying, {} objects are still missing or different at the replica (e.g. {})",
                        c.behind(),
                        c.missing
                            .iter()
                            .chain(&c.different)
                            .next()
                            .cloned()
                            .unwrap_or_default()
                    ));
                }
                result.comparison = Some(c);
            }
            Err(e) => result.error = Some(format!("comparing with the primary: {e}")),
        }
    }
    result
}

fn record(req: &ReplicateRequest, r: &ReplicaResult) {
    let Some(state) = &req.state else { return };
    if req.dry_run {
        return;
    }
    let (files, bytes) = r.copied();
    let errors = r.errors().join("; ");
    // The comparison listed the replica after the run; without one, the plans' figures (which
    // count an info file written twice in a run twice) are the best estimate.
    let (repo_files, repo_bytes) = match &r.comparison {
        Some(c) => (c.replica_objects, c.replica_bytes),
        None => r.stanzas.iter().fold((0, 0), |(f, b), s| {
            (
                f + s.unchanged_files + s.copied_files,
                b + s.unchanged_bytes + s.copied_bytes,
            )
        }),
    };
    let rec = ReplicaRecord {
        name: &r.name,
        destination: &r.destination,
        outcome: if r.ok() {
            Outcome::Success
        } else {
            Outcome::Failed
        },
        error: (!errors.is_empty()).then_some(errors.as_str()),
        files,
        bytes,
        duration: r.duration,
        stanzas: r.stanzas.len() as u64,
        repo_files,
        repo_bytes,
        objects_behind: r.objects_behind(),
    };
    if let Err(e) = state.lock().expect("state lock").record_replica(&rec) {
        tracing::error!(replica = %r.name, error = %e, "could not record the replication result");
    }
}
