//! The provider conformance suite (feature `testkit`).
//!
//! Every provider crate runs the same behaviour tests against its own real server:
//!
//! ```ignore
//! cbob_core::conformance_tests!(async { my_fresh_empty_provider().await });
//! ```
//!
//! The expression must produce a fresh, empty `DynProvider` each time (a new bucket or prefix),
//! so the generated tests can run in parallel. Each behaviour is also a plain `pub async fn` here.
//! The GCS and MinIO crates also run [`fixture_syncs_and_restores`]: the engine's sync of the
//! committed pgBackRest fixture, proven by a byte comparison and a restore.

mod data;
mod fixture_sync;
mod flaky;
mod memory;
mod suite;

pub use data::{pattern_bytes, pattern_sha1, pattern_stream};
pub use fixture_sync::fixture_syncs_and_restores;
pub use flaky::{FailurePlan, FlakyProvider};
pub use memory::RssSampler;
pub use suite::*;

/// Generates one `#[tokio::test]` per conformance behaviour for a provider.
/// `$make` is an expression evaluating to a future of a fresh, empty `DynProvider`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            roundtrip_and_metadata,
            empty_object,
            missing_objects_are_not_found,
            list_many_keys_across_pages,
            list_prefixes_and_order,
            list_directories,
            large_object_streams_with_flat_memory,
            ranged_reads,
            overwrite_replaces_atomically,
            delete_is_idempotent,
            short_or_long_body_is_never_published,
            hostile_keys_are_rejected,
            concurrent_writers,
            transient_failures_are_retried,
            check_read_write,
            server_side_copy_when_supported,
        );
    };
    (@each $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let provider: $crate::storage::DynProvider = $make.await;
                $crate::testkit::$name(provider).await;
            }
        )+
    };
}
