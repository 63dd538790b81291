//! What the Crunchy Bridge API returns (SPEC §4), and the validated backup token cbob works with.
//!
//! Listing types are deserialized leniently (unknown fields ignored, optional fields optional)
//! because the API adds fields over time; the backup token is parsed into raw optional fields
//! first and then validated by hand, so a missing field produces a message naming that field
//! instead of a serde error that might quote a neighbouring secret.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::error::BridgeError;
use super::select::{validate_cluster_id, validate_stanza};
use crate::secret::Secret;
use crate::storage::credentials::{AzureCredentials, S3Credentials};

/// A team (`GET /teams`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Team {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The personal team is the only one `GET /clusters` lists without `team_id`.
    #[serde(default)]
    pub is_personal: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TeamList {
    pub teams: Vec<Team>,
}

/// A cluster as listed by `GET /clusters?team_id=`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Cluster {
    pub id: String,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub name: String,
    /// Non-null for a replica: the primary it follows.
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub major_version: Option<u32>,
    #[serde(default)]
    pub provider_id: Option<String>,
    #[serde(default)]
    pub region_id: Option<String>,
    /// Replicas nested under their primary (the API may list them here instead of, or as well
    /// as, at top level with a `parent_id`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub replicas: Vec<ClusterRef>,
}

impl Cluster {
    /// Whether the cluster says of itself that it is a replica. Discovery also treats a
    /// cluster listed under another cluster's `replicas` as one.
    pub fn is_replica(&self) -> bool {
        self.parent_id.as_deref().is_some_and(|p| !p.is_empty())
    }
}

/// A cluster mentioned under another cluster's `replicas`; only its id matters here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterRef {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ClusterPage {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clusters: Vec<Cluster>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A backup as listed by `GET /clusters/{id}/backups`; `name` is the pgBackRest label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Backup {
    pub name: String,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub lsn_start: Option<String>,
    #[serde(default)]
    pub lsn_stop: Option<String>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BackupPage {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub backups: Vec<Backup>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// How an Azure backup token's key is to be used (pgBackRest `repo1-azure-key-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureKeyType {
    Sas,
    SharedKey,
}

/// Where a backup token points and with which credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    S3 {
        bucket: String,
        key: Secret,
        secret: Secret,
        /// Session token of the temporary credentials; `None` when the API sent an empty one.
        token: Option<Secret>,
        region: String,
    },
    Azure {
        account: String,
        container: String,
        key: Secret,
        key_type: AzureKeyType,
    },
}

/// A validated `POST /clusters/{id}/backup-tokens` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupToken {
    /// The cluster the token was issued for (validated).
    pub cluster_id: String,
    pub kind: TokenKind,
    /// Repository path inside the bucket/container, as sent (starts with `/`).
    pub repo_path: String,
    /// pgBackRest stanza (validated: `[A-Za-z0-9._-]+`, not `.` or `..`).
    pub stanza: String,
}

#[derive(Deserialize)]
struct RawToken {
    #[serde(rename = "type")]
    kind: Option<String>,
    repo_path: Option<String>,
    stanza: Option<String>,
    aws: Option<RawAws>,
    azure: Option<RawAzure>,
}

#[derive(Deserialize)]
struct RawAws {
    s3_bucket: Option<String>,
    s3_key: Option<Secret>,
    s3_key_secret: Option<Secret>,
    s3_token: Option<Secret>,
    s3_region: Option<String>,
}

#[derive(Deserialize)]
struct RawAzure {
    azure_account: Option<String>,
    azure_container: Option<String>,
    azure_key: Option<Secret>,
    azure_key_type: Option<String>,
}

