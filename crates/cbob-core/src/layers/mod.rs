//! Cross-cutting behaviour written once and wrapped around any [`StorageProvider`]:
//! retry with backoff and jitter, a concurrency cap, and a shared bandwidth cap.
//!
//! [`StorageProvider`]: crate::storage::StorageProvider

mod bandwidth;
mod concurrency;
mod retry;

use std::sync::Arc;

pub use bandwidth::{BandwidthLimiter, BandwidthProvider, Direction};
pub use concurrency::ConcurrencyLimitProvider;
pub use retry::{RetryPolicy, RetryProvider, retry};

use crate::storage::DynProvider;

/// The layers a run applies to a provider.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub retry: Option<RetryPolicy>,
    pub concurrency: Option<usize>,
    pub bandwidth: Option<(Arc<BandwidthLimiter>, Direction)>,
}

impl Layers {
    /// Wraps `provider`: retry innermost (each attempt is one request), then the concurrency
    /// cap (a permit covers an operation with its retries), then bandwidth outermost.
    pub fn apply(&self, provider: DynProvider) -> DynProvider {
        let mut p = provider;
        if let Some(policy) = self.retry {
            p = Arc::new(RetryProvider::new(p, policy));
        }
        if let Some(limit) = self.concurrency {
            p = Arc::new(ConcurrencyLimitProvider::new(p, limit));
        }
        if let Some((limiter, direction)) = &self.bandwidth {
            p = Arc::new(BandwidthProvider::new(p, limiter.clone(), *direction));
        }
        p
    }
}
