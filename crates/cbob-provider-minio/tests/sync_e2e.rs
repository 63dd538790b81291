//! End to end with the core engine: the committed pgBackRest fixture synced from a local
//! directory to s3s-fs through the `minio` provider, downloaded back object by object, compared byte for byte and
//! restored with pgBackRest and PostgreSQL; a second sync moves nothing.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fixture_syncs_to_minio_and_restores_from_the_copy() {
    let (endpoint, bucket) = common::fresh_bucket("minio-sync").await;
    let dest = common::build(&common::spec(&endpoint, &bucket, "pgbackrest/repo1")).await;
    cbob_core::testkit::fixture_syncs_and_restores(dest, "MinIO (s3s-fs)").await;
}
