//! [`TrainingClient`]: ordered training operations on one model (PROTOCOL.md 6, 11).
//!
//! Every operation reserves its request id(s) synchronously, in call order; the wire
//! `seq_id` is request id + 1. Sends happen strictly in request-id order (a "turn"), each
//! waiting until every lower id was sent and acknowledged; results are awaited
//! independently. A failed or cancelled send still passes the turn on.

use crate::core::api_future::ApiFuture;
use crate::core::chunking;
use crate::core::codec;
use crate::core::config::RetryPolicy;
use crate::core::error::{Error, Result};
use crate::core::fb_encode;
use crate::core::polling::{poll_until_done, Payload, RequestType};
use crate::core::progress::OpStatus;
use crate::core::queue_state::{ObserverKind, QueueObserver};
use crate::core::requests::SaveStateInput;
use crate::core::sampling::SamplingClient;
use crate::core::transport::{Body, Pool, Request};
use crate::core::types::{
    AdamParams, Datum, DimuonParams, ForwardBackwardOutput, GetInfoResponse, LoadWeightsRequest,
    LossConfigValue, OptimStepRequest, OptimStepResult, QueueState, SaveWeightsExternalRequest,
    SaveWeightsExternalResult, SaveWeightsForSamplerRequest, SaveWeightsRequest, TinkerPath,
    UntypedApiFuture, WeightsResult,
};
use crate::core::ClientCore;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::{oneshot, watch};

pub(crate) struct TrainingInner {
    pub(crate) core: Arc<ClientCore>,
    pub(crate) model_id: String,
    pub(crate) info: GetInfoResponse,
    next_request_id: Mutex<i64>,
    turn: Arc<watch::Sender<i64>>,
    observer: QueueObserver,
    /// Set once a custom-loss pass failed or was aborted (the official SDK's
    /// `_request_error`): every later training request fails with a `User` error naming it.
    poisoned: Mutex<Option<String>>,
}

impl TrainingInner {
    /// Poisons the client (the first cause is kept).
    pub(crate) fn poison(&self, cause: impl Into<String>) {
        let mut p = self.poisoned.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(cause.into());
        }
    }

    /// `Err(User)` once poisoned.
    pub(crate) fn check_poisoned(&self) -> Result<()> {
        match &*self.poisoned.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(cause) => Err(Error::user(format!(
                "a previous custom-loss request failed; this training client is poisoned and \
                 accepts no further training requests (cause: {cause})"
            ))),
        }
    }
}

/// A training client for one model. Cheap to clone; clones share the request order.
#[derive(Clone)]
pub struct TrainingClient {
    pub(crate) inner: Arc<TrainingInner>,
    /// Retry policy of calls made through this handle (`None`: the client's).
    retry: Option<Arc<RetryPolicy>>,
}

/// Runs when an ordered operation fails (see [`TrainingClient::ordered_in`]).
pub(crate) type OnError = Box<dyn FnOnce(&Error) + Send>;

#[path = "custom_loss.rs"]
pub mod custom_loss;
pub use custom_loss::{CustomLossOutput, CustomLossPass};

/// Rebuilds a request for a holder-loop re-issue (see [`crate::core::retry::Refresh`]).
type RefreshFn = Arc<dyn Fn(&mut Request) + Send + Sync>;

/// Passes the send turn on when dropped, also if the operation failed or was cancelled
/// before its turn came (then a small task waits for the turn and passes it on).
pub(crate) struct TurnGuard {
    turn: Arc<watch::Sender<i64>>,
    first: i64,
    end: i64,
    done: bool,
}

impl TurnGuard {
    /// Splits a reservation into its first `n` ids and the rest (two consecutive turns).
    pub(crate) fn split(mut self, n: usize) -> (TurnGuard, TurnGuard) {
        let mid = (self.first + n as i64).min(self.end);
        self.done = true;
        let a = TurnGuard {
            turn: self.turn.clone(),
            first: self.first,
            end: mid,
            done: false,
        };
        let b = TurnGuard {
            turn: self.turn.clone(),
            first: mid,
            end: self.end,
            done: false,
        };
        (a, b)
    }

    async fn wait(&self) {
        let mut rx = self.turn.subscribe();
        let _ = rx.wait_for(|t| *t >= self.first).await;
    }

    fn pass(&mut self) {
        let end = self.end;
        self.turn.send_modify(|t| *t = (*t).max(end));
        self.done = true;
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if *self.turn.borrow() >= self.first {
            self.pass();
            return;
        }
        let (turn, first, end) = (self.turn.clone(), self.first, self.end);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut rx = turn.subscribe();
                let _ = rx.wait_for(|t| *t >= first).await;
                turn.send_modify(|t| *t = (*t).max(end));
            });
        }
    }
}

