//! The retry layers of a request *send* (PROTOCOL.md 13.1-13.4, 13.7, 13.9); polls of a
//! future have their own loop ([`crate::core::polling`]).
//!
//! Outermost first:
//!
//! 1. **Holder retry loop** (13.4), around the sends marked "Holder retry: yes" in section 4
//!    (everything but create_session, create_model, create_sampling_session, telemetry and
//!    the heartbeat): for `holder_window` (300 s) after the first attempt, a failed call whose
//!    error is retryable (transport error, timeout, the converted empty 400, 408, 409, 429,
//!    5xx) is re-issued after `min(2^attempt, 30)` s (never past the window). Each re-issue
//!    is a new call: a **new** `X-Idempotency-Key`, the same body (so the same `seq_id`). A
//!    402 goes to the client's [`Billing`](crate::core::billing::Billing) pause: sleep and
//!    re-issue, attempt unchanged, until the pause maximum, then the typed billing error.
//! 2. **Connection-pool empty-400 rule** (1.5): in [`Transport::send`].
//! 3. **HTTP layer** (13.2): up to `max_retries` retries of one call (10; 0 for the endpoints
//!    of [`http_max_retries`]), same idempotency key, `x-stainless-retry-count` = retries
//!    taken, delay `min(0.5·2ⁿ, 10)·(1 − 0.25·U)` unless `retry-after-ms`/`retry-after`
//!    (seconds, float or HTTP date) asks for (0, 60] s; retryable: transport errors, 408, 409,
//!    429, ≥ 500, or whatever `x-should-retry: true|false` says.
//!
//! Everything runs under the client's progress timeout (the caller's guard), the outer bound
//! the SDK does not have. `RetryPolicy::max_attempts`, when set, caps the HTTP attempts of one
//! send over both layers.

use crate::core::billing::{Billing, BillingVerdict};
use crate::core::config::RetryPolicy;
use crate::core::error::{Error, Result};
use crate::core::events::{Event, EventBus};
use crate::core::progress::ProgressTracker;
use crate::core::telemetry::RetryLoop;
use crate::core::transport::{Request, Response, Transport};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// What to do after a failed HTTP-layer attempt.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Give up at this layer.
    Fail,
    /// Retry after this delay.
    RetryAfter(Duration),
}

