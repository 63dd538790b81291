//! The expiring proxy against real moto: large bodies stream through intact, SigV4-signed
//! boto3 requests with real STS credentials still verify, and expired tokens get `ExpiredToken`.

use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::ExpiringS3Proxy;
use super::expiring_proxy::EXPIRED_TOKEN_XML;
use crate::http;
use crate::locate::Tool;
use crate::{moto, moto_auth};

/// Plain-mode moto does not verify signatures but answers anonymous reads with 403: any
/// SigV4-shaped header makes a request "signed".
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20250101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=0000";

fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn streams_large_bodies_and_rejects_expired_tokens() {
    let m = moto();
    let bucket = m.fresh_bucket("proxy-stream");
    let proxy = ExpiringS3Proxy::start(&m.endpoint(), Duration::from_secs(3600));
    let port = port_of(&proxy.endpoint());
    proxy.issues().register("tok-a");

    // 24 MiB of non-repeating bytes.
    let body: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = format!("/{bucket}/big/object.bin");
    let token = [("authorization", AUTH), ("x-amz-security-token", "tok-a")];
    let put = http::request("PUT", port, &path, &token, &body).unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    let got = http::request("GET", port, &path, &token, b"").unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), body.len());
    assert_eq!(Sha256::digest(&got.body), Sha256::digest(&body));
    let head = http::request("HEAD", port, &path, &[("authorization", AUTH)], b"").unwrap();
    assert_eq!(
        head.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(proxy.forwarded(), 3);

    proxy.issues().expire("tok-a");
    let r = http::request("GET", port, &path, &token, b"").unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), EXPIRED_TOKEN_XML);
    assert!(r.text().contains("<Code>ExpiredToken</Code>"));
    // Presigned-URL form of the token.
    let r = http::request(
        "GET",
        port,
        &format!("{path}?X-Amz-Security-Token=tok-a"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    // Unregistered tokens and requests without one pass.
    let r = http::request(
        "GET",
        port,
        &path,
        &[("authorization", AUTH), ("x-amz-security-token", "other")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(proxy.rejected(), 2);

    // Age-based expiry.
    proxy.issues().register("tok-b");
    proxy.set_max_age(Duration::from_millis(200));
    std::thread::sleep(Duration::from_millis(300));
    let r = http::request(
        "GET",
        port,
        &path,
        &[("x-amz-security-token", "tok-b")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

/// boto3 through the proxy with STS credentials: prints `{"ok": true}` or `{"code": "..."}`.
const BOTO: &str = r#"
import hashlib, io, json, sys
import boto3
from botocore.config import Config
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

op, endpoint, key, secret, token, bucket = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                  aws_secret_access_key=secret, aws_session_token=token,
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
try:
    if op == "roundtrip":
        data = bytes((i * 7919) % 251 for i in range(12 * 1024 * 1024))
        # 5 MiB parts: a multipart upload, each part a signed streaming PUT.
        s3.upload_fileobj(io.BytesIO(data), bucket, "sig/obj",
                          Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
        back = s3.get_object(Bucket=bucket, Key="sig/obj")["Body"].read()
        assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest(), "content differs"
    else:
        # GET, not HEAD: a HEAD error has no body, so boto3 could only report "400".
        s3.get_object(Bucket=bucket, Key="sig/obj")["Body"].read()
    print(json.dumps({"ok": True}))
except ClientError as e:
    print(json.dumps({"code": e.response["Error"]["Code"]}))
"#;

fn boto(op: &str, endpoint: &str, c: &crate::S3Credentials, bucket: &str) -> serde_json::Value {
    let out = Command::new(Tool::Python.require())
        .arg("-c")
        .arg(BOTO)
        .args([
            op,
            endpoint,
            &c.access_key_id,
            &c.secret_access_key,
            c.session_token.as_deref().unwrap(),
            bucket,
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn sigv4_requests_verify_through_the_proxy() {
    let m = moto_auth();
    let bucket = m.fresh_bucket("proxy-sigv4");
    let proxy = ExpiringS3Proxy::start(&m.endpoint(), Duration::from_secs(3600));
    let creds = m.assume_role().credentials;
    proxy
        .issues()
        .register(creds.session_token.as_deref().unwrap());

    assert_eq!(
        boto("roundtrip", &proxy.endpoint(), &creds, &bucket)["ok"],
        true
    );
    assert_eq!(proxy.rejected(), 0);
    proxy.issues().expire_all();
    assert_eq!(
        boto("get", &proxy.endpoint(), &creds, &bucket)["code"],
        "ExpiredToken"
    );
    // A fresh session works again.
    let fresh = m.assume_role().credentials;
    proxy
        .issues()
        .register(fresh.session_token.as_deref().unwrap());
    assert_eq!(boto("get", &proxy.endpoint(), &fresh, &bucket)["ok"], true);
}
