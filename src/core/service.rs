//! [`ServiceClient`]: the entry point. Holds the session and creates training, sampling and
//! REST clients (PROTOCOL.md 3, 11.1, 12.1).

use crate::core::api_future::ApiFuture;
use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::core::events::EventBus;
use crate::core::polling::{poll_until_done, Payload, RequestType};
use crate::core::sampling::SamplingClient;
use crate::core::training::TrainingClient;
use crate::core::transport::{Pool, Request};
use crate::core::types::{
    CreateCustomLossRequest, CreateCustomLossResult, CreateModelRequest, CreateModelResult,
    CreateSamplingSessionRequest, CreateSamplingSessionResponse, CustomLossInput, FinishReasonKind,
    GetInfoRequest, GetInfoResponse, GetSamplerResponse, LoadWeightsRequest, LoraConfig,
    OptimizerConfig, ServerCapabilities, TinkerPath, UntypedApiFuture,
};
use crate::core::ClientCore;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

/// Options of a new LoRA training client (PROTOCOL.md 10.9).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraOptions {
    /// Adapter rank (default 32).
    pub rank: u32,
    /// Adapter init seed.
    pub seed: Option<i64>,
    /// Train the unembedding.
    pub train_unembed: bool,
    /// Train MLP layers.
    pub train_mlp: bool,
    /// Train attention layers.
    pub train_attn: bool,
}

impl Default for LoraOptions {
    fn default() -> Self {
        LoraOptions {
            rank: 32,
            seed: None,
            train_unembed: true,
            train_mlp: true,
            train_attn: true,
        }
    }
}

/// Telemetry queue counters (see [`ServiceClient::telemetry_counters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelemetryCounters {
    /// Events waiting to be sent.
    pub queued: usize,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

/// A point-in-time view of a client (see [`ServiceClient::status`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClientStatus {
    /// The session id, once created.
    pub session_id: Option<String>,
    /// Whether the server ended the session.
    pub session_expired: bool,
    /// Operations, deadline, backoff, last error and last queue state.
    pub progress: crate::core::progress::ProgressSnapshot,
}

/// The entry point: owns the session, its heartbeat, and the progress watchdog shared by
/// every client it creates. Cheap to clone. Creating one performs no I/O.
#[derive(Clone)]
pub struct ServiceClient {
    core: Arc<ClientCore>,
}

