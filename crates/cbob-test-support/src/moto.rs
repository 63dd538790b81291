//! moto server: the AWS-faithful S3 (and IAM/STS) server.
//!
//! Two instances per test binary, each started on first use:
//! - [`moto()`]: plain mode, any credentials are accepted.
//! - [`moto_auth()`]: auth mode (`INITIAL_NO_AUTH_ACTION_COUNT`): SigV4 signatures and IAM
//!   policies are enforced, and [`MotoAuth::assume_role`] hands out real STS session
//!   credentials (`ASIA...` key, secret, session token), like a Crunchy Bridge backup token.
//!
//! The IAM/STS calls are made with boto3 (installed with moto) from a small embedded Python
//! script rather than a second SigV4 implementation here.

use std::process::Command;
use std::sync::OnceLock;

use crate::S3Credentials;
use crate::http;
use crate::locate::Tool;
use crate::process::{ServerProcess, start_server, unique_bucket_name};

/// Region every test uses.
pub const REGION: &str = "us-east-1";

/// moto in plain mode.
#[derive(Debug)]
pub struct Moto {
    process: ServerProcess,
}

/// The shared plain-mode moto server of this test binary.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| Moto {
        process: start_moto("moto", None),
    })
}

/// The command that starts a plain-mode moto on 127.0.0.1:`port`.
pub fn command(port: u16) -> Command {
    let mut c = Command::new(Tool::MotoServer.require());
    c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    c
}

/// Readiness probe. `/moto-api/` is moto's own dashboard: not an AWS action, so it does not
/// use up the unauthenticated calls of auth mode.
pub fn ready(port: u16) -> bool {
    http::answers(port, "/moto-api/")
}

fn start_moto(name: &'static str, no_auth_count: Option<u32>) -> ServerProcess {
    start_server(
        name,
        |port| {
            let mut c = command(port);
            if let Some(n) = no_auth_count {
                c.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
            }
            c
        },
        ready,
    )
}

impl Moto {
    /// `http://127.0.0.1:PORT` (use path-style addressing).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// The server process (port, pid, log).
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }

    /// Static credentials; plain-mode moto accepts any.
    pub fn credentials(&self) -> S3Credentials {
        S3Credentials {
            access_key_id: "AKIAMOTOTESTKEY00001".into(),
            secret_access_key: "moto-test-secret".into(),
            session_token: None,
            region: REGION.into(),
        }
    }

    /// Creates a bucket with a unique name derived from `base` and returns the name.
    pub fn fresh_bucket(&self, base: &str) -> String {
        let name = unique_bucket_name(base);
        let r = http::request("PUT", self.process.port, &format!("/{name}"), &[], b"")
            .unwrap_or_else(|e| panic!("moto: create bucket {name}: {e}"));
        assert_eq!(
            r.status,
            200,
            "moto: create bucket {name}: HTTP {}: {}",
            r.status,
            r.text()
        );
        name
    }

    /// Wipes all state (`POST /moto-api/reset`). Every test in the binary shares this server,
    /// so only call it from a binary whose tests cannot run concurrently; prefer fresh buckets.
    pub fn reset(&self) {
        let r = http::request("POST", self.process.port, "/moto-api/reset", &[], b"")
            .expect("moto reset");
        assert_eq!(r.status, 200, "moto reset: {}", r.text());
    }
}

/// Temporary credentials from STS AssumeRole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    /// Key id, secret, session token and region.
    pub credentials: S3Credentials,
    /// ISO-8601 expiry reported by STS (moto does not enforce it).
    pub expiration: String,
}

/// moto in auth mode, with an admin user and an assumable S3 role.
#[derive(Debug)]
pub struct MotoAuth {
    process: ServerProcess,
    admin: S3Credentials,
    role_arn: String,
}

/// Number of unauthenticated calls the set-up script makes (see `SCRIPT`, op `setup`).
const SETUP_CALLS: u32 = 5;

/// The shared auth-mode moto server of this test binary.
pub fn moto_auth() -> &'static MotoAuth {
    static MOTO_AUTH: OnceLock<MotoAuth> = OnceLock::new();
    MOTO_AUTH.get_or_init(|| {
        let process = start_moto("moto-auth", Some(SETUP_CALLS));
        let endpoint = format!("http://127.0.0.1:{}", process.port);
        let out = run_boto(&["setup", &endpoint]);
        let admin = S3Credentials {
            access_key_id: json_str(&out, "access_key_id"),
            secret_access_key: json_str(&out, "secret_access_key"),
            session_token: None,
            region: REGION.into(),
        };
        let role_arn = json_str(&out, "role_arn");
        MotoAuth {
            process,
            admin,
            role_arn,
        }
    })
}

