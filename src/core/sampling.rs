//! [`SamplingClient`]: sampling and prompt logprobs on one sampling session (PROTOCOL.md 7,
//! 12). Sample `seq_id`s start at 0 per client; lower-layer retries (and the back-off after
//! a 429) resend the same `seq_id`, while a retry of the whole sample by the sampling retry
//! handler ([`crate::core::retry_handler`]: e.g. after a 410 from a poll) takes a new one.
//!
//! `sample()` runs inside the session's retry handler unless the server's
//! `sample_no_retries` is on; `compute_logprobs()` always does (7.3). Each attempt passes the
//! holder-wide dispatch gates ([`crate::core::dispatch`]) while its `asample` is sent, then
//! polls the result and checks it (12.7).

use crate::core::api_future::ApiFuture;
use crate::core::codec;
use crate::core::config::RetryPolicy;
use crate::core::error::{Error, Result};
use crate::core::polling::Payload;
use crate::core::progress::OpStatus;
use crate::core::queue_state::{ObserverKind, QueueObserver};
use crate::core::retry_handler::{AttemptError, RetryConfig, RetryHandler, Stage};
use crate::core::transport::{Pool, Request};
use crate::core::types::{
    JoinSamplingSessionRequest, JoinSamplingSessionResponse, ModelInput, QueueState, SampleRequest,
    SampleResponse, SamplingParams, TensorData, TensorDtype, UntypedApiFuture,
};
use crate::core::ClientCore;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// The size of a clone's `seq_id` block (12.2): clone `c` draws its `seq_id`s from
/// `c × 10^9`, and `cloned_sampler_id = seq_id / 10^9`.
pub use crate::core::futures_poller::CLONE_SEQ_BLOCK;

/// The largest clone id: `10^9` (a random id is `uuid4 mod 10^9 + 1`, a joined one is the
/// server's `client_counter`), so `c × 10^9` stays far below `i64::MAX`.
pub const MAX_CLONE_ID: i64 = 1_000_000_000;

/// Optional outputs of a sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleOptions {
    /// Return logprobs of the prompt tokens.
    pub prompt_logprobs: bool,
    /// Top-k logprobs per prompt position.
    pub topk_prompt_logprobs: u32,
    /// Top-k logprobs per sampled position.
    pub topk_sample_logprobs: u32,
    /// Score only the last N prompt tokens (needs `prompt_logprobs`).
    pub prompt_logprobs_last_n: Option<u32>,
    /// Token ids whose logprobs to return at each prompt position: int64, 2-D
    /// `[len(prompt) - 1, K]`, dense or sparse CSR; `-1` cells request nothing (7.1).
    pub target_prompt_logprobs: Option<TensorData>,
    /// Tokens to draw from the model's distribution at every prompt position after the
    /// first (7.1); the answer's `prompt_alt_tokens` holds them.
    pub prompt_alt_tokens_k: u32,
}

impl SampleOptions {
    /// The input checks of 7.1 done before anything is sent: `target_prompt_logprobs` is an
    /// int64 2-D tensor; `prompt_logprobs_last_n` is at least 1 and requires
    /// `prompt_logprobs` (the server checks the upper bounds).
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.target_prompt_logprobs {
            if t.dtype != TensorDtype::Int64 {
                return Err(Error::user(
                    "target_prompt_logprobs must be an int64 tensor of token ids, got float32",
                ));
            }
            match &t.shape {
                Some(shape) if shape.len() == 2 => {}
                shape => {
                    return Err(Error::user(format!(
                        "target_prompt_logprobs must be 2-D, [len(prompt) - 1, K], got shape \
                         {shape:?}"
                    )))
                }
            }
            // The layout must be consistent (dense: shape holds the values; CSR: indices
            // match), else the server would reject it after a round trip.
            check_tensor_layout(t)
                .map_err(|e| Error::user(format!("target_prompt_logprobs is malformed: {e}")))?;
        }
        match self.prompt_logprobs_last_n {
            Some(0) => Err(Error::user(
                "prompt_logprobs_last_n must be 1 or greater, got 0",
            )),
            Some(_) if !self.prompt_logprobs => Err(Error::user(
                "prompt_logprobs_last_n applies to prompt logprobs; set include_prompt_logprobs \
                 (prompt_logprobs)",
            )),
            _ => Ok(()),
        }
    }
}

