//! The provider conformance suite against the local filesystem provider, in both durability modes.

use std::sync::Arc;

use cbob_core::storage::DynProvider;
use cbob_core::storage::local::{Durability, LocalProvider};

/// A fresh root under cargo's per-target temp dir (removed by `cargo clean`, never under /tmp).
async fn fresh(durability: Durability) -> DynProvider {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("local-conformance");
    std::fs::create_dir_all(&base).expect("base dir");
    let dir = tempfile::tempdir_in(base).expect("tempdir").keep();
    Arc::new(LocalProvider::with_durability(dir.join("root"), durability).expect("provider"))
}

mod per_write {
    use super::*;
    cbob_core::conformance_tests!(fresh(Durability::PerWrite));
}

mod deferred {
    use super::*;
    cbob_core::conformance_tests!(fresh(Durability::Deferred));
}
