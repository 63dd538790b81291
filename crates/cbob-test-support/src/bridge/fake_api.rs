//! The fake Crunchy Bridge API: the four endpoints of SPEC §4, with the real API's shapes,
//! bearer-key check, one item per page (so every client is forced to paginate), 404 for unknown
//! clusters, and per-test token behaviour and injected failures. Every request is recorded.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::expiring_proxy::TokenIssues;
use super::{Body, ServerThread, full};
use crate::S3Credentials;

/// A team (`GET /teams`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeTeam {
    pub id: String,
    pub name: String,
    pub is_personal: bool,
}

/// A cluster. Replicas have a `parent_id`; a primary may also list replicas in `nested_replicas`
/// (rendered under its `replicas`, as the API can).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCluster {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub major_version: u32,
    pub nested_replicas: Vec<String>,
}

impl FakeCluster {
    /// A primary cluster of `team_id`.
    pub fn primary(id: &str, team_id: &str) -> Self {
        Self {
            id: id.into(),
            team_id: team_id.into(),
            name: format!("cluster-{id}"),
            parent_id: None,
            major_version: 16,
            nested_replicas: Vec::new(),
        }
    }

    /// A replica of `parent` (non-null `parent_id`).
    pub fn replica(id: &str, team_id: &str, parent: &str) -> Self {
        Self {
            parent_id: Some(parent.into()),
            ..Self::primary(id, team_id)
        }
    }

    /// Lists `ids` under this cluster's `replicas` (they need not be clusters of their own).
    pub fn with_nested_replicas(mut self, ids: &[&str]) -> Self {
        self.nested_replicas = ids.iter().map(|s| s.to_string()).collect();
        self
    }

    fn to_json(&self) -> Value {
        let replicas: Vec<Value> = self
            .nested_replicas
            .iter()
            .map(|r| {
                json!({"id": r, "team_id": self.team_id, "name": format!("cluster-{r}"),
                       "parent_id": self.id, "major_version": self.major_version})
            })
            .collect();
        json!({
            "id": self.id, "team_id": self.team_id, "name": self.name, "parent_id": self.parent_id,
            "major_version": self.major_version, "provider_id": "aws", "region_id": "us-east-1",
            "plan_id": "hobby-2", "is_ha": false, "state": "ready", "replicas": replicas,
        })
    }
}

/// A backup (`GET /clusters/{id}/backups`); `name` is the pgBackRest label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeBackup {
    pub name: String,
    pub started_at: String,
    pub finished_at: String,
    pub lsn_start: String,
    pub lsn_stop: String,
    pub size_bytes: u64,
}

impl FakeBackup {
    /// A backup with this label and plausible other fields.
    pub fn new(label: &str) -> Self {
        Self {
            name: label.into(),
            started_at: "2025-01-01T01:02:03Z".into(),
            finished_at: "2025-01-01T01:05:00Z".into(),
            lsn_start: "0/2000028".into(),
            lsn_stop: "0/2000100".into(),
            size_bytes: 31_457_280,
        }
    }

    fn to_json(&self) -> Value {
        json!({"name": self.name, "started_at": self.started_at, "finished_at": self.finished_at,
               "lsn_start": self.lsn_start, "lsn_stop": self.lsn_stop, "size_bytes": self.size_bytes})
    }
}

/// Where an S3 backup token points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub region: String,
    /// With a leading `/`, as the API sends it.
    pub repo_path: String,
    pub stanza: String,
}

impl S3Location {
    /// In region `us-east-1` (moto's).
    pub fn new(bucket: &str, repo_path: &str, stanza: &str) -> Self {
        Self {
            bucket: bucket.into(),
            region: crate::moto::REGION.into(),
            repo_path: repo_path.into(),
            stanza: stanza.into(),
        }
    }
}

/// A fixed Azure backup token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureToken {
    pub account: String,
    pub container: String,
    pub key: String,
    /// `sas` or `shared`.
    pub key_type: String,
    pub repo_path: String,
    pub stanza: String,
}

impl AzureToken {
    fn to_json(&self) -> Value {
        json!({"type": "azure", "repo_path": self.repo_path, "stanza": self.stanza,
               "azure": {"azure_account": self.account, "azure_container": self.container,
                         "azure_key": self.key, "azure_key_type": self.key_type}})
    }
}

