//! The harness against the real servers: each starts, answers, creates buckets, and enforces
//! the authentication the tests rely on.

use std::process::Command;
use std::time::Duration;

use cbob_test_support::http::request;
use cbob_test_support::locate::Tool;
use cbob_test_support::{azurite, fake_gcs, moto, moto_auth, s3s_fs};

#[test]
fn moto_plain_creates_buckets() {
    let m = moto();
    let a = m.fresh_bucket("harness");
    let b = m.fresh_bucket("harness");
    assert_ne!(a, b);
    let r = request(
        "GET",
        m.process().port,
        &format!("/{a}?list-type=2"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<ListBucketResult"), "{}", r.text());
    assert!(m.endpoint().starts_with("http://127.0.0.1:"));
}

/// Session credentials work with their token and fail without it: the property token-refresh
/// tests depend on.
#[test]
fn moto_auth_enforces_sts_session_credentials() {
    let m = moto_auth();
    let bucket = m.fresh_bucket("auth");
    let s1 = m.assume_role();
    let s2 = m.assume_role();
    assert!(s1.credentials.access_key_id.starts_with("ASIA"), "{s1:?}");
    assert_ne!(s1.credentials.access_key_id, s2.credentials.access_key_id);
    let token = s1.credentials.session_token.clone().unwrap();

    // Unsigned requests are refused once auth is on (moto 5.2 answers 500 to a request with
    // no Authorization header at all, 403 to a bad signature).
    let r = request("GET", m.process().port, &format!("/{bucket}"), &[], b"").unwrap();
    assert!(r.status >= 400, "HTTP {}: {}", r.status, r.text());

    let script = r#"
import sys, boto3, botocore
ep, bucket, key, secret, token = sys.argv[1:6]
def s3(tok):
    return boto3.client("s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, aws_session_token=tok)
s3(token).put_object(Bucket=bucket, Key="k", Body=b"v")
assert s3(token).get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
try:
    s3(None).list_objects_v2(Bucket=bucket)
    sys.exit("listing without the session token succeeded")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;
    let c = &s1.credentials;
    let out = Command::new(Tool::Python.require())
        .args(["-c", script, &m.endpoint(), &bucket])
        .args([&c.access_key_id, &c.secret_access_key, &token])
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "InvalidAccessKeyId"
    );
}

#[test]
fn s3s_fs_creates_buckets_and_requires_signatures() {
    let s = s3s_fs();
    let bucket = s.fresh_bucket("harness");
    assert!(s.data_dir().join(&bucket).is_dir());
    let r = request("GET", s.process().port, &format!("/{bucket}"), &[], b"").unwrap();
    assert!(
        r.status == 403 || r.status == 501,
        "HTTP {}: {}",
        r.status,
        r.text()
    );
    let r = request("GET", s.process().port, "/nonexistent-bucket-x", &[], b"").unwrap();
    assert_ne!(r.status, 200);
}

#[test]
fn azurite_creates_containers_and_honours_sas() {
    let a = azurite();
    let c = a.fresh_container("harness");
    let port = a.process().port;
    let list = format!("/{}/{c}?restype=container&comp=list", azurite::ACCOUNT);
    let r = request("GET", port, &list, &[], b"").unwrap();
    assert_eq!(
        r.status,
        403,
        "anonymous listing must be refused: {}",
        r.text()
    );

    let sas = a.container_sas(&c, "racwdl", Duration::from_secs(3600));
    let r = request("GET", port, &format!("{list}&{sas}"), &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let put = format!("/{}/{c}/dir/blob.txt?{sas}", azurite::ACCOUNT);
    let r = request(
        "PUT",
        port,
        &put,
        &[("x-ms-blob-type", "BlockBlob")],
        b"hello",
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    let bad = sas.replace("sp=racwdl", "sp=rl");
    let r = request("GET", port, &format!("{list}&{bad}"), &[], b"").unwrap();
    assert_eq!(
        r.status,
        403,
        "a tampered SAS must be refused: {}",
        r.text()
    );
}

#[test]
fn fake_gcs_creates_buckets() {
    let g = fake_gcs();
    let b = g.fresh_bucket("harness");
    let r = request(
        "GET",
        g.process().port,
        &format!("/storage/v1/b/{b}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        "GET",
        g.process().port,
        &format!("/storage/v1/b/{b}/o"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Each server is started once per test binary, whichever test asks first.
#[test]
fn servers_are_shared() {
    assert_eq!(moto().process().pid(), moto().process().pid());
    assert_eq!(fake_gcs().process().port, fake_gcs().process().port);
    moto().process().assert_alive();
}
