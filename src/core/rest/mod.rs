//! [`RestClient`] and [`AdminClient`]: the management API (PROTOCOL.md 9, 2.8, 6.9, 7.2,
//! 5.2), one typed method per entry of the method table (`methods.json`, [`methods`]) and a
//! generic call by name ([`RestClient::call_json`]) used by the C ABI.
//!
//! Every call goes through the holder's send path ([`ClientCore::send`]): the `train` pool
//! (the audit log: [`Pool::Redirect`]), HTTP-layer retries 10, the holder retry loop, under
//! the progress guard. A session-less holder ([`RestClient::new`], [`AdminClient::new`]; 3.3)
//! runs startup steps 1-4 (client/config, auth mode, dynamic_config) before its first call
//! and never creates a session; a REST client of a [`ServiceClient`] shares the service's
//! holder and does not create a session either.

pub mod admin;
pub mod methods;
pub mod plain;

pub use admin::AdminClient;
pub use methods::{ArgError, ArgErrorKind, MethodSpec, ParamSpec, PreparedCall};

use crate::core::api_future::ApiFuture;
use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::core::sanitize::{bounded, check_path_id, server_text};
use crate::core::service::ServiceClient;
use crate::core::transport::{new_idempotency_key, Pool, Request};
use crate::core::types::{
    AccessScope, AssignSessionProjectRequest, AuditLogResponse, BillingUsageResponse,
    CheckpointsListResponse, CopyWeightsRequest, CopyWeightsResponse,
    CurrentCheckpointStorageUsageResponse, DynamicConfig, ExternalWeightsUrlsResponse,
    GetSamplerResponse, GetServerCapabilitiesResponse, GetSessionResponse, ListSessionsResponse,
    SessionSearchRequest, SessionSearchResponse, SetCheckpointTtlRequest, TinkerPath,
    TraceExportPollResponse, TrainingRun, TrainingRunsResponse, WeightsInfoRequest,
    WeightsInfoResponse, WhoamiResponse,
};
use crate::core::ClientCore;
use reqwest::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The longest JWT `whoami` decodes (a server-issued token is far smaller).
const MAX_IDENTITY_JWT_BYTES: usize = 16 * 1024;

/// Management calls on a holder: its own session-less one ([`RestClient::new`]) or its
/// ServiceClient's ([`ServiceClient::create_rest_client`]). Cheap to clone.
#[derive(Clone)]
pub struct RestClient {
    pub(crate) core: Arc<ClientCore>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base_url", &self.core.config.base_url)
            .field("sessionless", &self.core.sessionless)
            .finish_non_exhaustive()
    }
}

type CacheKey = (tokio::runtime::Id, String, [u8; 32], [u8; 32]);

