//! The `retrieve_future` polling loop with the dispatch table of PROTOCOL.md 8.1.3 (the
//! caller's handle on an operation is [`ApiFuture`](crate::core::api_future::ApiFuture)).
//!
//! Differences from the official SDK, on purpose (each is a row of
//! `docs/conformance.md`): no spinning and no slowness under faults. A poll the
//! server *held* (answered after at least [`RetryPolicy::min_poll_duration`]) or any decoded
//! outcome resets the backoff and the next poll goes out at once; a poll that fails without
//! being held (an instant 5xx, 408 or 429, a connection error) is retried after
//! [`RetryPolicy::poll_backoff`], which grows only while such failures persist (100 ms doubling
//! to 1.5 s by default, minus up to 25 % jitter). The failure streak is shared per host (one
//! [`ClientCore`]), so thousands of pending futures back off together and, thanks to the
//! jitter, never retry in lockstep; `Retry-After`/`Retry-After-Ms` defer every poll of the
//! host; `x-should-retry` overrides the status rules. A try-again answered without a hold is
//! paced by `poll_backoff_initial` instead of re-polled at once. A JSON result is accepted
//! for protobuf-typed results too.

use crate::core::byte_budget::BytePermit;
use crate::core::config::RetryPolicy;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::retry::{is_bare_400, retry_after};
use crate::core::telemetry::{PollKind, PollSite};
use crate::core::types::{
    FutureRetrieveRequest, QueueState, RequestErrorCategory, RequestFailedResponse,
};
use crate::core::ClientCore;
use bytes::Bytes;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;
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
    /// save_weights_external.
    SaveWeightsExternal,
    /// create_custom_loss.
    CreateCustomLoss,
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
            RequestType::SaveWeightsExternal => "SaveWeightsExternal",
            RequestType::CreateCustomLoss => "CreateCustomLoss",
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

/// The poll backoff state shared by every future of one host (one [`ClientCore`]): the
/// streak of consecutive unheld poll failures and a `Retry-After` deadline.
#[derive(Debug, Default)]
pub struct PollBackoff {
    streak: AtomicU32,
    not_before: Mutex<Option<Instant>>,
}

impl PollBackoff {
    /// Records an unheld failure; returns the host's streak.
    fn failed(&self) -> u32 {
        self.streak
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
            .min(64)
    }

    /// A held answer or a decoded outcome: the host is answering properly again.
    fn reset(&self) {
        self.streak.store(0, Ordering::Relaxed);
    }

    /// The host's current failure streak.
    pub fn streak(&self) -> u32 {
        self.streak.load(Ordering::Relaxed)
    }