/// Reads `retry-after-ms` (milliseconds) or `retry-after` (seconds, float, or an HTTP date)
/// and keeps it when in (0, max].
pub fn retry_after(resp: &Response, max: Duration) -> Option<Duration> {
    let secs = resp
        .header("retry-after-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|ms| ms / 1000.0)
        .or_else(|| {
            let v = resp.header("retry-after")?.trim();
            v.parse::<f64>().ok().or_else(|| {
                let at = httpdate::parse_http_date(v).ok()?;
                Some(match at.duration_since(std::time::SystemTime::now()) {
                    Ok(d) => d.as_secs_f64(),
                    Err(_) => 0.0,
                })
            })
        })?;
    (secs.is_finite() && secs > 0.0 && secs <= max.as_secs_f64())
        .then(|| Duration::from_secs_f64(secs))
}

/// Whether a 400 is the empty "reconnect" kind (no content length, or zero, and no body).
/// The transport converts these into connection errors while the pool's budget lasts.
pub fn is_bare_400(resp: &Response) -> bool {
    resp.status == 400
        && resp
            .header("content-length")
            .is_none_or(|v| v.trim() == "0")
        && resp.body.is_empty()
}

/// Whether `err` is an empty 400 the transport converted into a connection error (1.5): the
/// pool's rule sits above the HTTP layer in the SDK, so the HTTP layer does not retry it.
pub fn is_converted_400(err: &Error) -> bool {
    err.transport.is_some() && err.http_status == Some(400)
}

fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// The HTTP-layer retries of a call to `path` (section 4): 0 for the endpoints the SDK calls
/// with `max_retries=0`, else `policy.http_max_retries`.
pub fn http_max_retries(path: &str, policy: &RetryPolicy) -> u32 {
    match path_only(path) {
        "/api/v1/save_weights"
        | "/api/v1/save_weights_for_sampler"
        | "/api/v1/save_weights_external"
        | "/api/v1/asample"
        | "/api/v1/session_heartbeat"
        | "/api/v1/client/dynamic_config"
        | "/api/v1/retrieve_future"
        | "/api/v1/retrieve_futures"
        | "/api/v1/cancel_future" => 0,
        _ => policy.http_max_retries,
    }
}

/// Whether a send to `path` runs in the holder retry loop (section 4, "Holder retry").
pub fn uses_holder_loop(path: &str) -> bool {
    !matches!(
        path_only(path),
        "/api/v1/create_session"
            | "/api/v1/create_model"
            | "/api/v1/create_sampling_session"
            | "/api/v1/telemetry"
            | "/api/v1/session_heartbeat"
            | "/api/v1/auth/token"
            | "/api/v1/healthz"
            | "/api/v1/retrieve_future"
            | "/api/v1/retrieve_futures"
    )
}

/// The retryable set of 13.3, used by the holder loop: transport errors and timeouts
/// (including the converted empty 400), 408, 409, 429, 5xx.
pub fn holder_retryable(err: &Error) -> bool {
    if err.transport.is_some() {
        return err.is_retryable();
    }
    matches!(err.http_status, Some(408 | 409 | 429 | 500..=599))
}

/// Classifies a failed HTTP-layer attempt (`Err` = transport error, `Ok` = non-2xx) into
/// retry-after-delay or fail, for retry number `n`.
pub fn classify(
    policy: &RetryPolicy,
    n: u32,
    outcome: &std::result::Result<Response, Error>,
) -> Verdict {
    let backoff = policy.http_backoff(n, crate::core::rand::unit());
    let resp = match outcome {
        Err(e) if is_converted_400(e) => return Verdict::Fail,
        Err(e) if e.transport.is_some() && e.is_retryable() => return Verdict::RetryAfter(backoff),
        Err(_) => return Verdict::Fail,
        Ok(r) => r,
    };
    let forced =
        resp.header("x-should-retry")
            .and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            });
    let retryable = forced.unwrap_or(matches!(resp.status, 408 | 409 | 429 | 500..=599));
    if !retryable {
        return Verdict::Fail;
    }
    Verdict::RetryAfter(retry_after(resp, policy.max_retry_after).unwrap_or(backoff))
}

/// What a send needs from its client.
pub struct SendContext<'a> {
    /// The transport.
    pub transport: &'a Transport,
    /// The policy of this call.
    pub policy: &'a RetryPolicy,
    /// Progress tracker (backoffs and last error are recorded there).
    pub progress: &'a ProgressTracker,
    /// Retry events.
    pub events: &'a EventBus,
    /// The client's billing pause.
    pub billing: &'a Billing,
    /// Counts every HTTP attempt (the operation's status), if given.
    pub attempts: Option<&'a AtomicU32>,
    /// Where each failed holder-loop attempt is reported (PROTOCOL.md 16.4), if anywhere.
    pub telemetry: Option<&'a crate::core::telemetry::Telemetry>,
}

/// Rebuilds the request for a holder-loop re-issue (the ephemeral save_weights_for_sampler
/// takes a fresh `sampling_session_seq_id`, 6.6).
pub type Refresh<'a> = &'a (dyn Fn(&mut Request) + Send + Sync);