impl TrainingClient {
    pub(crate) fn new(core: Arc<ClientCore>, model_id: String, info: GetInfoResponse) -> Self {
        let observer =
            QueueObserver::new(ObserverKind::Training(model_id.clone()), Default::default());
        TrainingClient {
            retry: None,
            inner: Arc::new(TrainingInner {
                core,
                model_id,
                info,
                next_request_id: Mutex::new(0),
                turn: Arc::new(watch::channel(0).0),
                observer,
                poisoned: Mutex::new(None),
            }),
        }
    }

    /// A handle on the same model (same request order) whose calls use `policy` instead of
    /// the client's retry policy: `training.with_retry_policy(p).optim_step(…)` sets it for
    /// one call. The progress timeout stays the client's (it is client-wide by design).
    pub fn with_retry_policy(&self, policy: RetryPolicy) -> TrainingClient {
        TrainingClient {
            inner: self.inner.clone(),
            retry: Some(Arc::new(policy)),
        }
    }

    fn policy(&self) -> Arc<RetryPolicy> {
        self.retry
            .clone()
            .unwrap_or_else(|| self.inner.core.retry_policy.clone())
    }

    /// The model id (= training run id).
    pub fn model_id(&self) -> &str {
        &self.inner.model_id
    }

    /// Model information, fetched once at creation.
    pub fn get_info(&self) -> &GetInfoResponse {
        &self.inner.info
    }

    /// The base model name.
    pub fn base_model(&self) -> Option<&str> {
        self.inner.info.model_data.model_name.as_deref()
    }

    /// The current queue state of this client's requests.
    pub fn queue_state(&self) -> crate::core::queue_state::QueueSnapshot {
        self.inner.observer.snapshot()
    }

    /// Reserves the next `n` request ids (the next turn), in call order.
    pub(crate) fn reserve(&self, n: usize) -> TurnGuard {
        let mut next = self.inner.next_request_id.lock().unwrap();
        let first = *next;
        *next += n as i64;
        TurnGuard {
            turn: self.inner.turn.clone(),
            first,
            end: first + n as i64,
            done: false,
        }
    }

    /// Runs an ordered operation: wait for the turn, send `requests` (chunks 2..N concurrently,
    /// then chunk 1), pass the turn on, then poll every future and decode.
    fn ordered<T, B, D>(&self, rtype: RequestType, n: usize, build: B, decode: D) -> ApiFuture<T>
    where
        T: Send + 'static,
        B: FnOnce(i64) -> Result<Vec<Request>> + Send + 'static,
        D: FnOnce(Vec<(Payload, UntypedApiFuture)>) -> Result<T> + Send + 'static,
    {
        // A poisoned client fails at once (before reserving a turn it would never pass on).
        if let Err(e) = self.inner.check_poisoned() {
            return ApiFuture::ready(Err(e));
        }
        let guard = self.reserve(n.max(1));
        self.ordered_in(guard, None, rtype, build, decode)
    }

    /// [`ordered`](Self::ordered) in an already reserved turn. `on_error` runs when the
    /// operation fails (custom-loss phases: poison the client, release the held turn).
    pub(crate) fn ordered_in<T, B, R, D>(
        &self,
        guard: TurnGuard,
        on_error: Option<OnError>,
        rtype: RequestType,
        build: B,
        decode: D,
    ) -> ApiFuture<T>
    where
        T: Send + 'static,
        B: FnOnce(i64) -> Result<R> + Send + 'static,
        R: Into<Turn> + Send + 'static,
        D: FnOnce(Vec<(Payload, UntypedApiFuture)>) -> Result<T> + Send + 'static,
    {
        self.ordered_refreshing(guard, on_error, rtype, None, build, decode)
    }

