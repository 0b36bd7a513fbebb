//! Telemetry (PROTOCOL.md 16): events are queued in memory by a non-blocking `push`
//! and sent by a background flusher in batches to a [`TelemetrySink`] (the HTTP transport in
//! production, `POST /api/v1/telemetry`).
//!
//! Guarantees:
//! * nothing on the request path awaits: recording an event takes a `std` mutex for one
//!   `VecDeque::push_back` and never waits for a send;
//! * memory is bounded by `max_queue` events (plus the one batch being sent), whatever the
//!   sink does; excess events are dropped and counted, with a single warning;
//! * every send is capped at `http_timeout`; a failed or timed-out batch is dropped with a
//!   warning, never re-queued;
//! * [`Telemetry::drain`] sends everything queued, waiting at most its timeout;
//! * events carry no headers, no configuration and no credentials: strings that look like an
//!   API key (`tml-…`) or a JWT (`eyJ….…`) are redacted, and credential-bearing keys of
//!   generic event data are removed or redacted.
//!
//! Layout (one responsibility per module; `docs/telemetry.md` has the design note):
//! * this module: the settings ([`TelemetryConfig`]), the sink interface ([`TelemetrySink`],
//!   [`TelemetryBatch`]) and the per-holder handle ([`Telemetry`]);
//! * `queue`: the bounded in-memory queue and the background flusher that sends it;
//! * `events`: building the event JSON (common fields, exceptions, [`Severity`], platform
//!   and process id);
//! * `redact`: credential redaction of strings and event data;
//! * `time`: the timestamp and duration texts Python's SDK produces.

mod events;
mod generic;
mod queue;
mod redact;
mod time;

pub use events::{platform, process_uuid, Severity};
pub use generic::{PollKind, PollSite, RetryLoop};
pub use redact::{redact_secrets, sanitize_data};
pub use time::{format_timedelta, format_timestamp};