/// Checks a tensor's layout without densifying it: a dense tensor's shape holds its values;
/// a CSR tensor has `rows + 1` monotonic row pointers ending at `nnz` and in-range columns.
fn check_tensor_layout(t: &TensorData) -> std::result::Result<(), String> {
    let shape = t.shape_or_1d();
    if shape.iter().any(|&d| d < 0) {
        return Err(format!("negative dimension in shape {shape:?}"));
    }
    match (&t.sparse_crow_indices, &t.sparse_col_indices) {
        (None, None) => {
            let n = shape.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
            if n != Some(t.data.len() as i64) {
                return Err(format!(
                    "shape {shape:?} does not hold the {} values of data",
                    t.data.len()
                ));
            }
            Ok(())
        }
        (Some(crow), Some(col)) => {
            let nnz = t.data.len();
            if col.len() != nnz || crow.len() as i64 != shape[0].saturating_add(1) {
                return Err("CSR index lengths do not match the shape and values".into());
            }
            if crow.first() != Some(&0) || crow.last() != Some(&(nnz as i64)) {
                return Err("CSR row pointers must run from 0 to the number of values".into());
            }
            if crow.windows(2).any(|w| w[0] > w[1]) {
                return Err("CSR row pointers are not monotonic".into());
            }
            if col.iter().any(|&c| c < 0 || c >= shape[1]) {
                return Err("CSR column index out of range".into());
            }
            Ok(())
        }
        _ => Err("sparse_crow_indices and sparse_col_indices must come together".into()),
    }
}

/// Where a client's clone id (12.2) comes from.
enum CloneId {
    /// Known: 0 for the original client, random or already joined for a clone.
    Known(i64),
    /// A clone that asks `join_sampling_session` once, before its first sample (5.9).
    Join(tokio::sync::OnceCell<i64>),
}

struct SamplingInner {
    core: Arc<ClientCore>,
    sampling_session_id: String,
    base_model: String,
    /// Samples allocated so far; a sample's `seq_id` is `clone_id × 10^9 + this`.
    next_seq: AtomicI64,
    clone_id: CloneId,
    observer: QueueObserver,
    /// Samples of this client started and not finished (introspection).
    in_flight: AtomicU64,
    /// Of those, the ones not yet accepted by the server (dispatch gates, back-off, join).
    waiting: AtomicU64,
}

impl SamplingInner {
    /// This client's clone id, joining the sampling session first when it must (5.9: once,
    /// through the holder retry loop, on the session pool).
    ///
    /// Known (the usual case) without awaiting; the join's future (2.6 KB: the HTTP send
    /// inside `OnceCell::get_or_try_init`) is boxed, so it does not widen the state of every
    /// pending sample that awaits this call.
    async fn clone_id(&self) -> Result<i64> {
        if let Some(c) = self.clone_id_now() {
            return Ok(c);
        }
        Box::pin(self.join_sampling_session()).await
    }

    /// Joins the sampling session once (5.9); concurrent callers share the one join.
    async fn join_sampling_session(&self) -> Result<i64> {
        match &self.clone_id {
            CloneId::Known(c) => Ok(*c),
            CloneId::Join(cell) => cell
                .get_or_try_init(|| async {
                    let req = Request::post_json(
                        "/api/v1/join_sampling_session",
                        &JoinSamplingSessionRequest {
                            sampling_session_id: self.sampling_session_id.clone(),
                            kind: "join_sampling_session".into(),
                        },
                        Pool::Session,
                        self.core.config.timeouts.request,
                    );
                    let joined: JoinSamplingSessionResponse =
                        self.core.send(&req).await?.json("join_sampling_session")?;
                    let c = joined.client_counter;
                    if !(1..=MAX_CLONE_ID).contains(&c) {
                        return Err(Error::fatal(format!(
                            "malformed response from the server: join_sampling_session gave \
                             client_counter {c}, expected 1..={MAX_CLONE_ID}"
                        )));
                    }
                    tracing::debug!(
                        "joined sampling session {} as clone {c}",
                        self.sampling_session_id
                    );
                    Ok(c)
                })
                .await
                .copied(),
        }
    }

    /// The clone id if already known (no I/O).
    fn clone_id_now(&self) -> Option<i64> {
        match &self.clone_id {
            CloneId::Known(c) => Some(*c),
            CloneId::Join(cell) => cell.get().copied(),
        }
    }
}

/// A random clone id, `uuid4 mod 10^9 + 1` (12.2): in `1..=10^9`.
pub fn random_clone_id() -> i64 {
    let v = (u128::from(crate::core::rand::next_u64()) << 64)
        | u128::from(crate::core::rand::next_u64());
    (v % 1_000_000_000) as i64 + 1
}

/// A sampling client bound to one sampling session. Cheap to clone.
#[derive(Clone)]
pub struct SamplingClient {
    inner: Arc<SamplingInner>,
    /// Retry policy of calls made through this handle (`None`: the client's).
    retry: Option<Arc<RetryPolicy>>,
    /// The caller's retry-handler configuration (before the server's overrides, 12.6).
    retry_config: Arc<RetryConfig>,
    /// Sent as `record_stability_info` on every sample (12.1).
    record_stability_info: bool,
}

