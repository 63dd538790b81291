//! The provider conformance suite against Azurite with a container-scoped SAS token (what a
//! Crunchy Bridge `azure_key_type=sas` token is), at the root of a fresh container.

mod common;

cbob_core::conformance_tests!(common::fresh_sas());
