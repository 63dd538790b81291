//! Progress events of a sync, for progress bars, periodic log lines and the summary.

/// Receives progress from the engine. Every method has a no-op default.
pub trait SyncObserver: Send + Sync {
    /// The plan of one stanza grew by this many files and bytes (called as the listing goes on;
    /// the sum of the calls is the plan).
    fn planned(&self, _stanza: &str, _files: u64, _bytes: u64) {}
    /// Bytes of some object arrived at the destination.
    fn bytes(&self, _stanza: &str, _n: u64) {}
    /// One object was copied and verified.
    fn file_done(&self, _stanza: &str, _key: &str, _bytes: u64) {}
    /// A phase of the publish order started ("payload", "manifests", "info", "validate").
    fn phase(&self, _stanza: &str, _phase: &str) {}
    /// Something the operator should know that does not fail the stanza.
    fn warning(&self, _stanza: &str, _message: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl SyncObserver for NoProgress {}
