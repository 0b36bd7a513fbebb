//! The `retrieve_future` polling loop with the dispatch table of PROTOCOL.md 8.1.3 (the
//! caller's handle on an operation is [`ApiFuture`](crate::core::api_future::ApiFuture)).
//!
//! Differences from the official SDK, on purpose: a 5xx or 408 answered faster than
//! `min_poll_duration` (a broken proxy, not a long poll) is backed off instead of re-polled
//! at once; transport errors and 429 use the one backoff policy; a JSON result is accepted
//! for protobuf-typed results too.

use crate::core::error::{Error, ErrorKind, Result};
use crate::core::retry::{is_bare_400, retry_after};
use crate::core::types::{
    FutureRetrieveRequest, QueueState, RequestErrorCategory, RequestFailedResponse,
};
use crate::core::ClientCore;
use bytes::Bytes;
use serde_json::Value;
use std::time::Duration;

/// The kind of a future's originating request (`X-Tinker-Request-Type`, 8.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    /// create_model.
    CreateModel,
    /// forward_backward.
    ForwardBackward,
    /// forward (forward_only).
    Forward,
    /// optim_step.
    OptimStep,
    /// save_weights.
    SaveWeights,
    /// save_weights_for_sampler.
    SaveWeightsForSampler,
    /// load_weights.
    LoadWeights,
    /// asample.
    Sample,
}

impl RequestType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestType::CreateModel => "CreateModel",
            RequestType::ForwardBackward => "ForwardBackward",
            RequestType::Forward => "Forward",
            RequestType::OptimStep => "OptimStep",
            RequestType::SaveWeights => "SaveWeights",
            RequestType::SaveWeightsForSampler => "SaveWeightsForSampler",
            RequestType::LoadWeights => "LoadWeights",
            RequestType::Sample => "Sample",
        }
    }

    /// Whether the result is asked for as protobuf.
    pub fn wants_proto(self) -> bool {
        matches!(
            self,
            RequestType::ForwardBackward | RequestType::Forward | RequestType::Sample
        )
    }
}

/// A finished poll's payload.
#[derive(Debug)]
pub enum Payload {
    /// A protobuf result body.
    Proto(Bytes),
    /// A JSON result object.
    Json(Value),
}

/// Receives queue-state reports of a pending future.
pub type QueueObserver<'a> = &'a (dyn Fn(QueueState, Option<String>) + Send + Sync);