impl ServiceClient {
    /// A client running its operations on the current tokio runtime.
    pub fn new(config: Config) -> Result<Self> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::user(
                "ServiceClient::new must be called inside a tokio runtime (or use with_runtime)",
            )
        })?;
        Self::with_runtime(config, rt)
    }

    /// A client running its operations on `runtime`.
    pub fn with_runtime(config: Config, runtime: tokio::runtime::Handle) -> Result<Self> {
        Ok(ServiceClient {
            core: ClientCore::new(config, runtime)?,
        })
    }

    /// The shared core (configuration, transport, progress, events).
    pub(crate) fn core(&self) -> &Arc<ClientCore> {
        &self.core
    }

    /// Counters of the session's telemetry queue; `None` before the session started or
    /// with telemetry off.
    pub fn telemetry_counters(&self) -> Option<TelemetryCounters> {
        self.core.telemetry.get().map(|t| TelemetryCounters {
            queued: t.queued(),
            dropped: t.dropped(),
        })
    }

    /// Subscribe here for queue-state, progress, retry and session events.
    pub fn events(&self) -> &EventBus {
        &self.core.events
    }

    /// Introspection: progress counters, deadline, backoff, last error and queue state.
    pub fn status(&self) -> ClientStatus {
        let session = self.core.session_if_started();
        ClientStatus {
            session_id: session.as_ref().map(|s| s.session_id.clone()),
            session_expired: session.is_some_and(|s| s.is_expired()),
            progress: self.core.progress.snapshot(),
        }
    }

    /// The session id, once the session exists.
    pub fn session_id(&self) -> Option<String> {
        self.core.session_if_started().map(|s| s.session_id.clone())
    }

    fn spawn<T: Send + 'static, F>(&self, f: impl FnOnce(Arc<ClientCore>) -> F) -> ApiFuture<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let fut = f(self.core.clone());
        ApiFuture::spawn(&self.core.runtime, move |_| fut)
    }

    /// The models the server supports.
    pub fn get_server_capabilities(&self) -> ApiFuture<ServerCapabilities> {
        self.spawn(|core| async move {
            let req = Request::get(
                "/api/v1/get_server_capabilities",
                Pool::Train,
                core.config.timeouts.request,
            );
            core.operation(async { core.send(&req).await?.json("get_server_capabilities") })
                .await
        })
    }

    /// Creates a LoRA training client on `base_model` (AdamW, no metadata).
    pub fn create_lora_training_client(
        &self,
        base_model: &str,
        options: LoraOptions,
    ) -> ApiFuture<TrainingClient> {
        self.create_model_full(base_model, options, None, OptimizerConfig::default())
    }

    /// Creates a LoRA training client with run metadata and an optimizer family (6.1,
    /// 10.8): `optimizer` is sent as `optimizer_config` and fixed for the model's lifetime.
    pub fn create_model_full(
        &self,
        base_model: &str,
        options: LoraOptions,
        user_metadata: Option<std::collections::BTreeMap<String, String>>,
        optimizer: OptimizerConfig,
    ) -> ApiFuture<TrainingClient> {
        let optimizer = match optimizer.normalized() {
            Ok(o) => o,
            Err(e) => return ApiFuture::ready(Err(Error::user(e))),
        };
        if !(options.train_unembed || options.train_mlp || options.train_attn) {
            return ApiFuture::ready(Err(Error::user(
                "at least one of train_unembed, train_mlp, train_attn must be true",
            )));
        }
        let base_model = base_model.to_string();
        self.spawn(|core| async move {
            let session = core.session().await?;
            let model_seq_id = session.next_model_seq();
            let body = CreateModelRequest {
                session_id: session.session_id.clone(),
                model_seq_id,
                base_model: base_model.clone(),
                user_metadata: user_metadata.map(string_map),
                lora_config: Some(LoraConfig {
                    rank: options.rank,
                    seed: options.seed,
                    train_unembed: options.train_unembed,
                    train_mlp: options.train_mlp,
                    train_attn: options.train_attn,
                }),
                optimizer_config: optimizer,
                kind: "create_model".into(),
            };
            let req = Request::post_json(
                "/api/v1/create_model",
                &body,
                Pool::Train,
                core.config.timeouts.request,
            );
            let result: CreateModelResult = core
                .operation(submit_and_poll_json(&core, &req, RequestType::CreateModel))
                .await?;
            training_client(&core, result.model_id).await
        })
    }

    /// A training client whose weights come from a training checkpoint (optimizer reset).
    pub fn create_training_client_from_state(&self, path: &str) -> ApiFuture<TrainingClient> {
        self.training_client_from_state_full(FromStateOptions::new(path, false))
    }

    /// A training client resuming a checkpoint's weights and optimizer state.
    pub fn create_training_client_from_state_with_optimizer(
        &self,
        path: &str,
    ) -> ApiFuture<TrainingClient> {
        self.training_client_from_state_full(FromStateOptions::new(path, true))
    }

    /// The Tinker console page of this session, or of all sessions before the session
    /// exists (PROTOCOL.md 20.2).
    pub fn get_console_url(&self) -> String {
        match self.session_id() {
            Some(id) => format!("{CONSOLE_BASE_URL}/sessions/{id}"),
            None => format!("{CONSOLE_BASE_URL}/sessions"),
        }
    }

    /// Creates a server-side custom loss (PROTOCOL.md 5.10) and returns its `loss_id`, to
    /// pass as `forward_backward(data, "custom", {"loss_id": id})`. Only when the server's
    /// `custom_loss_server_side` flag is on; otherwise a user error (this client runs no
    /// traced graphs itself: use `forward_backward_custom` with a client-side loss). The
    /// same loss (name, inputs and graph) may be created once per session.
    pub fn create_custom_loss(
        &self,
        name: String,
        inputs: Vec<CustomLossInput>,
        mut graph: serde_json::Value,
    ) -> ApiFuture<CreateCustomLossResult> {
        if let Err(e) =
            crate::core::training::custom_loss::validate_custom_loss(&name, &inputs, &graph)
        {
            return ApiFuture::ready(Err(e));
        }
        // The wire names Python's operators `operator.x` (not the private `_operator.x`).
        if let Some(nodes) = graph.get_mut("nodes").and_then(|n| n.as_array_mut()) {
            for node in nodes {
                if let Some(t) = node.get("target").and_then(|t| t.as_str()) {
                    if let Some(rest) = t.strip_prefix("_operator.") {
                        node["target"] = format!("operator.{rest}").into();
                    }
                }
            }
        }
        self.spawn(|core| async move {
            let session = core.session().await?;
            if !core.server_config.read().unwrap().custom_loss_server_side {
                return Err(Error::user(
                    "create_custom_loss: this server does not run custom losses                      (client config custom_loss_server_side is false); compute the loss                      client-side with forward_backward_custom",
                ));
            }
            let key = serde_json::to_string(&(&name, &inputs, &graph))
                .map_err(|e| Error::fatal(e.to_string()))?;
            let seq = core.custom_losses.reserve(key.clone(), &name)?;
            let body = CreateCustomLossRequest {
                session_id: session.session_id.clone(),
                custom_loss_seq_id: seq,
                name: name.clone(),
                inputs: inputs.clone(),
                graph,
                kind: "create_custom_loss".into(),
            };
            let req = Request::post_json(
                "/api/v1/create_custom_loss",
                &body,
                Pool::Train,
                core.config.timeouts.request,
            );
            let result: Result<CreateCustomLossResult> = core
                .operation(submit_and_poll_json(
                    &core,
                    &req,
                    RequestType::CreateCustomLoss,
                ))
                .await;
            match result {
                Ok(r) => {
                    crate::core::sanitize::check_server_id(&r.loss_id, "loss id")?;
                    core.custom_losses.insert(
                        r.loss_id.clone(),
                        crate::core::training::custom_loss::RegisteredLoss { name, inputs },
                    );
                    Ok(r)
                }
                Err(e) => {
                    core.custom_losses.release(&key);
                    Err(e)
                }
            }
        })
    }

    /// Resumes a training run: finds its latest training checkpoint (`GET
    /// training_runs/{id}` → `last_checkpoint`, else the newest `training` entry of its
    /// checkpoint list) and creates a training client from it with its optimizer state
    /// (create-via-load). A run without a training checkpoint is a user error.
    pub fn resume_training_run(&self, training_run_id: &str) -> ApiFuture<TrainingClient> {
        self.resume_training_run_opts(training_run_id, true)
    }

    /// [`resume_training_run`](Self::resume_training_run), restoring the optimizer state
    /// only with `optimizer`.
    pub fn resume_training_run_opts(
        &self,
        training_run_id: &str,
        optimizer: bool,
    ) -> ApiFuture<TrainingClient> {
        if training_run_id.is_empty() || training_run_id.contains(['/', '?', '#']) {
            return ApiFuture::ready(Err(Error::user(format!(
                "invalid training run id {training_run_id:?}"
            ))));
        }
        let run_id = training_run_id.to_string();
        let this = self.clone();
        self.spawn(|core| async move {
            let path = latest_training_checkpoint(&core, &run_id).await?;
            this.training_client_from_state_full(FromStateOptions::new(&path, optimizer))
                .await
        })
    }

    /// Create-via-load with every option of 6.8.
    pub fn training_client_from_state_full(
        &self,
        options: FromStateOptions,
    ) -> ApiFuture<TrainingClient> {
        let FromStateOptions {
            path,
            optimizer,
            base_model,
            user_metadata,
            weights_access_token,
            optimizer_config,
        } = options;
        if let Err(e) = TinkerPath::parse(&path) {
            return ApiFuture::ready(Err(Error::user(e.to_string())));
        }
        self.spawn(|core| async move {
            let session = core.session().await?;
            let model_seq_id = session.next_model_seq();
            let body = LoadWeightsRequest {
                model_id: None,
                seq_id: None,
                session_id: Some(session.session_id.clone()),
                model_seq_id: Some(model_seq_id),
                base_model,
                user_metadata: user_metadata.map(string_map),
                path,
                optimizer,
                optimizer_config: if optimizer {
                    None
                } else {
                    Some(optimizer_config.unwrap_or_default())
                },
                weights_access_token,
                kind: "load_weights".into(),
            };
            let req = Request::post_json(
                "/api/v1/load_weights",
                &body,
                Pool::Train,
                core.config.timeouts.request,
            );
            let _: serde_json::Value = core
                .operation(submit_and_poll_json(&core, &req, RequestType::LoadWeights))
                .await?;
            training_client(
                &core,
                format!("{}:train:{model_seq_id}", session.session_id),
            )
            .await
        })
    }

    /// A sampling client for a base model.
    pub fn create_sampling_client_for_base_model(
        &self,
        base_model: &str,
    ) -> ApiFuture<SamplingClient> {
        self.sampling_client(None, Some(base_model.to_string()))
    }

    /// A sampling client for `tinker://…` sampler weights.
    pub fn create_sampling_client(&self, model_path: &str) -> ApiFuture<SamplingClient> {
        if !model_path.starts_with("tinker://") {
            return ApiFuture::ready(Err(Error::user(format!(
                "model_path must start with tinker://, got {model_path:?}"
            ))));
        }
        self.sampling_client(Some(model_path.to_string()), None)
    }

    /// A sampling client on an existing sampling session of this client's session
    /// (`SamplingClient.create(holder, sampling_session_id=...)`, PROTOCOL.md 12.1): no
    /// `create_sampling_session`; the base model is fetched (`GET /api/v1/samplers/{id}`,
    /// 7.2) unless given. Like the SDK's, the client is not a clone (`seq_id`s from 0).
    pub fn sampling_client_for_session(
        &self,
        sampling_session_id: &str,
        base_model: Option<String>,
    ) -> ApiFuture<SamplingClient> {
        if let Err(e) =
            crate::core::sanitize::check_path_id(sampling_session_id, "sampling_session_id", false)
        {
            return ApiFuture::ready(Err(e));
        }
        let id = sampling_session_id.to_string();
        self.spawn(|core| async move {
            core.session().await?;
            core.operation(async {
                let base = match base_model {
                    Some(b) => b,
                    None => fetch_base_model(&core, &id).await?,
                };
                Ok(SamplingClient::new(core.clone(), id, base))
            })
            .await
        })
    }

    fn sampling_client(
        &self,
        model_path: Option<String>,
        base_model: Option<String>,
    ) -> ApiFuture<SamplingClient> {
        self.spawn(|core| async move {
            let session = core.session().await?;
            session.check_can_create("sampling sessions")?;
            let body = CreateSamplingSessionRequest {
                session_id: session.session_id.clone(),
                sampling_session_seq_id: session.next_sampling_seq(),
                base_model: base_model.clone(),
                model_path,
                kind: "create_sampling_session".into(),
            };
            core.operation(async {
                let req = Request::post_json(
                    "/api/v1/create_sampling_session",
                    &body,
                    Pool::Session,
                    core.config.timeouts.request,
                );
                let created: CreateSamplingSessionResponse =
                    core.send(&req).await?.json("create_sampling_session")?;
                crate::core::sanitize::check_server_id(
                    &created.sampling_session_id,
                    "sampling session id",
                )?;
                let base = match base_model {
                    Some(b) => b,
                    None => fetch_base_model(&core, &created.sampling_session_id).await?,
                };
                Ok(SamplingClient::new(
                    core.clone(),
                    created.sampling_session_id,
                    base,
                ))
            })
            .await
        })
    }

    /// Finishes the session with a status and stops background work. Idempotent.
    pub async fn close(&self, status: FinishReasonKind, detail: Option<String>) -> Result<()> {
        self.core.finish_session(status, detail).await
    }
}

