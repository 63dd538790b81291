//! The sync engine: mirrors pgBackRest stanzas from a source provider to a destination provider,
//! keeping every rule of SPEC §5 (one inventory, only what changed, publish order, verification
//! in transit, no deletes).

mod engine;
mod error;
mod inventory;
mod listing;
mod observer;
mod plan;
mod prune;
mod queue;
mod run;
mod transfer;
mod validate;

pub use engine::{StanzaJob, StanzaReport, SyncOptions, sync_stanza, validate_stanza_name};
pub use error::SyncError;
pub use inventory::{Inventory, discover_stanzas, list_stanza, read_verified_info};
pub use observer::{NoProgress, SyncObserver};
pub use plan::{Check, Copy, Reason, StanzaPlan};
pub use prune::{PruneReport, prune_stanza};
pub use run::{RunReport, RunRequest, SourceSelection, UnitResult, run_sync};
pub use validate::{ValidationSummary, validate_destination};