    /// Defers every poll of the host until `until` (a `Retry-After`).
    fn defer(&self, until: Instant) {
        let mut nb = self.not_before.lock().unwrap();
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
        }
    }

    /// How long a poll must still wait for the host's `Retry-After`.
    fn deferred(&self) -> Duration {
        self.not_before
            .lock()
            .unwrap()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

/// How a poll loop starts (8.2.4: after the batched poller reported the completion).
#[derive(Clone, Copy, Debug)]
pub struct PollStart {
    /// The first poll's `allow_metadata_only`.
    pub allow_metadata_only: bool,
    /// Bytes to reserve from the in-flight response budget before the first poll (the
    /// completion's announced payload size; 0 = none).
    pub reserve_bytes: u64,
}

impl Default for PollStart {
    fn default() -> Self {
        PollStart {
            allow_metadata_only: true,
            reserve_bytes: 0,
        }
    }
}

/// Polls `retrieve_future` until the future finishes.
pub async fn poll_until_done(
    core: &ClientCore,
    policy: &RetryPolicy,
    request_id: &str,
    rtype: RequestType,
    submit_roundtrip: Duration,
    observe: QueueObserver<'_>,
    polls: &AtomicU32,
) -> Result<Payload> {
    poll_with(
        core,
        policy,
        request_id,
        rtype,
        submit_roundtrip,
        observe,
        polls,
        PollStart::default(),
    )
    .await
}

/// [`poll_until_done`] starting from `start`. A protobuf payload fetched after a size
/// announcement keeps its in-flight budget bytes until the payload's last reference is
/// dropped (after decoding).
#[allow(clippy::too_many_arguments)]
pub async fn poll_with(
    core: &ClientCore,
    policy: &RetryPolicy,
    request_id: &str,
    rtype: RequestType,
    submit_roundtrip: Duration,
    observe: QueueObserver<'_>,
    polls: &AtomicU32,
    start: PollStart,
) -> Result<Payload> {
    let mut allow_metadata_only = start.allow_metadata_only;
    let mut permit: Option<BytePermit> = None;
    let mut announced_bytes: Option<u64> = None;
    if start.reserve_bytes > 0 {
        permit = Some(core.inflight_response.acquire(start.reserve_bytes).await);
        announced_bytes = Some(start.reserve_bytes);
    }
    // Consecutive polls of this future that failed without being held.
    let mut streak: u32 = 0;
    let mut bad_request_retries = 0;
    let idempotency_key = format!("tinkex-retry-{}", crate::core::rand::uuid4());
    let mut iteration: u32 = 0;
    let host = &core.poll_backoff;
    let poll_started = Instant::now();
    // Reports a failed poll to telemetry (PROTOCOL.md 16.4); never waits.
    let report = |e: &Error, kind: PollKind, iteration: u32, bad: u32, streak: u32| {
        if let Some(t) = core.telemetry.get() {
            let site = poll_site(request_id, rtype, iteration, poll_started);
            t.poll_status_error(site, e, kind, bad, streak);
        }
    };
    // The body is serialized once per value of `allow_metadata_only`, not per poll.
    let mut body: Option<(bool, Bytes)> = None;
    loop {
        use crate::core::transport::{Body, Pool, Request};
        use reqwest::header::{HeaderName, HeaderValue};
        let json = match &body {
            Some((allow, b)) if *allow == allow_metadata_only => b.clone(),
            _ => {
                let b: Bytes = serde_json::to_vec(&FutureRetrieveRequest {
                    request_id: request_id.to_string(),
                    allow_metadata_only,
                })
                .expect("request bodies serialize")
                .into();
                body = Some((allow_metadata_only, b.clone()));
                b
            }
        };
        let mut req = Request {
            method: reqwest::Method::POST,
            path: "/api/v1/retrieve_future".into(),
            body: Body::Json(json),
            pool: Pool::Retrieve,
            timeout: core.config.timeouts.retrieve_future,
            idempotency_key: Some(idempotency_key.clone()),
            accept_proto: rtype.wants_proto(),
            headers: crate::core::transport::ExtraHeaders::with_capacity(4),
            announced_response_bytes: None,
        };
        req.headers.push((
            HeaderName::from_static("x-tinker-request-iteration"),
            crate::core::transport::small_int_value(iteration),
        ));
        req.headers.push((
            HeaderName::from_static("x-tinker-request-type"),
            HeaderValue::from_static(rtype.as_str()),
        ));
        // 1.6.3: the SDK asks for its raw-response wrapper on every poll.
        req.headers.push((
            HeaderName::from_static("x-stainless-raw-response"),
            HeaderValue::from_static("raw"),
        ));
        if iteration == 0 {
            if let Ok(v) = HeaderValue::from_str(&seconds_4(submit_roundtrip)) {
                req.headers.push((
                    HeaderName::from_static("x-tinker-create-promise-roundtrip-time"),
                    v,
                ));
            }
        }
        iteration += 1;
        polls.fetch_add(1, Ordering::Relaxed);
        req.announced_response_bytes = announced_bytes;
        // An unheld failure: grow this future's and the host's streak and wait the backoff
        // (or the server's Retry-After, which defers every poll of the host).
        let unheld_failure = |streak: &mut u32, e: &Error, after: Option<Duration>| {
            *streak += 1;
            let shared = host.failed();
            let unit = crate::core::rand::unit();
            let delay = match after {
                Some(d) => {
                    host.defer(Instant::now() + d);
                    // Spread the wake-ups of many futures over the first backoff step.
                    d + policy.poll_backoff_initial.mul_f64(unit)
                }
                None => policy
                    .poll_backoff((*streak).max(shared), unit)
                    .max(host.deferred()),
            };
            (delay, e.clone())
        };
        let resp = match core.transport.send(&req, 0).await {
            Ok(r) => r,
            Err(e) if !e.is_retryable() => {
                report(&e, PollKind::Fatal, iteration, bad_request_retries, streak);
                return Err(e.with_request_id(request_id));
            }
            Err(e) => {
                report(
                    &e,
                    PollKind::RetryWithBackoff,
                    iteration,
                    bad_request_retries,
                    streak,
                );
                // Connection error or timeout (no response); a bare 400 converted by the
                // transport's reconnect rule arrives here too.
                let (d, e) = unheld_failure(&mut streak, &e, None);
                wait_retry(core, request_id, streak, d, &e).await;
                continue;
            }
        };
        let held = resp.elapsed >= policy.min_poll_duration;
        let forced = resp
            .header("x-should-retry")
            .map(|v| v.trim().eq_ignore_ascii_case("true"));
        if !resp.is_success() && resp.status != 402 && forced == Some(false) {
            let e = fatal_status(&resp, request_id);
            report(&e, PollKind::Fatal, iteration, bad_request_retries, streak);
            return Err(e);
        }
        if !resp.is_success() && resp.status != 402 {
            let kind = match resp.status {
                408 | 500..=599 => PollKind::Retry,
                400 => PollKind::RetryIfBudget,
                410 => PollKind::RetryableException,
                429 => PollKind::RetryWithBackoff,
                _ if forced == Some(true) => PollKind::RetryWithBackoff,
                _ => PollKind::Fatal,
            };
            let e = resp.to_error();
            report(&e, kind, iteration, bad_request_retries, streak);
        }
        match resp.status {
            200..=299 => {
                // Every decoded outcome resets the backoff (8.1.3).
                streak = 0;
                host.reset();
                let is_proto = resp
                    .header("content-type")
                    .is_some_and(|c| c.contains("application/x-protobuf"));
                if is_proto {
                    observe(QueueState::Active, None);
                    return Ok(Payload::Proto(hold_bytes(resp.body, permit)));
                }
                let v: Value = match resp.json("retrieve_future") {
                    Ok(v) => v,
                    Err(e) => {
                        if let Some(t) = core.telemetry.get() {
                            let site = poll_site(request_id, rtype, iteration, poll_started);
                            t.poll_validation_error(site, &e, "FutureRetrieveResponse");
                        }
                        return Err(e.with_request_id(request_id));
                    }
                };
                if v.get("type").and_then(Value::as_str) == Some("try_again") {
                    tracing::warn!("Retrying request {request_id} because of try_again");
                    report_queue_state(&v, observe);
                    if !held {
                        // A server that does not long-poll: pace instead of spinning.
                        let d = policy.poll_backoff(1, crate::core::rand::unit());
                        core.progress.sleep_backoff(d).await;
                    }
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
                    let size = v
                        .get("response_payload_size")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    // Held until this future finishes decoding (12.4 semantics: waits only
                    // while the budget is negative).
                    if size > 0 {
                        permit = Some(core.inflight_response.acquire(size).await);
                    }
                    // The announced size raises the body limit for the next poll (up to the
                    // hard cap, checked by the transport).
                    announced_bytes = Some(size).filter(|n| *n > 0);
                    continue;
                }
                observe(QueueState::Active, None);
                if v.get("error").is_some() {
                    let e = request_failed(&v, request_id);
                    if let Some(t) = core.telemetry.get() {
                        let site = poll_site(request_id, rtype, iteration, poll_started);
                        let category = match e.category {
                            Some(RequestErrorCategory::User) => "User",
                            Some(RequestErrorCategory::Server) => "Server",
                            _ => "Unknown",
                        };
                        t.poll_application_error(site, &e.message, category);
                    }
                    return Err(e);
                }
                return Ok(Payload::Json(v));
            }
            408 => {
                if let Ok(v) = serde_json::from_slice::<Value>(&resp.body) {
                    bad_request_retries = 0;
                    if v.get("queue_state").is_some_and(|q| !q.is_null()) {
                        report_queue_state(&v, observe);
                    }
                }
                if held {
                    streak = 0;
                    host.reset();
                } else {
                    let after = retry_after(&resp, policy.max_retry_after);
                    let (d, e) = unheld_failure(&mut streak, &resp.to_error(), after);
                    wait_retry(core, request_id, streak, d, &e).await;
                }
            }
            500..=599 => {
                core.progress.note_error(&resp.to_error());
                if held {
                    streak = 0;
                    host.reset();
                } else {
                    let after = retry_after(&resp, policy.max_retry_after);
                    let (d, e) = unheld_failure(&mut streak, &resp.to_error(), after);
                    wait_retry(core, request_id, streak, d, &e).await;
                }
            }
            429 => {
                let after = retry_after(&resp, policy.max_retry_after);
                let (d, e) = unheld_failure(&mut streak, &resp.to_error(), after);
                wait_retry(core, request_id, streak, d, &e).await;
            }
            400 => {
                if bad_request_retries >= MAX_BAD_REQUEST_RETRIES {
                    let mut e = fatal_status(&resp, request_id);
                    e.message = format!(
                        "{} (retrieve_future answered 400 {} times in a row)",
                        e.message,
                        MAX_BAD_REQUEST_RETRIES + 1
                    );
                    return Err(e);
                }
                bad_request_retries += 1;
                if is_bare_400(&resp) {
                    // A proxy's empty 400 whose reconnect budget ran out: back off.
                    let (d, e) = unheld_failure(&mut streak, &resp.to_error(), None);
                    wait_retry(core, request_id, streak, d, &e).await;
                }
            }
            402 => {
                // The client's shared billing pause (13.7): one incident for every layer.
                let e = resp.to_error().with_request_id(request_id);
                match core.billing.on_402(&e) {
                    crate::core::billing::BillingVerdict::Pause => {
                        core.progress.sleep_backoff(core.billing.pause_step()).await;
                    }
                    crate::core::billing::BillingVerdict::Fail => return Err(e),
                }
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
            _ if forced == Some(true) => {
                let after = retry_after(&resp, policy.max_retry_after);
                let (d, e) = unheld_failure(&mut streak, &resp.to_error(), after);
                wait_retry(core, request_id, streak, d, &e).await;
            }
            _ => return Err(fatal_status(&resp, request_id)),
        }
    }
}

/// Seconds with four decimals (`{:.4}` of the seconds), by integer arithmetic: no float
/// formatting on the poll path.
fn seconds_4(d: Duration) -> String {
    let units = (d.as_nanos() + 50_000) / 100_000;
    format!("{}.{:04}", units / 10_000, units % 10_000)
}

/// Consecutive 400 answers retried by one future (8.1.3).
const MAX_BAD_REQUEST_RETRIES: u32 = 3;

/// A poll status that ends the future: never retried above this loop (a 409 or a 5xx with
/// `x-should-retry: false` is not "transient" here, 13.9).
fn fatal_status(resp: &crate::core::transport::Response, request_id: &str) -> Error {
    let mut e = resp.to_error().with_request_id(request_id);
    if e.kind == ErrorKind::Transient {
        e.kind = ErrorKind::Fatal;
    }
    e.message = format!("Error retrieving result: {}", e.message);
    e
}

/// Ties `permit` to the payload: it is released when the last reference to the bytes is
/// dropped, i.e. after decoding.
fn hold_bytes(body: Bytes, permit: Option<BytePermit>) -> Bytes {
    struct Held(Bytes, #[allow(dead_code)] BytePermit);
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    match permit {
        Some(p) => Bytes::from_owner(Held(body, p)),
        None => body,
    }
}

/// Where a poll stands, for its telemetry events.
fn poll_site(request_id: &str, rtype: RequestType, iteration: u32, since: Instant) -> PollSite<'_> {
    PollSite {
        request_id,
        request_type: rtype.as_str(),
        iteration,
        elapsed: since.elapsed(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_backoff_grows_while_failures_persist_caps_and_spreads() {
        let p = RetryPolicy::default();
        let ms = |streak, unit| p.poll_backoff(streak, unit).as_millis();
        assert_eq!(ms(1, 0.0), 100);
        assert_eq!(ms(2, 0.0), 200);
        assert_eq!(ms(4, 0.0), 800);
        assert_eq!(ms(5, 0.0), 1500, "capped");
        assert_eq!(ms(60, 0.0), 1500);
        // Jitter only shortens (by up to 25 %): different futures wake at different times.
        assert!(ms(5, 0.999) >= 1125 && ms(5, 0.999) < ms(5, 0.5));
        // The worst case of 5 s of instant failures: every delay at its shortest.
        let (mut t, mut polls, mut streak) = (0.0, 1, 0);
        loop {
            streak += 1;
            t += p.poll_backoff(streak, 0.999_999).as_secs_f64();
            if t >= 5.0 {
                break;
            }
            polls += 1;
        }
        assert!(polls <= 10, "{polls} polls in 5 s");
    }

    #[test]
    fn seconds_4_matches_the_float_format() {
        for ms in [0u64, 1, 12, 999, 1_000, 1_234, 59_999, 3_600_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(seconds_4(d), format!("{:.4}", d.as_secs_f64()), "{ms} ms");
        }
        assert_eq!(seconds_4(Duration::from_nanos(123_456_789)), "0.1235");
    }

    #[test]
    fn host_backoff_streak_and_retry_after() {
        let b = PollBackoff::default();
        assert_eq!(b.failed(), 1);
        assert_eq!(b.failed(), 2);
        b.reset();
        assert_eq!(b.streak(), 0);
        assert_eq!(b.deferred(), Duration::ZERO);
    }
}
