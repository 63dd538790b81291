//! The Crunchy Bridge API client (SPEC §4).
//!
//! Every request carries `Authorization: Bearer <key>` and `Accept: application/json`, has a
//! timeout, and is retried with exponential backoff on network errors, 429 and 5xx (honouring a
//! `Retry-After` in seconds). The key lives in a [`Secret`] and reqwest marks the header
//! sensitive; error texts taken from responses are redacted, so the key cannot reach a log.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::error::{BridgeError, redact, snippet};
use super::model::{Backup, BackupPage, BackupToken, Cluster, ClusterPage, Team, TeamList};
use super::select::{Discovery, classify, validate_cluster_id};
use crate::layers::RetryPolicy;
use crate::secret::Secret;

/// `CBOB_CRUNCHY_API_URL`'s default.
pub const DEFAULT_API_URL: &str = "https://api.crunchybridge.com";

/// How long one request may take, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `Retry-After` obeyed; a server asking for more gets this much, then a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Pagination guard: a server that keeps saying `has_more` is broken, not infinitely large.
const MAX_PAGES: usize = 10_000;

/// A Crunchy Bridge API client; cheap to clone (shared connection pool).
#[derive(Clone)]
pub struct BridgeClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    key: Secret,
    policy: RetryPolicy,
}

impl fmt::Debug for BridgeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeClient")
            .field("base_url", &self.inner.base.as_str())
            .field("api_key", &self.inner.key)
            .field("policy", &self.inner.policy)
            .finish()
    }
}

/// What a request failed with before it is turned into a [`BridgeError`].
enum Attempt {
    /// Worth retrying: network error, 429, 5xx. `retry_after` from the server, if any.
    Retry {
        status: Option<u16>,
        detail: String,
        retry_after: Option<Duration>,
    },
    Fail(BridgeError),
}

impl BridgeClient {
    /// A client for `base_url` (e.g. [`DEFAULT_API_URL`]) with the default request timeout.
    pub fn new(base_url: &str, api_key: Secret, policy: RetryPolicy) -> Result<Self, BridgeError> {
        Self::with_timeout(base_url, api_key, policy, DEFAULT_TIMEOUT)
    }

