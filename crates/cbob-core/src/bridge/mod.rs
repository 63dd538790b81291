//! The Crunchy Bridge API (SPEC §4): listing teams, clusters and backups, discovering the
//! primary clusters to sync, and turning backup tokens into refreshable storage credentials.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cbob_core::bridge::BridgeError> {
//! use cbob_core::bridge::{BridgeClient, ClusterSelection, DEFAULT_API_URL};
//! use cbob_core::{Secret, layers::RetryPolicy};
//!
//! let client = BridgeClient::new(DEFAULT_API_URL, Secret::new("cbkey_..."), RetryPolicy::default())?;
//! let selected = ClusterSelection::new(&[], &[], &["ignoreme".into()])?.resolve(&client).await?;
//! for id in &selected.ids {
//!     // One cluster's failure never stops the others.
//!     match client.backup_token(id).await {
//!         Ok(token) => { let _spec = token.provider_spec(&client, None); }
//!         Err(e) if e.is_auth_error() => return Err(e), // every cluster would fail alike
//!         Err(e) => tracing::error!(cluster = %id, error = %e, "skipping cluster"),
//!     }
//! }
//! # Ok(()) }
//! ```

mod client;
mod error;
mod model;
mod select;
mod token_source;

pub use client::{BridgeClient, DEFAULT_API_URL, DEFAULT_TIMEOUT};
pub use error::BridgeError;
pub use model::{AzureKeyType, Backup, BackupToken, Cluster, ClusterRef, Team, TokenKind};
pub use select::{
    ClusterSelection, Discovery, SelectedClusters, validate_cluster_id, validate_stanza,
};
pub use token_source::BridgeTokenSource;
