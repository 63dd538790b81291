//! cbob-provider-azure (in progress)