    /// A client whose requests each time out after `timeout`.
    pub fn with_timeout(
        base_url: &str,
        api_key: Secret,
        policy: RetryPolicy,
        timeout: Duration,
    ) -> Result<Self, BridgeError> {
        let bad = |reason: &str| BridgeError::InvalidBaseUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let base = Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.query().is_some() {
            return Err(bad("it must be a plain http(s) URL without a query"));
        }
        if api_key.is_empty() {
            return Err(BridgeError::MissingApiKey);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("cbob/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                key: api_key,
                policy,
            }),
        })
    }

    /// The API base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// `GET /teams`.
    pub async fn teams(&self) -> Result<Vec<Team>, BridgeError> {
        let body = self
            .request(Method::GET, &["teams"], &[], "listing teams", None)
            .await?;
        Ok(decode::<TeamList>(&body, "listing teams", self.key())?.teams)
    }

    /// Every cluster of a team: `GET /clusters?team_id=`, following `next_cursor` while `has_more`.
    pub async fn clusters(&self, team_id: &str) -> Result<Vec<Cluster>, BridgeError> {
        let what = format!("listing the clusters of team {team_id}");
        let mut out = Vec::new();
        self.paginate(
            &["clusters"],
            Some(("team_id", team_id)),
            &what,
            None,
            |body| {
                let page: ClusterPage = decode(body, &what, self.key())?;
                out.extend(page.clusters);
                Ok((page.has_more, page.next_cursor))
            },
        )
        .await?;
        Ok(out)
    }

    /// Every backup of a cluster: `GET /clusters/{id}/backups`, all pages.
    pub async fn backups(&self, cluster_id: &str) -> Result<Vec<Backup>, BridgeError> {
        validate_cluster_id(cluster_id)?;
        let what = format!("listing the backups of cluster {cluster_id}");
        let mut out = Vec::new();
        self.paginate(
            &["clusters", cluster_id, "backups"],
            None,
            &what,
            Some(cluster_id),
            |body| {
                let page: BackupPage = decode(body, &what, self.key())?;
                out.extend(page.backups);
                Ok((page.has_more, page.next_cursor))
            },
        )
        .await?;
        Ok(out)
    }

    /// A fresh backup token: `POST /clusters/{id}/backup-tokens`, validated.
    pub async fn backup_token(&self, cluster_id: &str) -> Result<BackupToken, BridgeError> {
        validate_cluster_id(cluster_id)?;
        let what = format!("requesting a backup token for cluster {cluster_id}");
        let body = self
            .request(
                Method::POST,
                &["clusters", cluster_id, "backup-tokens"],
                &[],
                &what,
                Some(cluster_id),
            )
            .await?;
        let token = BackupToken::parse(cluster_id, &body)?;
        tracing::debug!(cluster = cluster_id, location = %token.location(), stanza = %token.stanza, "backup token issued");
        Ok(token)
    }

    /// Walks every team and returns the primary clusters to sync: replicas (a `parent_id`, or
    /// listed under another cluster's `replicas`) and `ignore`d ids are left out, each cluster once.
    pub async fn discover(&self, ignore: &[String]) -> Result<Discovery, BridgeError> {
        let teams = self.teams().await?;
        let mut all = Vec::new();
        for team in &teams {
            all.extend(self.clusters(&team.id).await?);
        }
        let d = classify(all, ignore);
        tracing::info!(
            teams = teams.len(),
            total = d.total,
            primaries = d.primaries.len(),
            replicas = d.replicas.len(),
            ignored = d.ignored.len(),
            invalid = d.invalid.len(),
            "discovered Crunchy Bridge clusters"
        );
        for id in &d.invalid {
            tracing::warn!(cluster = %id.escape_debug(), "the API listed a cluster id that is not lowercase letters and digits; skipped");
        }
        Ok(d)
    }

    fn key(&self) -> &str {
        self.inner.key.expose()
    }

    /// Fetches pages until the server says there are no more. `page` consumes one body and
    /// returns `(has_more, next_cursor)`.
    async fn paginate(
        &self,
        path: &[&str],
        fixed: Option<(&str, &str)>,
        what: &str,
        cluster: Option<&str>,
        mut page: impl FnMut(&[u8]) -> Result<(bool, Option<String>), BridgeError>,
    ) -> Result<(), BridgeError> {
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query: Vec<(&str, &str)> = fixed.into_iter().collect();
            if let Some(c) = cursor.as_deref() {
                query.push(("cursor", c));
            }
            let body = self
                .request(Method::GET, path, &query, what, cluster)
                .await?;
            let (has_more, next) = page(&body)?;
            if !has_more {
                return Ok(());
            }
            let next =
                next.filter(|c| !c.is_empty())
                    .ok_or_else(|| BridgeError::MalformedResponse {
                        what: what.to_string(),
                        detail: "has_more is true but next_cursor is missing".into(),
                    })?;
            if cursor.as_deref() == Some(next.as_str()) {
                return Err(BridgeError::MalformedResponse {
                    what: what.to_string(),
                    detail: "the server returned the same next_cursor twice".into(),
                });
            }
            cursor = Some(next);
        }
        Err(BridgeError::MalformedResponse {
            what: what.to_string(),
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// Sends one request, retrying transient failures, and returns the body of a 2xx answer.
    async fn request(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        what: &str,
        cluster: Option<&str>,
    ) -> Result<bytes::Bytes, BridgeError> {
        let mut url = self.inner.base.clone();
        {
            // Segments are escaped by `url`; cluster ids were validated anyway.
            let mut segs = url.path_segments_mut().expect("base URL checked in new()");
            segs.pop_if_empty();
            segs.extend(path);
        }
        let policy = &self.inner.policy;
        let mut retry_no = 0;
        loop {
            let outcome = self
                .attempt(method.clone(), url.clone(), query, what, cluster)
                .await;
            let (status, detail, retry_after) = match outcome {
                Ok(body) => return Ok(body),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry {
                    status,
                    detail,
                    retry_after,
                }) => (status, detail, retry_after),
            };
            if retry_no >= policy.max_retries {
                let attempts = retry_no + 1;
                return Err(match status {
                    Some(status) => BridgeError::Unavailable {
                        what: what.to_string(),
                        status,
                        attempts,
                    },
                    None => BridgeError::Network {
                        what: what.to_string(),
                        attempts,
                        detail,
                    },
                });
            }
            let delay =
                retry_after.map_or_else(|| policy.delay(retry_no), |d| d.min(MAX_RETRY_AFTER));
            tracing::warn!(
                operation = what,
                status,
                error = %detail,
                retry = retry_no + 1,
                of = policy.max_retries,
                delay_ms = delay.as_millis() as u64,
                "Crunchy Bridge API request failed, retrying"
            );
            tokio::time::sleep(delay).await;
            retry_no += 1;
        }
    }

    async fn attempt(
        &self,
        method: Method,
        url: Url,
        query: &[(&str, &str)],
        what: &str,
        cluster: Option<&str>,
    ) -> Result<bytes::Bytes, Attempt> {
        let mut req = self
            .inner
            .http
            .request(method, url)
            .bearer_auth(self.key())
            .header(ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        let network = |e: reqwest::Error| Attempt::Retry {
            status: None,
            detail: redact(&error_chain(&e), self.key()),
            retry_after: None,
        };
        let resp = req.send().await.map_err(network)?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await.map_err(network)?;
        if status.is_success() {
            return Ok(body);
        }
        let code = status.as_u16();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Attempt::Fail(BridgeError::Unauthorized {
                    status: code,
                    what: what.to_string(),
                })
            }
            StatusCode::NOT_FOUND if cluster.is_some() => {
                Attempt::Fail(BridgeError::ClusterNotFound {
                    cluster: cluster.unwrap_or_default().to_string(),
                })
            }
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                status: Some(code),
                detail: "rate limited".into(),
                retry_after,
            },
            s if s.is_server_error() => Attempt::Retry {
                status: Some(code),
                detail: redact(&snippet(&body, 200), self.key()),
                retry_after,
            },
            _ => Attempt::Fail(BridgeError::Http {
                what: what.to_string(),
                status: code,
                detail: redact(&snippet(&body, 200), self.key()),
            }),
        })
    }
}

