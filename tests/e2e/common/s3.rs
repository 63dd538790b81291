//! Putting test data into S3 servers and looking at it, with boto3 from the test servers' venv
//! (signed with whatever keys the server needs), and the environment of S3 destinations.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cbob_test_support::locate::Tool;
use cbob_test_support::{moto, moto_auth, s3s};

use super::cbob::Cbob;

/// An S3 endpoint and keys to use it with.
#[derive(Debug, Clone)]
pub struct S3Access {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Access {
    /// Plain-mode moto (any keys).
    pub fn moto() -> Self {
        let c = moto().credentials();
        Self {
            endpoint: moto().endpoint(),
            access_key: c.access_key_id,
            secret_key: c.secret_access_key,
        }
    }

    /// Auth-mode moto with its admin (IAM user) keys.
    pub fn moto_admin() -> Self {
        let c = moto_auth().admin_credentials();
        Self {
            endpoint: moto_auth().endpoint(),
            access_key: c.access_key_id,
            secret_key: c.secret_access_key,
        }
    }

    /// The shared s3s-fs server (its only keys).
    pub fn s3s() -> Self {
        Self {
            endpoint: cbob_test_support::s3s_fs().endpoint(),
            access_key: s3s::ACCESS_KEY.into(),
            secret_key: s3s::SECRET_KEY.into(),
        }
    }

    fn run(&self, op: &str, bucket: &str, args: &[&str]) -> serde_json::Value {
        let python = Tool::Python.require();
        let out = Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .args([
                op,
                &self.endpoint,
                &self.access_key,
                &self.secret_key,
                bucket,
            ])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", std::env::temp_dir())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap_or_else(|e| panic!("run {} (boto3 helper {op}): {e}", python.display()));
        assert!(
            out.status.success(),
            "boto3 helper `{op}` on {bucket} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "boto3 helper `{op}` printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Uploads every regular file below `dir` to `bucket` as `<prefix><relative path>`.
    pub fn upload_dir(&self, bucket: &str, prefix: &str, dir: &Path) {
        let dir = dir.to_str().expect("utf-8 path");
        self.run("upload", bucket, &[prefix, dir]);
    }

    /// Puts one object under exactly `key` (no normalisation: `..` segments stay).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), body).expect("write body");
        self.run(
            "put",
            bucket,
            &[key, f.path().to_str().expect("utf-8 path")],
        );
    }

    /// Every key below `prefix` with its size.
    pub fn list(&self, bucket: &str, prefix: &str) -> BTreeMap<String, u64> {
        let v = self.run("list", bucket, &[prefix]);
        serde_json::from_value(v).expect("key → size map")
    }
}

/// Points `cbob`'s destination at an S3 bucket: `CBOB_DEST_TYPE=s3` and the `CBOB_DEST_*` keys.
pub fn dest_env(cbob: &mut Cbob, s3: &S3Access, bucket: &str, prefix: &str) {
    cbob.env("CBOB_DEST_TYPE", "s3")
        .env("CBOB_DEST_ENDPOINT", &s3.endpoint)
        .env("CBOB_DEST_BUCKET", bucket)
        .env("CBOB_DEST_PREFIX", prefix)
        .env("CBOB_DEST_ACCESS_KEY", &s3.access_key)
        .env("CBOB_DEST_SECRET_KEY", &s3.secret_key)
        .env("CBOB_DEST_REGION", "us-east-1");
}

/// boto3 operations: `upload PREFIX DIR` (8 threads), `put KEY FILE`, `list PREFIX`.
const SCRIPT: &str = r#"
import json, os, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config

op, endpoint, key, secret, bucket = sys.argv[1:6]
args = sys.argv[6:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                                max_pool_connections=16))

def files(root):
    for d, dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                yield os.path.relpath(p, root)

def put_file(k, path):
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=k, Body=f.read())

if op == "upload":
    prefix, root = args
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda rel: put_file(prefix + rel, os.path.join(root, rel)), list(files(root))))
    print(json.dumps({"ok": True}))
elif op == "put":
    put_file(args[0], args[1])
    print(json.dumps({"ok": True}))
elif op == "list":
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=args[0]):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    print(json.dumps(out))
else:
    sys.exit("unknown op " + op)
"#;