/// Base of the Tinker console (PROTOCOL.md 20.2).
pub const CONSOLE_BASE_URL: &str = "https://tinker.thinkingmachines.ai";

/// The console page of a training run (20.2).
pub fn training_run_console_url(training_run_id: &str) -> String {
    format!("{CONSOLE_BASE_URL}/training_runs/{training_run_id}")
}

/// Options of a create-via-load (PROTOCOL.md 6.8, 11.1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FromStateOptions {
    /// `tinker://<run>/weights/<name>` checkpoint.
    pub path: String,
    /// Also restore the optimizer state.
    pub optimizer: bool,
    /// Base model override (must be compatible with the checkpoint).
    pub base_model: Option<String>,
    /// Metadata of the new run.
    pub user_metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Token for another account's checkpoint (sent raw).
    pub weights_access_token: Option<String>,
    /// Optimizer of a weights-only load (default adamw; ignored with `optimizer`).
    pub optimizer_config: Option<OptimizerConfig>,
}

impl FromStateOptions {
    /// A load of `path` with nothing else set.
    pub fn new(path: &str, optimizer: bool) -> Self {
        FromStateOptions {
            path: path.to_string(),
            optimizer,
            ..Default::default()
        }
    }
}

fn string_map(
    m: std::collections::BTreeMap<String, String>,
) -> serde_json::Map<String, serde_json::Value> {
    m.into_iter().map(|(k, v)| (k, v.into())).collect()
}

