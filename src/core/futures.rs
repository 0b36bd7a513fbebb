//! Futures: [`ApiFuture`], the caller's handle on one logical operation, and the
//! `retrieve_future` polling loop with the dispatch table of PROTOCOL.md 8.1.3.
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
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

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

enum Slot<T> {
    Pending,
    Ready(Result<T>),
    Taken,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    done: watch::Sender<bool>,
    cancel: watch::Sender<bool>,
    request_id: Mutex<Option<String>>,
}

/// Lets a running operation publish its server request id.
#[derive(Clone)]
pub struct FutureHandle {
    request_id: Arc<dyn Fn(&str) + Send + Sync>,
}

impl FutureHandle {
    /// Records the server's request id once known.
    pub fn set_request_id(&self, id: &str) {
        (self.request_id)(id)
    }
}

/// The caller's handle on one logical operation (submission, polling and decoding).
///
/// Await it (it implements [`IntoFuture`]) or use [`ApiFuture::result_timeout`]. Dropping it
/// does not cancel the operation; [`ApiFuture::cancel`] does. Cloning shares the handle.
pub struct ApiFuture<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for ApiFuture<T> {
    fn clone(&self) -> Self {
        ApiFuture {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Send + 'static> ApiFuture<T> {
    /// Runs `op` on `runtime`. A panic inside `op` becomes an error of kind `Panic`.
    pub fn spawn<F, Fut>(runtime: &tokio::runtime::Handle, op: F) -> Self
    where
        F: FnOnce(FutureHandle) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (done, _) = watch::channel(false);
        let (cancel, mut cancel_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::Pending),
            done,
            cancel,
            request_id: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        let handle = FutureHandle {
            request_id: Arc::new(move |id: &str| {
                if let Some(s) = weak.upgrade() {
                    *s.request_id.lock().unwrap() = Some(id.to_string());
                }
            }),
        };
        let op = CatchUnwind(Box::pin(op(handle)));
        let s2 = shared.clone();
        // One task per operation: the operation itself, raced against cancellation (which
        // drops it, and with it any HTTP request in flight); a panic becomes an error.
        runtime.spawn(async move {
            let result = tokio::select! {
                r = op => r.unwrap_or_else(|p| Err(Error::new(ErrorKind::Panic, format!("internal panic: {}", panic_message(p))))),
                _ = cancel_rx.wait_for(|c| *c) => Err(Error::cancelled()),
            };
            let result = match (result, s2.request_id.lock().unwrap().clone()) {
                (Err(mut e), Some(id)) if e.request_id.is_none() => {
                    e.request_id = Some(id);
                    Err(e)
                }
                (r, _) => r,
            };
            *s2.slot.lock().unwrap() = Slot::Ready(result);
            s2.done.send_replace(true);
        });
        ApiFuture { shared }
    }

    /// A future that is already finished.
    pub fn ready(result: Result<T>) -> Self {
        let (done, _) = watch::channel(true);
        let (cancel, _) = watch::channel(false);
        ApiFuture {
            shared: Arc::new(Shared {
                slot: Mutex::new(Slot::Ready(result)),
                done,
                cancel,
                request_id: Mutex::new(None),
            }),
        }
    }

    /// Requests cancellation: polling and any in-flight HTTP attempt stop; the result becomes
    /// a `Cancelled` error unless it was already finished. Idempotent; never blocks.
    pub fn cancel(&self) {
        self.shared.cancel.send_replace(true);
    }

    /// Whether the operation finished (success, error or cancellation).
    pub fn is_done(&self) -> bool {
        *self.shared.done.borrow()
    }

    /// The server's request id, once the submission was accepted.
    pub fn request_id(&self) -> Option<String> {
        self.shared.request_id.lock().unwrap().clone()
    }

    /// Waits until finished, without taking the result.
    pub async fn wait_done(&self) {
        let mut rx = self.shared.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Takes the result if finished: `None` while pending; an `Err` of kind `User` when
    /// the result was already taken. Never blocks.
    pub fn try_take(&self) -> Option<Result<T>> {
        let mut slot = self.shared.slot.lock().unwrap();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Pending => {
                *slot = Slot::Pending;
                None
            }
            Slot::Ready(r) => Some(r),
            Slot::Taken => Some(Err(Error::user(
                "the result of this future was already taken",
            ))),
        }
    }

    /// Waits for the result and takes it.
    pub async fn result(self) -> Result<T> {
        self.wait_done().await;
        self.try_take().expect("finished futures have a result")
    }

    /// Waits at most `timeout`; on timeout returns a `Timeout` error and leaves the operation
    /// running (call again, or [`cancel`](Self::cancel) it).
    pub async fn result_timeout(&self, timeout: Duration) -> Result<T> {
        match tokio::time::timeout(timeout, self.wait_done()).await {
            Ok(()) => self.try_take().expect("finished futures have a result"),
            Err(_) => Err(Error::timeout(timeout)),
        }
    }
}

impl<T: Send + 'static> IntoFuture for ApiFuture<T> {
    type Output = Result<T>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T>> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.result())
    }
}

/// Polls a future, turning a panic during a poll into an `Err` with the panic payload.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(payload) => std::task::Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Instant of an operation's start, for progress events and error messages.
pub fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn result_cancel_timeout_and_panic() {
        let rt = tokio::runtime::Handle::current();
        let f = ApiFuture::spawn(&rt, |_| async { Ok::<_, Error>(7) });
        assert_eq!(f.clone().await.unwrap(), 7);
        assert!(f.try_take().unwrap().is_err(), "second take is an error");

        let pending = ApiFuture::spawn(&rt, |_| async {
            std::future::pending::<()>().await;
            Ok::<i32, Error>(1)
        });
        let e = pending
            .result_timeout(Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(!pending.is_done(), "a wait timeout does not cancel");
        pending.cancel();
        pending.cancel();
        assert_eq!(
            pending.clone().await.unwrap_err().kind,
            ErrorKind::Cancelled
        );

        let boom = ApiFuture::spawn(&rt, |_| async {
            if true {
                panic!("injected");
            }
            Ok::<i32, Error>(0)
        });
        let e = boom.await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Panic);
        assert!(e.message.contains("injected"));
    }
}