impl BackupToken {
    /// Parses and validates a backup-token response body for `cluster_id`.
    pub fn parse(cluster_id: &str, body: &[u8]) -> Result<Self, BridgeError> {
        validate_cluster_id(cluster_id)?;
        let cluster = cluster_id.to_string();
        // Only the category and position of a JSON error: serde messages can quote values,
        // and this document carries credentials.
        let raw: RawToken =
            serde_json::from_slice(body).map_err(|e| BridgeError::MalformedResponse {
                what: format!("requesting a backup token for cluster {cluster_id}"),
                detail: format!(
                    "{:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            })?;
        let missing = |field: &'static str| BridgeError::MissingField {
            cluster: cluster.clone(),
            field,
        };
        let text = |v: Option<String>, field: &'static str| {
            v.filter(|s| !s.is_empty()).ok_or_else(|| missing(field))
        };
        let secret = |v: Option<Secret>, field: &'static str| {
            v.filter(|s| !s.is_empty()).ok_or_else(|| missing(field))
        };
        let invalid = |reason: String| BridgeError::InvalidToken {
            cluster: cluster.clone(),
            reason,
        };

        let kind_name = text(raw.kind, "type")?;
        let repo_path = text(raw.repo_path, "repo_path")?;
        validate_repo_path(&repo_path).map_err(invalid)?;
        let stanza = text(raw.stanza, "stanza")?;
        validate_stanza(&stanza).map_err(|_| {
            invalid(format!(
                "stanza {stanza:?} is not a valid pgBackRest stanza name"
            ))
        })?;

        let kind = match kind_name.as_str() {
            "s3" => {
                let aws = raw.aws.ok_or_else(|| missing("aws"))?;
                let bucket = text(aws.s3_bucket, "aws.s3_bucket")?;
                check_name(&bucket, "aws.s3_bucket").map_err(invalid)?;
                let region = text(aws.s3_region, "aws.s3_region")?;
                check_name(&region, "aws.s3_region").map_err(invalid)?;
                TokenKind::S3 {
                    bucket,
                    key: secret(aws.s3_key, "aws.s3_key")?,
                    secret: secret(aws.s3_key_secret, "aws.s3_key_secret")?,
                    // The field must be there; an empty one means static keys (S3-compatible stores).
                    token: Some(aws.s3_token.ok_or_else(|| missing("aws.s3_token"))?)
                        .filter(|t| !t.is_empty()),
                    region,
                }
            }
            "azure" => {
                let az = raw.azure.ok_or_else(|| missing("azure"))?;
                let account = text(az.azure_account, "azure.azure_account")?;
                check_name(&account, "azure.azure_account").map_err(invalid)?;
                let container = text(az.azure_container, "azure.azure_container")?;
                check_name(&container, "azure.azure_container").map_err(invalid)?;
                let key_type_name = text(az.azure_key_type, "azure.azure_key_type")?;
                let key_type = match key_type_name.to_ascii_lowercase().as_str() {
                    "sas" => AzureKeyType::Sas,
                    // pgBackRest calls it `shared`; accept the spelled-out forms too.
                    "shared" | "shared_key" | "sharedkey" => AzureKeyType::SharedKey,
                    other => {
                        return Err(invalid(format!(
                            "azure.azure_key_type {other:?} is neither \"sas\" nor \"shared\""
                        )));
                    }
                };
                let mut key = secret(az.azure_key, "azure.azure_key")?;
                if key_type == AzureKeyType::Sas && key.expose().starts_with('?') {
                    // A SAS is sometimes handed out as a query string; providers want it bare.
                    key = Secret::new(key.expose().trim_start_matches('?'));
                }
                TokenKind::Azure {
                    account,
                    container,
                    key,
                    key_type,
                }
            }
            other => {
                return Err(BridgeError::UnknownTokenType {
                    cluster,
                    kind: other.to_string(),
                });
            }
        };
        Ok(Self {
            cluster_id: cluster_id.to_string(),
            kind,
            repo_path,
            stanza,
        })
    }

    /// The key prefix of the repository inside the bucket/container: `repo_path` without the
    /// leading (and any trailing) `/`.
    pub fn prefix(&self) -> String {
        self.repo_path.trim_matches('/').to_string()
    }

    /// Where the repository is, without credentials: `s3://bucket/prefix` or
    /// `azure://account/container/prefix`. Two tokens for the same repository have the same location.
    pub fn location(&self) -> String {
        match &self.kind {
            TokenKind::S3 { bucket, .. } => format!("s3://{bucket}/{}", self.prefix()),
            TokenKind::Azure {
                account, container, ..
            } => {
                format!("azure://{account}/{container}/{}", self.prefix())
            }
        }
    }