    /// [`ordered_in`](Self::ordered_in) whose holder-loop re-issues are rebuilt by `refresh`.
    fn ordered_refreshing<T, B, R, D>(
        &self,
        mut guard: TurnGuard,
        on_error: Option<OnError>,
        rtype: RequestType,
        refresh: Option<RefreshFn>,
        build: B,
        decode: D,
    ) -> ApiFuture<T>
    where
        T: Send + 'static,
        B: FnOnce(i64) -> Result<R> + Send + 'static,
        R: Into<Turn> + Send + 'static,
        D: FnOnce(Vec<(Payload, UntypedApiFuture)>) -> Result<T> + Send + 'static,
    {
        if let Err(e) = self.inner.check_poisoned() {
            return ApiFuture::ready(Err(e));
        }
        let inner = self.inner.clone();
        let status = Arc::new(OpStatus::new(rtype.as_str()));
        let policy = self.policy();
        ApiFuture::spawn(&inner.core.runtime.clone(), move |handle| async move {
            let core = inner.core.clone();
            if let Some(s) = core.session_if_started() {
                s.check_usable()?;
            }
            core.tracked_operation(&status, async {
                // seq_id = request id + 1 (the model's creation is sequence 0).
                let requests = build(guard.first + 1);
                {
                    let _waiting = core.progress.enter_waiting();
                    guard.wait().await;
                }
                // Poisoned while queued (a custom-loss pass before this one failed).
                inner.check_poisoned()?;
                let turn: Turn = requests?.into();
                let parallel = core.server_config.read().unwrap().parallel_fwdbwd_chunks;
                let submitted = async {
                    // Nothing is sent before every chunk passed its checks (a user error
                    // in chunk 3 must not leave chunk 2 applied on the server).
                    for check in turn.checks {
                        check.await.map_err(|_| encoder_gone())??;
                    }
                    submit_all(&core, turn.requests, parallel, &status, &policy, refresh).await
                }
                .await;
                // The turn passes whether or not the send succeeded (11.3): a failed send
                // leaves a gap in seq_id, it does not block later requests.
                guard.pass();
                let futures = submitted?;
                handle.set_request_id(&futures[0].request_id);
                *status.request_id.lock().unwrap() = Some(futures[0].request_id.clone());
                let roundtrip = status.started.elapsed();
                let first_id = futures[0].request_id.clone();
                let observe = |state: QueueState, reason: Option<String>| {
                    *status.queue_state.lock().unwrap() = Some(state);
                    inner
                        .observer
                        .report(&core, &first_id, rtype.as_str(), state, reason);
                };
                let mut results = Vec::with_capacity(futures.len());
                // A future the server lost (410: expired or unknown) fails the operation with
                // `ErrorKind::Expired`; the request is not resubmitted (PROTOCOL.md 8.1.3, 13.9).
                for f in &futures {
                    let payload = poll_until_done(
                        &core,
                        &policy,
                        &f.request_id,
                        rtype,
                        roundtrip,
                        &observe,
                        &status.polls,
                    )
                    .await?;
                    results.push((payload, f.clone()));
                }
                decode(results)
            })
            .await
            .inspect_err(|e| {
                if let Some(f) = on_error {
                    f(e);
                }
            })
        })
    }

    /// forward_backward: loss and gradients accumulated for the next `optim_step`.
    /// `loss_fn` is a loss name (`cross_entropy`, `importance_sampling`, `ppo`, …).
    pub fn forward_backward(
        &self,
        data: Vec<Datum>,
        loss_fn: &str,
        loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
    ) -> ApiFuture<ForwardBackwardOutput> {
        self.forward_impl(data, loss_fn, loss_fn_config, false)
    }

    /// forward: the loss and outputs without gradient accumulation.
    pub fn forward(
        &self,
        data: Vec<Datum>,
        loss_fn: &str,
        loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
    ) -> ApiFuture<ForwardBackwardOutput> {
        self.forward_impl(data, loss_fn, loss_fn_config, true)
    }

    fn forward_impl(
        &self,
        data: Vec<Datum>,
        loss_fn: &str,
        config: Option<BTreeMap<String, LossConfigValue>>,
        forward_only: bool,
    ) -> ApiFuture<ForwardBackwardOutput> {
        if data.is_empty() {
            return ApiFuture::ready(Err(Error::user("No data provided")));
        }
        if let Err(e) = self.inner.check_poisoned() {
            return ApiFuture::ready(Err(e));
        }
        if loss_fn == "custom" {
            if let Err(e) = self.inner.core.custom_losses.check(&data, config.as_ref()) {
                return ApiFuture::ready(Err(e));
            }
        }
        let ranges = self.chunk_ranges(&data);
        let guard = self.reserve(ranges.len().max(1));
        self.forward_in(guard, None, data, ranges, loss_fn, config, forward_only, Ok)
    }

    /// The chunk boundaries of a forward/backward over `data` (server limits).
    pub(crate) fn chunk_ranges(&self, data: &[Datum]) -> Vec<std::ops::Range<usize>> {
        let (max_len, max_bytes) = {
            let sc = self.inner.core.server_config.read().unwrap();
            (
                sc.fwdbwd_max_chunk_len.max(1) as usize,
                sc.fwdbwd_max_chunk_bytes_count as usize,
            )
        };
        chunking::chunk_ranges(data, max_len, max_bytes)
    }

