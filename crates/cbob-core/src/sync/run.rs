//! A whole `cbob sync` run: choose the clusters (Crunchy Bridge) or stanzas (`--source URL`),
//! build each source provider, sync `--parallel` of them at once, least recently synced first,
//! and record every result. One cluster's failure never stops the others.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::StreamExt;

use super::engine::{StanzaJob, StanzaReport, SyncOptions, sync_stanza};
use super::inventory::discover_stanzas;
use super::observer::SyncObserver;
use crate::bridge::{BridgeClient, ClusterSelection};
use crate::layers::Layers;
use crate::state::{ClusterSyncRecord, Outcome, StateDb};
use crate::storage::{DynProvider, ProviderRegistry, ProviderSpec};

/// Where the repositories come from.
pub enum SourceSelection {
    /// Crunchy Bridge: clusters chosen by flags, config or discovery; one backup token each.
    Bridge {
        client: BridgeClient,
        selection: ClusterSelection,
        /// `CBOB_SOURCE_ENDPOINT`.
        source_endpoint: Option<String>,
    },
    /// Any pgBackRest repository (`--source URL`): every stanza found in it.
    Repository { spec: Box<ProviderSpec> },
}

/// Everything a run needs.
pub struct RunRequest {
    pub source: SourceSelection,
    /// The destination, already wrapped in its layers.
    pub dest: DynProvider,
    /// A stable description of the destination (state, locks, reports).
    pub dest_description: String,
    /// Clusters synced at once.
    pub parallel: usize,
    pub options: SyncOptions,
    /// Layers for each source provider (retry, concurrency).
    pub source_layers: Layers,
    pub registry: Arc<ProviderRegistry>,
    /// Where results are recorded; `None` in a dry run.
    pub state: Option<Arc<Mutex<StateDb>>>,
}

/// One cluster's (or stanza's) result.
#[derive(Debug)]
pub struct UnitResult {
    /// Cluster id, or the stanza for repository sources.
    pub name: String,
    pub stanza: Option<String>,
    /// The stanza's report, or why it never got that far (token, provider, ...).
    pub outcome: Result<StanzaReport, String>,
}

impl UnitResult {
    pub fn ok(&self) -> bool {
        matches!(&self.outcome, Ok(r) if r.ok())
    }