    /// `s3` or `azure`.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            TokenKind::S3 { .. } => "s3",
            TokenKind::Azure { .. } => "azure",
        }
    }

    /// The S3 credentials of an S3 token.
    pub fn s3_credentials(&self) -> Option<S3Credentials> {
        match &self.kind {
            TokenKind::S3 {
                key, secret, token, ..
            } => Some(S3Credentials {
                access_key: key.clone(),
                secret_key: secret.clone(),
                session_token: token.clone(),
                // Bridge does not say when a token expires; expiry is detected by rejection.
                expires_at: None,
            }),
            TokenKind::Azure { .. } => None,
        }
    }

    /// The Azure credentials of an Azure token.
    pub fn azure_credentials(&self) -> Option<AzureCredentials> {
        match &self.kind {
            TokenKind::Azure {
                account,
                key,
                key_type,
                ..
            } => Some(match key_type {
                AzureKeyType::Sas => AzureCredentials::Sas {
                    account: account.clone(),
                    token: key.clone(),
                },
                AzureKeyType::SharedKey => AzureCredentials::SharedKey {
                    account: account.clone(),
                    key: key.clone(),
                },
            }),
            TokenKind::S3 { .. } => None,
        }
    }
}

/// `repo_path` becomes a key prefix: refuse anything that could escape or confuse it.
fn validate_repo_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("repo_path {path:?} {why}"));
    if !path.starts_with('/') {
        return bad("does not start with /");
    }
    if path.contains(['\\', '\0']) || path.chars().any(char::is_control) {
        return bad("contains a backslash or control character");
    }
    let inner = path.trim_matches('/');
    if !inner.is_empty()
        && inner
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("has an empty, `.` or `..` segment");
    }
    Ok(())
}