/// Polls `retrieve_future` until the future finishes.
pub async fn poll_until_done(
    core: &ClientCore,
    policy: &crate::core::config::RetryPolicy,
    request_id: &str,
    rtype: RequestType,
    submit_roundtrip: Duration,
    observe: QueueObserver<'_>,
    polls: &std::sync::atomic::AtomicU32,
) -> Result<Payload> {
    let mut allow_metadata_only = true;
    let mut announced_bytes: Option<u64> = None;
    let mut error_streak: u32 = 0;
    let mut bad_request_retries = 0;
    let idempotency_key = format!("tinkex-retry-{}", crate::core::rand::uuid4());
    let mut iteration: u32 = 0;
    loop {
        let mut req = crate::core::transport::Request::post_json(
            "/api/v1/retrieve_future",
            &FutureRetrieveRequest {
                request_id: request_id.to_string(),
                allow_metadata_only,
            },
            crate::core::transport::Pool::Retrieve,
            core.config.timeouts.retrieve_future,
        );
        req.idempotency_key = Some(idempotency_key.clone());
        req.accept_proto = rtype.wants_proto();
        req.headers
            .push(("x-tinker-request-iteration", iteration.to_string()));
        req.headers
            .push(("x-tinker-request-type", rtype.as_str().to_string()));
        if iteration == 0 {
            req.headers.push((
                "x-tinker-create-promise-roundtrip-time",
                format!("{:.4}", submit_roundtrip.as_secs_f64()),
            ));
        }
        iteration += 1;
        polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let backoff = |streak: u32| policy.backoff(streak, crate::core::rand::unit());
        req.announced_response_bytes = announced_bytes;
        let resp = match core.transport.send(&req, 0).await {
            Ok(r) => r,
            Err(e) if !e.is_retryable() => return Err(e.with_request_id(request_id)),
            Err(e) => {
                wait_retry(core, request_id, error_streak, backoff(error_streak), &e).await;
                error_streak += 1;
                continue;
            }
        };
        let fast = resp.elapsed < policy.min_poll_duration;
        match resp.status {
            200 => {
                error_streak = 0;
                let is_proto = resp
                    .header("content-type")
                    .is_some_and(|c| c.contains("application/x-protobuf"));
                if is_proto {
                    return Ok(Payload::Proto(resp.body));
                }
                let v: Value = resp.json("retrieve_future")?;
                if v.get("type").and_then(Value::as_str) == Some("try_again") {
                    report_queue_state(&v, observe);
                    continue;
                }
                if v.get("status").and_then(Value::as_str) == Some("complete_metadata") {
                    if !allow_metadata_only {
                        return Err(Error::fatal(
                            "server answered metadata-only twice for one future",
                        )
                        .with_request_id(request_id));
                    }
                    allow_metadata_only = false;
                    // The payload's announced size raises the body limit for the next poll
                    // (up to the hard cap, checked by the transport).
                    announced_bytes = v
                        .get("response_payload_size")
                        .and_then(Value::as_u64)
                        .filter(|n| *n > 0);
                    continue;
                }
                if v.get("error").is_some() {
                    observe(QueueState::Active, None);
                    return Err(request_failed(&v, request_id));
                }
                observe(QueueState::Active, None);
                return Ok(Payload::Json(v));
            }
            408 => {
                if let Ok(v) = serde_json::from_slice::<Value>(&resp.body) {
                    bad_request_retries = 0;
                    report_queue_state(&v, observe);
                }
                if fast {
                    let e = resp.to_error();
                    wait_retry(core, request_id, error_streak, backoff(error_streak), &e).await;
                    error_streak += 1;
                }
            }
            500..=599 => {
                core.progress.note_error(&resp.to_error());
                if fast {
                    let e = resp.to_error();
                    wait_retry(core, request_id, error_streak, backoff(error_streak), &e).await;
                    error_streak += 1;
                }
            }
            429 => {
                let d = retry_after(&resp, policy.max_retry_after)
                    .unwrap_or_else(|| backoff(error_streak));
                wait_retry(core, request_id, error_streak, d, &resp.to_error()).await;
                error_streak += 1;
            }
            400 if is_bare_400(&resp) => {
                let e = resp.to_error();
                wait_retry(core, request_id, error_streak, backoff(error_streak), &e).await;
                error_streak += 1;
            }
            400 if bad_request_retries < 3 => bad_request_retries += 1,
            402 => {
                tracing::warn!(
                    "The job is paused due to billing status (retrieve_future {request_id})"
                );
                core.progress.sleep_backoff(policy.billing_pause_step).await;
            }
            410 => {
                let mut e = resp.to_error().with_request_id(request_id);
                e.kind = ErrorKind::Expired;
                e.message = format!(
                    "the future {request_id} expired or is unknown to the server ({})",
                    e.message
                );
                return Err(e);
            }
            _ => {
                return Err(resp.to_error().with_request_id(request_id));
            }
        }
    }
}

/// Records a failed poll, announces the retry and waits the backoff.
async fn wait_retry(
    core: &ClientCore,
    request_id: &str,
    attempt: u32,
    delay: Duration,
    error: &Error,
) {
    core.progress.note_error(error);
    core.events.emit(crate::core::events::Event::Retry {
        request_id: Some(request_id.to_string()),
        operation: "POST /api/v1/retrieve_future".into(),
        attempt,
        delay_secs: delay.as_secs_f64(),
        error: error.to_string(),
    });
    core.progress.sleep_backoff(delay).await;
}

fn report_queue_state(v: &Value, observe: QueueObserver<'_>) {
    let state = v
        .get("queue_state")
        .and_then(|s| serde_json::from_value::<QueueState>(s.clone()).ok())
        .unwrap_or(QueueState::Unknown);
    let reason = v
        .get("queue_state_reason")
        .and_then(Value::as_str)
        .map(crate::core::sanitize::server_text);
    if state != QueueState::Unknown || reason.is_some() {
        observe(state, reason);
    }
}

fn request_failed(v: &Value, request_id: &str) -> Error {
    // Read in place: the object may hold a large server text, and only 4 KiB of it is kept.
    let failed = RequestFailedResponse {
        error: match v.get("error") {
            Some(Value::String(s)) => crate::core::sanitize::server_text(s),
            Some(other) => crate::core::sanitize::server_text(&other.to_string()),
            None => String::new(),
        },
        category: v
            .get("category")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or(RequestErrorCategory::Unknown),
    };
    let kind = if failed.category == RequestErrorCategory::User {
        ErrorKind::User
    } else {
        ErrorKind::Fatal
    };
    let mut e = Error::new(kind, failed.error).with_request_id(request_id);
    e.category = Some(failed.category);
    e
}