/// Decodes a listing response. Listings carry no secrets, so serde's message is kept (redacted
/// all the same, in case a proxy echoed the request).
fn decode<T: DeserializeOwned>(body: &[u8], what: &str, key: &str) -> Result<T, BridgeError> {
    serde_json::from_slice(body).map_err(|e| BridgeError::MalformedResponse {
        what: what.to_string(),
        detail: redact(&e.to_string(), key),
    })
}

/// `Retry-After` in seconds; the HTTP-date form is rare for APIs and falls back to backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// The error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_base_urls_and_empty_keys() {
        let key = || Secret::new("k-123456");
        assert!(BridgeClient::new("ftp://x", key(), RetryPolicy::none()).is_err());
        assert!(BridgeClient::new("not a url", key(), RetryPolicy::none()).is_err());
        assert!(BridgeClient::new("https://x/?a=b", key(), RetryPolicy::none()).is_err());
        assert!(matches!(
            BridgeClient::new(DEFAULT_API_URL, Secret::new(""), RetryPolicy::none()),
            Err(BridgeError::MissingApiKey)
        ));
        let c = BridgeClient::new("https://api.example/v1/", key(), RetryPolicy::none()).unwrap();
        assert!(!format!("{c:?}").contains("k-123456"));
    }

    #[test]
    fn parses_retry_after_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
