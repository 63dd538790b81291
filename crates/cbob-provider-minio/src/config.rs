//! MinIO's conventions as [`S3Config`] settings: a self-hosted endpoint is required, addressing is
//! always path-style, the region defaults to `us-east-1`, payload checksums are sent only when an
//! operation requires them, and the credentials are a MinIO user's access key and secret key.

use cbob_core::Secret;
use cbob_core::storage::{ProviderSpec, Setting, StorageError, StorageErrorKind, StorageResult};
use cbob_provider_s3::{DEFAULT_REGION, S3Config};

/// The provider kind and URL scheme.
pub const SCHEME: &str = "minio";

/// Environment variables MinIO's own tools read, tried (as a pair) when the spec has no keys.
pub const ENV_KEY_PAIRS: &[(&str, &str)] = &[
    ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
];

/// S3 settings for a MinIO spec, with credentials from the process environment when the spec
/// has none.
pub fn config_from_spec(spec: &ProviderSpec) -> StorageResult<S3Config> {
    config_from_spec_with_env(spec, |name| std::env::var(name).ok())
}

/// S3 settings for a MinIO spec; `env` looks up environment variables (injectable for tests).
///
/// Credentials, first match wins: refreshable credentials in the spec; the spec's access key and
/// secret key (`CBOB_DEST_ACCESS_KEY` / `CBOB_DEST_SECRET_KEY`, the replica's `access_key` /
/// `secret_key`); `MINIO_ACCESS_KEY` + `MINIO_SECRET_KEY`; `AWS_ACCESS_KEY_ID` +
/// `AWS_SECRET_ACCESS_KEY`. Unlike AWS there is no instance-metadata fallback: a MinIO server
/// has none, and probing for one only delays the error.
pub fn config_from_spec_with_env(
    spec: &ProviderSpec,
    env: impl Fn(&str) -> Option<String>,
) -> StorageResult<S3Config> {
    let config_err = |msg: String| StorageError::new(StorageErrorKind::Config, msg);
    let describe = spec.describe();
    if spec.endpoint.as_deref().is_none_or(|e| e.trim().is_empty()) {
        return Err(config_err(format!(
            "{describe}: MinIO needs the server's address; set {}, e.g. \
             https://minio.example.internal:9000",
            spec.settings.name(Setting::Endpoint)
        )));
    }
    if let Some(v) = spec.options.get("path_style")
        && matches!(v.as_str(), "false" | "0" | "no")
    {
        return Err(config_err(format!(
            "{describe}: the MinIO provider always uses path-style addressing; remove path_style={v}, \
             or use type `s3` for virtual-host style"
        )));
    }
    let mut spec = spec.clone();
    if spec.s3_credentials.is_none() && spec.access_key.is_none() && spec.secret_key.is_none() {
        let from_env = ENV_KEY_PAIRS.iter().find_map(|(ak, sk)| {
            let ak = env(ak).filter(|v| !v.is_empty())?;
            let sk = env(sk).filter(|v| !v.is_empty())?;
            Some((ak, sk))
        });
        match from_env {
            Some((ak, sk)) => {
                spec.access_key = Some(Secret::new(ak));
                spec.secret_key = Some(Secret::new(sk));
            }
            None => {
                return Err(config_err(format!(
                    "{describe}: no MinIO credentials; set {} to the MinIO user's access key and \
                     secret key, or MINIO_ACCESS_KEY and MINIO_SECRET_KEY",
                    spec.settings
                        .pair(Setting::AccessKey, Setting::SecretKey, " and ")
                )));
            }
        }
    }
    let mut cfg = S3Config::from_spec(&spec)?;
    cfg.scheme = SCHEME;
    cfg.force_path_style = true;
    // MinIO and other self-hosted stores mishandle the SDK's default aws-chunked trailing
    // checksums; sending checksums only where an operation requires them works everywhere.
    cfg.checksums_when_required = true;
    if cfg.region.is_none() {
        cfg.region = Some(DEFAULT_REGION.to_string());
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbob_core::storage::SettingNames;
    use cbob_provider_s3::S3Auth;

    fn spec() -> ProviderSpec {
        ProviderSpec {
            kind: SCHEME.into(),
            bucket: Some("backups".into()),
            prefix: "cbob/".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key: Some(Secret::new("minio-user")),
            secret_key: Some(Secret::new("minio-user-secret")),
            ..ProviderSpec::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn conventions_are_applied() {
        let c = config_from_spec_with_env(&spec(), no_env).unwrap();
        assert_eq!(c.scheme, "minio");
        assert!(c.force_path_style && c.checksums_when_required);
        assert_eq!(c.region.as_deref(), Some("us-east-1"));
        assert_eq!(c.prefix, "cbob");
        assert_eq!(
            c.describe(),
            "minio://backups/cbob at http://127.0.0.1:9000"
        );
        assert!(matches!(c.auth, S3Auth::Static(_)));
        let mut s = spec();
        s.region = Some("eu-central-1".into());
        s.options.insert("path_style".into(), "true".into());
        let c = config_from_spec_with_env(&s, no_env).unwrap();
        assert_eq!(c.region.as_deref(), Some("eu-central-1"));
        assert!(c.force_path_style);
        assert!(!format!("{c:?}").contains("minio-user-secret"));
    }

    #[test]
    fn a_missing_endpoint_names_the_setting() {
        for endpoint in [None, Some("  ".to_string())] {
            let mut s = spec();
            s.endpoint = endpoint;
            let e = config_from_spec_with_env(&s, no_env).unwrap_err();
            assert_eq!(e.kind(), StorageErrorKind::Config);
            assert!(
                e.message().contains("CBOB_DEST_ENDPOINT") && e.message().starts_with("minio://"),
                "{e}"
            );
        }
    }

    #[test]
    fn source_and_replica_errors_name_their_own_settings() {
        let replica = SettingNames::Replica { name: "lab".into() };
        for (settings, endpoint, keys) in [
            (
                SettingNames::Source,
                "CBOB_SOURCE_ENDPOINT",
                "CBOB_SOURCE_ACCESS_KEY and CBOB_SOURCE_SECRET_KEY",
            ),
            (
                replica,
                "`endpoint` of replica \"lab\"",
                "`access_key` and `secret_key` of replica \"lab\"",
            ),
        ] {
            let mut s = spec();
            s.settings = settings.clone();
            s.endpoint = None;
            let e = config_from_spec_with_env(&s, no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(endpoint) && !e.contains("CBOB_DEST_"), "{e}");
            let mut s = spec();
            s.settings = settings;
            s.access_key = None;
            s.secret_key = None;
            let e = config_from_spec_with_env(&s, no_env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(keys) && !e.contains("CBOB_DEST_"), "{e}");
        }
    }

    #[test]
    fn virtual_host_style_is_refused_with_the_alternative() {
        let mut s = spec();
        s.options.insert("path_style".into(), "false".into());
        let e = config_from_spec_with_env(&s, no_env).unwrap_err();
        assert!(
            e.kind() == StorageErrorKind::Config && e.message().contains("type `s3`"),
            "{e}"
        );
    }

    #[test]
    fn credentials_come_from_the_spec_then_minio_then_aws_variables() {
        let mut s = spec();
        s.access_key = None;
        s.secret_key = None;
        let e = config_from_spec_with_env(&s, no_env).unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Config);
        assert!(
            e.message().contains("CBOB_DEST_ACCESS_KEY")
                && e.message().contains("MINIO_ACCESS_KEY"),
            "{e}"
        );
        let env = |n: &str| match n {
            "MINIO_ACCESS_KEY" => Some("from-minio".to_string()),
            "MINIO_SECRET_KEY" => Some("minio-secret".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("from-aws".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("aws-secret".to_string()),
            _ => None,
        };
        let key_of = |c: &S3Config| match &c.auth {
            S3Auth::Static(k) => k.access_key.expose().to_string(),
            other => panic!("static keys expected, got {other:?}"),
        };
        assert_eq!(
            key_of(&config_from_spec_with_env(&s, env).unwrap()),
            "from-minio"
        );
        let aws_only = |n: &str| env(n).filter(|_| n.starts_with("AWS_"));
        assert_eq!(
            key_of(&config_from_spec_with_env(&s, aws_only).unwrap()),
            "from-aws"
        );
        // A half pair in the environment is not used.
        let half = |n: &str| (n == "MINIO_ACCESS_KEY").then(|| "x".to_string());
        assert!(config_from_spec_with_env(&s, half).is_err());
        // The spec's keys win over the environment.
        assert_eq!(
            key_of(&config_from_spec_with_env(&spec(), env).unwrap()),
            "minio-user"
        );
        // A half pair in the spec is the S3 crate's clear error.
        let mut s = spec();
        s.secret_key = None;
        let e = config_from_spec_with_env(&s, env).unwrap_err();
        assert!(e.message().contains("go together"), "{e}");
    }
}
