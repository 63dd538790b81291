//! cbob-provider-s3 (in progress)