impl SamplingClient {
    pub(crate) fn new(
        core: Arc<ClientCore>,
        sampling_session_id: String,
        base_model: String,
    ) -> Self {
        Self::build(
            core,
            sampling_session_id,
            base_model,
            CloneId::Known(0),
            false,
        )
    }

    fn build(
        core: Arc<ClientCore>,
        sampling_session_id: String,
        base_model: String,
        clone_id: CloneId,
        record_stability_info: bool,
    ) -> Self {
        let observer = QueueObserver::new(
            ObserverKind::Sampling(sampling_session_id.clone()),
            core.config.sampling.queue_state.clone(),
        );
        SamplingClient {
            retry: None,
            retry_config: Arc::new(RetryConfig::default()),
            record_stability_info,
            inner: Arc::new(SamplingInner {
                core,
                sampling_session_id,
                base_model,
                next_seq: AtomicI64::new(0),
                clone_id,
                observer,
                in_flight: AtomicU64::new(0),
                waiting: AtomicU64::new(0),
            }),
        }
    }

    /// A clone of a sampling client of another process (12.2), on a shadow holder `core`:
    /// its clone id is joined before the first sample when the handle's
    /// `sample_join_sampling_session` is on, else random.
    pub(crate) fn new_clone(
        core: Arc<ClientCore>,
        sampling_session_id: String,
        base_model: String,
        record_stability_info: bool,
    ) -> Self {
        let join = core
            .server_config
            .read()
            .unwrap()
            .sample_join_sampling_session;
        let clone_id = if join {
            CloneId::Join(tokio::sync::OnceCell::new())
        } else {
            CloneId::Known(random_clone_id())
        };
        Self::build(
            core,
            sampling_session_id,
            base_model,
            clone_id,
            record_stability_info,
        )
    }

    /// A handle on the same sampling session (same `seq_id` counter) whose samples send
    /// `record_stability_info: on` (12.1; the client setting of
    /// `create_sampling_client(record_stability_info=...)`).
    pub fn with_record_stability_info(&self, on: bool) -> SamplingClient {
        SamplingClient {
            record_stability_info: on,
            ..self.clone()
        }
    }

    /// Whether every sample sends `record_stability_info: true` (12.1).
    pub fn record_stability_info(&self) -> bool {
        self.record_stability_info
    }

    /// The clone id (`cloned_sampler_id`, 12.2): 0 for a client created by this process's
    /// ServiceClient, `c ≥ 1` for one rebuilt from a sampler handle; `None` until a clone
    /// that joins the sampling session (5.9) has joined.
    pub fn cloned_sampler_id(&self) -> Option<i64> {
        self.inner.clone_id_now()
    }

    /// Samples of this client started and not finished, and those of them not yet accepted
    /// by the server: `(in_flight, waiting)`.
    pub fn operation_counts(&self) -> (u64, u64) {
        (
            self.inner.in_flight.load(Ordering::SeqCst),
            self.inner.waiting.load(Ordering::SeqCst),
        )
    }

    /// The shared core (for introspection).
    pub(crate) fn core(&self) -> &Arc<ClientCore> {
        &self.inner.core
    }

    /// A handle on the same sampling session whose calls use `policy` instead of the
    /// client's retry policy (per-call override).
    pub fn with_retry_policy(&self, policy: RetryPolicy) -> SamplingClient {
        SamplingClient {
            retry: Some(Arc::new(policy)),
            ..self.clone()
        }
    }

    /// A handle on the same sampling session (same `seq_id` counter) whose calls run in the
    /// retry handler of `config` (the Python `RetryConfig`). Its `max_connections` is
    /// overridden by the server's `sample_max_concurrent_requests` (or removed when
    /// `sample_use_retrieve_futures` is on), and stuck detection is off when the server's
    /// `sample_enable_stuck_detection` is.
    pub fn with_retry_config(&self, config: RetryConfig) -> SamplingClient {
        SamplingClient {
            retry_config: Arc::new(config),
            ..self.clone()
        }
    }

    /// The retry handler this client's calls run in: shared by every client of the same
    /// sampling session with the same effective configuration.
    pub fn retry_handler(&self) -> Arc<RetryHandler> {
        let core = &self.inner.core;
        let mut config = (*self.retry_config).clone();
        {
            let server = core.server_config.read().unwrap();
            config.max_connections = if server.sample_use_retrieve_futures {
                None
            } else {
                Some(server.sample_max_concurrent_requests.max(1))
            };
            if !server.sample_enable_stuck_detection {
                config.enable_stuck_detection = false;
            }
        }
        core.retry_handlers.get(
            &self.inner.sampling_session_id,
            config,
            core.config.sampling.progress_log_interval,
        )
    }

