//! `cbob replicate`: the off-site copy copied again across regions and clouds, on the sync
//! engine (SPEC §6 replicate).

mod compare;
pub mod config;
mod engine;

pub use compare::{Comparison, compare};
pub use config::{
    ReplicaConfig, ReplicationConfig, ReplicationConfigError, ReplicationProblem,
    ReplicationSettings, StoreConfig, TEMPLATE, load, parse,
};
pub use engine::{ReplicaResult, ReplicateRequest, replicate};
