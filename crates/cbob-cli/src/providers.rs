//! Which storage providers this binary has. Each provider crate is behind the cargo feature of
//! the same name; a provider compiled out is registered as disabled, so asking for it names the
//! feature to enable instead of failing with "unknown provider".

use cbob_core::storage::ProviderRegistry;

/// Provider kinds and the cargo feature that brings each in.
const FEATURES: &[(&str, &str, bool)] = &[
    ("s3", "s3", cfg!(feature = "s3")),
    ("minio", "minio", cfg!(feature = "minio")),
    ("azure", "azure", cfg!(feature = "azure")),
    ("gcs", "gcs", cfg!(feature = "gcs")),
];

/// The registry every command builds providers through: the local provider, every provider
/// crate compiled in, and the compiled-out ones as disabled.
pub fn registry() -> ProviderRegistry {
    let mut registry = ProviderRegistry::new();
    #[cfg(feature = "s3")]
    cbob_provider_s3::register(&mut registry);
    #[cfg(feature = "azure")]
    cbob_provider_azure::register(&mut registry);
    #[cfg(feature = "gcs")]
    cbob_provider_gcs::register(&mut registry);
    #[cfg(feature = "minio")]
    cbob_provider_minio::register(&mut registry);
    for (kind, feature, enabled) in FEATURES {
        if !enabled {
            registry.register_disabled(kind, feature);
        }
    }
    registry
}

/// The cargo feature this binary lacks for a provider kind, if any (for `config validate`).
pub fn missing_feature(kind: &str) -> Option<&'static str> {
    FEATURES
        .iter()
        .find(|(k, _, enabled)| *k == kind && !enabled)
        .map(|(_, feature, _)| *feature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_is_always_there() {
        assert!(registry().enabled_kinds().contains(&"local"));
        assert_eq!(missing_feature("local"), None);
        assert_eq!(
            missing_feature("s3"),
            if cfg!(feature = "s3") {
                None
            } else {
                Some("s3")
            }
        );
    }
}