    /// A forward/backward with given chunk `ranges` in a reserved turn (`guard` holds
    /// `ranges.len()` ids); `post` adjusts the combined output.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_in(
        &self,
        guard: TurnGuard,
        on_error: Option<OnError>,
        data: Vec<Datum>,
        ranges: Vec<std::ops::Range<usize>>,
        loss_fn: &str,
        config: Option<BTreeMap<String, LossConfigValue>>,
        forward_only: bool,
        post: impl FnOnce(ForwardBackwardOutput) -> Result<ForwardBackwardOutput> + Send + 'static,
    ) -> ApiFuture<ForwardBackwardOutput> {
        let rtype = if forward_only {
            RequestType::Forward
        } else {
            RequestType::ForwardBackward
        };
        let params = FbParams {
            model_id: self.inner.model_id.clone(),
            loss_fn: loss_fn.to_string(),
            config: config.unwrap_or_default(),
            forward_only,
        };
        let timeout = self.inner.core.config.timeouts.request;
        let core = self.inner.core.clone();
        self.ordered_in(
            guard,
            on_error,
            rtype,
            move |first_seq| {
                let (compress, parallel) = {
                    let sc = core.server_config.read().unwrap();
                    (sc.proto_compress_fwdbwd, sc.parallel_fwdbwd_chunks)
                };
                encode_chunks(data, ranges, params, first_seq, timeout, compress, parallel)
            },
            |results| {
                let outputs = results
                    .into_iter()
                    .map(|(p, f)| decode_fb(p).map_err(|e| e.with_request_id(f.request_id)))
                    .collect::<Result<Vec<_>>>()?;
                post(chunking::combine(outputs))
            },
        )
    }

    /// optim_step: applies the accumulated gradients with Adam.
    pub fn optim_step(&self, params: AdamParams) -> ApiFuture<OptimStepResult> {
        self.optim_step_params(Some(params), None)
    }

    /// optim_step with Dimuon parameters, sent as `optimizer_params` (10.8); NaN/Inf and
    /// out-of-range values are rejected before anything is sent.
    pub fn optim_step_dimuon(&self, params: DimuonParams) -> ApiFuture<OptimStepResult> {
        if let Err(e) = params.validate() {
            return ApiFuture::ready(Err(Error::user(e)));
        }
        self.optim_step_params(None, Some(params.to_wire()))
    }

    /// The Tinker console page of this training run (PROTOCOL.md 20.2).
    pub fn get_console_url(&self) -> String {
        crate::core::service::training_run_console_url(&self.inner.model_id)
    }

    /// optim_step sending `adam_params` or another family's `optimizer_params` (10.8).
    pub(crate) fn optim_step_params(
        &self,
        adam_params: Option<AdamParams>,
        optimizer_params: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> ApiFuture<OptimStepResult> {
        let model_id = self.inner.model_id.clone();
        let timeout = self.inner.core.config.timeouts.request;
        self.ordered(
            RequestType::OptimStep,
            1,
            move |seq| {
                let body = OptimStepRequest {
                    model_id,
                    seq_id: Some(seq),
                    adam_params,
                    optimizer_params,
                    kind: "optim_step".into(),
                };
                Ok(vec![Request::post_json(
                    "/api/v1/optim_step",
                    &body,
                    Pool::Train,
                    timeout,
                )])
            },
            decode_json,
        )
    }

    /// save_state: a training checkpoint (weights and optimizer state); returns its path.
    pub fn save_state(&self, name: &str) -> ApiFuture<String> {
        self.save_state_with(SaveStateInput::named(name))
    }

    pub(crate) fn save_state_impl(&self, options: SaveStateInput) -> ApiFuture<String> {
        let model_id = self.inner.model_id.clone();
        let name = options.path;
        let timeout = self.inner.core.config.timeouts.request;
        self.ordered(
            RequestType::SaveWeights,
            1,
            move |seq| {
                let body = SaveWeightsRequest {
                    model_id,
                    path: Some(name),
                    seq_id: Some(seq),
                    ttl_seconds: options.ttl_seconds,
                    overwrite: options.overwrite,
                    user_metadata: options.user_metadata,
                    kind: "save_weights".into(),
                };
                Ok(vec![Request::post_json(
                    "/api/v1/save_weights",
                    &body,
                    Pool::Train,
                    timeout,
                )])
            },
            |r| weights_path(decode_json::<WeightsResult>(r)?),
        )
    }

    /// save_weights_for_sampler: named sampler weights; returns their path.
    pub fn save_weights_for_sampler(&self, name: &str) -> ApiFuture<String> {
        self.save_weights_for_sampler_full(name, None, None)
    }

    /// save_weights_for_sampler with `ttl_seconds` and `user_metadata` (6.6, named form).
    pub fn save_weights_for_sampler_full(
        &self,
        name: &str,
        ttl_seconds: Option<i64>,
        user_metadata: Option<BTreeMap<String, String>>,
    ) -> ApiFuture<String> {
        let model_id = self.inner.model_id.clone();
        let name = name.to_string();
        let timeout = self.inner.core.config.timeouts.request;
        self.ordered(
            RequestType::SaveWeightsForSampler,
            1,
            move |seq| {
                let body = SaveWeightsForSamplerRequest {
                    model_id,
                    path: Some(name),
                    sampling_session_seq_id: None,
                    kind: "snapshot".into(),
                    seq_id: Some(seq),
                    ttl_seconds,
                    user_metadata,
                    request_type: "save_weights_for_sampler".into(),
                };
                Ok(vec![Request::post_json(
                    "/api/v1/save_weights_for_sampler",
                    &body,
                    Pool::Train,
                    timeout,
                )])
            },
            |r| weights_path(decode_json::<WeightsResult>(r)?),
        )
    }

    /// save_weights_external: the weights in an external format (e.g. HuggingFace) under
    /// `tinker://<run>/external_weights/<name>` (6.7). At most 10 age recipients.
    pub fn save_weights_external(
        &self,
        name: &str,
        ttl_seconds: Option<i64>,
        age_encryption_recipients: Option<Vec<String>>,
    ) -> ApiFuture<SaveWeightsExternalResult> {
        if let Some(r) = &age_encryption_recipients {
            if r.len() > 10 {
                return ApiFuture::ready(Err(Error::user(format!(
                    "age_encryption_recipients takes at most 10 recipients, got {}",
                    r.len()
                ))));
            }
        }
        let model_id = self.inner.model_id.clone();
        let name = name.to_string();
        let timeout = self.inner.core.config.timeouts.request;
        self.ordered(
            RequestType::SaveWeightsExternal,
            1,
            move |seq| {
                let body = SaveWeightsExternalRequest {
                    model_id,
                    path: name,
                    seq_id: Some(seq),
                    ttl_seconds,
                    age_encryption_recipients,
                    kind: "save_weights_external".into(),
                };
                Ok(vec![Request::post_json(
                    "/api/v1/save_weights_external",
                    &body,
                    Pool::Train,
                    timeout,
                )])
            },
            decode_json::<SaveWeightsExternalResult>,
        )
    }

    /// Saves the current weights for sampling (a `snapshot`) and returns a sampling client
    /// bound to them.
    pub fn save_weights_and_get_sampling_client(&self) -> ApiFuture<SamplingClient> {
        self.save_weights_and_get_sampling_client_kind("snapshot")
    }

    /// The ephemeral save of `kind` (`snapshot` or `inflight`, 6.6) and a sampling client
    /// bound to the returned sampling session.
    pub fn save_weights_and_get_sampling_client_kind(
        &self,
        kind: &str,
    ) -> ApiFuture<SamplingClient> {
        let kind = kind.to_string();
        let inner = self.inner.clone();
        let timeout = inner.core.config.timeouts.request;
        let session = inner.core.session_if_started();
        let model_id = inner.model_id.clone();
        if let Err(e) = self.inner.check_poisoned() {
            return ApiFuture::ready(Err(e));
        }
        // A fresh sampling_session_seq_id on every holder-loop attempt (PROTOCOL.md 6.6).
        let refresh: Option<RefreshFn> = session.clone().map(|s| {
            Arc::new(move |req: &mut Request| {
                if let Body::Json(bytes) = &req.body {
                    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(bytes) {
                        v["sampling_session_seq_id"] = s.next_sampling_seq().into();
                        if let Ok(b) = serde_json::to_vec(&v) {
                            req.body = Body::Json(b.into());
                        }
                    }
                }
            }) as RefreshFn
        });
        let guard = self.reserve(1);
        self.ordered_refreshing(
            guard,
            None,
            RequestType::SaveWeightsForSampler,
            refresh,
            move |seq| {
                let session =
                    session.ok_or_else(|| Error::fatal("training client without a session"))?;
                let sampling_seq = session.next_sampling_seq();
                Ok(vec![sampler_save_request(
                    model_id,
                    kind,
                    Some(sampling_seq),
                    seq,
                    timeout,
                )])
            },
            move |r| {
                let result: WeightsResult = decode_json(r)?;
                let id = result.sampling_session_id.ok_or_else(|| {
                    Error::fatal("save_weights_for_sampler returned no sampling_session_id")
                })?;
                let base = inner.info.model_data.model_name.clone().unwrap_or_default();
                Ok(SamplingClient::new(inner.core.clone(), id, base))
            },
        )
    }

    /// load_state: loads a training checkpoint's weights (optimizer state reset). Resolves
    /// to the server's answer (`path`, `model_id`), as the official SDK's `load_state` does.
    pub fn load_state(&self, path: &str) -> ApiFuture<crate::core::types::LoadWeightsResponse> {
        self.load_impl(path, false, None)
    }

    /// load_state_with_optimizer: loads weights and optimizer state. Resolves to the
    /// server's answer, like [`load_state`](Self::load_state).
    pub fn load_state_with_optimizer(
        &self,
        path: &str,
    ) -> ApiFuture<crate::core::types::LoadWeightsResponse> {
        self.load_impl(path, true, None)
    }

    /// A legacy load (`model_id` + `seq_id`, 6.8), with an optional `weights_access_token`
    /// for a checkpoint under another account.
    pub(crate) fn load_impl(
        &self,
        path: &str,
        optimizer: bool,
        weights_access_token: Option<String>,
    ) -> ApiFuture<crate::core::types::LoadWeightsResponse> {
        if let Err(e) = TinkerPath::parse(path) {
            return ApiFuture::ready(Err(Error::user(e.to_string())));
        }
        let model_id = self.inner.model_id.clone();
        let path = path.to_string();
        let timeout = self.inner.core.config.timeouts.request;
        self.ordered(
            RequestType::LoadWeights,
            1,
            move |seq| {
                let body = LoadWeightsRequest {
                    model_id: Some(model_id),
                    seq_id: Some(seq),
                    session_id: None,
                    model_seq_id: None,
                    base_model: None,
                    user_metadata: None,
                    path,
                    optimizer,
                    optimizer_config: None,
                    weights_access_token,
                    kind: "load_weights".into(),
                };
                Ok(vec![Request::post_json(
                    "/api/v1/load_weights",
                    &body,
                    Pool::Train,
                    timeout,
                )])
            },
            decode_json::<crate::core::types::LoadWeightsResponse>,
        )
    }
}