/// Bucket, container, account and region names go into hosts and paths: printable, no `/`.
fn check_name(value: &str, field: &str) -> Result<(), String> {
    if value
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '/' && c != '\\')
    {
        Ok(())
    } else {
        Err(format!("{field} {value:?} is not a valid name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s3_json() -> serde_json::Value {
        json!({
            "type": "s3", "repo_path": "/pgbackrest/abc123/repo1", "stanza": "abc123",
            "aws": {"s3_bucket": "cb-backups", "s3_key": "ASIAKEY", "s3_key_secret": "SECRETVALUE",
                    "s3_token": "SESSIONTOKEN", "s3_region": "us-east-2"}
        })
    }

    fn parse(v: &serde_json::Value) -> Result<BackupToken, BridgeError> {
        BackupToken::parse("abc123", v.to_string().as_bytes())
    }

    #[test]
    fn parses_s3_token() {
        let t = parse(&s3_json()).unwrap();
        assert_eq!(t.stanza, "abc123");
        assert_eq!(t.prefix(), "pgbackrest/abc123/repo1");
        assert_eq!(t.location(), "s3://cb-backups/pgbackrest/abc123/repo1");
        let c = t.s3_credentials().unwrap();
        assert_eq!(c.access_key.expose(), "ASIAKEY");
        assert_eq!(c.session_token.unwrap().expose(), "SESSIONTOKEN");
        assert!(t.azure_credentials().is_none());
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("SECRETVALUE")
                && !dbg.contains("SESSIONTOKEN")
                && !dbg.contains("ASIAKEY"),
            "{dbg}"
        );
    }

    #[test]
    fn parses_azure_tokens() {
        let mut v = json!({
            "type": "azure", "repo_path": "/r", "stanza": "st-1.a_b",
            "azure": {"azure_account": "acct", "azure_container": "cont", "azure_key": "?sv=1&sig=x", "azure_key_type": "sas"}
        });
        let t = parse(&v).unwrap();
        assert_eq!(t.location(), "azure://acct/cont/r");
        match t.azure_credentials().unwrap() {
            AzureCredentials::Sas { account, token } => {
                assert_eq!(account, "acct");
                assert_eq!(token.expose(), "sv=1&sig=x");
            }
            other => panic!("{other:?}"),
        }
        v["azure"]["azure_key_type"] = json!("shared");
        assert!(matches!(
            parse(&v).unwrap().azure_credentials(),
            Some(AzureCredentials::SharedKey { .. })
        ));
        v["azure"]["azure_key_type"] = json!("oauth");
        assert!(matches!(parse(&v), Err(BridgeError::InvalidToken { .. })));
    }

    #[test]
    fn missing_fields_are_named() {
        for (path, field) in [
            (&["aws", "s3_bucket"][..], "aws.s3_bucket"),
            (&["aws", "s3_token"][..], "aws.s3_token"),
            (&["aws", "s3_key_secret"][..], "aws.s3_key_secret"),
            (&["aws"][..], "aws"),
            (&["stanza"][..], "stanza"),
            (&["repo_path"][..], "repo_path"),
            (&["type"][..], "type"),
        ] {
            let mut v = s3_json();
            let mut obj = &mut v;
            for p in &path[..path.len() - 1] {
                obj = &mut obj[*p];
            }
            obj.as_object_mut().unwrap().remove(path[path.len() - 1]);
            match parse(&v) {
                Err(BridgeError::MissingField { cluster, field: f }) => {
                    assert_eq!((cluster.as_str(), f), ("abc123", field));
                }
                other => panic!("{path:?}: {other:?}"),
            }
        }
        // Present but empty session token: static keys.
        let mut v = s3_json();
        v["aws"]["s3_token"] = json!("");
        assert!(
            parse(&v)
                .unwrap()
                .s3_credentials()
                .unwrap()
                .session_token
                .is_none()
        );
        // An Azure token without its block.
        let v = json!({"type": "azure", "repo_path": "/r", "stanza": "s", "aws": s3_json()["aws"]});
        assert!(matches!(
            parse(&v),
            Err(BridgeError::MissingField { field: "azure", .. })
        ));
    }

    #[test]
    fn rejects_unknown_type_and_bad_values() {
        let mut v = s3_json();
        v["type"] = json!("gcs");
        let e = parse(&v).unwrap_err();
        assert!(
            matches!(&e, BridgeError::UnknownTokenType { kind, .. } if kind == "gcs"),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("\"gcs\"") && e.to_string().contains("abc123"),
            "{e}"
        );

        for (field, value) in [
            ("stanza", "../x"),
            ("stanza", ".."),
            ("stanza", "a b"),
            ("repo_path", "relative"),
            ("repo_path", "/a/../b"),
            ("repo_path", "/a//b"),
        ] {
            let mut v = s3_json();
            v[field] = json!(value);
            assert!(
                matches!(parse(&v), Err(BridgeError::InvalidToken { .. })),
                "{field}={value}"
            );
        }
        let mut v = s3_json();
        v["aws"]["s3_bucket"] = json!("a/b");
        assert!(matches!(parse(&v), Err(BridgeError::InvalidToken { .. })));
    }

    #[test]
    fn malformed_json_does_not_quote_the_body() {
        let e = BackupToken::parse(
            "abc123",
            br#"{"type":"s3","aws":{"s3_key_secret": 12, "s3_key": "LEAKME"#,
        )
        .unwrap_err();
        assert!(matches!(e, BridgeError::MalformedResponse { .. }));
        assert!(!e.to_string().contains("LEAKME"), "{e}");
        let e = BackupToken::parse("abc123", br#"{"aws":{"s3_key": ["LEAKME"]}}"#).unwrap_err();
        assert!(!e.to_string().contains("LEAKME"), "{e}");
    }

    #[test]
    fn lists_tolerate_nulls_and_extra_fields() {
        let p: ClusterPage = serde_json::from_str(
            r#"{"clusters":[{"id":"a1","team_id":"t","name":"n","parent_id":null,"replicas":null,"is_ha":true},
                {"id":"b2","parent_id":"a1","major_version":16}],"has_more":false,"next_cursor":null}"#,
        )
        .unwrap();
        assert!(!p.clusters[0].is_replica());
        assert!(p.clusters[1].is_replica());
        let b: BackupPage = serde_json::from_str(
            r#"{"backups":[{"name":"20250101-010203F","started_at":"2025-01-01T01:02:03Z","size_bytes":12}]}"#,
        )
        .unwrap();
        assert_eq!(b.backups[0].size_bytes, Some(12));
        assert!(!b.has_more);
    }
}