/// The most checkpoint pages read while looking for a run's latest training checkpoint.
const MAX_CHECKPOINT_PAGES: usize = 100;

/// The `tinker://` path of a run's latest training checkpoint: `last_checkpoint` of `GET
/// training_runs/{id}` when it is a training checkpoint, else the newest `training` entry
/// of `GET training_runs/{id}/checkpoints`.
async fn latest_training_checkpoint(core: &Arc<ClientCore>, run_id: &str) -> Result<String> {
    use crate::core::types::{Checkpoint, CheckpointsListResponse, TrainingRun};
    let timeout = core.config.timeouts.request;
    core.operation(async {
        let req = Request::get(
            format!("/api/v1/training_runs/{run_id}"),
            Pool::Train,
            timeout,
        );
        let run: TrainingRun = core.send(&req).await?.json("training_run")?;
        if let Some(c) = run
            .last_checkpoint
            .filter(|c| c.checkpoint_type == "training")
        {
            return Ok(c.tinker_path);
        }
        let mut best: Option<Checkpoint> = None;
        let mut offset = 0i64;
        for _ in 0..MAX_CHECKPOINT_PAGES {
            let req = Request::get(
                format!("/api/v1/training_runs/{run_id}/checkpoints?limit=100&offset={offset}"),
                Pool::Train,
                timeout,
            );
            let page: CheckpointsListResponse = core.send(&req).await?.json("checkpoints")?;
            let n = page.checkpoints.len() as i64;
            for c in page.checkpoints {
                if c.checkpoint_type == "training" && best.as_ref().is_none_or(|b| c.time >= b.time)
                {
                    best = Some(c);
                }
            }
            let total = page.cursor.as_ref().map_or(0, |c| c.total_count);
            offset += n;
            if n == 0 || offset >= total {
                break;
            }
        }
        best.map(|c| c.tinker_path).ok_or_else(|| {
            Error::user(format!(
                "training run {run_id} has no training checkpoint to resume from (save one \
                 with save_state)"
            ))
        })
    })
    .await
}

