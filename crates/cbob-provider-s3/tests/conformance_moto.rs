//! The provider conformance suite against moto (plain mode), under a prefix in a fresh bucket.

mod common;

cbob_core::conformance_tests!(common::fresh_moto());
