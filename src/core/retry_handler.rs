//! The sampling retry handler (PROTOCOL.md 12.6, 13.5): one per sampling session id and
//! configuration, shared by every client of that session in one ServiceClient.
//!
//! * a concurrency semaphore of `max_connections` (for sampling:
//!   `sample_max_concurrent_requests`, or none when `sample_use_retrieve_futures` is on);
//! * global progress: `last_progress` is set when a call succeeds and when a call enters while
//!   no other call is in progress; with stuck detection on, a call fails once
//!   `now > last_progress + progress_timeout` ("No progress made in …s. Requests appear to be
//!   stuck.");
//! * unbounded retries, each after `clamp(d + d·jitter·U[−1, 1], 0, max)` with
//!   `d = min(base·2^k, max)`, `k` = previous attempts of this call;
//! * retryable: timeouts, connection errors, an expired future (410 from a poll: the whole
//!   sample is re-run, with a new `seq_id`), and 408/409/429/5xx from the `asample` send;
//!   anything else is returned at once. `enable_retry_logic = false` calls once.

use crate::core::error::{Error, ErrorKind, Result, TransportCause};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Exception categories a [`RetryConfig`] may retry (the Python `retryable_exceptions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RetryableKind {
    /// Transport timeouts (`asyncio.TimeoutError`, `httpx.TimeoutException`,
    /// `APITimeoutError`).
    Timeout,
    /// Connection errors (`APIConnectionError`), timeouts included.
    Connection,
    /// An expired future (`RetryableException`: 410 from `retrieve_future`).
    Expired,
}

/// The configuration of a retry handler (13.5). Defaults are the official SDK's.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Concurrency limit of the handler; `None` = none. Overridden for sampling (12.6).
    pub max_connections: Option<u64>,
    /// Fail when no call of the handler completes for this long (stuck detection).
    pub progress_timeout: Duration,
    /// First retry delay.
    pub retry_delay_base: Duration,
    /// Retry delay cap.
    pub retry_delay_max: Duration,
    /// ± jitter fraction of each delay.
    pub jitter_factor: f64,
    /// `false`: one call, no retries.
    pub enable_retry_logic: bool,
    /// Whether `progress_timeout` applies.
    pub enable_stuck_detection: bool,
    /// Which error categories are retried (status errors 408/409/429/5xx always are).
    pub retryable: Vec<RetryableKind>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_connections: Some(1000),
            progress_timeout: Duration::from_secs(7200),
            retry_delay_base: Duration::from_millis(500),
            retry_delay_max: Duration::from_secs(10),
            jitter_factor: 0.25,
            enable_retry_logic: true,
            enable_stuck_detection: true,
            retryable: vec![
                RetryableKind::Timeout,
                RetryableKind::Connection,
                RetryableKind::Expired,
            ],
        }
    }
}

/// JSON form of [`RetryConfig`] (the Python `RetryConfig`; durations in seconds as floats, as
/// there). Unset fields keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RetryConfigInput {
    /// Concurrency limit (> 0); ignored for sampling, where the server's
    /// `sample_max_concurrent_requests` always overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Seconds without progress before a call fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_timeout: Option<f64>,
    /// First retry delay, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_base: Option<f64>,
    /// Retry delay cap, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_max: Option<f64>,
    /// Jitter fraction in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_factor: Option<f64>,
    /// `false`: one call, no retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_retry_logic: Option<bool>,
    /// Whether the progress timeout applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_stuck_detection: Option<bool>,
    /// Error categories retried (default all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable_exceptions: Option<Vec<RetryableKind>>,
}

fn secs(v: Option<f64>, what: &str, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) if (0.0..1e12).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(Error::user(format!(
            "retry_config.{what} must be a non-negative number of seconds, got {s}"
        ))),
    }
}

impl RetryConfigInput {
    /// Validates and applies the input over the defaults.
    pub fn to_config(&self) -> Result<RetryConfig> {
        let d = RetryConfig::default();
        if self.max_connections == Some(0) {
            return Err(Error::user("retry_config.max_connections must be positive"));
        }
        let jitter = self.jitter_factor.unwrap_or(d.jitter_factor);
        if !(0.0..=1.0).contains(&jitter) {
            return Err(Error::user(format!(
                "retry_config.jitter_factor must be in [0, 1], got {jitter}"
            )));
        }
        Ok(RetryConfig {
            max_connections: self.max_connections.or(d.max_connections),
            progress_timeout: secs(
                self.progress_timeout,
                "progress_timeout",
                d.progress_timeout,
            )?,
            retry_delay_base: secs(
                self.retry_delay_base,
                "retry_delay_base",
                d.retry_delay_base,
            )?,
            retry_delay_max: secs(self.retry_delay_max, "retry_delay_max", d.retry_delay_max)?,
            jitter_factor: jitter,
            enable_retry_logic: self.enable_retry_logic.unwrap_or(d.enable_retry_logic),
            enable_stuck_detection: self
                .enable_stuck_detection
                .unwrap_or(d.enable_stuck_detection),
            retryable: self.retryable_exceptions.clone().unwrap_or(d.retryable),
        })
    }
}

impl RetryConfig {
    /// The delay before retry `k` (0 for the first retry) with `unit` in [0, 1).
    pub fn delay(&self, k: u32, unit: f64) -> Duration {
        let max = self.retry_delay_max.as_secs_f64();
        let d = (self.retry_delay_base.as_secs_f64() * 2f64.powi(k.min(1000) as i32)).min(max);
        let jitter = d * self.jitter_factor * (2.0 * unit - 1.0);
        Duration::from_secs_f64((d + jitter).clamp(0.0, max))
    }

    fn key(&self) -> String {
        format!("{self:?}")
    }
}

/// Where a failed attempt failed, which decides whether the handler retries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Sending the request (`asample`): status errors 408/409/429/5xx are retried.
    Send,
    /// Polling its future: only an expired future (410) is retried; other poll failures are
    /// final, as in the official futures loop.
    Poll,
    /// Anything else (decoding, result checks): only transport errors are retried.
    Other,
}

/// A failed attempt: the error and where it happened.
#[derive(Debug)]
pub struct AttemptError {
    /// The error.
    pub error: Error,
    /// Where.
    pub stage: Stage,
}

impl AttemptError {
    /// An error at `stage`.
    pub fn at(stage: Stage) -> impl FnOnce(Error) -> AttemptError {
        move |error| AttemptError { error, stage }
    }
}

/// Counters of a handler, for tests and the progress log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Calls waiting at the semaphore.
    pub waiting: u64,
    /// Calls in progress.
    pub in_progress: u64,
    /// Calls completed successfully.
    pub completed: u64,
    /// Retries taken.
    pub retries: u64,
    /// The most calls in progress at once.
    pub max_in_progress: u64,
}

struct State {
    last_progress: Instant,
    last_log: Instant,
    stats: HandlerStats,
    errors: BTreeMap<String, u64>,
}

/// A retry handler (see the module docs).
pub struct RetryHandler {
    name: String,
    config: RetryConfig,
    semaphore: Option<Semaphore>,
    state: Mutex<State>,
    log_interval: Duration,
}

impl RetryHandler {
    /// A handler named `name` (the sampling session id) with `config`.
    pub fn new(name: impl Into<String>, config: RetryConfig, log_interval: Duration) -> Self {
        let semaphore = config.max_connections.map(|n| {
            Semaphore::new(
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )
        });
        let now = Instant::now();
        RetryHandler {
            name: name.into(),
            config,
            semaphore,
            state: Mutex::new(State {
                last_progress: now,
                last_log: now,
                stats: HandlerStats::default(),
                errors: BTreeMap::new(),
            }),
            log_interval,
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> HandlerStats {
        self.state.lock().unwrap().stats.clone()
    }

    /// Whether the handler retries `e` that happened at `stage`.
    pub fn is_retryable(&self, e: &AttemptError) -> bool {
        let kinds = &self.config.retryable;
        if let Some(cause) = e.error.transport {
            if !e.error.is_retryable() {
                return false;
            }
            let timeout = cause == TransportCause::Timeout;
            return kinds.contains(&RetryableKind::Connection)
                || (timeout && kinds.contains(&RetryableKind::Timeout));
        }
        match e.stage {
            Stage::Poll => {
                e.error.kind == ErrorKind::Expired
                    && e.error.http_status == Some(410)
                    && kinds.contains(&RetryableKind::Expired)
            }
            Stage::Send => matches!(e.error.http_status, Some(408 | 409 | 429 | 500..=599)),
            Stage::Other => false,
        }
    }

    fn maybe_log(&self, st: &mut State, force: bool) {
        let now = Instant::now();
        if !force && now.duration_since(st.last_log) <= self.log_interval {
            return;
        }
        tracing::debug!(
            "[{}]: {} waiting, {} in progress, {} completed",
            self.name,
            st.stats.waiting,
            st.stats.in_progress,
            st.stats.completed
        );
        if !st.errors.is_empty() {
            tracing::debug!(
                "[{}]: {} total retries, errors since last log: {:?}",
                self.name,
                st.stats.retries,
                st.errors
            );
            st.errors.clear();
        }
        st.last_log = now;
    }

    /// Runs `attempt` until it succeeds or fails with an error the handler does not retry.
    /// `attempt(k)` is called with the number of previous attempts of this call.
    pub async fn execute<T, F, Fut>(&self, attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = std::result::Result<T, AttemptError>>,
    {
        self.execute_reporting(None, attempt).await
    }

    /// [`execute`](Self::execute) that reports every failed attempt to `telemetry` as a
    /// `RetryHandler.execute.exception` event (PROTOCOL.md 16.4) with `func` = the given name
    /// of the attempted call.
    pub async fn execute_reporting<T, F, Fut>(
        &self,
        telemetry: Option<(&crate::core::telemetry::Telemetry, &str)>,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = std::result::Result<T, AttemptError>>,
    {
        let started_at = std::time::SystemTime::now();
        self.state.lock().unwrap().stats.waiting += 1;
        let _permit = match &self.semaphore {
            Some(s) => Some(s.acquire().await.expect("never closed")),
            None => None,
        };
        {
            let mut st = self.state.lock().unwrap();
            st.stats.waiting -= 1;
            if st.stats.in_progress == 0 {
                st.last_progress = Instant::now();
            }
            st.stats.in_progress += 1;
            st.stats.max_in_progress = st.stats.max_in_progress.max(st.stats.in_progress);
            self.maybe_log(&mut st, false);
        }
        struct Leave<'a>(&'a RetryHandler);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                let mut st = self.0.state.lock().unwrap();
                st.stats.in_progress -= 1;
                let idle = st.stats.in_progress + st.stats.waiting == 0;
                self.0.maybe_log(&mut st, idle);
            }
        }
        let _leave = Leave(self);
        let run = async {
            let mut k: u32 = 0;
            loop {
                // The attempt's result is taken apart before the back-off's await: held
                // across it (a `match` scrutinee lives to the end of the match), the whole
                // result would sit beside the attempt's state in this future.
                let e = match attempt(k).await {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                };
                let retry = self.config.enable_retry_logic && self.is_retryable(&e);
                if let Some((t, func)) = telemetry {
                    use crate::core::telemetry::RetryLoop;
                    let err = &e.error;
                    t.retry_exception(RetryLoop::Handler, func, err, retry, k, started_at);
                }
                if !retry {
                    return Err(e.error);
                }
                let delay = self.config.delay(k, crate::core::rand::unit());
                {
                    let mut st = self.state.lock().unwrap();
                    st.stats.retries += 1;
                    *st.errors
                        .entry(e.error.kind.as_str().to_string())
                        .or_default() += 1;
                }
                tracing::debug!(
                    "[{}]: attempt {} failed ({}); retrying in {:.2}s",
                    self.name,
                    k + 1,
                    e.error,
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                k += 1;
            }
        };
        let result = if self.config.enable_stuck_detection {
            let watchdog = async {
                loop {
                    let deadline =
                        self.state.lock().unwrap().last_progress + self.config.progress_timeout;
                    if Instant::now() > deadline {
                        return;
                    }
                    tokio::time::sleep_until(deadline + Duration::from_millis(1)).await;
                }
            };
            tokio::select! {
                r = run => r,
                () = watchdog => Err(Error::new(
                    ErrorKind::NoProgress,
                    format!(
                        "No progress made in {}s. Requests appear to be stuck.",
                        self.config.progress_timeout.as_secs_f64()
                    ),
                )),
            }
        } else {
            run.await
        };
        if result.is_ok() {
            let mut st = self.state.lock().unwrap();
            st.last_progress = Instant::now();
            st.stats.completed += 1;
        }
        result
    }
}

/// The handlers of one ServiceClient, by sampling session id and configuration (the most
/// recently used 100 are kept, as the official SDK's cache).
#[derive(Default)]
pub struct Registry {
    handlers: Mutex<VecDeque<(String, Arc<RetryHandler>)>>,
}

/// Handlers kept by a [`Registry`].
pub const REGISTRY_CAPACITY: usize = 100;

impl Registry {
    /// The handler of `name` with `config`, created on first use.
    pub fn get(
        &self,
        name: &str,
        config: RetryConfig,
        log_interval: Duration,
    ) -> Arc<RetryHandler> {
        let key = format!("{name}\u{0}{}", config.key());
        let mut hs = self.handlers.lock().unwrap();
        if let Some(pos) = hs.iter().position(|(k, _)| *k == key) {
            let entry = hs.remove(pos).expect("position is valid");
            let h = entry.1.clone();
            hs.push_back(entry);
            return h;
        }
        let h = Arc::new(RetryHandler::new(name, config, log_interval));
        hs.push_back((key, h.clone()));
        while hs.len() > REGISTRY_CAPACITY {
            hs.pop_front();
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_clamped_exponential_with_jitter() {
        let c = RetryConfig::default();
        assert_eq!(c.delay(0, 0.5), Duration::from_millis(500));
        assert_eq!(c.delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(c.delay(0, 0.0), Duration::from_millis(375));
        assert_eq!(c.delay(0, 1.0), Duration::from_millis(625));
        assert_eq!(c.delay(10, 1.0), Duration::from_secs(10), "never above max");
        assert_eq!(c.delay(5000, 0.5), Duration::from_secs(10));
    }

    #[test]
    fn input_maps_and_validates() {
        let i: RetryConfigInput = serde_json::from_str(
            r#"{"max_connections": 7, "progress_timeout": 1.5, "retry_delay_base": 0.01,
                "retry_delay_max": 0.1, "jitter_factor": 0.0, "enable_retry_logic": false,
                "enable_stuck_detection": false, "retryable_exceptions": ["expired"]}"#,
        )
        .unwrap();
        let c = i.to_config().unwrap();
        assert_eq!(c.max_connections, Some(7));
        assert_eq!(c.progress_timeout, Duration::from_millis(1500));
        assert!(!c.enable_retry_logic && !c.enable_stuck_detection);
        assert_eq!(c.retryable, vec![RetryableKind::Expired]);
        let bad = RetryConfigInput {
            max_connections: Some(0),
            ..Default::default()
        };
        assert!(bad.to_config().is_err());
        assert!(serde_json::from_str::<RetryConfigInput>(r#"{"max_conections": 1}"#).is_err());
    }

    fn fast() -> RetryConfig {
        RetryConfig {
            retry_delay_base: Duration::from_millis(1),
            retry_delay_max: Duration::from_millis(2),
            ..RetryConfig::default()
        }
    }

    #[tokio::test]
    async fn retries_only_what_is_retryable() {
        let h = RetryHandler::new("s", fast(), Duration::from_secs(2));
        let mut n = 0;
        let r: Result<u32> = h
            .execute(|k| {
                n += 1;
                async move {
                    if k < 3 {
                        Err(AttemptError::at(Stage::Poll)(Error::from_status(410, "")))
                    } else {
                        Ok(k)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(n, 4);
        // A 410 on the send, a 400, and a poll 409 are final.
        for (stage, status) in [(Stage::Send, 410), (Stage::Send, 400), (Stage::Poll, 409)] {
            let mut calls = 0;
            let r: Result<()> = h
                .execute(|_| {
                    calls += 1;
                    async move { Err(AttemptError::at(stage)(Error::from_status(status, ""))) }
                })
                .await;
            assert!(r.is_err());
            assert_eq!(calls, 1, "{stage:?} {status}");
        }
        let mut calls = 0;
        let r: Result<()> = h
            .execute(|k| {
                calls += 1;
                async move {
                    if k == 0 {
                        Err(AttemptError::at(Stage::Send)(Error::from_status(503, "")))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(r.is_ok());
        assert_eq!(calls, 2, "5xx from the send is retried");
        let once = RetryHandler::new(
            "s",
            RetryConfig {
                enable_retry_logic: false,
                ..fast()
            },
            Duration::from_secs(2),
        );
        let mut calls = 0;
        let r: Result<()> = once
            .execute(|_| {
                calls += 1;
                async { Err(AttemptError::at(Stage::Send)(Error::from_status(503, ""))) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "enable_retry_logic=false calls once");
    }

    #[tokio::test(start_paused = true)]
    async fn stuck_calls_fail_after_the_progress_timeout() {
        let h = RetryHandler::new(
            "s",
            RetryConfig {
                progress_timeout: Duration::from_secs(5),
                ..RetryConfig::default()
            },
            Duration::from_secs(2),
        );
        let r: Result<()> = h
            .execute(|_| async {
                std::future::pending::<()>().await;
                Ok(())
            })
            .await;
        let e = r.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoProgress);
        assert!(e.message.contains("Requests appear to be stuck"), "{e}");
    }

    #[test]
    fn registry_shares_by_name_and_config() {
        let r = Registry::default();
        let a = r.get("s1", RetryConfig::default(), Duration::from_secs(2));
        let b = r.get("s1", RetryConfig::default(), Duration::from_secs(2));
        assert!(Arc::ptr_eq(&a, &b));
        let c = r.get("s2", RetryConfig::default(), Duration::from_secs(2));
        assert!(!Arc::ptr_eq(&a, &c));
        let d = r.get("s1", fast(), Duration::from_secs(2));
        assert!(!Arc::ptr_eq(&a, &d));
    }
}