    /// The failure text, if any.
    pub fn error(&self) -> Option<String> {
        match &self.outcome {
            Ok(r) => r.error.as_ref().map(|e| e.to_string()),
            Err(e) => Some(e.clone()),
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct RunReport {
    pub units: Vec<UnitResult>,
    /// A failure before any cluster could be worked on (discovery, listing the source).
    pub fatal: Option<String>,
    pub duration: Duration,
    /// Replicas and ignored clusters that discovery skipped.
    pub skipped_replicas: Vec<String>,
    pub skipped_ignored: Vec<String>,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.fatal.is_none() && self.units.iter().all(UnitResult::ok)
    }

    pub fn failed(&self) -> usize {
        self.units.iter().filter(|u| !u.ok()).count()
    }

    /// Files and bytes copied across every unit.
    pub fn copied(&self) -> (u64, u64) {
        self.units
            .iter()
            .filter_map(|u| u.outcome.as_ref().ok())
            .fold((0, 0), |(f, b), r| (f + r.copied_files, b + r.copied_bytes))
    }
}

enum Unit {
    Cluster(String),
    Stanza { stanza: String, source: DynProvider },
}

impl Unit {
    /// The name its result goes under.
    fn name(&self) -> String {
        match self {
            Unit::Cluster(id) => id.clone(),
            Unit::Stanza { stanza, .. } => stanza.clone(),
        }
    }
}

/// Runs the sync. Never panics on remote failures; everything ends up in the report.
pub async fn run_sync(req: RunRequest, observer: Arc<dyn SyncObserver>) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport {
        units: Vec::new(),
        fatal: None,
        duration: Duration::ZERO,
        skipped_replicas: Vec::new(),
        skipped_ignored: Vec::new(),
    };
    let units = match select_units(&req, &mut report).await {
        Ok(u) => u,
        Err(e) => {
            report.fatal = Some(e);
            report.duration = started.elapsed();
            return report;
        }
    };
    let parallel = req.parallel.max(1);
    let req = Arc::new(req);
    report.units = futures::stream::iter(units)
        .map(|unit| {
            let (req, observer) = (req.clone(), observer.clone());
            let name = unit.name();
            // Each unit on the runtime's workers: run inline here, its planning and scheduling
            // would run on the thread blocked in `block_on`, a third thread that every wake-up
            // of the unit had to rouse (12 % of a copy's futex calls).
            let task = tokio::spawn(async move {
                let result = run_unit(&req, unit, observer).await;
                record(&req, &result);
                result
            });
            async move {
                task.await.unwrap_or_else(|e| UnitResult {
                    name,
                    stanza: None,
                    outcome: Err(format!(
                        "internal error: the sync task ended abnormally: {e}"
                    )),
                })
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    report.units.sort_by(|a, b| a.name.cmp(&b.name));
    report.duration = started.elapsed();
    report
}

async fn select_units(req: &RunRequest, report: &mut RunReport) -> Result<Vec<Unit>, String> {
    match &req.source {
        SourceSelection::Bridge {
            client, selection, ..
        } => {
            let selected = selection.resolve(client).await.map_err(|e| e.to_string())?;
            if let Some(d) = &selected.discovery {
                report.skipped_replicas = d.replicas.clone();
                report.skipped_ignored = d.ignored.clone();
                for bad in &d.invalid {
                    report.units.push(UnitResult {
                        name: bad.clone(),
                        stanza: None,
                        outcome: Err(format!(
                            "the API listed cluster id {bad:?}, which is not a valid Crunchy Bridge id; skipped"
                        )),
                    });
                }
            }
            let mut ids = selected.ids;
            if let Some(state) = &req.state {
                let db = state.lock().expect("state lock");
                if let Err(e) = db.order_by_staleness(&mut ids, &req.dest_description) {
                    tracing::warn!(error = %e, "could not order clusters by last sync");
                }
            }
            Ok(ids.into_iter().map(Unit::Cluster).collect())
        }
        SourceSelection::Repository { spec } => {
            let provider = req
                .registry
                .build(spec)
                .await
                .map_err(|e| format!("source {}: {e}", spec.describe()))?;
            let provider = req.source_layers.apply(provider);
            let stanzas = discover_stanzas(&provider)
                .await
                .map_err(|e| e.to_string())?;
            if stanzas.is_empty() {
                return Err(format!(
                    "no pgBackRest stanza found in {} (expected backup/<stanza>/backup.info)",
                    provider.describe()
                ));
            }
            let mut names = stanzas;
            if let Some(state) = &req.state {
                let db = state.lock().expect("state lock");
                let _ = db.order_by_staleness(&mut names, &req.dest_description);
            }
            Ok(names
                .into_iter()
                .map(|stanza| Unit::Stanza {
                    stanza,
                    source: provider.clone(),
                })
                .collect())
        }
    }
}

async fn run_unit(req: &RunRequest, unit: Unit, observer: Arc<dyn SyncObserver>) -> UnitResult {
    match unit {
        Unit::Stanza { stanza, source } => {
            let job = StanzaJob {
                name: stanza.clone(),
                stanza: stanza.clone(),
                source,
                dest: req.dest.clone(),
            };
            let r = sync_stanza(&job, &req.options, observer).await;
            UnitResult {
                name: stanza.clone(),
                stanza: Some(stanza),
                outcome: Ok(r),
            }
        }
        Unit::Cluster(id) => {
            let SourceSelection::Bridge {
                client,
                source_endpoint,
                ..
            } = &req.source
            else {
                unreachable!("clusters come only from Crunchy Bridge sources")
            };
            let token = match client.backup_token(&id).await {
                Ok(t) => t,
                Err(e) => {
                    return UnitResult {
                        name: id,
                        stanza: None,
                        outcome: Err(e.to_string()),
                    };
                }
            };
            let spec = token.provider_spec(client, source_endpoint.clone());
            let source = match req.registry.build(&spec).await {
                Ok(p) => req.source_layers.apply(p),
                Err(e) => {
                    return UnitResult {
                        name: id,
                        stanza: Some(token.stanza.clone()),
                        outcome: Err(format!("source {}: {e}", spec.describe())),
                    };
                }
            };
            let job = StanzaJob {
                name: id.clone(),
                stanza: token.stanza.clone(),
                source,
                dest: req.dest.clone(),
            };
            let r = sync_stanza(&job, &req.options, observer).await;
            UnitResult {
                name: id,
                stanza: Some(token.stanza),
                outcome: Ok(r),
            }
        }
    }
}

fn record(req: &RunRequest, result: &UnitResult) {
    let Some(state) = &req.state else { return };
    let error = result.error();
    let (files, bytes, duration, repo_files, repo_bytes, backups, latest) = match &result.outcome {
        Ok(r) => (
            r.copied_files,
            r.copied_bytes,
            r.duration,
            r.unchanged_files + r.copied_files,
            r.unchanged_bytes + r.copied_bytes,
            r.backups.len() as u64,
            r.backups.last().cloned(),
        ),
        Err(_) => (0, 0, Duration::ZERO, 0, 0, 0, None),
    };
    let rec = ClusterSyncRecord {
        cluster: &result.name,
        destination: &req.dest_description,
        stanza: result.stanza.as_deref(),
        outcome: if result.ok() {
            Outcome::Success
        } else {
            Outcome::Failed
        },
        error: error.as_deref(),
        files,
        bytes,
        duration,
        repo_files,
        repo_bytes,
        backups,
        latest_backup: latest.as_deref(),
    };
    let db = state.lock().expect("state lock");
    if let Err(e) = db.record_cluster_sync(&rec) {
        tracing::error!(cluster = %result.name, error = %e, "could not record the sync result");
    }
}
