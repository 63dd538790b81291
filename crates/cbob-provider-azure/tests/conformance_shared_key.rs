//! The provider conformance suite against Azurite with the account's shared key, under a
//! prefix in a fresh container.

mod common;

cbob_core::conformance_tests!(common::fresh_shared_key());
