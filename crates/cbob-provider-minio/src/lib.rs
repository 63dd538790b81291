//! cbob-provider-minio (in progress)