    /// The dispatch counters (12.4) of the ServiceClient this client belongs to (shared by
    /// all of its sampling clients).
    pub fn dispatch_stats(&self) -> crate::core::dispatch::DispatchStats {
        self.inner.core.sample_dispatch.stats()
    }

    /// The sampling session id.
    pub fn sampling_session_id(&self) -> &str {
        &self.inner.sampling_session_id
    }

    /// The base model served.
    pub fn base_model(&self) -> &str {
        &self.inner.base_model
    }

    /// The current queue state of this client's requests.
    pub fn queue_state(&self) -> crate::core::queue_state::QueueSnapshot {
        self.inner.observer.snapshot()
    }

    /// Draws `num_samples` continuations of `prompt`.
    pub fn sample(
        &self,
        prompt: ModelInput,
        num_samples: u32,
        params: SamplingParams,
        options: SampleOptions,
    ) -> ApiFuture<SampleResponse> {
        if num_samples == 0 {
            return ApiFuture::ready(Err(Error::user("num_samples must be at least 1")));
        }
        if let Err(e) = options.validate() {
            return ApiFuture::ready(Err(e));
        }
        let job = SampleJob {
            prompt,
            num_samples,
            params,
            options,
            record_stability_info: self.record_stability_info,
        };
        self.run(job, false)
    }

    /// Runs one sample: inside the retry handler when `always_retry` or the server's
    /// `sample_no_retries` is off.
    fn run(&self, job: SampleJob, always_retry: bool) -> ApiFuture<SampleResponse> {
        let inner = self.inner.clone();
        let first_seq = inner.next_seq.fetch_add(1, Ordering::SeqCst);
        let status = OpStatus::new("Sample");
        let policy = self
            .retry
            .clone()
            .unwrap_or_else(|| inner.core.retry_policy.clone());
        let client = self.clone();
        ApiFuture::spawn(&inner.core.runtime.clone(), move |handle| async move {
            let core = inner.core.clone();
            let _in_flight = Counted::new(&inner.in_flight);
            if let Some(s) = core.session_if_started() {
                s.check_usable()?;
            }
            let no_retries = core.server_config.read().unwrap().sample_no_retries;
            core.tracked_operation(&status, async {
                if no_retries && !always_retry {
                    // Boxed: a second inline copy of the attempt would double the task.
                    return Box::pin(sample_once(
                        &inner, &job, first_seq, &status, &policy, &handle,
                    ))
                    .await
                    .map_err(|e| e.error);
                }
                let handler = client.retry_handler();
                let reporting = core
                    .telemetry
                    .get()
                    .map(|t| (&**t, "SamplingClient.sample"));
                let mut first = Some(first_seq);
                let (inner, job, status, policy, handle) =
                    (&*inner, &job, &status, &*policy, &handle);
                handler
                    .execute_reporting(reporting, |k| {
                        let seq = first
                            .take()
                            .unwrap_or_else(|| inner.next_seq.fetch_add(1, Ordering::SeqCst));
                        if k > 0 {
                            tracing::info!(
                                "retrying the sample of {} with a new seq_id (sample {seq} of \
                                 this client, attempt {})",
                                inner.sampling_session_id,
                                k + 1
                            );
                        }
                        sample_once(inner, job, seq, status, policy, handle)
                    })
                    .await
            })
            .await
        })
    }

    /// Log-probabilities of every prompt token (`None` at position 0).
    pub fn compute_logprobs(&self, prompt: ModelInput) -> ApiFuture<Vec<Option<f32>>> {
        self.compute_logprobs_last_n(prompt, None)
    }

    /// Log-probabilities of the prompt tokens, of only the last `last_n` when given (earlier
    /// entries `None`). Always runs inside the retry handler, even when the server's
    /// `sample_no_retries` is on (7.3).
    pub fn compute_logprobs_last_n(
        &self,
        prompt: ModelInput,
        last_n: Option<u32>,
    ) -> ApiFuture<Vec<Option<f32>>> {
        let params = SamplingParams {
            max_tokens: Some(1),
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
            ..Default::default()
        };
        let options = SampleOptions {
            prompt_logprobs: true,
            prompt_logprobs_last_n: last_n,
            ..Default::default()
        };
        if let Err(e) = options.validate() {
            return ApiFuture::ready(Err(e));
        }
        let f = self.run(
            SampleJob {
                prompt,
                num_samples: 1,
                params,
                options,
                record_stability_info: self.record_stability_info,
            },
            true,
        );
        let rt = self.inner.core.runtime.clone();
        ApiFuture::spawn(&rt, move |_| async move {
            // Cancelling this future cancels the sample (and so its cancel_future, 8.3).
            struct CancelInner<T: Send + 'static>(ApiFuture<T>);
            impl<T: Send + 'static> Drop for CancelInner<T> {
                fn drop(&mut self) {
                    if !self.0.is_done() {
                        self.0.cancel();
                    }
                }
            }
            let inner = CancelInner(f.clone());
            let r = f.await;
            drop(inner);
            let r = r?;
            r.prompt_logprobs
                .ok_or_else(|| Error::fatal("the server returned no prompt logprobs"))
        })
    }
}

