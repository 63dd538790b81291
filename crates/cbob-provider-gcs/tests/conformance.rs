//! The provider conformance suite against fake-gcs-server (memory backend), under a prefix of
//! a fresh bucket: pagination, 64 MiB resumable uploads with flat memory, ranged reads,
//! overwrite, delete, torn bodies, hostile keys, concurrent writers, retries, check, copy.

mod common;

cbob_core::conformance_tests!(common::fresh_gcs());
