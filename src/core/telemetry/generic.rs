//! The generic retry events of PROTOCOL.md 16.4: one per failed attempt of the holder loop
//! (`InternalClientHolder.execute_with_retries.exception`), of the sampling retry handler
//! (`RetryHandler.execute.exception`) and of a poll (`APIFuture.result_async.*`).
//!
//! Each builder is called from one line at its call site and only queues (never awaits).
//! Event data never holds request headers or anything carrying the credential: unlike the
//! official SDK, whose fatal-case `api_status_error` events include `request_headers` with
//! the API key as sent, libtinkex sends no headers at all (and [`super::sanitize_data`]
//! redacts anything key-like that a server text might echo). `exception_stack` is `null`
//! (Rust errors carry no traceback).

use super::{Severity, Telemetry};
use crate::core::error::Error;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds as a float.
fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The `exception_type` of an error: the `ErrorKind` name (e.g. `Transient`).
fn exception_type(err: &Error) -> &'static str {
    super::events::error_type_name(err.kind)
}

/// Which retry loop failed (the two share their data but for the retry key's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryLoop {
    /// The holder loop (`is_retryable`).
    Holder,
    /// The sampling retry handler (`should_retry`).
    Handler,
}

/// A poll failure's classification (the `kind` of `api_status_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollKind {
    /// A 408 or 5xx (retried; libtinkex backs off when the poll was not held).
    Retry,
    /// A 429, a connection error or timeout (no answer), or a forced retry: retried after a
    /// backoff.
    RetryWithBackoff,
    /// A 400: retried while the bad-request budget lasts.
    RetryIfBudget,
    /// A 410: the future is gone; the caller's retry (e.g. the sampling retry handler)
    /// decides.
    RetryableException,
    /// Ends the future.
    Fatal,
}

impl PollKind {
    fn as_str(self) -> &'static str {
        match self {
            PollKind::Retry => "retry",
            PollKind::RetryWithBackoff => "retry_with_backoff",
            PollKind::RetryIfBudget => "retry_if_budget",
            PollKind::RetryableException => "retryable_exception",
            PollKind::Fatal => "fatal",
        }
    }
}

/// Where a poll stands, common to the `APIFuture.result_async.*` events.
#[derive(Clone, Copy, Debug)]
pub struct PollSite<'a> {
    /// The future's request id.
    pub request_id: &'a str,
    /// The request type (`Sample`, `ForwardBackward`, …).
    pub request_type: &'a str,
    /// Polls sent so far (the failed one included).
    pub iteration: u32,
    /// Since the poll loop started.
    pub elapsed: Duration,
}

impl Telemetry {
    /// Queues the event of one failed retry-loop attempt (PROTOCOL.md 16.4):
    /// `InternalClientHolder.execute_with_retries.exception` or
    /// `RetryHandler.execute.exception`, WARNING if retryable or a user error, else ERROR.
    /// `attempt_count` is the number of earlier attempts (0 for the first), as in the SDK.
    pub fn retry_exception(
        &self,
        which: RetryLoop,
        func: &str,
        err: &Error,
        retryable: bool,
        attempt_count: u32,
        start: SystemTime,
    ) {
        if !self.is_active() || err.kind == crate::core::error::ErrorKind::Cancelled {
            return;
        }
        let now = SystemTime::now();
        let user = err.is_user_error();
        let (name, key) = match which {
            RetryLoop::Holder => (
                "InternalClientHolder.execute_with_retries.exception",
                "is_retryable",
            ),
            RetryLoop::Handler => ("RetryHandler.execute.exception", "should_retry"),
        };
        let mut data = json!({
            "func": func,
            "exception": err.to_string(),
            "exception_type": exception_type(err),
            "exception_stack": Value::Null,
            "status_code": err.http_status,
            "is_user_error": user,
            "attempt_count": attempt_count,
            "start_time": unix_secs(start),
            "current_time": unix_secs(now),
            "elapsed_time": now.duration_since(start).unwrap_or_default().as_secs_f64(),
        });
        data[key] = Value::Bool(retryable);
        let severity = if retryable || user {
            Severity::Warning
        } else {
            Severity::Error
        };
        self.generic(name, severity, data);
    }

    /// Queues `APIFuture.result_async.api_status_error` (an HTTP status) or
    /// `APIFuture.result_async.connection_error` (no answer, `status_code` 0) for a failed
    /// poll. ERROR (with `response_body`) for fatal and 400 cases, else WARNING. Unlike the
    /// SDK, these cases carry no `request_headers` (the SDK's hold the API key) and no
    /// `response_headers`. `is_user_error` is the SDK's rule: a 4xx other than 408.
    pub fn poll_status_error(
        &self,
        site: PollSite<'_>,
        err: &Error,
        kind: PollKind,
        bad_request_retries: u32,
        connection_error_retries: u32,
    ) {
        if !self.is_active() {
            return;
        }
        let status = err.http_status.unwrap_or(0);
        let name = if err.http_status.is_none() {
            "APIFuture.result_async.connection_error"
        } else {
            "APIFuture.result_async.api_status_error"
        };
        let fatal = kind == PollKind::Fatal;
        // Fatal answers and 400s (retried while the budget lasts) are ERROR and carry the
        // body, as in the SDK (which adds both header sets too; see the module doc).
        let loud = fatal || kind == PollKind::RetryIfBudget;
        let mut data = json!({
            "request_id": site.request_id,
            "request_type": site.request_type,
            "status_code": status,
            "detail": err.message,
            "kind": kind.as_str(),
            "should_retry": !fatal,
            "is_user_error": (400..500).contains(&status) && status != 408,
            "exception": err.to_string(),
            "exception_type": exception_type(err),
            "iteration": site.iteration,
            "elapsed_time": site.elapsed.as_secs_f64(),
            "bad_request_retries": bad_request_retries,
            "connection_error_retries": connection_error_retries,
        });
        if loud {
            data["response_body"] = Value::String(err.message.clone());
        }
        let severity = if loud {
            Severity::Error
        } else {
            Severity::Warning
        };
        self.generic(name, severity, data);
    }

    /// Queues `APIFuture.result_async.application_error` for a future that finished with
    /// `{"error", "category"}`: WARNING if the category is `User`, else ERROR.
    /// `category` is the enum name (`Unknown`, `Server`, `User`).
    pub fn poll_application_error(&self, site: PollSite<'_>, error: &str, category: &str) {
        let user = category == "User";
        self.generic(
            "APIFuture.result_async.application_error",
            if user {
                Severity::Warning
            } else {
                Severity::Error
            },
            json!({
                "request_id": site.request_id,
                "request_type": site.request_type,
                "error": error,
                "error_category": category,
                "is_user_error": user,
                "iteration": site.iteration,
                "elapsed_time": site.elapsed.as_secs_f64(),
            }),
        );
    }

    /// Queues `APIFuture.result_async.validation_error` (ERROR) for a finished future whose
    /// answer does not decode.
    pub fn poll_validation_error(&self, site: PollSite<'_>, err: &Error, model_cls: &str) {
        self.generic(
            "APIFuture.result_async.validation_error",
            Severity::Error,
            json!({
                "request_id": site.request_id,
                "request_type": site.request_type,
                "exception": err.to_string(),
                "exception_type": exception_type(err),
                "exception_stack": Value::Null,
                "model_cls": model_cls,
                "iteration": site.iteration,
                "elapsed_time": site.elapsed.as_secs_f64(),
            }),
        );
    }
}
