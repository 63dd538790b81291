//! End-to-end tests of `cbob sync`: the real binary against real servers (auth-mode moto with
//! STS session tokens as the Crunchy Bridge bucket, s3s-fs and moto as destinations and
//! `--source` stores), the fake Crunchy Bridge API, pgBackRest and PostgreSQL 15 to prove the
//! copies restore. Build the binary first: `cargo build -p cbob-cli`.
//!
//! - [`bridge`]: discovery across teams and pages, two clusters to a local directory and to S3,
//!   byte-identical copies that restore, second runs that move nothing, `--status`,
//!   `--dry-run` and `--estimate-only`.
//! - [`tokens`]: backup tokens expiring mid-run, per-cluster failures, the API key.
//! - [`crash`]: killing runs at random moments, the run lock.
//! - [`safety`]: corrupted source objects, hostile keys, secrets in output and logs.
//! - [`clouds`]: the Bridge source to Azure (Azurite), GCS (fake-gcs-server) and MinIO (s3s-fs),
//!   Azure backup tokens (shared key, SAS re-issued on expiry), wrong keys and missing
//!   containers, a destination server killed mid-run.
//!
//! `CBOB_E2E_BIN=/path/to/cbob` tests another binary (a release build, or a private copy while
//! the shared target dir is being rebuilt); `CBOB_E2E_SEED=N` replays the random kill delays of
//! [`crash`] (each run prints its seed). The binary takes 3 to 4 minutes on 2 cores.

mod common;

#[path = "sync/bridge.rs"]
mod bridge;
#[path = "sync/clouds.rs"]
mod clouds;
#[path = "sync/crash.rs"]
mod crash;
#[path = "sync/safety.rs"]
mod safety;
#[path = "sync/tokens.rs"]
mod tokens;