type CredentialFn = Arc<dyn Fn() -> S3Credentials + Send + Sync>;

/// What `POST /clusters/{id}/backup-tokens` answers for a cluster.
#[derive(Clone)]
pub enum TokenReply {
    /// An S3 token whose credentials come from `credentials`, called on every request (plug in
    /// `moto_auth().assume_role().credentials` for real, different STS credentials each time).
    S3 {
        location: S3Location,
        credentials: CredentialFn,
    },
    /// A fixed Azure token.
    Azure(AzureToken),
    /// This JSON document, HTTP 200 (unknown `type`, missing fields, ...).
    Json(Value),
    /// This status and body, verbatim (malformed JSON with 200, a permanent 404 or 500, ...).
    Raw {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
}

impl fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { location, .. } => f
                .debug_struct("S3")
                .field("location", location)
                .finish_non_exhaustive(),
            Self::Azure(a) => f
                .debug_tuple("Azure")
                .field(&a.account)
                .field(&a.container)
                .finish(),
            Self::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Self::Raw { status, .. } => f
                .debug_struct("Raw")
                .field("status", status)
                .finish_non_exhaustive(),
        }
    }
}

impl TokenReply {
    /// An S3 token with credentials from `credentials`, called once per token request.
    pub fn s3_with(
        location: S3Location,
        credentials: impl Fn() -> S3Credentials + Send + Sync + 'static,
    ) -> Self {
        Self::S3 {
            location,
            credentials: Arc::new(credentials),
        }
    }

    /// An S3 token that always carries the same credentials.
    pub fn s3_static(location: S3Location, credentials: S3Credentials) -> Self {
        Self::s3_with(location, move || credentials.clone())
    }

    /// HTTP 200 with a body that is not JSON.
    pub fn malformed() -> Self {
        Self::Raw {
            status: 200,
            body: r#"{"type": "s3", "repo_path": "/x", "aws": {"s3_bucket": "#.into(),
            retry_after: None,
        }
    }

    /// A complete-looking token of type `kind` (e.g. `gcs`).
    pub fn unknown_type(kind: &str) -> Self {
        let mut v = s3_token_json(
            &S3Location::new("bucket", "/repo", "stanza"),
            &dummy_credentials(),
        );
        v["type"] = json!(kind);
        Self::Json(v)
    }

    /// An S3 token without `field`: a top-level name (`stanza`, `repo_path`, `type`, `aws`) or
    /// `aws.<name>` (`aws.s3_token`, ...).
    pub fn s3_missing_field(field: &str) -> Self {
        let mut v = s3_token_json(
            &S3Location::new("bucket", "/repo", "stanza"),
            &dummy_credentials(),
        );
        match field.split_once('.') {
            Some((block, name)) => v[block].as_object_mut().expect("token block").remove(name),
            None => v.as_object_mut().expect("token object").remove(field),
        };
        Self::Json(v)
    }

    /// Always this HTTP status (e.g. 404 for a cluster that vanished).
    pub fn status(status: u16) -> Self {
        Self::Raw {
            status,
            body: json!({"message": format!("fake bridge: status {status}")}).to_string(),
            retry_after: None,
        }
    }
}

fn dummy_credentials() -> S3Credentials {
    S3Credentials {
        access_key_id: "ASIAFAKEFAKEFAKE".into(),
        secret_access_key: "fake-secret".into(),
        session_token: Some("fake-session-token".into()),
        region: crate::moto::REGION.into(),
    }
}

/// The JSON of an S3 backup token as the API sends it.
pub fn s3_token_json(location: &S3Location, creds: &S3Credentials) -> Value {
    json!({
        "type": "s3", "repo_path": location.repo_path, "stanza": location.stanza,
        "aws": {"s3_bucket": location.bucket, "s3_key": creds.access_key_id,
                "s3_key_secret": creds.secret_access_key,
                "s3_token": creds.session_token.clone().unwrap_or_default(),
                "s3_region": location.region}
    })
}

/// A failure injected in front of the normal answer of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
    pub body: String,
}