/// Session-less holders by (runtime, base URL, SHA-256 of the API key, SHA-256 of the rest
/// of the configuration). Weak: a holder lives while a client uses it.
fn holder_cache() -> &'static Mutex<HashMap<CacheKey, Weak<ClientCore>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Weak<ClientCore>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The holder of a directly constructed RestClient/AdminClient: the cached one for the same
/// runtime, base URL, key and configuration, else a new session-less one. No I/O.
pub(crate) fn sessionless_holder(
    config: Config,
    runtime: tokio::runtime::Handle,
) -> Result<Arc<ClientCore>> {
    let key_hash = sha256(
        config
            .credentials
            .plain_key()
            .map(|k| k.expose().to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    // `Config`'s Debug never shows the key; it covers every other setting.
    let rest_hash = sha256(format!("{config:?}").as_bytes());
    let key = (runtime.id(), config.base_url.clone(), key_hash, rest_hash);
    let mut cache = holder_cache().lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|_, w| w.strong_count() > 0);
    if let Some(core) = cache.get(&key).and_then(Weak::upgrade) {
        return Ok(core);
    }
    let core = ClientCore::new_sessionless(config, runtime)?;
    cache.insert(key, Arc::downgrade(&core));
    Ok(core)
}

/// Forgets the cache entries of dropped holders. Run when a session-less holder is dropped,
/// so the process-wide cache keeps no allocation of a freed client (a `Weak` keeps its
/// block alive). Skipped when the cache is busy: the next lookup prunes instead.
pub(crate) fn forget_dead_holders() {
    if let Ok(mut cache) = holder_cache().try_lock() {
        cache.retain(|_, w| w.strong_count() > 0);
        if cache.is_empty() {
            // Free the table too: an empty map keeps its allocation, which leak checkers
            // report at exit (hashbrown's pointer into the block reads as "possibly lost").
            cache.shrink_to_fit();
        }
    }
}

/// Whether `s` is a calendar date `YYYY-MM-DD`.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = &s[r];
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// Whether `s` is an RFC 3339 / ISO 8601 datetime `YYYY-MM-DD[T ]HH:MM[:SS[.frac]][Z|±HH:MM]`
/// (the timezone required when `require_tz`).
pub fn is_rfc3339(s: &str, require_tz: bool) -> bool {
    if s.len() < 16 || s.len() > 64 || !s.is_char_boundary(10) || !is_date(&s[..10]) {
        return false;
    }
    let rest = &s[10..];
    let Some(rest) = rest.strip_prefix(['T', 't', ' ']) else {
        return false;
    };
    let (time, tz) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let two = |t: &str, max: u32| t.len() == 2 && t.parse::<u32>().is_ok_and(|v| v <= max);
    let mut parts = time.splitn(3, ':');
    let (Some(h), Some(m)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !two(h, 23) || !two(m, 59) {
        return false;
    }
    if let Some(sec) = parts.next() {
        let (whole, frac) = sec.split_once('.').unwrap_or((sec, "0"));
        if !two(whole, 60) || frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    match tz {
        "" => !require_tz,
        "Z" | "z" => true,
        offset => {
            let o = &offset[1..];
            match o.split_once(':') {
                Some((h, m)) => two(h, 23) && two(m, 59),
                None => o.len() == 4 && two(&o[..2], 23) && two(&o[2..], 59),
            }
        }
    }
}

/// Appends a query string (form-encoded) to `path`.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}

/// Cancels the inner operation when the generic call is cancelled (dropped).
struct CancelOnDrop<T: Send + 'static>(ApiFuture<T>);

impl<T: Send + 'static> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl ClientCore {
    /// Before a REST call: a session-less holder runs startup steps 1-4 once (3.3:
    /// client/config and the auth mode, then dynamic_config; a 404 means defaults) and
    /// starts its telemetry under `sessionless-{uuid}` (no SESSION_START). A ServiceClient's
    /// holder only needs client/config (done by every send); it never starts a session for
    /// a REST call.
    pub(crate) async fn rest_ready(self: &Arc<Self>) -> Result<()> {
        if !self.sessionless {
            return Ok(());
        }
        self.sessionless_ready
            .get_or_try_init(|| async {
                self.ensure_client_config().await?;
                let dynamic: DynamicConfig = self
                    .fetch_config(
                        "/api/v1/client/dynamic_config",
                        Pool::Session,
                        "client/dynamic_config",
                    )
                    .await?;
                *self.dynamic_config.write().unwrap() = dynamic;
                let id = format!("sessionless-{}", crate::core::rand::uuid4());
                self.start_telemetry_as(&id, false);
                Ok::<_, Error>(())
            })
            .await
            .map(|_| ())
    }
}

impl RestClient {
    /// A session-less REST client (PROTOCOL.md 3.3) on the current tokio runtime. No I/O:
    /// client/config and dynamic_config are fetched before the first call; no session is
    /// ever created. Clients built with the same runtime, base URL, API key and configuration
    /// share one holder while any of them lives.
    pub fn new(config: Config) -> Result<Self> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::user(
                "RestClient::new must be called inside a tokio runtime (or use with_runtime)",
            )
        })?;
        Self::with_runtime(config, rt)
    }

    /// [`new`](Self::new) running its operations on `runtime`.
    pub fn with_runtime(config: Config, runtime: tokio::runtime::Handle) -> Result<Self> {
        Ok(RestClient {
            core: sessionless_holder(config, runtime)?,
        })
    }

    /// A client on an existing holder (a ServiceClient's).
    pub(crate) fn from_core(core: Arc<ClientCore>) -> Self {
        RestClient { core }
    }

    /// Subscribe here for retry and progress events of this client's holder.
    pub fn events(&self) -> &crate::core::EventBus {
        &self.core.events
    }

    /// Whether this client runs on a session-less holder of its own.
    pub fn is_sessionless(&self) -> bool {
        self.core.sessionless
    }

    fn spawn<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> ApiFuture<T> {
        ApiFuture::spawn(&self.core.runtime, move |_| fut)
    }

    /// Spawns the JSON conversion of a typed call (the generic call).
    pub(crate) fn spawn_value<T: Send + 'static>(
        &self,
        inner: ApiFuture<T>,
        to_json: impl FnOnce(T) -> Result<Value> + Send + 'static,
    ) -> ApiFuture<Value> {
        self.spawn(async move {
            let guard = CancelOnDrop(inner.clone());
            let r = inner.await;
            drop(guard);
            to_json(r?)
        })
    }

    /// Calls a method of the table by name with JSON arguments (see [`methods`]). The result
    /// is the response model as JSON, `null` for methods without one, a JSON string for
    /// `copy_weights` and `export_session_trace`. Argument errors fail the future with a
    /// user error; use [`prepare`](Self::prepare) to tell them apart before submitting.
    pub fn call_json(&self, method: &str, args: Value) -> ApiFuture<Value> {
        match self.prepare(method, args) {
            Ok(call) => self.call_prepared(call),
            Err(e) => ApiFuture::ready(Err(e.into())),
        }
    }

    /// Validates a generic call against the table (methods offered by the REST client).
    pub fn prepare(
        &self,
        method: &str,
        args: Value,
    ) -> std::result::Result<PreparedCall, ArgError> {
        methods::prepare("rest", method, args)
    }

    /// Runs a validated call.
    pub fn call_prepared(&self, call: PreparedCall) -> ApiFuture<Value> {
        methods::dispatch(self, call)
    }

    /// One REST request through the holder's send path, its body decoded as `T`.
    fn fetch<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        req: Request,
        what: &'static str,
    ) -> ApiFuture<T> {
        let core = self.core.clone();
        self.spawn(async move {
            core.operation(async {
                core.rest_ready().await?;
                core.send(&req).await?.json(what)
            })
            .await
        })
    }

    /// One REST request whose response is ignored.
    fn fire(&self, req: Request) -> ApiFuture<()> {
        let core = self.core.clone();
        self.spawn(async move {
            core.operation(async {
                core.rest_ready().await?;
                core.send(&req).await.map(drop)
            })
            .await
        })
    }

    fn request(
        &self,
        method: Method,
        path: String,
        body: Option<&impl serde::Serialize>,
    ) -> Request {
        let timeout = self.core.config.timeouts.request;
        let mut req = match body {
            Some(b) => Request::post_json(path, b, Pool::Train, timeout),
            None => Request::get(path, Pool::Train, timeout),
        };
        if method != Method::GET && req.idempotency_key.is_none() {
            req.idempotency_key = Some(new_idempotency_key());
        }
        req.method = method;
        req
    }

    fn get(&self, path: String) -> Request {
        self.request(Method::GET, path, None::<&()>)
    }

    /// Training runs, newest first (9.1).
    pub fn list_training_runs(
        &self,
        limit: i64,
        offset: i64,
        access_scope: AccessScope,
        project_id: Option<&str>,
    ) -> ApiFuture<TrainingRunsResponse> {
        let path = with_query(
            "/api/v1/training_runs",
            &[
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
                ("access_scope", Some(access_scope.as_str().into())),
                ("project_id", project_id.map(str::to_string)),
            ],
        );
        self.fetch(self.get(path), "training_runs")
    }

    /// One training run (9.2).
    pub fn get_training_run(
        &self,
        training_run_id: &str,
        access_scope: AccessScope,
    ) -> ApiFuture<TrainingRun> {
        if let Err(e) = check_path_id(training_run_id, "training run id", false) {
            return ApiFuture::ready(Err(e));
        }
        let path = with_query(
            &format!("/api/v1/training_runs/{training_run_id}"),
            &[("access_scope", Some(access_scope.as_str().into()))],
        );
        self.fetch(self.get(path), "training_run")
    }

    /// The training run of a `tinker://` path (9.2).
    pub fn get_training_run_by_tinker_path(
        &self,
        tinker_path: &str,
        access_scope: AccessScope,
    ) -> ApiFuture<TrainingRun> {
        match parse_path(tinker_path) {
            Ok(p) => self.get_training_run(&p.training_run_id, access_scope),
            Err(e) => ApiFuture::ready(Err(e)),
        }
    }

    /// Checkpoints of one run (9.3).
    pub fn list_checkpoints(&self, training_run_id: &str) -> ApiFuture<CheckpointsListResponse> {
        if let Err(e) = check_path_id(training_run_id, "training run id", false) {
            return ApiFuture::ready(Err(e));
        }
        let path = format!("/api/v1/training_runs/{training_run_id}/checkpoints");
        self.fetch(self.get(path), "checkpoints")
    }

    /// All checkpoints of the caller, newest first (9.4).
    pub fn list_user_checkpoints(
        &self,
        limit: i64,
        offset: i64,
    ) -> ApiFuture<CheckpointsListResponse> {
        let path = with_query(
            "/api/v1/checkpoints",
            &[
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
            ],
        );
        self.fetch(self.get(path), "checkpoints")
    }

    fn checkpoint_path(training_run_id: &str, checkpoint_id: &str) -> Result<String> {
        check_path_id(training_run_id, "training run id", false)?;
        check_path_id(checkpoint_id, "checkpoint id", true)?;
        Ok(format!(
            "/api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}"
        ))
    }

    fn checkpoint_path_of(tinker_path: &str) -> Result<(TinkerPath, String)> {
        let p = parse_path(tinker_path)?;
        let path = Self::checkpoint_path(&p.training_run_id, &p.checkpoint_id())?;
        Ok((p, path))
    }

    /// Deletes one checkpoint (9.5); `checkpoint_id` is e.g. `weights/step-100`.
    pub fn delete_checkpoint(&self, training_run_id: &str, checkpoint_id: &str) -> ApiFuture<()> {
        match Self::checkpoint_path(training_run_id, checkpoint_id) {
            Ok(path) => self.fire(self.request(Method::DELETE, path, None::<&()>)),
            Err(e) => ApiFuture::ready(Err(e)),
        }
    }

    /// Deletes the checkpoint at a `tinker://` path (9.5).
    pub fn delete_checkpoint_from_tinker_path(&self, tinker_path: &str) -> ApiFuture<()> {
        match Self::checkpoint_path_of(tinker_path) {
            Ok((_, path)) => self.fire(self.request(Method::DELETE, path, None::<&()>)),
            Err(e) => ApiFuture::ready(Err(e)),
        }
    }

    /// Makes a checkpoint public (9.6).
    pub fn publish_checkpoint_from_tinker_path(&self, tinker_path: &str) -> ApiFuture<()> {
        match Self::checkpoint_path_of(tinker_path) {
            Ok((_, path)) => {
                self.fire(self.request(Method::POST, format!("{path}/publish"), None::<&()>))
            }
            Err(e) => ApiFuture::ready(Err(e)),
        }
    }

    /// Makes a checkpoint private (9.6).
    pub fn unpublish_checkpoint_from_tinker_path(&self, tinker_path: &str) -> ApiFuture<()> {
        match Self::checkpoint_path_of(tinker_path) {
            Ok((_, path)) => {
                self.fire(self.request(Method::DELETE, format!("{path}/publish"), None::<&()>))
            }
            Err(e) => ApiFuture::ready(Err(e)),
        }
    }

    /// Sets a checkpoint's expiry, or clears it with `None` (9.7; body key always present).
    /// The range (3600 s … 10 years) is checked by the server, as with the SDK.
    pub fn set_checkpoint_ttl_from_tinker_path(
        &self,
        tinker_path: &str,
        ttl_seconds: Option<i64>,
    ) -> ApiFuture<()> {
        match Self::checkpoint_path_of(tinker_path) {
            Ok((_, path)) => self.fire(self.request(
                Method::PUT,
                format!("{path}/ttl"),
                Some(&SetCheckpointTtlRequest { ttl_seconds }),
            )),
            Err(e) => ApiFuture::ready(Err(e)),
        }
    }

    /// Signed download URLs of an external checkpoint (9.8); the checkpoint id must start
    /// with `external_weights/` (checked here).
    pub fn get_external_weights_urls(
        &self,
        tinker_path: &str,
    ) -> ApiFuture<ExternalWeightsUrlsResponse> {
        let (p, path) = match Self::checkpoint_path_of(tinker_path) {
            Ok(x) => x,
            Err(e) => return ApiFuture::ready(Err(e)),
        };
        if !p.checkpoint_id().starts_with("external_weights/") {
            return ApiFuture::ready(Err(Error::user(format!(
                "get_external_weights_urls needs an external checkpoint path \
                 (tinker://<training_run_id>/external_weights/<name>), got {:?}",
                bounded(tinker_path, 256)
            ))));
        }
        self.fetch(
            self.get(format!("{path}/external_weights_urls")),
            "external_weights_urls",
        )
    }

    /// Base model and LoRA settings of a checkpoint (9.9); works for public checkpoints of
    /// other users.
    pub fn get_weights_info_by_tinker_path(
        &self,
        tinker_path: &str,
    ) -> ApiFuture<WeightsInfoResponse> {
        let req = self.request(
            Method::POST,
            "/api/v1/weights_info".into(),
            Some(&WeightsInfoRequest {
                tinker_path: tinker_path.to_string(),
            }),
        );
        self.fetch(req, "weights_info")
    }

    /// Session ids (9.10).
    pub fn list_sessions(
        &self,
        limit: i64,
        offset: i64,
        access_scope: AccessScope,
    ) -> ApiFuture<ListSessionsResponse> {
        let path = with_query(
            "/api/v1/sessions",
            &[
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
                ("access_scope", Some(access_scope.as_str().into())),
            ],
        );
        self.fetch(self.get(path), "sessions")
    }

    /// One session's runs and samplers (9.10).
    pub fn get_session(
        &self,
        session_id: &str,
        access_scope: AccessScope,
    ) -> ApiFuture<GetSessionResponse> {
        if let Err(e) = check_path_id(session_id, "session id", false) {
            return ApiFuture::ready(Err(e));
        }
        let path = with_query(
            &format!("/api/v1/sessions/{session_id}"),
            &[("access_scope", Some(access_scope.as_str().into()))],
        );
        self.fetch(self.get(path), "session")
    }

    /// Moves a session into a project (9.10).
    pub fn assign_session_project(&self, session_id: &str, project_id: &str) -> ApiFuture<()> {
        if let Err(e) = check_path_id(session_id, "session id", false) {
            return ApiFuture::ready(Err(e));
        }
        self.fire(self.request(
            Method::PUT,
            format!("/api/v1/sessions/{session_id}/project"),
            Some(&AssignSessionProjectRequest {
                project_id: project_id.to_string(),
            }),
        ))
    }

    /// Exports a session trace (9.10): polls every `retry.trace_export_poll_interval` (5 s)
    /// until `ready` (returns the signed URL) or `failed` (an error with the server's text);
    /// the first `pending` logs a WARNING.
    pub fn export_session_trace(&self, session_id: &str) -> ApiFuture<String> {
        if let Err(e) = check_path_id(session_id, "session id", false) {
            return ApiFuture::ready(Err(e));
        }
        let session_id = session_id.to_string();
        let req = self.get(format!("/api/v1/sessions/{session_id}/trace_export"));
        let core = self.core.clone();
        self.spawn(async move {
            core.operation(async {
                core.rest_ready().await?;
                let mut first = true;
                loop {
                    let poll: TraceExportPollResponse =
                        core.send(&req).await?.json("trace_export")?;
                    match poll.status.as_str() {
                        "ready" => {
                            return poll.url.ok_or_else(|| {
                                Error::fatal("trace export is ready but the server sent no url")
                            })
                        }
                        "failed" => {
                            return Err(Error::fatal(format!(
                                "Trace export failed for session {session_id}: {}",
                                server_text(poll.error.as_deref().unwrap_or("None"))
                            )))
                        }
                        "pending" => {}
                        other => {
                            return Err(Error::fatal(format!(
                                "malformed trace_export response: unknown status {:?}",
                                bounded(other, 64)
                            )))
                        }
                    }
                    if first {
                        tracing::warn!(
                            "Building trace export for session: {session_id} (this may take a while)"
                        );
                        first = false;
                    }
                    tokio::time::sleep(core.config.retry.trace_export_poll_interval).await;
                }
            })
            .await
        })
    }

    /// Searches sessions (9.11, experimental): `None` fields omitted, defaults written.
    pub fn search_sessions(
        &self,
        request: SessionSearchRequest,
    ) -> ApiFuture<SessionSearchResponse> {
        if let Err(why) = request.validate() {
            return ApiFuture::ready(Err(Error::user(format!("search_sessions: {why}"))));
        }
        let req = self.request(
            Method::POST,
            "/api/v1/sessions/search".into(),
            Some(&request),
        );
        self.fetch(req, "sessions/search")
    }

    /// Copies a checkpoint into a project by reference (6.9); returns the new tinker path.
    /// Destination: `destination_project_id`, else the configuration's project id
    /// (`TINKER_PROJECT_ID`), else a user error. One `X-Idempotency-Key` for the whole call,
    /// reused by every retry layer; the token travels in `X-Tinker-Weights-Access-Token`.
    pub fn copy_weights(
        &self,
        path: &str,
        destination_project_id: Option<&str>,
        ttl_seconds: Option<i64>,
        weights_access_token: Option<&str>,
    ) -> ApiFuture<String> {
        let Some(destination) = destination_project_id
            .map(str::to_string)
            .or_else(|| self.core.config.project_id.clone())
        else {
            return ApiFuture::ready(Err(Error::user(
                "Provide destination_project_id or set TINKER_PROJECT_ID",
            )));
        };
        let mut req = self.request(
            Method::POST,
            "/api/v1/copy_weights".into(),
            Some(&CopyWeightsRequest {
                destination_project_id: Some(destination),
                source_path: path.to_string(),
                ttl_seconds,
            }),
        );
        if let Some(token) = weights_access_token {
            if token.is_empty() || !token.bytes().all(|c| c.is_ascii_graphic()) {
                return ApiFuture::ready(Err(Error::user(
                    "weights_access_token must be non-empty visible ASCII (it is sent in a header)",
                )));
            }
            req.headers
                .push(("x-tinker-weights-access-token", token.to_string()));
        }
        let key = req.idempotency_key.clone();
        let source = path.to_string();
        let core = self.core.clone();
        self.spawn(async move {
            core.operation(async {
                core.rest_ready().await?;
                // The holder loop would take a new key per re-issue: keep the call's one.
                let keep_key = move |r: &mut Request| r.idempotency_key = key.clone();
                let resp: CopyWeightsResponse = core
                    .send_refreshing(&req, None, &core.config.retry, Some(&keep_key))
                    .await?
                    .json("copy_weights")?;
                tracing::info!(
                    "Copied {} to {}",
                    bounded(&source, 256),
                    bounded(&resp.tinker_path, 256)
                );
                Ok(resp.tinker_path)
            })
            .await
        })
    }

    /// A sampler's base model and weights path (7.2).
    pub fn get_sampler(&self, sampler_id: &str) -> ApiFuture<GetSamplerResponse> {
        if let Err(e) = check_path_id(sampler_id, "sampler id", false) {
            return ApiFuture::ready(Err(e));
        }
        self.fetch(
            self.get(format!("/api/v1/samplers/{sampler_id}")),
            "samplers",
        )
    }

    /// The models the server supports (5.2).
    pub fn get_server_capabilities(&self) -> ApiFuture<GetServerCapabilitiesResponse> {
        self.fetch(
            self.get("/api/v1/get_server_capabilities".into()),
            "get_server_capabilities",
        )
    }

    /// The caller's identity, decoded from the JWT the holder holds (or a configured
    /// `passport-` JWT credential); no request of its own (2.8). A plain API key with JWT
    /// auth off is a user error.
    pub fn whoami(&self) -> ApiFuture<WhoamiResponse> {
        let core = self.core.clone();
        self.spawn(async move {
            core.operation(async {
                core.rest_ready().await?;
                core.ensure_client_config().await?;
                let jwt = core
                    .auth
                    .identity_jwt(&core.transport)
                    .await?
                    .ok_or_else(|| {
                        Error::user(
                            "whoami requires JWT auth, but the server has it disabled and the \
                         credential is a plain API key.",
                        )
                    })?;
                whoami_from_jwt(&jwt)
            })
            .await
        })
    }

    /// Audit log entries (9.12). Sent on the redirect pool: a 302 to a signed storage URL is
    /// followed without any credential or SDK header.
    pub fn get_audit_log(
        &self,
        event_type: &str,
        day: Option<&str>,
    ) -> ApiFuture<AuditLogResponse> {
        let path = with_query(
            "/api/v1/audit",
            &[
                ("event_type", Some(event_type.to_string())),
                ("day", day.map(str::to_string)),
            ],
        );
        let mut req = self.get(path);
        req.pool = Pool::Redirect;
        self.fetch(req, "audit")
    }

    /// Billing usage events of a window (9.12); datetimes are RFC 3339 strings, sent as
    /// given.
    pub fn get_billing_usage(
        &self,
        starting_on: &str,
        ending_before: &str,
    ) -> ApiFuture<BillingUsageResponse> {
        for (name, v) in [
            ("starting_on", starting_on),
            ("ending_before", ending_before),
        ] {
            if !is_rfc3339(v, false) {
                return ApiFuture::ready(Err(Error::user(format!(
                    "get_billing_usage: {name} must be an RFC 3339 datetime"
                ))));
            }
        }
        let path = with_query(
            "/api/v1/billing/usage/events",
            &[
                ("starting_on", Some(starting_on.to_string())),
                ("ending_before", Some(ending_before.to_string())),
            ],
        );
        self.fetch(self.get(path), "billing/usage/events")
    }

    /// Current checkpoint storage usage (9.12).
    pub fn get_current_checkpoint_storage_usage(
        &self,
        project_id: Option<&str>,
    ) -> ApiFuture<CurrentCheckpointStorageUsageResponse> {
        let path = with_query(
            "/api/v1/billing/usage/checkpoints/current",
            &[("project_id", project_id.map(str::to_string))],
        );
        self.fetch(self.get(path), "billing/usage/checkpoints/current")
    }
}

