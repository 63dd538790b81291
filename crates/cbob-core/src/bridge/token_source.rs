//! Backup tokens as refreshable storage credentials.
//!
//! A storage provider built from a backup token holds a [`CredentialCache`](crate::storage::credentials::CredentialCache)
//! over a [`BridgeTokenSource`]. Its first fetch returns the token the run already has (tokens are
//! requested once per cluster per run, SPEC §4); every later fetch, made when S3 answers
//! `ExpiredToken` or Azure rejects the key, requests a new token and checks that it still points
//! at the same repository before handing out its credentials.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::client::BridgeClient;
use super::error::BridgeError;
use super::model::{BackupToken, TokenKind};
use crate::storage::credentials::{AzureCredentials, CredentialSource, S3Credentials};
use crate::storage::{ProviderSpec, StorageError, StorageErrorKind, StorageResult};

/// Fetches credentials of one cluster's backup token, first the given one, then fresh ones.
#[derive(Debug)]
pub struct BridgeTokenSource {
    client: BridgeClient,
    cluster_id: String,
    /// Where the first token pointed: a refresh must point at the same place.
    location: String,
    stanza: String,
    /// The token the run started with, handed out by the first fetch.
    initial: Mutex<Option<BackupToken>>,
}

impl BridgeTokenSource {
    /// A source seeded with `token` (already fetched for this run).
    pub fn new(client: BridgeClient, token: BackupToken) -> Self {
        Self {
            client,
            cluster_id: token.cluster_id.clone(),
            location: token.location(),
            stanza: token.stanza.clone(),
            initial: Mutex::new(Some(token)),
        }
    }

    /// The cluster whose tokens this source fetches.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The seeded token the first time, then a new one from the API, checked against the first.
    pub async fn token(&self) -> Result<BackupToken, BridgeError> {
        if let Some(t) = self.initial.lock().expect("token source poisoned").take() {
            return Ok(t);
        }
        let fresh = self.client.backup_token(&self.cluster_id).await?;
        if fresh.location() != self.location || fresh.stanza != self.stanza {
            return Err(BridgeError::TokenChanged {
                cluster: self.cluster_id.clone(),
                before: format!("{} (stanza {})", self.location, self.stanza),
                now: format!("{} (stanza {})", fresh.location(), fresh.stanza),
            });
        }
        tracing::info!(cluster = %self.cluster_id, "fetched a fresh Crunchy Bridge backup token");
        Ok(fresh)
    }

    fn wrong_kind(&self, wanted: &str) -> StorageError {
        StorageError::new(
            StorageErrorKind::Config,
            format!(
                "the backup token of cluster {} is not an {wanted} token ({})",
                self.cluster_id, self.location
            ),
        )
    }
}

#[async_trait]
impl CredentialSource<S3Credentials> for BridgeTokenSource {
    async fn fetch(&self) -> StorageResult<S3Credentials> {
        let token = self.token().await?;
        token.s3_credentials().ok_or_else(|| self.wrong_kind("S3"))
    }
}

#[async_trait]
impl CredentialSource<AzureCredentials> for BridgeTokenSource {
    async fn fetch(&self) -> StorageResult<AzureCredentials> {
        let token = self.token().await?;
        token
            .azure_credentials()
            .ok_or_else(|| self.wrong_kind("Azure"))
    }
}

impl BackupToken {
    /// The storage provider spec of the repository this token points at, with credentials
    /// that refresh through `client` (a new backup token) when the store rejects them.
    ///
    /// `source_endpoint` is `CBOB_SOURCE_ENDPOINT`: an endpoint override (VPC endpoint, proxy,
    /// local S3- or Azure-compatible server), which also means path-style addressing for S3.
    pub fn provider_spec(
        &self,
        client: &BridgeClient,
        source_endpoint: Option<String>,
    ) -> ProviderSpec {
        let source = Arc::new(BridgeTokenSource::new(client.clone(), self.clone()));
        let endpoint = source_endpoint.filter(|e| !e.trim().is_empty());
        match &self.kind {
            TokenKind::S3 { bucket, region, .. } => ProviderSpec {
                kind: "s3".into(),
                bucket: Some(bucket.clone()),
                prefix: self.prefix(),
                endpoint,
                region: Some(region.clone()),
                s3_credentials: Some(source),
                ..ProviderSpec::default()
            },
            TokenKind::Azure {
                account, container, ..
            } => ProviderSpec {
                kind: "azure".into(),
                account: Some(account.clone()),
                bucket: Some(container.clone()),
                prefix: self.prefix(),
                endpoint,
                azure_credentials: Some(source),
                ..ProviderSpec::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::RetryPolicy;
    use crate::secret::Secret;

    fn token(json: &str) -> BackupToken {
        BackupToken::parse("abc123", json.as_bytes()).unwrap()
    }

    fn client() -> BridgeClient {
        // Never contacted: these tests only use the seeded token.
        BridgeClient::new(
            "http://127.0.0.1:9",
            Secret::new("unused-key"),
            RetryPolicy::none(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn s3_spec_and_seeded_first_fetch() {
        let t = token(
            r#"{"type":"s3","repo_path":"/a/b/","stanza":"s1","aws":{"s3_bucket":"bkt","s3_key":"AK",
                "s3_key_secret":"SK","s3_token":"TK","s3_region":"eu-west-1"}}"#,
        );
        let spec = t.provider_spec(&client(), Some("http://127.0.0.1:1234".into()));
        assert_eq!(spec.kind, "s3");
        assert_eq!(spec.bucket.as_deref(), Some("bkt"));
        assert_eq!(spec.prefix, "a/b");
        assert_eq!(spec.region.as_deref(), Some("eu-west-1"));
        assert_eq!(spec.endpoint.as_deref(), Some("http://127.0.0.1:1234"));
        assert!(spec.access_key.is_none() && spec.azure_credentials.is_none());
        let creds = spec.s3_credentials.unwrap().fetch().await.unwrap();
        assert_eq!(creds.access_key.expose(), "AK");
        assert_eq!(creds.session_token.unwrap().expose(), "TK");
        assert!(
            t.provider_spec(&client(), Some(" ".into()))
                .endpoint
                .is_none()
        );
    }

    #[tokio::test]
    async fn azure_spec_and_wrong_kind() {
        let t = token(
            r#"{"type":"azure","repo_path":"/r","stanza":"s1","azure":{"azure_account":"acct",
                "azure_container":"cont","azure_key":"a2V5","azure_key_type":"shared"}}"#,
        );
        let spec = t.provider_spec(&client(), None);
        assert_eq!(spec.kind, "azure");
        assert_eq!(
            (spec.account.as_deref(), spec.bucket.as_deref()),
            (Some("acct"), Some("cont"))
        );
        assert!(spec.s3_credentials.is_none());
        let c = spec.azure_credentials.unwrap().fetch().await.unwrap();
        assert!(matches!(c, AzureCredentials::SharedKey { ref account, .. } if account == "acct"));

        let src = BridgeTokenSource::new(client(), t);
        let e = CredentialSource::<S3Credentials>::fetch(&src)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), StorageErrorKind::Config);
    }
}
