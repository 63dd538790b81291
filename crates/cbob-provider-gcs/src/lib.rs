//! cbob-provider-gcs (in progress)