fn parse_path(tinker_path: &str) -> Result<TinkerPath> {
    TinkerPath::parse(tinker_path).map_err(|e| Error::user(e.to_string()))
}

/// The identity of 2.8 from a JWT's claims: `sub`, `tml:organization:{org_id}`, `email`
/// (empty → `None`).
pub fn whoami_from_jwt(jwt: &str) -> Result<WhoamiResponse> {
    if jwt.len() > MAX_IDENTITY_JWT_BYTES {
        return Err(Error::fatal(format!(
            "whoami: the JWT is longer than {MAX_IDENTITY_JWT_BYTES} bytes"
        )));
    }
    let claims = crate::core::auth::jwt_claims(jwt)
        .ok_or_else(|| Error::fatal("whoami: the JWT's claims cannot be decoded"))?;
    let text = |name: &str| -> Option<String> {
        match claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let user_urn = text("sub").ok_or_else(|| Error::fatal("whoami: the JWT has no sub claim"))?;
    let org_id =
        text("org_id").ok_or_else(|| Error::fatal("whoami: the JWT has no org_id claim"))?;
    Ok(WhoamiResponse {
        user_urn: bounded(&user_urn, 1024),
        org_urn: format!("tml:organization:{}", bounded(&org_id, 1024)),
        email: text("email")
            .filter(|e| !e.is_empty())
            .map(|e| bounded(&e, 1024)),
    })
}

impl ServiceClient {
    /// A RestClient sharing this client's holder (transport, auth, retry policy, progress);
    /// its calls never create a session.
    pub fn create_rest_client(&self) -> RestClient {
        RestClient::from_core(self.core().clone())
    }

    /// Copies a checkpoint into this client's project (6.9, 9.14): the destination is the
    /// configuration's project id, else a user error. Returns the copy's tinker path.
    pub fn copy_weights(
        &self,
        path: &str,
        ttl_seconds: Option<i64>,
        weights_access_token: Option<&str>,
    ) -> ApiFuture<String> {
        if self.core().config.project_id.is_none() {
            return ApiFuture::ready(Err(Error::user(
                "copy_weights needs a project: set project_id in the configuration (or TINKER_PROJECT_ID)",
            )));
        }
        self.create_rest_client()
            .copy_weights(path, None, ttl_seconds, weights_access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_datetimes() {
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2023-02-29"));
        assert!(!is_date("2023-2-28"));
        assert!(is_rfc3339("2026-07-01T00:00:00Z", true));
        assert!(is_rfc3339("2026-07-01T00:00:00.123+02:00", true));
        assert!(is_rfc3339("2026-07-01T00:00", false));
        assert!(!is_rfc3339("2026-07-01T00:00", true));
        assert!(!is_rfc3339("2026-07-01", false));
        assert!(!is_rfc3339("2026-07-01T25:00:00Z", false));
        assert!(!is_rfc3339("2026-07-01T00:00:00Zjunk", false));
    }

    #[test]
    fn whoami_claims() {
        use base64::Engine;
        let enc = |v: serde_json::Value| {
            format!(
                "eyJhbGciOiJub25lIn0.{}.sig",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            )
        };
        let w = whoami_from_jwt(&enc(serde_json::json!({"sub": "tml:organization_user:abc",
            "org_id": "o1", "email": ""})))
        .unwrap();
        assert_eq!(w.user_urn, "tml:organization_user:abc");
        assert_eq!(w.org_urn, "tml:organization:o1");
        assert_eq!(w.email, None);
        let w = whoami_from_jwt(&enc(serde_json::json!({"sub": "u", "org_id": 7,
            "email": "a@b.c"})))
        .unwrap();
        assert_eq!(w.org_urn, "tml:organization:7");
        assert_eq!(w.email.as_deref(), Some("a@b.c"));
        assert!(whoami_from_jwt(&enc(serde_json::json!({"org_id": "o"}))).is_err());
        assert!(whoami_from_jwt("not-a-jwt").is_err());
        assert!(whoami_from_jwt(&"a".repeat(MAX_IDENTITY_JWT_BYTES + 1)).is_err());
    }

    #[test]
    fn queries_are_encoded_and_none_is_left_out() {
        assert_eq!(
            with_query("/p", &[("a", Some("x y+z".into())), ("b", None)]),
            "/p?a=x+y%2Bz"
        );
        assert_eq!(with_query("/p", &[("b", None)]), "/p");
    }
}
