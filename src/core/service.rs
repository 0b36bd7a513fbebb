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
    CreateModelRequest, CreateModelResult, CreateSamplingSessionRequest,
    CreateSamplingSessionResponse, FinishReasonKind, GetInfoRequest, GetInfoResponse,
    GetSamplerResponse, LoadWeightsRequest, LoraConfig, OptimizerConfig, ServerCapabilities,
    TinkerPath, UntypedApiFuture,
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

    /// Creates a LoRA training client on `base_model`.
    pub fn create_lora_training_client(
        &self,
        base_model: &str,
        options: LoraOptions,
    ) -> ApiFuture<TrainingClient> {
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
                user_metadata: None,
                lora_config: Some(LoraConfig {
                    rank: options.rank,
                    seed: options.seed,
                    train_unembed: options.train_unembed,
                    train_mlp: options.train_mlp,
                    train_attn: options.train_attn,
                }),
                optimizer_config: OptimizerConfig::default(),
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
        self.training_client_from_state(path, false)
    }

    /// A training client resuming a checkpoint's weights and optimizer state.
    pub fn create_training_client_from_state_with_optimizer(
        &self,
        path: &str,
    ) -> ApiFuture<TrainingClient> {
        self.training_client_from_state(path, true)
    }

    fn training_client_from_state(&self, path: &str, optimizer: bool) -> ApiFuture<TrainingClient> {
        if let Err(e) = TinkerPath::parse(path) {
            return ApiFuture::ready(Err(Error::user(e.to_string())));
        }
        let path = path.to_string();
        self.spawn(|core| async move {
            let session = core.session().await?;
            let model_seq_id = session.next_model_seq();
            let body = LoadWeightsRequest {
                model_id: None,
                seq_id: None,
                session_id: Some(session.session_id.clone()),
                model_seq_id: Some(model_seq_id),
                base_model: None,
                user_metadata: None,
                path,
                optimizer,
                optimizer_config: (!optimizer).then(OptimizerConfig::default),
                weights_access_token: None,
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

    fn sampling_client(
        &self,
        model_path: Option<String>,
        base_model: Option<String>,
    ) -> ApiFuture<SamplingClient> {
        self.spawn(|core| async move {
            let session = core.session().await?;
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
                    None => {
                        let req = Request::get(
                            format!("/api/v1/samplers/{}", created.sampling_session_id),
                            Pool::Train,
                            core.config.timeouts.request,
                        );
                        core.send(&req)
                            .await?
                            .json::<GetSamplerResponse>("samplers")?
                            .base_model
                    }
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