/// An ephemeral `save_weights_for_sampler` request of `kind` (6.6).
fn sampler_save_request(
    model_id: String,
    kind: String,
    sampling_seq: Option<i64>,
    seq: i64,
    timeout: std::time::Duration,
) -> Request {
    let body = SaveWeightsForSamplerRequest {
        model_id,
        path: None,
        sampling_session_seq_id: sampling_seq,
        kind,
        seq_id: Some(seq),
        ttl_seconds: None,
        user_metadata: None,
        request_type: "save_weights_for_sampler".into(),
    };
    Request::post_json(
        "/api/v1/save_weights_for_sampler",
        &body,
        Pool::Train,
        timeout,
    )
}

/// A protobuf POST; with `compress`, the body is zstd-compressed and sent with
/// `Content-Encoding: zstd` (`proto_compress_fwdbwd`, PROTOCOL.md 14.1).
fn proto_request(
    path: &str,
    bytes: Vec<u8>,
    timeout: std::time::Duration,
    compress: bool,
) -> Request {
    let mut headers = crate::core::transport::ExtraHeaders::new();
    let body = if compress {
        headers.push((
            reqwest::header::CONTENT_ENCODING,
            reqwest::header::HeaderValue::from_static("zstd"),
        ));
        ruzstd::encoding::compress_to_vec(
            bytes.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        )
    } else {
        bytes
    };
    Request {
        method: reqwest::Method::POST,
        path: path.into(),
        body: Body::Proto(body.into()),
        pool: Pool::Train,
        timeout,
        idempotency_key: Some(crate::core::transport::new_idempotency_key()),
        accept_proto: false,
        headers,
        announced_response_bytes: None,
    }
}