/// What one `sample` call asks for.
struct SampleJob {
    prompt: ModelInput,
    num_samples: u32,
    params: SamplingParams,
    options: SampleOptions,
    record_stability_info: bool,
}

/// Counts one operation in a counter while it lives.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicU64) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Counted(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Submits sample number `local` of this client (its `seq_id` is `clone_id × 10^9 +
/// local`, 12.2; a clone that joins the sampling session does so first, 5.9) and polls it to
/// the decoded, checked response. Errors carry the stage they happened at, which decides
/// whether the retry handler retries.
async fn sample_once(
    inner: &SamplingInner,
    job: &SampleJob,
    local: i64,
    status: &OpStatus,
    policy: &RetryPolicy,
    handle: &crate::core::api_future::FutureHandle,
) -> std::result::Result<SampleResponse, AttemptError> {
    let core = &inner.core;
    let options = &job.options;
    let waiting = Counted::new(&inner.waiting);
    let clone_id = inner
        .clone_id()
        .await
        .map_err(AttemptError::at(Stage::Send))?;
    let seq = clone_id * CLONE_SEQ_BLOCK + local;
    // The request and its send live in their own boxed future: a pending sample's state
    // (the wait for its result below) holds neither the request nor the send's state.
    let mut submitted = Box::pin(submit_sample(inner, job, seq, status, policy))
        .await
        .map_err(AttemptError::at(Stage::Send))?;
    drop(waiting);
    let other = AttemptError::at(Stage::Other);
    handle.set_request_id(&submitted.request_id);
    *status.request_id.lock().unwrap() = Some(submitted.request_id.clone());
    let ids = submitted.sample_sequence_ids.take().ok_or_else(|| {
        other(
            Error::fatal("asample answer lacks sample_sequence_ids")
                .with_request_id(&submitted.request_id),
        )
    })?;
    let observe = |state: QueueState, reason: Option<String>| {
        *status.queue_state.lock().unwrap() = Some(state);
        inner
            .observer
            .report(core, &submitted.request_id, "Sample", state, reason);
    };
    // Abandoning the wait (cancel, progress watchdog) queues a cancel_future (8.3).
    let abandon = crate::core::cancel::CancelOnDrop::new(core, &submitted.request_id);
    let payload = crate::core::futures_poller::retrieve_sample(
        core,
        policy,
        &inner.sampling_session_id,
        clone_id,
        &submitted.request_id,
        status.started.elapsed(),
        &observe,
        &status.polls,
    )
    .await;
    abandon.disarm();
    let payload = payload.map_err(AttemptError::at(Stage::Poll))?;
    // The future is done: the observer hears ACTIVE (15.2), whatever the result's encoding.
    observe(QueueState::Active, None);
    let other = AttemptError::at(Stage::Other);
    let response = match payload {
        Payload::Proto(b) => codec::decode_sample(&b, &ids).map_err(other)?,
        Payload::Json(v) => {
            let mut r: SampleResponse = serde_json::from_value(v).map_err(|e| {
                AttemptError::at(Stage::Other)(Error::fatal(format!(
                    "malformed sample result: {e}"
                )))
            })?;
            for (s, id) in r.sequences.iter_mut().zip(&ids) {
                s.sequence_id = Some(id.clone());
            }
            r
        }
    };
    check_result(&response, &ids, options)
        .map_err(|e| AttemptError::at(Stage::Other)(e.with_request_id(&submitted.request_id)))?;
    Ok(response)
}