/// The base model of sampling session `id` (`GET /api/v1/samplers/{id}`, 7.2).
async fn fetch_base_model(core: &Arc<ClientCore>, id: &str) -> Result<String> {
    let req = Request::get(
        format!("/api/v1/samplers/{id}"),
        Pool::Train,
        core.config.timeouts.request,
    );
    Ok(core
        .send(&req)
        .await?
        .json::<GetSamplerResponse>("samplers")?
        .base_model)
}

/// Submits a future request and polls it to a JSON result.
pub(crate) async fn submit_and_poll_json<T: serde::de::DeserializeOwned>(
    core: &Arc<ClientCore>,
    req: &Request,
    rtype: RequestType,
) -> Result<T> {
    let started = tokio::time::Instant::now();
    let submitted: UntypedApiFuture = core.send(req).await?.json("future submission")?;
    let polls = AtomicU32::new(0);
    let noop = |_: crate::core::types::QueueState, _: Option<String>| {};
    match poll_until_done(
        core,
        &core.config.retry,
        &submitted.request_id,
        rtype,
        started.elapsed(),
        &noop,
        &polls,
    )
    .await?
    {
        Payload::Json(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::fatal(format!("malformed {} result {v}: {e}", rtype.as_str()))
                .with_request_id(&submitted.request_id)
        }),
        Payload::Proto(_) => Err(Error::fatal("server sent protobuf for a JSON result")
            .with_request_id(&submitted.request_id)),
    }
}

async fn training_client(core: &Arc<ClientCore>, model_id: String) -> Result<TrainingClient> {
    let req = Request::post_json(
        "/api/v1/get_info",
        &GetInfoRequest {
            model_id: model_id.clone(),
            kind: "get_info".into(),
        },
        Pool::Train,
        core.config.timeouts.request,
    );
    let info: GetInfoResponse = core
        .operation(async { core.send(&req).await?.json("get_info") })
        .await?;
    Ok(TrainingClient::new(core.clone(), model_id, info))
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("base_url", &self.core.config.base_url)
            .field("session_id", &self.session_id())
            .finish_non_exhaustive()
    }
}
