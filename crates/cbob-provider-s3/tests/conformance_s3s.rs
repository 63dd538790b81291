//! The provider conformance suite against s3s-fs, which checks every SigV4 signature and
//! payload checksum, at the root of a fresh bucket.

mod common;

cbob_core::conformance_tests!(common::fresh_s3s());
