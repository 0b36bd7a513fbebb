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
    ModelInput, QueueState, SampleRequest, SampleResponse, SamplingParams, UntypedApiFuture,
};
use crate::core::ClientCore;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

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
}

impl SampleOptions {
    /// The input checks of 7.1 done before anything is sent: `prompt_logprobs_last_n` is at
    /// least 1 and requires `prompt_logprobs` (the server checks the upper bound).
    pub fn validate(&self) -> Result<()> {
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

struct SamplingInner {
    core: Arc<ClientCore>,
    sampling_session_id: String,
    base_model: String,
    next_seq: AtomicI64,
    observer: QueueObserver,
}

/// A sampling client bound to one sampling session. Cheap to clone.
#[derive(Clone)]
pub struct SamplingClient {
    inner: Arc<SamplingInner>,
    /// Retry policy of calls made through this handle (`None`: the client's).
    retry: Option<Arc<RetryPolicy>>,
    /// The caller's retry-handler configuration (before the server's overrides, 12.6).
    retry_config: Arc<RetryConfig>,
}

impl SamplingClient {
    pub(crate) fn new(
        core: Arc<ClientCore>,
        sampling_session_id: String,
        base_model: String,
    ) -> Self {
        let observer = QueueObserver::new(
            ObserverKind::Sampling(sampling_session_id.clone()),
            core.config.sampling.queue_state.clone(),
        );
        SamplingClient {
            retry: None,
            retry_config: Arc::new(RetryConfig::default()),
            inner: Arc::new(SamplingInner {
                core,
                sampling_session_id,
                base_model,
                next_seq: AtomicI64::new(0),
                observer,
            }),
        }
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
            .unwrap_or_else(|| Arc::new(inner.core.config.retry.clone()));
        let client = self.clone();
        ApiFuture::spawn(&inner.core.runtime.clone(), move |handle| async move {
            let core = inner.core.clone();
            if let Some(s) = core.session_if_started() {
                s.check_usable()?;
            }
            let no_retries = core.server_config.read().unwrap().sample_no_retries;
            core.tracked_operation(&status, async {
                if no_retries && !always_retry {
                    return sample_once(&inner, &job, first_seq, &status, &policy, &handle)
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
                                "retrying the sample of {} with a new seq_id {seq} (attempt {})",
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
}

/// Submits one sample request with `seq` and polls it to the decoded, checked response.
/// Errors carry the stage they happened at, which decides whether the retry handler retries.
async fn sample_once(
    inner: &SamplingInner,
    job: &SampleJob,
    seq: i64,
    status: &OpStatus,
    policy: &RetryPolicy,
    handle: &crate::core::api_future::FutureHandle,
) -> std::result::Result<SampleResponse, AttemptError> {
    let core = &inner.core;
    let SampleJob {
        prompt,
        num_samples,
        params,
        options,
    } = job;
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
        target_prompt_logprobs: None,
        prompt_alt_tokens_k: 0,
        prompt_logprobs_last_n: options.prompt_logprobs_last_n.map(i64::from),
        record_stability_info: Some(false),
        kind: "sample".into(),
    };
    let estimate = crate::core::dispatch::estimate_bytes(prompt);
    let submitted: UntypedApiFuture = {
        let dispatch = &core.sample_dispatch;
        dispatch.set_byte_capacity(
            core.server_config
                .read()
                .unwrap()
                .sample_dispatch_bytes_semaphore_size,
        );
        // Held while sending (back-off waits included), released before polling (12.4).
        let _permit = dispatch.acquire(estimate).await;
        send_asample(core, &body, estimate, status, policy)
            .await
            .map_err(AttemptError::at(Stage::Send))?
    };
    let other = AttemptError::at(Stage::Other);
    handle.set_request_id(&submitted.request_id);
    *status.request_id.lock().unwrap() = Some(submitted.request_id.clone());
    let ids = submitted.sample_sequence_ids.clone().ok_or_else(|| {
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
        seq,
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
        req.headers
            .push(("x-tinker-sampling-backpressure", "1".into()));
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