impl MotoAuth {
    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// The server process.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }

    /// Long-lived IAM user keys (`AKIA...`) allowed to do anything.
    pub fn admin_credentials(&self) -> S3Credentials {
        self.admin.clone()
    }

    /// ARN of the role that [`MotoAuth::assume_role`] assumes (allowed `s3:*`).
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    /// Fresh STS session credentials (`ASIA...` + secret + session token), different on
    /// every call: what a token refresh returns. S3 rejects them without the token.
    pub fn assume_role(&self) -> SessionCredentials {
        let out = run_boto(&[
            "assume-role",
            &self.endpoint(),
            &self.admin.access_key_id,
            &self.admin.secret_access_key,
            &self.role_arn,
        ]);
        SessionCredentials {
            credentials: S3Credentials {
                access_key_id: json_str(&out, "access_key_id"),
                secret_access_key: json_str(&out, "secret_access_key"),
                session_token: Some(json_str(&out, "session_token")),
                region: REGION.into(),
            },
            expiration: json_str(&out, "expiration"),
        }
    }

    /// Creates a bucket (signed with the admin keys) with a unique name derived from `base`.
    pub fn fresh_bucket(&self, base: &str) -> String {
        let name = unique_bucket_name(base);
        run_boto(&[
            "create-bucket",
            &self.endpoint(),
            &self.admin.access_key_id,
            &self.admin.secret_access_key,
            &name,
        ]);
        name
    }
}

fn json_str(v: &serde_json::Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("moto helper output lacks {key}: {v}"))
        .to_string()
}

/// Runs the embedded boto3 script with a clean environment (no AWS profile, CA bundle or
/// proxy settings from the machine leak in) and parses its JSON output.
fn run_boto(args: &[&str]) -> serde_json::Value {
    let python = Tool::Python.require();
    let out = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap_or_else(|e| panic!("run {} for moto {}: {e}", python.display(), args[0]));
    assert!(
        out.status.success(),
        "moto helper `{}` failed ({}); is boto3 importable by {}? {}\nstderr:\n{}",
        args[0],
        out.status,
        python.display(),
        crate::locate::INSTALL_HINT,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "moto helper `{}` printed no JSON ({e}): {}",
            args[0],
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// IAM/STS/S3 calls made with boto3. `setup` makes exactly `SETUP_CALLS` unauthenticated calls;
/// after them moto checks every signature against the IAM keys it knows.
const SCRIPT: &str = r#"
import json, sys
import boto3
from botocore.config import Config

op, endpoint = sys.argv[1], sys.argv[2]
cfg = Config(retries={"max_attempts": 1})

def client(service, key, secret):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret, config=cfg)

if op == "setup":
    iam = client("iam", "bootstrap", "bootstrap")
    allow = lambda action: json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": action, "Resource": "*"}]})
    iam.create_user(UserName="cbob-admin")                                            # 1
    iam.put_user_policy(UserName="cbob-admin", PolicyName="admin",
                        PolicyDocument=allow("*"))                                   # 2
    key = iam.create_access_key(UserName="cbob-admin")["AccessKey"]                   # 3
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
    role = iam.create_role(RoleName="cbob-backup-reader",
                           AssumeRolePolicyDocument=trust)["Role"]                   # 4
    iam.put_role_policy(RoleName="cbob-backup-reader", PolicyName="s3",
                        PolicyDocument=allow("s3:*"))                                # 5
    print(json.dumps({"access_key_id": key["AccessKeyId"],
                      "secret_access_key": key["SecretAccessKey"],
                      "role_arn": role["Arn"]}))
elif op == "assume-role":
    key, secret, arn = sys.argv[3:6]
    c = client("sts", key, secret).assume_role(RoleArn=arn, RoleSessionName="cbob-test",
                                               DurationSeconds=900)["Credentials"]
    print(json.dumps({"access_key_id": c["AccessKeyId"],
                      "secret_access_key": c["SecretAccessKey"],
                      "session_token": c["SessionToken"],
                      "expiration": c["Expiration"].isoformat()}))
elif op == "create-bucket":
    key, secret, bucket = sys.argv[3:6]
    client("s3", key, secret).create_bucket(Bucket=bucket)
    print(json.dumps({"bucket": bucket}))
else:
    sys.exit("unknown op " + op)
"#;