impl Failure {
    /// HTTP `status` with a JSON error message.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            body: json!({"message": format!("fake bridge: injected HTTP {status}")}).to_string(),
        }
    }

    /// HTTP 429 with `Retry-After: secs`.
    pub fn rate_limited(secs: u64) -> Self {
        Self {
            retry_after: Some(secs),
            ..Self::status(429)
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Whether `Authorization: Bearer <the key>` was present and right.
    pub auth_ok: bool,
    /// The `Accept` header sent.
    pub accept: Option<String>,
    /// The status answered.
    pub status: u16,
}

impl RecordedRequest {
    /// Whether this is `POST /clusters/{cluster}/backup-tokens`.
    pub fn is_token_request_for(&self, cluster: &str) -> bool {
        self.method == "POST" && self.path == format!("/clusters/{cluster}/backup-tokens")
    }

    /// The cluster id in a `/clusters/{id}/...` path.
    pub fn cluster(&self) -> Option<&str> {
        let rest = self.path.strip_prefix("/clusters/")?;
        Some(rest.split('/').next().unwrap_or(rest))
    }
}

#[derive(Default)]
struct State {
    teams: Vec<FakeTeam>,
    clusters: Vec<FakeCluster>,
    backups: HashMap<String, Vec<FakeBackup>>,
    tokens: HashMap<String, TokenReply>,
    failures: HashMap<String, VecDeque<Failure>>,
    requests: Vec<RecordedRequest>,
    issues: Option<TokenIssues>,
    page_size: usize,
}

/// The fake Crunchy Bridge API server. Configure it through `&self` at any time; the server
/// sees changes on its next request.
pub struct FakeBridge {
    server: ServerThread,
    api_key: String,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FakeBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeBridge")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl FakeBridge {
    /// Starts a fake that accepts exactly `Authorization: Bearer <api_key>`.
    pub fn start(api_key: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            page_size: 1,
            ..State::default()
        }));
        let key = api_key.to_string();
        let shared = state.clone();
        let server = ServerThread::spawn("fake-bridge", move |req| {
            handle(shared.clone(), key.clone(), req)
        });
        Self {
            server,
            api_key: api_key.to_string(),
            state,
        }
    }

    /// `http://127.0.0.1:PORT` (`CBOB_CRUNCHY_API_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The key the fake accepts.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a team. Clusters listed without `team_id` are those of the personal team.
    pub fn add_team(&self, id: &str, name: &str, is_personal: bool) {
        self.state().teams.push(FakeTeam {
            id: id.into(),
            name: name.into(),
            is_personal,
        });
    }

    /// Adds a cluster (listed in insertion order).
    pub fn add_cluster(&self, cluster: FakeCluster) {
        self.state().clusters.push(cluster);
    }

    /// Appends backups of a cluster (listed in insertion order).
    pub fn add_backups(&self, cluster_id: &str, backups: impl IntoIterator<Item = FakeBackup>) {
        self.state()
            .backups
            .entry(cluster_id.into())
            .or_default()
            .extend(backups);
    }

    /// Sets what `POST /clusters/{cluster_id}/backup-tokens` answers.
    pub fn set_token(&self, cluster_id: &str, reply: TokenReply) {
        self.state().tokens.insert(cluster_id.into(), reply);
    }

    /// Items per page for `/clusters` and `/backups` (default 1, which makes every list paginate).
    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }

    /// The next `times` requests to `path` (e.g. `/clusters/abc/backup-tokens`, `/teams`;
    /// without query) get `failure` instead of their normal answer.
    pub fn fail_next(&self, path: &str, times: usize, failure: Failure) {
        let mut st = self.state();
        let q = st.failures.entry(path.into()).or_default();
        q.extend(std::iter::repeat_n(failure, times));
    }

    /// Registers the session token of every S3 token handed out from now on with `issues`
    /// (from [`super::ExpiringS3Proxy::issues`]), as issued at that moment.
    pub fn register_tokens_with(&self, issues: TokenIssues) {
        self.state().issues = Some(issues);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// How many backup tokens were requested for `cluster_id` (whatever the answer).
    pub fn token_requests(&self, cluster_id: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.is_token_request_for(cluster_id))
            .count()
    }

    /// The clusters for which any token was requested, each once, in first-request order.
    pub fn clusters_asked_for_tokens(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.state().requests.iter() {
            if r.method == "POST"
                && r.path.ends_with("/backup-tokens")
                && let Some(c) = r.cluster()
                && !out.iter().any(|o| o == c)
            {
                out.push(c.to_string());
            }
        }
        out
    }
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    raw_response(status, body.to_string(), None)
}

fn raw_response(status: u16, body: String, retry_after: Option<u64>) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(full(body)).expect("valid response")
}