/// Sends the requests of one turn; with `parallel`, chunks 2..N concurrently, then chunk 1.
/// Each request is sent as soon as its body is ready (and the turn has come).
async fn submit_all(
    core: &Arc<ClientCore>,
    requests: Vec<Outgoing>,
    parallel: bool,
    status: &Arc<OpStatus>,
    policy: &Arc<RetryPolicy>,
    refresh: Option<RefreshFn>,
) -> Result<Vec<UntypedApiFuture>> {
    let submit = |out: Outgoing| {
        let (core, status, policy, refresh) = (
            core.clone(),
            status.clone(),
            policy.clone(),
            refresh.clone(),
        );
        async move {
            let req = out.request().await?;
            // forward_backward bodies wait for the dispatch byte budget (11.4, 12.4).
            let _bytes = match &req.body {
                Body::Proto(b) => Some(core.fwdbwd_budget.acquire(b.len() as u64).await),
                _ => None,
            };
            core.send_refreshing(&req, Some(&status), &policy, refresh.as_deref())
                .await?
                .json::<UntypedApiFuture>("future submission")
        }
    };
    let n = requests.len();
    if n == 0 {
        return Err(Error::fatal("an ordered operation without requests"));
    }
    if !parallel || n == 1 {
        let mut out = Vec::with_capacity(n);
        for r in requests {
            out.push(submit(r).await?);
        }
        return Ok(out);
    }
    let mut requests = requests.into_iter();
    let first = requests.next().expect("n > 1");
    // A JoinSet aborts the other submissions if this operation is dropped or cancelled.
    let mut rest = tokio::task::JoinSet::new();
    for (i, r) in requests.enumerate() {
        let f = submit(r);
        rest.spawn(async move { (i + 1, f.await) });
    }
    let mut out: Vec<Option<UntypedApiFuture>> = vec![None; n];
    while let Some(joined) = rest.join_next().await {
        let (i, r) = joined.map_err(|e| Error::fatal(format!("submission task failed: {e}")))?;
        out[i] = Some(r?);
    }
    out[0] = Some(submit(first).await?);
    Ok(out
        .into_iter()
        .map(|f| f.expect("every chunk submitted"))
        .collect())
}

