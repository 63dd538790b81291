//! cbob-core: everything cbob does that is not a cloud SDK or a command line.
//!
//! - [`storage`]: the [`storage::StorageProvider`] trait, keys, bodies, errors, the provider registry
//!   and the local filesystem provider;
//! - [`layers`]: retry, concurrency and bandwidth limits written once around any provider;
//! - [`config`]: configuration sources, precedence and validation (SPEC §3);
//! - [`logging`]: tracing setup, text or JSON, never printing secrets;
//! - [`repo`]: the pgBackRest repository model (info files, manifests, WAL names, checksums);
//! - [`testkit`] (feature `testkit`): the conformance suite every provider runs against itself.

pub mod audit;
pub mod bridge;
pub mod config;
pub mod daemon;
pub mod expire;
pub mod info;
pub mod layers;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pg;
pub mod replicate;
pub mod repo;
pub mod restore;
pub mod secret;
pub mod state;
pub mod storage;
pub mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verify;

pub use secret::Secret;