fn message(status: u16, msg: &str) -> Response<Body> {
    json_response(status, &json!({ "message": msg }))
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// One page of `items` starting at the `cursor` (an opaque `c<index>`), as
/// `{<field>: [...], has_more, next_cursor}`.
fn page(field: &str, items: Vec<Value>, query: Option<&str>, page_size: usize) -> Response<Body> {
    let start = match query_param(query, "cursor") {
        None => 0,
        Some(c) => match c.strip_prefix('c').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n <= items.len() => n,
            _ => return message(400, "invalid cursor"),
        },
    };
    let end = (start + page_size).min(items.len());
    let has_more = end < items.len();
    let next = has_more.then(|| format!("c{end}"));
    json_response(
        200,
        &json!({ field: items[start..end].to_vec(), "has_more": has_more, "next_cursor": next }),
    )
}

async fn handle(state: Arc<Mutex<State>>, key: String, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let auth_ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {key}"));
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resp = route(&state, &method, &path, query.as_deref(), auth_ok).await;
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .requests
        .push(RecordedRequest {
            method: method.to_string(),
            path,
            query,
            auth_ok,
            accept,
            status: resp.status().as_u16(),
        });
    resp
}

async fn route(
    state: &Arc<Mutex<State>>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    auth_ok: bool,
) -> Response<Body> {
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    if !auth_ok {
        return message(401, "Unauthorized: invalid or missing bearer token");
    }
    if let Some(f) = lock().failures.get_mut(path).and_then(VecDeque::pop_front) {
        return raw_response(f.status, f.body, f.retry_after);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["teams"]) => {
            let st = lock();
            let teams: Vec<Value> = st
                .teams
                .iter()
                .map(|t| json!({"id": t.id, "name": t.name, "is_personal": t.is_personal, "role": "admin"}))
                .collect();
            json_response(200, &json!({ "teams": teams }))
        }
        (&Method::GET, ["clusters"]) => {
            let st = lock();
            // Without team_id the real API lists the personal team only.
            let team = match query_param(query, "team_id") {
                Some(t) => t.to_string(),
                None => match st.teams.iter().find(|t| t.is_personal) {
                    Some(t) => t.id.clone(),
                    None => {
                        return json_response(
                            200,
                            &json!({"clusters": [], "has_more": false, "next_cursor": null}),
                        );
                    }
                },
            };
            if !st.teams.iter().any(|t| t.id == team) {
                return message(404, "team not found");
            }
            let items = st
                .clusters
                .iter()
                .filter(|c| c.team_id == team)
                .map(FakeCluster::to_json)
                .collect();
            page("clusters", items, query, st.page_size)
        }
        (&Method::GET, ["clusters", id, "backups"]) => {
            let st = lock();
            if !st.clusters.iter().any(|c| c.id == *id) {
                return message(404, "cluster not found");
            }
            let items = st
                .backups
                .get(*id)
                .map(|b| b.iter().map(FakeBackup::to_json).collect())
                .unwrap_or_default();
            page("backups", items, query, st.page_size)
        }
        (&Method::POST, ["clusters", id, "backup-tokens"]) => {
            let (reply, issues) = {
                let st = lock();
                if !st.clusters.iter().any(|c| c.id == *id) {
                    return message(404, "cluster not found");
                }
                (st.tokens.get(*id).cloned(), st.issues.clone())
            };
            token_response(id, reply, issues).await
        }
        (_, ["teams"] | ["clusters"] | ["clusters", _, "backups" | "backup-tokens"]) => {
            message(405, "method not allowed")
        }
        _ => message(404, "not found"),
    }
}

