//! The provider registry: provider crates register a factory per type name / URL scheme, and the
//! CLI builds providers from [`ProviderSpec`]s through it. A provider compiled out of the binary is
//! registered as "disabled" so asking for it names the cargo feature that brings it back.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::DynProvider;
use super::error::{StorageError, StorageErrorKind, StorageResult};
use super::local::LocalFactory;
use super::spec::ProviderSpec;

/// Builds providers of one or more kinds.
#[async_trait]
pub trait ProviderFactory: Send + Sync {
    /// The type names (and URL schemes) this factory answers to, e.g. `["s3"]`.
    fn kinds(&self) -> &'static [&'static str];

    /// Builds a provider; fails with `Config` when the spec lacks something it needs.
    async fn build(&self, spec: &ProviderSpec) -> StorageResult<DynProvider>;
}

enum Entry {
    Enabled(Arc<dyn ProviderFactory>),
    /// Compiled out: the cargo feature that enables it.
    Disabled(&'static str),
}

/// Maps provider kinds to factories.
pub struct ProviderRegistry {
    entries: BTreeMap<String, Entry>,
}

impl Default for ProviderRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ProviderRegistry {
    /// A registry with the local filesystem provider, which is always built in.
    pub fn new() -> Self {
        let mut r = Self {
            entries: BTreeMap::new(),
        };
        r.register(Arc::new(LocalFactory));
        r
    }

    pub fn register(&mut self, factory: Arc<dyn ProviderFactory>) {
        for kind in factory.kinds() {
            self.entries
                .insert((*kind).to_string(), Entry::Enabled(factory.clone()));
        }
    }

    /// Records that `kind` exists but this binary was built without `feature`.
    pub fn register_disabled(&mut self, kind: &str, feature: &'static str) {
        self.entries
            .entry(kind.to_string())
            .or_insert(Entry::Disabled(feature));
    }

    /// The kinds this binary can build.
    pub fn enabled_kinds(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Enabled(_)))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Builds the provider a spec describes.
    pub async fn build(&self, spec: &ProviderSpec) -> StorageResult<DynProvider> {
        match self.entries.get(&spec.kind) {
            Some(Entry::Enabled(f)) => f.build(spec).await,
            Some(Entry::Disabled(feature)) => Err(StorageError::new(
                StorageErrorKind::Config,
                format!(
                    "storage provider '{}' is not compiled into this cbob binary; rebuild with \
                     `cargo build -p cbob-cli --features {feature}` (or use a full build)",
                    spec.kind
                ),
            )),
            None => Err(StorageError::new(
                StorageErrorKind::Config,
                format!(
                    "unknown storage provider type '{}'; this binary supports: {}",
                    spec.kind,
                    self.enabled_kinds().join(", ")
                ),
            )),
        }
    }
}