/// Builds sample `seq`'s `asample` request and sends it under the dispatch gates (12.4)
/// until the server accepts it.
async fn submit_sample(
    inner: &SamplingInner,
    job: &SampleJob,
    seq: i64,
    status: &OpStatus,
    policy: &RetryPolicy,
) -> Result<UntypedApiFuture> {
    let core = &inner.core;
    let SampleJob {
        prompt,
        num_samples,
        params,
        options,
        record_stability_info,
    } = job;
    let estimate = crate::core::dispatch::estimate_bytes(prompt);
    let body = SampleRequest {
        num_samples: i64::from(*num_samples),
        prompt: prompt.clone(),
        sampling_params: params.clone(),
        base_model: None,
        model_path: None,
        sampling_session_id: Some(inner.sampling_session_id.clone()),
        seq_id: Some(seq),
        prompt_logprobs: Some(options.prompt_logprobs),
        topk_prompt_logprobs: i64::from(options.topk_prompt_logprobs),
        topk_sample_logprobs: i64::from(options.topk_sample_logprobs),
        target_prompt_logprobs: options.target_prompt_logprobs.clone(),
        prompt_alt_tokens_k: i64::from(options.prompt_alt_tokens_k),
        prompt_logprobs_last_n: options.prompt_logprobs_last_n.map(i64::from),
        record_stability_info: Some(*record_stability_info),
        kind: "sample".into(),
    };
    let dispatch = &core.sample_dispatch;
    dispatch.set_byte_capacity(
        core.server_config
            .read()
            .unwrap()
            .sample_dispatch_bytes_semaphore_size,
    );
    // Held while sending (back-off waits included), released before polling (12.4).
    let _permit = dispatch.acquire(estimate).await;
    send_asample(core, &body, estimate, status, policy).await
}

/// The checks of 12.7 on a decoded result: one `sample_sequence_ids` entry per sequence,
/// and no prompt logprob before the last N positions when `prompt_logprobs_last_n` is N
/// (a server that predates it scores the whole prompt).
pub fn check_result(
    response: &SampleResponse,
    ids: &[String],
    options: &SampleOptions,
) -> Result<()> {
    if response.sequences.len() != ids.len() {
        return Err(Error::fatal(format!(
            "the server returned {} sequences but announced {} sample_sequence_ids",
            response.sequences.len(),
            ids.len()
        )));
    }
    if options.prompt_alt_tokens_k > 0 && response.prompt_alt_tokens.is_none() {
        return Err(Error::fatal(format!(
            "prompt_alt_tokens_k={} was requested but the server returned no \
             prompt_alt_tokens; it may predate this feature",
            options.prompt_alt_tokens_k
        )));
    }
    if let (Some(n), Some(lps)) = (options.prompt_logprobs_last_n, &response.prompt_logprobs) {
        let excluded = lps.len().saturating_sub(n as usize);
        if lps[..excluded].iter().any(Option::is_some) {
            return Err(Error::fatal(format!(
                "prompt_logprobs_last_n={n} was requested but the server returned prompt \
                 logprobs before that suffix; it may predate this feature"
            )));
        }
    }
    Ok(())
}

/// Sends an `asample` until the server accepts it. A 429 (or a 402 inside the billing pause)
/// is back-pressure, not an error: it sets the holder-wide back-off (12.5) and the same body
/// (same `seq_id`) is sent again once it has passed. Other failures go through the holder
/// loop (13.4: retryable set of 13.3, `min(2^attempt, 30)` s, the holder window); every attempt is a new HTTP request with
/// a new idempotency key and no HTTP-layer retries (`x-stainless-retry-count: 0`).
async fn send_asample(
    core: &ClientCore,
    body: &SampleRequest,
    estimate: u64,
    status: &OpStatus,
    policy: &RetryPolicy,
) -> Result<UntypedApiFuture> {
    let dispatch = &core.sample_dispatch;
    let mut attempt: u32 = 0;
    let started = tokio::time::Instant::now();
    loop {
        dispatch.wait_backoff().await;
        let mut req = Request::post_json(
            "/api/v1/asample",
            body,
            Pool::Sample,
            core.config.timeouts.request,
        );
        req.headers.push((
            reqwest::header::HeaderName::from_static("x-tinker-sampling-backpressure"),
            reqwest::header::HeaderValue::from_static("1"),
        ));
        status
            .attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = core.transport.send(&req, 0).await;
        if let Ok(resp) = &outcome {
            if resp.is_success() {
                core.progress.record();
                return resp.json("asample");
            }
            // The client's shared billing pause decides (13.7); it logs the WARNING.
            let paused_billing = resp.status == 402
                && matches!(
                    core.billing.on_402(&resp.to_error()),
                    crate::core::billing::BillingVerdict::Pause
                );
            if resp.status == 429 || paused_billing {
                let retry_after = crate::core::retry::retry_after(resp, policy.max_retry_after);
                let delay = dispatch.request_backoff(estimate, retry_after);
                let error = resp.to_error();
                core.progress.note_error(&error);
                core.events.emit(crate::core::events::Event::Retry {
                    request_id: None,
                    operation: "POST /api/v1/asample (back-off)".into(),
                    attempt,
                    delay_secs: delay.as_secs_f64(),
                    error: error.to_string(),
                });
                continue;
            }
            if resp.status == 402 {
                return Err(resp.to_error());
            }
        }
        // Other failures: the holder loop (13.4) — retryable set of 13.3, waits of
        // min(2^attempt, 30) s, within the holder window.
        let error = match &outcome {
            Ok(resp) => resp.to_error(),
            Err(e) => e.clone(),
        };
        core.progress.note_error(&error);
        let elapsed = started.elapsed();
        if !crate::core::retry::holder_retryable(&error) || elapsed >= policy.holder_window {
            return Err(error);
        }
        let delay = policy
            .holder_backoff(attempt)
            .min(policy.holder_window - elapsed);
        if policy.max_attempts.is_some_and(|max| attempt + 1 >= max) {
            let mut e = error;
            e.message = format!("{} (gave up after {} attempts)", e.message, attempt + 1);
            return Err(e);
        }
        core.events.emit(crate::core::events::Event::Retry {
            request_id: None,
            operation: "POST /api/v1/asample".into(),
            attempt,
            delay_secs: delay.as_secs_f64(),
            error: error.to_string(),
        });
        core.progress.sleep_backoff(delay).await;
        attempt += 1;
    }
}

