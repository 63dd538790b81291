//! `cbob daemon`: runs sync, restore-check, verify, expire and replicate on the cron schedules
//! of the configuration (`CBOB_SCHEDULE_*`), each as a child process of the same `cbob` binary
//! (failures stay isolated, each command takes its own run lock), and serves `/metrics` and
//! `/healthz` on a loopback address. See docs/daemon.md.
//!
//! - [`schedule`]: cron expressions;
//! - [`runner`]: the per-job loops, jitter, no overlap, graceful stop;
//! - [`status`]: what `/healthz` and `/metrics` report about the jobs;
//! - [`http`]: the endpoints.

pub mod http;
pub mod runner;
pub mod schedule;
pub mod status;

pub use runner::{Job, RunnerSettings, run_jobs};
pub use schedule::Schedule;
pub use status::{DaemonStatus, JobStatus};