use crate::core::error::Error;
use events::{base_event, exception_event};
use queue::{run_flusher, Queue, Shared};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Telemetry settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    /// Record and send events at all (`TINKER_TELEMETRY`, see `Config::telemetry`).
    pub enabled: bool,
    /// Events per batch (100).
    pub max_batch: usize,
    /// Time between periodic flushes (10 s).
    pub flush_interval: Duration,
    /// Events kept in memory at most; further events are dropped and counted (10,000).
    pub max_queue: usize,
    /// Cap on one batch's send (5 s).
    pub http_timeout: Duration,
    /// How long a shutdown drain may take (30 s).
    pub drain_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            max_batch: 100,
            flush_interval: Duration::from_secs(10),
            max_queue: 10_000,
            http_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl TelemetryConfig {
    /// Checks the settings: a zero flush interval or timeout would spin, a zero batch or
    /// queue could hold nothing. Zero never means "off"; `enabled: false` does.
    pub fn validate(&self) -> crate::core::Result<()> {
        use crate::core::Error;
        for (name, d) in [
            ("telemetry.flush_interval", self.flush_interval),
            ("telemetry.http_timeout", self.http_timeout),
            ("telemetry.drain_timeout", self.drain_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::user(format!(
                    "{name} must be greater than zero (a zero interval would spin)"
                )));
            }
        }
        if self.max_batch == 0 || self.max_queue == 0 {
            return Err(Error::user(
                "telemetry.max_batch and telemetry.max_queue must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One batch as sent to POST /api/v1/telemetry (PROTOCOL.md 16.2): {"events", "platform",
/// "sdk_version", "session_id", "process_uuid"}.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TelemetryBatch {
    /// The events, oldest first.
    pub events: Vec<Value>,
    /// OS name as Python's `platform.system()` reports it, e.g. `Linux`, `Darwin`, `Windows`.
    pub platform: String,
    /// [`SDK_VERSION`].
    pub sdk_version: String,
    /// The session id, or `sessionless-{uuid4}` for session-less holders.
    pub session_id: String,
    /// uuid4 generated once per process.
    pub process_uuid: String,
}

/// Checks the answer to a telemetry batch (PROTOCOL.md 16.1): the official SDK validates
/// it strictly as `{"status": "accepted"}` and drops the batch (with a warning) on anything
/// else, as for a failed send. The error says what came back, cut and escaped.
pub fn check_accepted(body: &[u8]) -> Result<(), Error> {
    let accepted = serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("status").and_then(Value::as_str) == Some("accepted"));
    if accepted {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    Err(Error::fatal(format!(
        "telemetry response is not {{\"status\": \"accepted\"}}: {}",
        crate::core::sanitize::server_text(&text)
    )))
}

/// The future returned by [`TelemetrySink::send`].
pub type SendFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// Where batches go (the lead implements it over the HTTP transport; tests use fakes).
pub trait TelemetrySink: Send + Sync + 'static {
    /// Sends one batch; must respect `timeout`. Err = the batch is dropped (with a warning),
    /// never re-queued. (The flusher also cancels a send still running after `timeout`.)
    fn send(
        &self,
        batch: TelemetryBatch,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;
}

/// The telemetry of one holder (session or session-less client).
pub struct Telemetry {
    shared: Arc<Shared>,
    /// Wall-clock start (the SESSION_START timestamp).
    started_at: SystemTime,
    /// Monotonic start (the SESSION_END duration).
    started: tokio::time::Instant,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("session_id", &self.shared.session_id)
            .field("enabled", &self.shared.config.enabled)
            .field("queued", &self.queued())
            .field("sent_events", &self.sent_events())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Telemetry {
    /// Starts the flusher task on the current tokio runtime (`tokio::spawn`); with
    /// `enabled == false` nothing is queued or sent. Outside a runtime it logs a warning and
    /// behaves as disabled.
    ///
    /// `on_overflow` is called (outside any lock) the first time events are dropped and then
    /// at most once per flush with the total dropped count (the lead turns it into an
    /// Event::TelemetryOverflow).
    pub fn start(
        config: TelemetryConfig,
        sink: Arc<dyn TelemetrySink>,
        session_id: String,
        on_overflow: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Arc<Self> {
        let enabled = config.enabled;
        let shared = Arc::new(Shared {
            config,
            sink,
            session_id,
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                enqueued: 0,
                next_index: 0,
            }),
            wake: Notify::new(),
            closed: AtomicBool::new(!enabled),
            dropped: AtomicU64::new(0),
            reported_dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            completed: watch::Sender::new(0),
            on_overflow,
        });
        let flusher = if enabled {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => Some(handle.spawn(run_flusher(shared.clone()))),
                Err(_) => {
                    tracing::warn!("No tokio runtime: telemetry disabled");
                    shared.closed.store(true, Ordering::Release);
                    None
                }
            }
        } else {
            None
        };
        Arc::new(Telemetry {
            shared,
            started_at: SystemTime::now(),
            started: tokio::time::Instant::now(),
            flusher: Mutex::new(flusher),
        })
    }

    /// The session id the batches carry.
    pub fn session_id(&self) -> &str {
        &self.shared.session_id
    }

    /// Queues `SESSION_START` (timestamp = telemetry start; `event_session_index` 0 if it is
    /// the first event).
    pub fn session_start(&self) {
        self.push(base_event("SESSION_START", Severity::Info, self.started_at));
    }

    /// Queues `SESSION_END` with `duration` since start, as Python's timedelta text
    /// (`H:MM:SS.ffffff`, see [`format_timedelta`]).
    pub fn session_end(&self) {
        let mut e = base_event("SESSION_END", Severity::Info, SystemTime::now());
        e["duration"] = Value::String(format_timedelta(self.started.elapsed()));
        self.push(e);
    }

    /// Queues a `GENERIC_EVENT`. `data` is sanitized ([`sanitize_data`]); `null` becomes `{}`
    /// and a non-object is wrapped as `{"value": data}`.
    pub fn generic(&self, name: &str, severity: Severity, data: Value) {
        if !self.is_active() {
            return;
        }
        let data = match sanitize_data(data) {
            Value::Null => Value::Object(Map::new()),
            v @ Value::Object(_) => v,
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                Value::Object(m)
            }
        };
        let mut e = base_event("GENERIC_EVENT", severity, SystemTime::now());
        e["event_name"] = Value::String(name.to_string());
        e["event_data"] = data;
        self.push(e);
    }

    /// Records a failed operation: user errors (13.8: `err.is_user_error()`) become
    /// GENERIC_EVENT `user_error` (WARNING) with `{"error_type", "message", "status_code"?,
    /// "method"}`; others UNHANDLED_EXCEPTION (ERROR) with `error_type` (the ErrorKind
    /// name), `error_message` and `traceback` (`"in {method}"` plus request id and status).
    /// Then triggers an immediate flush. Cancellation by the caller (`ErrorKind::Cancelled`)
    /// is not an exception and records nothing (as Python's `CancelledError`).
    pub fn exception(&self, err: &Error, method: &str) {
        if !self.is_active() {
            return;
        }
        let Some(e) = exception_event(err, method, SystemTime::now()) else {
            return;
        };
        self.push(e);
        self.flush_now();
    }

    /// Records a failed public call the way the official SDK's "fatal" exception wrappers
    /// do (PROTOCOL.md 16.3): the event of [`exception`](Self::exception), then
    /// `SESSION_END` (with the session's duration so far), then an immediate flush. Unlike
    /// the SDK it does not make the caller wait (up to 30 s) for the queue to drain: the
    /// failure is returned at once and the flusher sends both events in the background.
    /// Cancellation records nothing.
    pub fn fatal_exception(&self, err: &Error, method: &str) {
        if !self.is_active() {
            return;
        }
        let Some(e) = exception_event(err, method, SystemTime::now()) else {
            return;
        };
        self.push(e);
        self.session_end();
        self.flush_now();
    }

    /// Non-blocking, O(1) amortised, never awaits: safe on the request path. Drops (and
    /// counts) when the queue is full.
    fn push(&self, event: Value) {
        self.shared.push(event);
    }

    /// Wakes the flusher.
    pub fn flush_now(&self) {
        if self.is_active() {
            self.shared.wake.notify_one();
        }
    }

    /// Flushes everything queued (in order, batches of <= max_batch, sequentially) and waits
    /// until sent or dropped, at most `timeout` (then warns "Timed out draining telemetry
    /// during shutdown" and returns false). Stops the flusher afterwards: later events are
    /// ignored. Returns true at once when disabled or already stopped with nothing pending.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let s = &self.shared;
        let target = s.lock().enqueued;
        let running = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        if !running || s.closed.load(Ordering::Acquire) {
            self.stop();
            let done = *s.completed.borrow() >= target;
            if !done {
                tracing::warn!("Telemetry flusher not running; queued telemetry not sent");
            }
            return done;
        }
        let mut done = s.completed.subscribe();
        s.wake.notify_one();
        let ok = matches!(
            tokio::time::timeout(timeout, done.wait_for(|c| *c >= target)).await,
            Ok(Ok(_))
        );
        if !ok {
            tracing::warn!(
                timeout_secs = timeout.as_secs_f64(),
                "Timed out draining telemetry during shutdown"
            );
        }
        self.stop();
        s.report_overflow();
        ok
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Events waiting in the queue (not counting a batch being sent).
    pub fn queued(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// Events the sink accepted.
    pub fn sent_events(&self) -> u64 {
        self.shared.sent.load(Ordering::Acquire)
    }

    fn is_active(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
    }

    /// Stops the flusher (aborting a send in progress); later events are ignored.
    fn stop(&self) {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(h) = self
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