/// Sends `req` through the layers that apply to its path (see the module doc). Returns the
/// 2xx response, or the last error.
pub async fn send_with_retry(
    ctx: &SendContext<'_>,
    req: &Request,
    refresh: Option<Refresh<'_>>,
) -> Result<Response> {
    let holder = uses_holder_loop(&req.path);
    let max_retries = http_max_retries(&req.path, ctx.policy);
    let start = Instant::now();
    let started_at = std::time::SystemTime::now();
    let mut attempt: u32 = 0;
    let mut total: u32 = 0;
    let mut current = req.clone();
    loop {
        let err = match http_layer(ctx, &current, max_retries, &mut total).await {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        if let (true, Some(t)) = (holder, ctx.telemetry) {
            let retryable = holder_retryable(&err);
            let func = format!("{} {}", req.method, req.path);
            t.retry_exception(
                RetryLoop::Holder,
                &func,
                &err,
                retryable,
                attempt,
                started_at,
            );
        }
        if !holder || capped(ctx.policy, total) {
            return Err(finish(err, ctx.policy, total));
        }
        if err.http_status == Some(402) && err.transport.is_none() {
            match ctx.billing.on_402(&err) {
                BillingVerdict::Pause => {
                    ctx.progress.sleep_backoff(ctx.billing.pause_step()).await;
                    current = reissue(req, refresh);
                    continue;
                }
                BillingVerdict::Fail => return Err(ctx.billing.exceeded(err)),
            }
        }
        let elapsed = start.elapsed();
        if !holder_retryable(&err) || elapsed >= ctx.policy.holder_window {
            return Err(err);
        }
        let wait = ctx
            .policy
            .holder_backoff(attempt)
            .min(ctx.policy.holder_window - elapsed);
        ctx.events.emit(Event::Retry {
            request_id: None,
            operation: format!("{} {} (re-issued)", req.method, req.path),
            attempt,
            delay_secs: wait.as_secs_f64(),
            error: err.to_string(),
        });
        tracing::debug!(
            "{} {}: re-issuing in {:.3} s after: {err}",
            req.method,
            req.path,
            wait.as_secs_f64()
        );
        ctx.progress.sleep_backoff(wait).await;
        attempt += 1;
        current = reissue(req, refresh);
    }
}

/// A new call for the holder loop: a new idempotency key (a fresh call in the SDK), the same
/// body unless `refresh` changes it.
fn reissue(req: &Request, refresh: Option<Refresh<'_>>) -> Request {
    let mut next = req.clone();
    if next.idempotency_key.is_some() {
        next.idempotency_key = Some(crate::core::transport::new_idempotency_key());
    }
    if let Some(f) = refresh {
        f(&mut next);
    }
    next
}

fn capped(policy: &RetryPolicy, total: u32) -> bool {
    policy.max_attempts.is_some_and(|max| total >= max)
}

fn finish(mut e: Error, policy: &RetryPolicy, total: u32) -> Error {
    if capped(policy, total) {
        e.message = format!("{} (gave up after {total} attempts)", e.message);
    }
    e
}

/// One call with the HTTP layer's retries: the same request (same idempotency key) up to
/// `max_retries + 1` times. `Ok` only for a 2xx.
async fn http_layer(
    ctx: &SendContext<'_>,
    req: &Request,
    max_retries: u32,
    total: &mut u32,
) -> Result<Response> {
    let mut n: u32 = 0;
    loop {
        if let Some(a) = ctx.attempts {
            a.fetch_add(1, Ordering::Relaxed);
        }
        *total += 1;
        let outcome = ctx.transport.send(req, n).await;
        if let Ok(resp) = &outcome {
            if resp.is_success() {
                ctx.progress.record();
                return outcome;
            }
        }
        let verdict = classify(ctx.policy, n, &outcome);
        let error = match outcome {
            Ok(resp) => resp.to_error(),
            Err(e) => e,
        };
        ctx.progress.note_error(&error);
        let delay = match verdict {
            Verdict::RetryAfter(d) if n < max_retries && !capped(ctx.policy, *total) => d,
            _ => return Err(error),
        };
        ctx.events.emit(Event::Retry {
            request_id: None,
            operation: format!("{} {}", req.method, req.path),
            attempt: n,
            delay_secs: delay.as_secs_f64(),
            error: error.to_string(),
        });
        ctx.progress.sleep_backoff(delay).await;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn resp(status: u16, headers: &[(&'static str, &str)], body: &str) -> Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        Response {
            status,
            headers: h,
            body: body.to_string().into(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn statuses_and_headers_decide() {
        let p = RetryPolicy::default();
        let v = |r: Response| classify(&p, 0, &Ok(r));
        assert!(matches!(v(resp(503, &[], "")), Verdict::RetryAfter(_)));
        assert!(matches!(v(resp(409, &[], "{}")), Verdict::RetryAfter(_)));
        assert!(matches!(v(resp(408, &[], "{}")), Verdict::RetryAfter(_)));
        assert_eq!(
            v(resp(404, &[("content-length", "2")], "{}")),
            Verdict::Fail
        );
        assert!(matches!(
            v(resp(404, &[("x-should-retry", "true")], "{}")),
            Verdict::RetryAfter(_)
        ));
        assert_eq!(
            v(resp(503, &[("x-should-retry", "false")], "")),
            Verdict::Fail
        );
        assert_eq!(v(resp(400, &[], "")), Verdict::Fail, "no HTTP-layer retry");
        assert_eq!(
            v(resp(402, &[], "")),
            Verdict::Fail,
            "the holder loop pauses"
        );
        assert_eq!(
            v(resp(429, &[("retry-after", "3")], "")),
            Verdict::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            v(resp(429, &[("retry-after", "1.5")], "")),
            Verdict::RetryAfter(Duration::from_millis(1500))
        );
        assert_eq!(
            v(resp(429, &[("retry-after-ms", "250")], "")),
            Verdict::RetryAfter(Duration::from_millis(250))
        );
        match v(resp(429, &[("retry-after", "600")], "")) {
            Verdict::RetryAfter(d) => assert!(d <= p.max_delay, "over-long Retry-After ignored"),
            other => panic!("{other:?}"),
        }
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(5));
        match v(resp(429, &[("retry-after", &soon)], "")) {
            Verdict::RetryAfter(d) => assert!(d > Duration::from_secs(3), "{d:?}"),
            other => panic!("{other:?}"),
        }
        let mut converted = Error::new(crate::core::error::ErrorKind::Transient, "x");
        converted.transport = Some(crate::core::error::TransportCause::Connect);
        converted.http_status = Some(400);
        assert_eq!(classify(&p, 0, &Err(converted.clone())), Verdict::Fail);
        assert!(holder_retryable(&converted));
        assert!(!holder_retryable(&Error::from_status(410, "")));
        assert!(!holder_retryable(&Error::from_status(402, "")));
        assert!(holder_retryable(&Error::from_status(409, "")));
    }

    #[test]
    fn per_endpoint_retries_follow_section_4() {
        let p = RetryPolicy::default();
        for path in [
            "/api/v1/save_weights",
            "/api/v1/save_weights_for_sampler",
            "/api/v1/save_weights_external",
            "/api/v1/asample",
            "/api/v1/session_heartbeat",
            "/api/v1/client/dynamic_config",
            "/api/v1/retrieve_future",
            "/api/v1/retrieve_futures",
            "/api/v1/cancel_future",
        ] {
            assert_eq!(http_max_retries(path, &p), 0, "{path}");
        }
        for path in [
            "/api/v1/forward_backward",
            "/api/v1/optim_step",
            "/api/v1/create_session",
            "/api/v1/training_runs?limit=1",
        ] {
            assert_eq!(http_max_retries(path, &p), 10, "{path}");
        }
        for path in [
            "/api/v1/create_session",
            "/api/v1/create_model",
            "/api/v1/create_sampling_session",
            "/api/v1/telemetry",
        ] {
            assert!(!uses_holder_loop(path), "{path}");
        }
        for path in [
            "/api/v1/forward_backward",
            "/api/v1/save_weights",
            "/api/v1/asample",
            "/api/v1/client/config",
            "/api/v1/training_runs/r/checkpoints/c/publish",
        ] {
            assert!(uses_holder_loop(path), "{path}");
        }
    }
}
