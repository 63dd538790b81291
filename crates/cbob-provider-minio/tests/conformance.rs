//! The provider conformance suite through the `minio` kind against s3s-fs, which checks every
//! SigV4 signature and payload checksum: MinIO's conventions (path style, us-east-1,
//! checksums only when required) must satisfy a strict self-hosted store.

mod common;

cbob_core::conformance_tests!(common::fresh_minio());
