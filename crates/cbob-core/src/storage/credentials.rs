//! Credentials that can expire and be fetched again (Crunchy Bridge backup tokens, STS sessions).
//!
//! A provider holds a [`CredentialCache`]; it asks it for the current credentials before each
//! request and, when the service says they expired, invalidates that generation and asks again.
//! Concurrent requests that fail together trigger one refresh, not one each.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::error::StorageResult;
use crate::secret::Secret;

/// Temporary or static S3 credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
    /// When known, refresh shortly before this instant instead of waiting for a rejection.
    pub expires_at: Option<SystemTime>,
}

/// Azure credentials: a shared key or a SAS token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AzureCredentials {
    SharedKey { account: String, key: Secret },
    Sas { account: String, token: Secret },
}

/// Credentials that may carry an expiry.
pub trait Expiring {
    fn expires_at(&self) -> Option<SystemTime>;
}

impl Expiring for S3Credentials {
    fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

impl Expiring for AzureCredentials {
    fn expires_at(&self) -> Option<SystemTime> {
        None
    }
}

/// Fetches fresh credentials (e.g. a new Crunchy Bridge backup token).
#[async_trait]
pub trait CredentialSource<T>: Send + Sync + fmt::Debug {
    async fn fetch(&self) -> StorageResult<T>;
}

/// A source that always returns the same credentials.
#[derive(Debug, Clone)]
pub struct StaticCredentials<T>(pub T);

#[async_trait]
impl<T: Clone + Send + Sync + fmt::Debug> CredentialSource<T> for StaticCredentials<T> {
    async fn fetch(&self) -> StorageResult<T> {
        Ok(self.0.clone())
    }
}

/// Credentials handed out with the generation they belong to, so a failure can invalidate
/// exactly the generation that failed.
#[derive(Debug)]
pub struct Lease<T> {
    pub generation: u64,
    pub credentials: Arc<T>,
}

impl<T> Clone for Lease<T> {
    fn clone(&self) -> Self {
        Self {
            generation: self.generation,
            credentials: self.credentials.clone(),
        }
    }
}

/// Caches credentials from a source and refreshes them on expiry or invalidation.
pub struct CredentialCache<T> {
    source: Arc<dyn CredentialSource<T>>,
    current: Mutex<Option<Lease<T>>>,
    generation: Mutex<u64>,
    refresh: tokio::sync::Mutex<()>,
    /// Refresh when less than this much validity is left.
    min_ttl: Duration,
}

impl<T> fmt::Debug for CredentialCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl<T: Expiring + Send + Sync + 'static> CredentialCache<T> {
    pub fn new(source: Arc<dyn CredentialSource<T>>) -> Self {
        Self {
            source,
            current: Mutex::new(None),
            generation: Mutex::new(0),
            refresh: tokio::sync::Mutex::new(()),
            min_ttl: Duration::from_secs(300),
        }
    }

    /// Sets how much validity must be left before credentials are refreshed ahead of expiry.
    pub fn with_min_ttl(mut self, min_ttl: Duration) -> Self {
        self.min_ttl = min_ttl;
        self
    }

    fn usable(&self) -> Option<Lease<T>> {
        let cur = self.current.lock().expect("credential cache poisoned");
        let lease = cur.as_ref()?;
        match lease.credentials.expires_at() {
            Some(exp) if exp <= SystemTime::now() + self.min_ttl => None,
            _ => Some(lease.clone()),
        }
    }

    /// The current credentials, fetching them first if there are none or they are about to expire.
    pub async fn get(&self) -> StorageResult<Lease<T>> {
        if let Some(lease) = self.usable() {
            return Ok(lease);
        }
        let _one_refresh = self.refresh.lock().await;
        if let Some(lease) = self.usable() {
            return Ok(lease); // another task refreshed while we waited
        }
        let fresh = Arc::new(self.source.fetch().await?);
        let generation = {
            let mut g = self.generation.lock().expect("credential cache poisoned");
            *g += 1;
            *g
        };
        if generation > 1 {
            tracing::info!(generation, "credentials refreshed");
        }
        let lease = Lease {
            generation,
            credentials: fresh,
        };
        *self.current.lock().expect("credential cache poisoned") = Some(lease.clone());
        Ok(lease)
    }

    /// Marks `generation` as rejected by the service; the next `get` fetches new credentials.
    /// A stale generation (already replaced) is ignored.
    pub fn invalidate(&self, generation: u64) {
        let mut cur = self.current.lock().expect("credential cache poisoned");
        if cur.as_ref().is_some_and(|l| l.generation == generation) {
            *cur = None;
        }
    }

    /// How many times credentials were fetched (1 = never refreshed).
    pub fn fetches(&self) -> u64 {
        *self.generation.lock().expect("credential cache poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, Default)]
    struct Counting(AtomicU32);

    #[async_trait]
    impl CredentialSource<S3Credentials> for Counting {
        async fn fetch(&self) -> StorageResult<S3Credentials> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(S3Credentials {
                access_key: Secret::new(format!("AK{n}")),
                secret_key: Secret::new("s"),
                session_token: None,
                expires_at: None,
            })
        }
    }

    #[tokio::test]
    async fn refreshes_once_per_invalidated_generation() {
        let source = Arc::new(Counting::default());
        let cache = Arc::new(CredentialCache::new(source.clone()));
        let a = cache.get().await.unwrap();
        assert_eq!(a.credentials.access_key.expose(), "AK0");
        assert_eq!(
            cache.get().await.unwrap().generation,
            a.generation,
            "cached"
        );
        // Two requests fail with the same generation: one refresh.
        cache.invalidate(a.generation);
        cache.invalidate(a.generation);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.get().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().credentials.access_key.expose(), "AK1");
        }
        // A late failure report for the old generation does not throw away the new one.
        cache.invalidate(a.generation);
        assert_eq!(
            cache.get().await.unwrap().credentials.access_key.expose(),
            "AK1"
        );
        assert_eq!(cache.fetches(), 2);
    }

    #[derive(Debug)]
    struct Expires;

    #[async_trait]
    impl CredentialSource<S3Credentials> for Expires {
        async fn fetch(&self) -> StorageResult<S3Credentials> {
            Ok(S3Credentials {
                access_key: Secret::new("k"),
                secret_key: Secret::new("s"),
                session_token: Some(Secret::new("t")),
                expires_at: Some(SystemTime::now() + Duration::from_secs(60)),
            })
        }
    }

    #[tokio::test]
    async fn refreshes_ahead_of_a_known_expiry() {
        let cache = CredentialCache::new(Arc::new(Expires)).with_min_ttl(Duration::from_secs(120));
        cache.get().await.unwrap();
        cache.get().await.unwrap();
        assert_eq!(
            cache.fetches(),
            2,
            "60 s of validity is less than the 120 s minimum"
        );
        let cache = CredentialCache::new(Arc::new(Expires)).with_min_ttl(Duration::from_secs(10));
        cache.get().await.unwrap();
        cache.get().await.unwrap();
        assert_eq!(cache.fetches(), 1);
    }
}
