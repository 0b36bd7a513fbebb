//! The one retry loop for sending a request (submissions and REST calls). Polls of a future
//! use [`crate::core::polling`], with the same policy and backoff.
//!
//! Retryable: transport errors and timeouts, 408, 409, 429, 5xx, and any status with
//! `x-should-retry: true` (`false` forbids retrying). A 400 without a body length is a
//! broken-proxy answer and retried like a connection error. `Retry-After`/`Retry-After-Ms`
//! in (0, max_retry_after] replace the backoff. A 402 pauses (billing) for up to
//! `billing_max_pause`. Attempts are unbounded by default; the progress timeout bounds them.
//! The request, its body (so its `seq_id`) and its idempotency key are identical on every
//! attempt.

use crate::core::config::RetryPolicy;
use crate::core::error::{Error, ErrorKind, Result};
use crate::core::events::{Event, EventBus};
use crate::core::progress::ProgressTracker;
use crate::core::transport::{Request, Response, Transport};
use std::time::Duration;
use tokio::time::Instant;

/// What to do after a failed attempt.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Give up with this error.
    Fail,
    /// Retry after this delay.
    RetryAfter(Duration),
    /// Billing pause: wait the pause step and retry (not counted as an attempt).
    BillingPause,
}

/// Reads `retry-after-ms` / `retry-after` (seconds) and keeps it when in (0, max].
pub fn retry_after(resp: &Response, max: Duration) -> Option<Duration> {
    let secs = resp
        .header("retry-after-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|ms| ms / 1000.0)
        .or_else(|| {
            resp.header("retry-after")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })?;
    (secs > 0.0 && secs <= max.as_secs_f64()).then(|| Duration::from_secs_f64(secs))
}

/// Whether a 400 is the empty "reconnect" kind (no content length, or zero).
pub fn is_bare_400(resp: &Response) -> bool {
    resp.status == 400
        && resp
            .header("content-length")
            .is_none_or(|v| v.trim() == "0")
        && resp.body.is_empty()
}

/// Classifies a failed attempt (`Err` = transport error, `Ok` = non-2xx response).
pub fn classify(
    policy: &RetryPolicy,
    attempt: u32,
    outcome: &std::result::Result<Response, Error>,
    billing_elapsed: Option<Duration>,
) -> Verdict {
    let backoff = policy.backoff(attempt, crate::core::rand::unit());
    let resp = match outcome {
        Err(e) if e.transport.is_some() && e.is_retryable() => return Verdict::RetryAfter(backoff),
        Err(_) => return Verdict::Fail,
        Ok(r) => r,
    };
    if resp.status == 402 {
        return match billing_elapsed {
            Some(e) if e >= policy.billing_max_pause => Verdict::Fail,
            _ => Verdict::BillingPause,
        };
    }
    let forced = resp
        .header("x-should-retry")
        .map(|v| v.eq_ignore_ascii_case("true"));
    let retryable = forced
        .unwrap_or_else(|| matches!(resp.status, 408 | 409 | 429 | 500..=599) || is_bare_400(resp));
    if !retryable {
        return Verdict::Fail;
    }
    Verdict::RetryAfter(retry_after(resp, policy.max_retry_after).unwrap_or(backoff))
}

/// Sends `req` until it gets a 2xx or a non-retryable answer. The caller bounds the whole
/// loop with the progress guard.
pub async fn send_with_retry(
    transport: &Transport,
    policy: &RetryPolicy,
    progress: &ProgressTracker,
    events: &EventBus,
    req: &Request,
    attempts: Option<&std::sync::atomic::AtomicU32>,
) -> Result<Response> {
    let mut attempt: u32 = 0;
    let mut billing_started: Option<Instant> = None;
    loop {
        if let Some(a) = attempts {
            a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let outcome = transport.send(req, attempt).await;
        if let Ok(resp) = &outcome {
            if resp.is_success() {
                return outcome;
            }
        }
        let verdict = classify(
            policy,
            attempt,
            &outcome,
            billing_started.map(|t| t.elapsed()),
        );
        let error = match &outcome {
            Ok(resp) => resp.to_error(),
            Err(e) => e.clone(),
        };
        progress.note_error(&error);
        let delay = match verdict {
            Verdict::Fail => return Err(finalize(error, billing_started.is_some())),
            Verdict::BillingPause => {
                billing_started.get_or_insert_with(Instant::now);
                tracing::warn!("The job is paused due to billing status. Error: {error}");
                progress.sleep_backoff(policy.billing_pause_step).await;
                continue;
            }
            Verdict::RetryAfter(d) => d,
        };
        if policy.max_attempts.is_some_and(|max| attempt + 1 >= max) {
            let mut e = error;
            e.message = format!("{} (gave up after {} attempts)", e.message, attempt + 1);
            return Err(e);
        }
        events.emit(Event::Retry {
            request_id: None,
            operation: format!("{} {}", req.method, req.path),
            attempt,
            delay_secs: delay.as_secs_f64(),
            error: error.to_string(),
        });
        progress.sleep_backoff(delay).await;
        attempt += 1;
    }
}

fn finalize(mut e: Error, after_billing_pause: bool) -> Error {
    if after_billing_pause && e.kind == ErrorKind::Billing {
        e.message = format!(
            "{} (billing pause exceeded its maximum duration)",
            e.message
        );
    }
    e
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
        let v = |r: Response| classify(&p, 0, &Ok(r), None);
        assert!(matches!(v(resp(503, &[], "")), Verdict::RetryAfter(_)));
        assert!(matches!(v(resp(409, &[], "{}")), Verdict::RetryAfter(_)));
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
        assert!(
            matches!(v(resp(400, &[], "")), Verdict::RetryAfter(_)),
            "bare 400 reconnects"
        );
        assert_eq!(
            v(resp(400, &[("content-length", "9")], "{\"a\":\"b\"}")),
            Verdict::Fail
        );
        assert_eq!(v(resp(402, &[], "")), Verdict::BillingPause);
        assert_eq!(
            classify(
                &p,
                0,
                &Ok(resp(402, &[], "")),
                Some(Duration::from_secs(4000))
            ),
            Verdict::Fail
        );
        assert_eq!(
            v(resp(429, &[("retry-after", "3")], "")),
            Verdict::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            v(resp(429, &[("retry-after-ms", "250")], "")),
            Verdict::RetryAfter(Duration::from_millis(250))
        );
        match v(resp(429, &[("retry-after", "600")], "")) {
            Verdict::RetryAfter(d) => assert!(d <= p.max_delay, "over-long Retry-After ignored"),
            other => panic!("{other:?}"),
        }
    }
}