impl std::fmt::Debug for SamplingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplingClient")
            .field("sampling_session_id", &self.inner.sampling_session_id)
            .field("base_model", &self.inner.base_model)
            .finish_non_exhaustive()
    }
}

// ------------------------------------------------------------------------------------------
// Sampler handles (PROTOCOL.md 20.4) and clones (3.4, 12.2)
// ------------------------------------------------------------------------------------------

/// The largest sampler handle accepted (a handle is untrusted input). Real handles are
/// about 1.5 KB.
pub const MAX_SAMPLER_HANDLE_BYTES: usize = 64 * 1024;

/// The holder snapshot inside a sampler handle (the SDK's `_ShadowHolderConfig`), fields in
/// the SDK's order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandleHolder {
    /// The resolved base URL of the original client.
    pub base_url: String,
    /// Extra default headers of the original client. libtinkex writes `{}` (a configured
    /// `default_headers_overrides` may carry a proxy's credentials, and a handle is shared
    /// with other processes; the official SDK copies them) and ignores the field of a
    /// decoded handle: the clone sends its own configuration's headers.
    #[serde(default)]
    pub default_headers_overrides: std::collections::BTreeMap<String, String>,
    /// The original's `client/config` flags (all of them, in the SDK's `model_dump` order;
    /// missing ones default and unknown ones are dropped when decoding, as the SDK does).
    pub client_config: crate::core::types::ClientConfig,
    /// The original's dynamic config.
    pub client_dynamic_config: crate::core::types::DynamicConfig,
    /// Always null in a handle (the clone authenticates with its own credentials).
    #[serde(default)]
    pub api_key: Option<String>,
}

/// The decoded content of a sampler handle (the SDK's `_SamplingClientPickleState`), fields
/// in the SDK's order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerHandle {
    /// The original client's session.
    pub session_id: String,
    /// The sampling session.
    pub sampling_session_id: String,
    /// The holder snapshot.
    pub holder: HandleHolder,
    /// The base model sampled.
    pub base_model: String,
    /// The original's `record_stability_info` setting.
    #[serde(default)]
    pub record_stability_info: bool,
}

/// Python's `json.dumps` default `ensure_ascii`: every non-ASCII character as `\uXXXX`
/// (surrogate pairs above U+FFFF), so a handle is byte-identical to the SDK's.
fn ascii_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn handle_error(why: impl std::fmt::Display) -> Error {
    Error::user(format!("invalid sampler handle: {why}"))
}

impl SamplerHandle {
    /// The handle string: base64url (with padding) of the compact JSON (20.4).
    pub fn encode(&self) -> Result<String> {
        use base64::Engine;
        let json = serde_json::to_string(self)
            .map_err(|e| Error::fatal(format!("cannot encode a sampler handle: {e}")))?;
        Ok(base64::engine::general_purpose::URL_SAFE.encode(ascii_json(&json)))
    }