/// A request of a turn, or one whose body is still being encoded on another thread.
pub(crate) enum Outgoing {
    /// Built.
    Ready(Request),
    /// A forward_backward chunk being encoded ([`encode_chunks`]).
    Encoding(oneshot::Receiver<Request>),
}

impl Outgoing {
    async fn request(self) -> Result<Request> {
        match self {
            Outgoing::Ready(r) => Ok(r),
            Outgoing::Encoding(rx) => rx.await.map_err(|_| encoder_gone()),
        }
    }
}

/// The requests of one ordered operation, as its `build` step returns them.
pub(crate) struct Turn {
    requests: Vec<Outgoing>,
    /// One per forward_backward chunk: its data passed the checks of
    /// [`fb_encode::check`] (or the user error).
    checks: Vec<oneshot::Receiver<Result<()>>>,
}

impl From<Vec<Request>> for Turn {
    fn from(requests: Vec<Request>) -> Turn {
        Turn {
            requests: requests.into_iter().map(Outgoing::Ready).collect(),
            checks: Vec::new(),
        }
    }
}

/// An encoding thread ended without its answer (it panicked).
fn encoder_gone() -> Error {
    Error::new(
        crate::core::ErrorKind::Panic,
        "internal panic: the forward_backward encoder stopped",
    )
}

/// The request fields every chunk of a forward/backward shares.
struct FbParams {
    model_id: String,
    loss_fn: String,
    config: BTreeMap<String, LossConfigValue>,
    forward_only: bool,
}

/// Below this estimated batch size the chunks are encoded on the calling task (a thread
/// hand-off would cost more than the encode).
const INLINE_ENCODE_BYTES: usize = 256 * 1024;

