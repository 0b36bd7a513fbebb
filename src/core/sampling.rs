//! [`SamplingClient`]: sampling and prompt logprobs on one sampling session (PROTOCOL.md 7,
//! 12). Sample `seq_id`s start at 0 per client; a resubmission after a lost future (410)
//! takes a new `seq_id`, lower-layer retries resend the same one.

use crate::core::api_future::ApiFuture;
use crate::core::codec;
use crate::core::config::RetryPolicy;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::polling::Payload;
use crate::core::progress::OpStatus;
use crate::core::queue_state::{ObserverKind, QueueObserver};
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
}

/// How many times a sample whose future expired (410) is resubmitted.
const MAX_RESUBMITS: u32 = 8;

impl SamplingClient {
    pub(crate) fn new(
        core: Arc<ClientCore>,
        sampling_session_id: String,
        base_model: String,
    ) -> Self {
        let observer = QueueObserver::new(
            ObserverKind::Sampling(sampling_session_id.clone()),
            Default::default(),
        );
        SamplingClient {
            retry: None,
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
            inner: self.inner.clone(),
            retry: Some(Arc::new(policy)),
        }
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
        if options.prompt_logprobs_last_n.is_some() && !options.prompt_logprobs {
            return ApiFuture::ready(Err(Error::user(
                "prompt_logprobs_last_n requires prompt_logprobs",
            )));
        }
        let inner = self.inner.clone();
        let first_seq = inner.next_seq.fetch_add(1, Ordering::SeqCst);
        let status = OpStatus::new("Sample");
        let policy = self
            .retry
            .clone()
            .unwrap_or_else(|| Arc::new(inner.core.config.retry.clone()));
        let job = SampleJob {
            prompt,
            num_samples,
            params,
            options,
        };
        ApiFuture::spawn(&inner.core.runtime.clone(), move |handle| async move {
            let core = inner.core.clone();
            if let Some(s) = core.session_if_started() {
                s.check_usable()?;
            }
            core.tracked_operation(&status, async {
                let mut seq = first_seq;
                let mut resubmits = 0;
                loop {
                    match sample_once(&inner, &job, seq, &status, &policy, &handle).await {
                        Err(e) if e.kind == ErrorKind::Expired && resubmits < MAX_RESUBMITS => {
                            resubmits += 1;
                            seq = inner.next_seq.fetch_add(1, Ordering::SeqCst);
                            tracing::warn!(
                                "sample future expired; resubmitting with seq_id {seq}: {e}"
                            );
                        }
                        other => return other,
                    }
                }
            })
            .await
        })
    }

    /// Log-probabilities of every prompt token (`None` at position 0).
    pub fn compute_logprobs(&self, prompt: ModelInput) -> ApiFuture<Vec<Option<f32>>> {
        let params = SamplingParams {
            max_tokens: Some(1),
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
            ..Default::default()
        };
        let options = SampleOptions {
            prompt_logprobs: true,
            ..Default::default()
        };
        let f = self.sample(prompt, 1, params, options);
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

/// Submits one sample request with `seq` and polls it to the decoded response.
async fn sample_once(
    inner: &SamplingInner,
    job: &SampleJob,
    seq: i64,
    status: &OpStatus,
    policy: &RetryPolicy,
    handle: &crate::core::api_future::FutureHandle,
) -> Result<SampleResponse> {
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
    let mut req = Request::post_json(
        "/api/v1/asample",
        &body,
        Pool::Sample,
        core.config.timeouts.request,
    );
    req.headers
        .push(("x-tinker-sampling-backpressure", "1".into()));
    let submitted: UntypedApiFuture = {
        let _permit = core
            .sample_dispatch
            .acquire()
            .await
            .map_err(|_| Error::fatal("client closed"))?;
        core.send_with_policy(&req, Some(status), policy)
            .await?
            .json("asample")?
    };
    handle.set_request_id(&submitted.request_id);
    *status.request_id.lock().unwrap() = Some(submitted.request_id.clone());
    let ids = submitted.sample_sequence_ids.clone().ok_or_else(|| {
        Error::fatal("asample answer lacks sample_sequence_ids")
            .with_request_id(&submitted.request_id)
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
    let payload = payload?;
    let response = match payload {
        Payload::Proto(b) => codec::decode_sample(&b, &ids)?,
        Payload::Json(v) => {
            let mut r: SampleResponse = serde_json::from_value(v)
                .map_err(|e| Error::fatal(format!("malformed sample result: {e}")))?;
            for (s, id) in r.sequences.iter_mut().zip(&ids) {
                s.sequence_id = Some(id.clone());
            }
            r
        }
    };
    if response.sequences.len() != ids.len() {
        return Err(Error::fatal(format!(
            "the server returned {} sequences but announced {} sample_sequence_ids",
            response.sequences.len(),
            ids.len()
        ))
        .with_request_id(&submitted.request_id));
    }
    Ok(response)
}

impl std::fmt::Debug for SamplingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplingClient")
            .field("sampling_session_id", &self.inner.sampling_session_id)
            .field("base_model", &self.inner.base_model)
            .finish_non_exhaustive()
    }
}