    /// Decodes and validates an untrusted handle string: at most
    /// [`MAX_SAMPLER_HANDLE_BYTES`], base64url (padding optional), a JSON object of the
    /// handle's fields (unknown fields rejected, as the SDK does), ids that are valid path
    /// segments, an `http(s)` base URL and flag objects of the right types. Errors are user
    /// errors naming what is wrong, never echoing the handle.
    pub fn decode(handle: &str) -> Result<SamplerHandle> {
        use base64::Engine;
        let handle = handle.trim();
        if handle.is_empty() {
            return Err(handle_error("it is empty"));
        }
        if handle.len() > MAX_SAMPLER_HANDLE_BYTES {
            return Err(handle_error(format!(
                "it is {} bytes, more than the limit of {MAX_SAMPLER_HANDLE_BYTES}",
                handle.len()
            )));
        }
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let json = engine
            .decode(handle)
            .map_err(|_| handle_error("it is not base64url"))?;
        let h: SamplerHandle = serde_json::from_slice(&json).map_err(|e| {
            handle_error(format!(
                "it is not a sampler handle's JSON ({})",
                crate::core::sanitize::serde_message(&e)
            ))
        })?;
        let id = |v: &str, what: &str| {
            crate::core::sanitize::check_path_id(v, what, false)
                .map_err(|e| handle_error(e.message))
        };
        id(&h.session_id, "session_id")?;
        id(&h.sampling_session_id, "sampling_session_id")?;
        if h.base_model.is_empty() || h.base_model.len() > 1024 {
            return Err(handle_error("base_model must be 1 to 1024 bytes"));
        }
        let url = url::Url::parse(&h.holder.base_url)
            .map_err(|_| handle_error("holder.base_url is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(handle_error("holder.base_url must be an http(s) URL"));
        }
        Ok(h)
    }
}

impl SamplingClient {
    /// This client's sampler handle (20.4): base64url of the SDK's compact JSON, carrying no
    /// credentials. Interchangeable with the official SDK's `get_sampler_handle()`: either
    /// side rebuilds a clone from the other's.
    pub fn get_sampler_handle(&self) -> Result<String> {
        self.sampler_handle()?.encode()
    }

    /// The content of [`get_sampler_handle`](Self::get_sampler_handle).
    pub fn sampler_handle(&self) -> Result<SamplerHandle> {
        let core = &self.inner.core;
        let session = core
            .session_if_started()
            .ok_or_else(|| Error::user("the session has not started"))?;
        Ok(SamplerHandle {
            session_id: session.session_id.clone(),
            sampling_session_id: self.inner.sampling_session_id.clone(),
            holder: HandleHolder {
                base_url: core.config.base_url.clone(),
                default_headers_overrides: Default::default(),
                client_config: core.server_config.read().unwrap().clone(),
                client_dynamic_config: core.dynamic_config.read().unwrap().clone(),
                api_key: None,
            },
            base_model: self.inner.base_model.clone(),
            record_stability_info: self.record_stability_info,
        })
    }

    /// A clone of the sampling client behind `handle` (20.4, 3.4, 12.2), running on
    /// `runtime`, authenticating with `config`'s credentials (the handle carries none; its
    /// `api_key` is ignored). Performs no I/O: the clone's shadow holder adopts the handle's
    /// flags, reuses its `session_id` (its own heartbeat, dynamic-config refresh, cancel
    /// drain and telemetry start now; the JWT is exchanged on first use) and cannot create
    /// sessions of its own. Its clone id comes from `join_sampling_session` before the first
    /// sample when the handle's `sample_join_sampling_session` is on, else it is random;
    /// its `seq_id`s start at `clone_id × 10^9`.
    ///
    /// The handle's base URL is used (as the SDK does), checked like a configured one:
    /// plain `http://` only to a loopback host unless `config` sets `allow_insecure_http`.
    /// `config.base_url`, if set, must equal it.
    pub fn from_sampler_handle(
        handle: &str,
        mut config: crate::core::config::ConfigInput,
        runtime: tokio::runtime::Handle,
    ) -> Result<SamplingClient> {
        let h = SamplerHandle::decode(handle)?;
        if let Some(b) = &config.base_url {
            if b.trim_end_matches('/') != h.holder.base_url.trim_end_matches('/') {
                return Err(Error::user(
                    "the configuration's base_url differs from the sampler handle's",
                ));
            }
        }
        config.base_url = Some(h.holder.base_url.clone());
        let config = crate::core::config::Config::try_from(config)?;
        let core = ClientCore::new(config, runtime)?;
        core.become_shadow(
            h.session_id.clone(),
            h.holder.client_config,
            h.holder.client_dynamic_config,
        )?;
        Ok(SamplingClient::new_clone(
            core,
            h.sampling_session_id,
            h.base_model,
            h.record_stability_info,
        ))
    }

    /// Whether this client was rebuilt from a sampler handle (its holder is a shadow of
    /// another process's session, 3.4).
    pub fn is_clone(&self) -> bool {
        self.inner
            .core
            .session_if_started()
            .is_some_and(|s| s.is_shadow())
    }
}