/// Starts encoding the chunks `ranges` of `data` (seq ids from `first_seq`) and returns
/// their requests as they will come. Every chunk is first checked ([`fb_encode::check`]:
/// its outcome goes to the turn's `checks`), then encoded straight into its body. A large
/// batch is encoded on blocking threads, as many as the machine has cores (at most one per
/// chunk), which check all chunks first and then encode them in the order they will be
/// sent: with `parallel`, chunks 2…N first and chunk 1 last (it goes out only after the
/// others were accepted, 11.4).
fn encode_chunks(
    data: Vec<Datum>,
    ranges: Vec<std::ops::Range<usize>>,
    params: FbParams,
    first_seq: i64,
    timeout: std::time::Duration,
    compress: bool,
    parallel: bool,
) -> Result<Turn> {
    let n = ranges.len();
    // Every chunk's seq_id must fit the wire's int32, checked before anything is encoded.
    let first = fb_encode::wire_seq_id(first_seq)?;
    fb_encode::wire_seq_id(first_seq + n.saturating_sub(1) as i64)?;
    let mut checks = Vec::with_capacity(n);
    let mut requests = Vec::with_capacity(n);
    let mut outlets = Vec::with_capacity(n);
    for _ in 0..n {
        let (check_tx, check_rx) = oneshot::channel();
        let (body_tx, body_rx) = oneshot::channel();
        checks.push(check_rx);
        requests.push(Outgoing::Encoding(body_rx));
        outlets.push(Outlet {
            check: Some(check_tx),
            body: Some(body_tx),
            checked: Checking::Waiting,
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    if parallel && n > 1 {
        order.rotate_left(1);
    }
    let estimate: usize = data.iter().map(codec::estimate_datum_bytes).sum();
    let encoder = Arc::new(Encoder {
        data,
        ranges,
        params,
        first_seq: first,
        timeout,
        compress,
        order,
        next_check: AtomicUsize::new(0),
        next_encode: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        outlets: Mutex::new(outlets),
        checked: Condvar::new(),
    });
    if estimate < INLINE_ENCODE_BYTES {
        encoder.work();
    } else {
        let workers = std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1)
            .clamp(1, n.max(1));
        for _ in 0..workers {
            let encoder = encoder.clone();
            tokio::task::spawn_blocking(move || encoder.work());
        }
    }
    Ok(Turn { requests, checks })
}

/// A chunk's state in the [`Encoder`].
enum Checking {
    /// Not checked yet (a worker is checking it once the check counter passed it).
    Waiting,
    /// Checked: ready to encode.
    Passed(fb_encode::Checked),
    /// Failed its check, or taken by the worker encoding it.
    Done,
}

/// Where one chunk's outcomes go.
struct Outlet {
    check: Option<oneshot::Sender<Result<()>>>,
    body: Option<oneshot::Sender<Request>>,
    checked: Checking,
}

/// The chunks of one forward/backward call and the workers' shared progress.
struct Encoder {
    data: Vec<Datum>,
    ranges: Vec<std::ops::Range<usize>>,
    params: FbParams,
    first_seq: i32,
    timeout: std::time::Duration,
    compress: bool,
    /// Chunk indices in send order.
    order: Vec<usize>,
    next_check: AtomicUsize,
    next_encode: AtomicUsize,
    /// A chunk failed its check: the call fails, nothing more is encoded.
    failed: AtomicBool,
    outlets: Mutex<Vec<Outlet>>,
    checked: Condvar,
}

impl Encoder {
    fn outlets(&self) -> std::sync::MutexGuard<'_, Vec<Outlet>> {
        self.outlets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One worker: claims checks until none is left, then encodes in send order. A chunk
    /// to encode whose check another worker still runs is waited for (that worker is
    /// running, so the wait ends).
    fn work(&self) {
        let n = self.ranges.len();
        loop {
            let i = self.next_check.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            let range = self.ranges[i].clone();
            // A panic must still answer the check (a worker may wait for this chunk).
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fb_encode::check(&self.data[range.clone()], range.start)
            }))
            .unwrap_or_else(|_| Err(encoder_gone()));
            let mut outlets = self.outlets();
            let outlet = &mut outlets[i];
            let tell = match result {
                Ok(c) => {
                    outlet.checked = Checking::Passed(c);
                    Ok(())
                }
                Err(e) => {
                    outlet.checked = Checking::Done;
                    self.failed.store(true, Ordering::Relaxed);
                    Err(e)
                }
            };
            if let Some(tx) = outlet.check.take() {
                let _ = tx.send(tell);
            }
            drop(outlets);
            self.checked.notify_all();
        }
        let header = fb_encode::RequestHeader {
            model_id: &self.params.model_id,
            loss_fn: &self.params.loss_fn,
            config: &self.params.config,
            forward_only: self.params.forward_only,
        };
        loop {
            let k = self.next_encode.fetch_add(1, Ordering::Relaxed);
            if k >= n || self.failed.load(Ordering::Relaxed) {
                return;
            }
            let i = self.order[k];
            let (checked, body) = {
                let mut outlets = self.outlets();
                while matches!(outlets[i].checked, Checking::Waiting) {
                    outlets = self
                        .checked
                        .wait(outlets)
                        .unwrap_or_else(|e| e.into_inner());
                }
                let outlet = &mut outlets[i];
                match std::mem::replace(&mut outlet.checked, Checking::Done) {
                    Checking::Passed(c) => (c, outlet.body.take()),
                    _ => continue,
                }
            };
            let range = self.ranges[i].clone();
            let bytes = checked.encode(&self.data[range], &header, self.first_seq + i as i32);
            if let Some(tx) = body {
                let _ = tx.send(proto_request(
                    "/api/v1/forward_backward",
                    bytes,
                    self.timeout,
                    self.compress,
                ));
            }
        }
    }
}

fn decode_fb(p: Payload) -> Result<ForwardBackwardOutput> {
    match p {
        Payload::Proto(b) => codec::decode_forward_backward(&b),
        Payload::Json(v) => serde_json::from_value(v)
            .map_err(|e| Error::fatal(format!("malformed forward_backward result: {e}"))),
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(
    mut results: Vec<(Payload, UntypedApiFuture)>,
) -> Result<T> {
    let (payload, f) = results.pop().ok_or_else(|| Error::fatal("no result"))?;
    match payload {
        Payload::Json(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::fatal(format!("malformed result {v}: {e}")).with_request_id(f.request_id)
        }),
        Payload::Proto(_) => {
            Err(Error::fatal("server sent protobuf for a JSON result")
                .with_request_id(f.request_id))
        }
    }
}

fn weights_path(r: WeightsResult) -> Result<String> {
    r.path
        .ok_or_else(|| Error::fatal("the server's result has no checkpoint path"))
}

impl std::fmt::Debug for TrainingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingClient")
            .field("model_id", &self.inner.model_id)
            .finish_non_exhaustive()
    }
}