async fn token_response(
    cluster: &str,
    reply: Option<TokenReply>,
    issues: Option<TokenIssues>,
) -> Response<Body> {
    match reply {
        // A test forgot to configure it: a non-retried status with a message saying so.
        None => message(
            400,
            &format!("fake bridge: no backup token configured for cluster {cluster}"),
        ),
        Some(TokenReply::S3 {
            location,
            credentials,
        }) => {
            // The closure may block (moto's assume_role runs boto3).
            let creds = match tokio::task::spawn_blocking(move || credentials()).await {
                Ok(c) => c,
                Err(e) => {
                    return message(
                        500,
                        &format!("fake bridge: credential closure panicked: {e}"),
                    );
                }
            };
            if let (Some(issues), Some(token)) = (issues, creds.session_token.as_deref()) {
                issues.register(token);
            }
            json_response(200, &s3_token_json(&location, &creds))
        }
        Some(TokenReply::Azure(a)) => json_response(200, &a.to_json()),
        Some(TokenReply::Json(v)) => json_response(200, &v),
        Some(TokenReply::Raw {
            status,
            body,
            retry_after,
        }) => raw_response(status, body, retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    fn get(api: &FakeBridge, path: &str, key: &str) -> http::Response {
        let port = api.server.addr().port();
        let auth = format!("Bearer {key}");
        http::request(
            "GET",
            port,
            path,
            &[("Authorization", &auth), ("Accept", "application/json")],
            b"",
        )
        .expect("request")
    }

    #[test]
    fn paginates_one_per_page_and_checks_the_key() {
        let api = FakeBridge::start("k1");
        api.add_team("t1", "Personal", true);
        api.add_team("t2", "Acme", false);
        api.add_cluster(FakeCluster::primary("a", "t1"));
        api.add_cluster(FakeCluster::primary("b", "t2"));
        api.add_cluster(FakeCluster::replica("c", "t2", "b"));

        assert_eq!(get(&api, "/teams", "wrong").status, 401);
        let r = get(&api, "/clusters?team_id=t2", "k1");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["clusters"][0]["id"], "b");
        assert_eq!(
            (v["has_more"].as_bool(), v["next_cursor"].as_str()),
            (Some(true), Some("c1"))
        );
        let v: Value =
            serde_json::from_slice(&get(&api, "/clusters?team_id=t2&cursor=c1", "k1").body)
                .unwrap();
        assert_eq!(v["clusters"][0]["parent_id"], "b");
        assert_eq!(v["has_more"], false);
        assert!(v["next_cursor"].is_null());
        // No team_id: the personal team only.
        let v: Value = serde_json::from_slice(&get(&api, "/clusters", "k1").body).unwrap();
        assert_eq!(v["clusters"][0]["id"], "a");
        assert_eq!(get(&api, "/clusters/zzz/backups", "k1").status, 404);

        let reqs = api.requests();
        assert_eq!(reqs.len(), 5);
        assert!(!reqs[0].auth_ok && reqs[0].status == 401);
        assert!(
            reqs[1..]
                .iter()
                .all(|r| r.auth_ok && r.accept.as_deref() == Some("application/json"))
        );
        assert_eq!(reqs[2].query.as_deref(), Some("team_id=t2&cursor=c1"));
    }

    #[test]
    fn tokens_failures_and_recording() {
        let api = FakeBridge::start("k1");
        api.add_team("t1", "P", true);
        api.add_cluster(FakeCluster::primary("a", "t1"));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = calls.clone();
        api.set_token(
            "a",
            TokenReply::s3_with(S3Location::new("bkt", "/r/a", "a"), move || {
                let n = c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                S3Credentials {
                    session_token: Some(format!("tok{n}")),
                    ..dummy_credentials()
                }
            }),
        );
        let issues = TokenIssues::default();
        api.register_tokens_with(issues.clone());
        api.fail_next("/clusters/a/backup-tokens", 1, Failure::rate_limited(7));

        let port = api.server.addr().port();
        let post = || {
            http::request(
                "POST",
                port,
                "/clusters/a/backup-tokens",
                &[("Authorization", "Bearer k1")],
                b"",
            )
            .unwrap()
        };
        let r = post();
        assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
        let v: Value = serde_json::from_slice(&post().body).unwrap();
        assert_eq!(v["aws"]["s3_token"], "tok0");
        assert_eq!(v["repo_path"], "/r/a");
        assert!(issues.is_registered("tok0"));
        assert_eq!(api.token_requests("a"), 2);
        assert_eq!(api.clusters_asked_for_tokens(), ["a"]);

        api.set_token("a", TokenReply::s3_missing_field("aws.s3_token"));
        let v: Value = serde_json::from_slice(&post().body).unwrap();
        assert!(v["aws"].get("s3_token").is_none() && v["aws"]["s3_key"].is_string());
        api.set_token("a", TokenReply::malformed());
        assert!(serde_json::from_slice::<Value>(&post().body).is_err());
        api.clear_requests();
        assert!(api.requests().is_empty());
    }
}
