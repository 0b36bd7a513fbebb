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

use crate::core::error::{Error, ErrorKind};
use crate::core::rand::uuid4;
use crate::core::types::SDK_VERSION;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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

/// Severity of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// `DEBUG`
    Debug,
    /// `INFO`
    Info,
    /// `WARNING`
    Warning,
    /// `ERROR`
    Error,
    /// `CRITICAL`
    Critical,
}

impl Severity {
    /// The wire name, e.g. `WARNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// The events waiting to be sent.
struct Queue {
    events: VecDeque<Value>,
    /// Events accepted so far (the drain target).
    enqueued: u64,
    /// `event_session_index` of the next accepted event.
    next_index: u64,
}

/// State shared by the [`Telemetry`] handle and its flusher task.
struct Shared {
    config: TelemetryConfig,
    sink: Arc<dyn TelemetrySink>,
    session_id: String,
    queue: Mutex<Queue>,
    /// Wakes the flusher (batch full, exception, flush_now, drain).
    wake: Notify,
    /// Set when the flusher is stopped (drained, dropped, disabled): nothing is queued after.
    closed: AtomicBool,
    dropped: AtomicU64,
    /// The largest dropped count passed to `on_overflow`.
    reported_dropped: AtomicU64,
    sent: AtomicU64,
    /// Events taken from the queue and sent or dropped, in queue order.
    completed: watch::Sender<u64>,
    on_overflow: Box<dyn Fn(u64) + Send + Sync>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn max_batch(&self) -> usize {
        self.config.max_batch.max(1)
    }

    /// Queues one event, assigning its `event_session_index`; never awaits.
    fn push(&self, mut event: Value) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let (accepted, batch_full) = {
            let mut q = self.lock();
            if q.events.len() >= self.config.max_queue {
                (false, false)
            } else {
                if let Value::Object(m) = &mut event {
                    m.insert("event_session_index".into(), Value::from(q.next_index));
                }
                q.next_index += 1;
                q.enqueued += 1;
                q.events.push_back(event);
                (true, q.events.len() % self.max_batch() == 0)
            }
        };
        if batch_full {
            self.wake.notify_one();
        }
        if !accepted && self.dropped.fetch_add(1, Ordering::AcqRel) == 0 {
            tracing::warn!(
                max_queue = self.config.max_queue,
                "Telemetry queue full; dropping events (further drops are counted, not logged)"
            );
            if self.reported_dropped.fetch_max(1, Ordering::AcqRel) == 0 {
                (self.on_overflow)(1);
            }
        }
    }

    /// Calls `on_overflow` if events were dropped since the last call.
    fn report_overflow(&self) {
        let dropped = self.dropped.load(Ordering::Acquire);
        if dropped > 0 && self.reported_dropped.fetch_max(dropped, Ordering::AcqRel) < dropped {
            (self.on_overflow)(dropped);
        }
    }

    /// Sends everything queued, in order, in batches of at most `max_batch`, one at a time.
    async fn flush_all(&self) {
        loop {
            let events: Vec<Value> = {
                let mut q = self.lock();
                let n = q.events.len().min(self.max_batch());
                q.events.drain(..n).collect()
            };
            if events.is_empty() {
                return;
            }
            let n = events.len() as u64;
            let batch = TelemetryBatch {
                events,
                platform: platform().to_string(),
                sdk_version: SDK_VERSION.to_string(),
                session_id: self.session_id.clone(),
                process_uuid: process_uuid().to_string(),
            };
            let timeout = self.config.http_timeout;
            match tokio::time::timeout(timeout, self.sink.send(batch, timeout)).await {
                Ok(Ok(())) => {
                    self.sent.fetch_add(n, Ordering::AcqRel);
                }
                Ok(Err(e)) => tracing::warn!(
                    events = n,
                    error = %redact_secrets(&e.to_string()),
                    "Failed to send telemetry batch; dropping it"
                ),
                Err(_) => tracing::warn!(
                    events = n,
                    timeout_secs = timeout.as_secs_f64(),
                    "Telemetry batch send timed out; dropping it"
                ),
            }
            self.completed.send_modify(|c| *c += n);
        }
    }
}

/// The background flusher: wakes every `flush_interval` or when notified. Ends when aborted
/// (drain, drop) or when `closed` is set.
async fn run_flusher(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.flush_interval) => {}
        }
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        shared.flush_all().await;
        shared.report_overflow();
    }
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

/// The common fields except `event_session_index` (assigned when queued).
fn base_event(kind: &str, severity: Severity, at: SystemTime) -> Value {
    let mut m = Map::new();
    m.insert("event".into(), Value::String(kind.to_string()));
    m.insert("event_id".into(), Value::String(uuid4()));
    m.insert("severity".into(), Value::String(severity.as_str().into()));
    m.insert("timestamp".into(), Value::String(format_timestamp(at)));
    Value::Object(m)
}

/// The event for a failed operation (PROTOCOL.md 16.3, 13.8), or None for a cancellation.
fn exception_event(err: &Error, method: &str, at: SystemTime) -> Option<Value> {
    if err.kind == ErrorKind::Cancelled {
        return None;
    }
    let error_type = error_type_name(err.kind);
    let message = redact_secrets(&err.message);
    if err.is_user_error() {
        let mut data = Map::new();
        data.insert("error_type".into(), Value::String(error_type.into()));
        data.insert("message".into(), Value::String(message));
        if let Some(s) = err.http_status {
            data.insert("status_code".into(), Value::from(s));
        }
        data.insert("method".into(), Value::String(redact_secrets(method)));
        let mut e = base_event("GENERIC_EVENT", Severity::Warning, at);
        e["event_name"] = Value::String("user_error".into());
        e["event_data"] = Value::Object(data);
        Some(e)
    } else {
        let mut e = base_event("UNHANDLED_EXCEPTION", Severity::Error, at);
        e["error_type"] = Value::String(error_type.into());
        e["error_message"] = Value::String(message);
        let mut trace = format!("in {}", redact_secrets(method));
        if let Some(id) = &err.request_id {
            trace.push_str(&format!(", request {}", redact_secrets(id)));
        }
        if let Some(s) = err.http_status {
            trace.push_str(&format!(", HTTP {s}"));
        }
        e["traceback"] = Value::String(trace);
        Some(e)
    }
}

/// The `ErrorKind` variant name, e.g. `Transient`, `NoProgress` (the `error_type` field).
fn error_type_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::User => "User",
        ErrorKind::Transient => "Transient",
        ErrorKind::Fatal => "Fatal",
        ErrorKind::Billing => "Billing",
        ErrorKind::Expired => "Expired",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::NoProgress => "NoProgress",
        ErrorKind::SessionExpired => "SessionExpired",
        ErrorKind::Auth => "Auth",
        ErrorKind::Panic => "Panic",
    }
}

/// OS name as Python's `platform.system()` reports it.
pub fn platform() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        "freebsd" => "FreeBSD",
        "openbsd" => "OpenBSD",
        "netbsd" => "NetBSD",
        "android" => "Android",
        "ios" => "iOS",
        other => other,
    }
}

/// The uuid4 of this process, generated on first use.
pub fn process_uuid() -> &'static str {
    static PROCESS_UUID: OnceLock<String> = OnceLock::new();
    PROCESS_UUID.get_or_init(uuid4)
}

/// UTC ISO 8601 with microseconds and `Z`, e.g. `2026-07-01T12:00:01.250000Z`.
pub fn format_timestamp(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Python's `str(timedelta)`: `H:MM:SS.ffffff`, the fraction omitted when zero, whole days
/// prefixed as `1 day, ` / `N days, ` (e.g. `0:05:12.500000`, `0:00:03`).
pub fn format_timedelta(d: Duration) -> String {
    let total = d.as_secs();
    let rem = total % 86_400;
    let mut s = format!("{}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    let micros = d.subsec_micros();
    if micros != 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    match total / 86_400 {
        0 => s,
        1 => format!("1 day, {s}"),
        n => format!("{n} days, {s}"),
    }
}

/// Replaces anything that looks like a credential: an API key `tml-…` becomes
/// `tml-<redacted>`, a JWT `eyJ….…` becomes `eyJ<redacted>`. Only at a word start, so
/// `text/html-x` is kept.
pub fn redact_secrets(s: &str) -> String {
    fn key_char(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if at_word_start && bytes[i..].starts_with(b"tml-") {
            let mut end = i + 4;
            while end < bytes.len() && key_char(bytes[end]) {
                end += 1;
            }
            if end > i + 4 {
                out.push_str(&s[copied..i]);
                out.push_str("tml-<redacted>");
                copied = end;
                i = end;
                continue;
            }
        } else if at_word_start && bytes[i..].starts_with(b"eyJ") {
            let mut end = i + 3;
            while end < bytes.len() && (key_char(bytes[end]) || bytes[end] == b'.') {
                end += 1;
            }
            if s[i..end].contains('.') {
                out.push_str(&s[copied..i]);
                out.push_str("eyJ<redacted>");
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

/// Keys of generic event data that are removed (headers never leave the process).
const REMOVED_KEYS: [&str; 3] = ["request_headers", "response_headers", "headers"];
/// Keys of generic event data whose values are replaced by `<redacted>`.
const REDACTED_KEYS: [&str; 8] = [
    "x-api-key",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "cf-access-client-secret",
    "credential",
    "token",
];

/// Sanitizes event data recursively: strings pass through [`redact_secrets`], header keys
/// (`request_headers`, `response_headers`, `headers`) are removed and credential keys
/// (`x-api-key`, `authorization`, `cookie`, `token`, …) get the value `<redacted>` (keys
/// compared case-insensitively).
pub fn sanitize_data(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact_secrets(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(sanitize_data).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter_map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if REMOVED_KEYS.contains(&lower.as_str()) {
                        None
                    } else if REDACTED_KEYS.contains(&lower.as_str()) {
                        Some((redact_secrets(&k), Value::String("<redacted>".into())))
                    } else {
                        Some((redact_secrets(&k), sanitize_data(v)))
                    }
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::RequestErrorCategory;
    use serde_json::json;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    #[derive(Clone, Copy)]
    enum Mode {
        Ok,
        Fail,
        Hang,
        Delay(Duration),
    }

    /// Records every batch it is asked to send (at call time), then behaves per `mode`.
    struct ChanSink {
        tx: mpsc::UnboundedSender<TelemetryBatch>,
        mode: Mode,
    }

    impl TelemetrySink for ChanSink {
        fn send(&self, batch: TelemetryBatch, _timeout: Duration) -> SendFuture {
            let _ = self.tx.send(batch);
            let mode = self.mode;
            Box::pin(async move {
                match mode {
                    Mode::Ok => Ok(()),
                    Mode::Fail => Err(Error::from_status(500, "")),
                    Mode::Hang => std::future::pending().await,
                    Mode::Delay(d) => {
                        tokio::time::sleep(d).await;
                        Ok(())
                    }
                }
            })
        }
    }

    struct Fixture {
        t: Arc<Telemetry>,
        rx: mpsc::UnboundedReceiver<TelemetryBatch>,
        overflow: Arc<Mutex<Vec<u64>>>,
        sink: Arc<ChanSink>,
    }

    fn fixture(config: TelemetryConfig, mode: Mode) -> Fixture {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = Arc::new(ChanSink { tx, mode });
        let overflow = Arc::new(Mutex::new(Vec::new()));
        let o = overflow.clone();
        let t = Telemetry::start(
            config,
            sink.clone(),
            "sess-1".into(),
            Box::new(move |n| o.lock().unwrap().push(n)),
        );
        Fixture {
            t,
            rx,
            overflow,
            sink,
        }
    }

    /// Flushes only when told (interval one hour).
    fn manual(max_batch: usize) -> TelemetryConfig {
        TelemetryConfig {
            max_batch,
            flush_interval: Duration::from_secs(3600),
            ..TelemetryConfig::default()
        }
    }

    fn ev(i: u64) -> Value {
        let mut e = base_event("GENERIC_EVENT", Severity::Info, SystemTime::now());
        e["event_name"] = json!("test");
        e["event_data"] = json!({ "i": i });
        e
    }

    async fn recv(rx: &mut mpsc::UnboundedReceiver<TelemetryBatch>) -> TelemetryBatch {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("no batch within 60 s")
            .expect("sink gone")
    }

    /// Nothing arrives within `within` (paused clock: time advances when idle).
    async fn nothing(rx: &mut mpsc::UnboundedReceiver<TelemetryBatch>, within: Duration) {
        if let Ok(b) = tokio::time::timeout(within, rx.recv()).await {
            panic!("unexpected batch: {b:?}");
        }
    }

    /// Waits (yielding to other tasks, no sleeping) until `cond` holds, for 10 s real time.
    async fn wait_until(mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "condition not met");
            tokio::task::yield_now().await;
        }
    }

    fn indices(b: &TelemetryBatch) -> Vec<u64> {
        b.events
            .iter()
            .map(|e| e["event_data"]["i"].as_u64().unwrap())
            .collect()
    }

    /// Counts WARN events whose message contains a substring (current thread only).
    #[derive(Clone, Default)]
    struct Warnings(Arc<Mutex<Vec<String>>>);

    impl Warnings {
        fn count(&self, needle: &str) -> usize {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.contains(needle))
                .count()
        }
    }

    struct MessageVisitor(String);

    impl tracing::field::Visit for MessageVisitor {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Warnings {
        fn register_callsite(
            &self,
            _: &'static tracing::Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            tracing::subscriber::Interest::sometimes()
        }
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == tracing::Level::WARN {
                let mut v = MessageVisitor(String::new());
                event.record(&mut v);
                self.0.lock().unwrap().push(v.0);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    // ---- formatting -------------------------------------------------------------------

    #[test]
    fn timestamps_are_utc_iso8601_with_z() {
        let at = |s: u64, us: u32| UNIX_EPOCH + Duration::new(s, us * 1000);
        assert_eq!(format_timestamp(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_timestamp(at(1_782_907_201, 250_000)),
            "2026-07-01T12:00:01.250000Z"
        );
        assert_eq!(
            format_timestamp(at(951_868_799, 999_999)),
            "2000-02-29T23:59:59.999999Z"
        );
        assert_eq!(
            format_timestamp(at(4_107_542_400, 1)),
            "2100-03-01T00:00:00.000001Z"
        );
    }

    #[test]
    fn durations_use_python_timedelta_text() {
        let ms = Duration::from_millis;
        assert_eq!(format_timedelta(Duration::ZERO), "0:00:00");
        assert_eq!(format_timedelta(ms(2_100)), "0:00:02.100000");
        assert_eq!(format_timedelta(ms(312_500)), "0:05:12.500000");
        assert_eq!(format_timedelta(Duration::from_secs(3 * 3600)), "3:00:00");
        assert_eq!(
            format_timedelta(Duration::new(90_000, 1_000)),
            "1 day, 1:00:00.000001"
        );
        assert_eq!(
            format_timedelta(Duration::from_secs(2 * 86_400 + 61)),
            "2 days, 0:01:01"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact_secrets("bad key tml-secret123 given"),
            "bad key tml-<redacted> given"
        );
        assert_eq!(
            redact_secrets("X-API-Key: tml-AbC_d-9;x"),
            "X-API-Key: tml-<redacted>;x"
        );
        assert_eq!(redact_secrets("tml-a"), "tml-<redacted>");
        assert_eq!(
            redact_secrets("text/html-page tml- x"),
            "text/html-page tml- x"
        );
        assert_eq!(
            redact_secrets("jwt eyJhbGci.eyJzdWIi.c2ln end"),
            "jwt eyJ<redacted> end"
        );
        assert_eq!(redact_secrets("eyJust kidding"), "eyJust kidding");
        assert_eq!(redact_secrets("naïve tml-é"), "naïve tml-é");
        let data = sanitize_data(json!({
            "request_headers": {"X-API-Key": "tml-hdr"},
            "Authorization": "Bearer abc",
            "nested": ["tml-zzz", {"x": "eyJa.b"}],
            "n": 3
        }));
        assert_eq!(
            data,
            json!({
                "Authorization": "<redacted>",
                "nested": ["tml-<redacted>", {"x": "eyJ<redacted>"}],
                "n": 3
            })
        );
    }

    // ---- classification (13.8) ----------------------------------------------------------

    fn classify(err: &Error) -> Value {
        exception_event(err, "TrainingClient.forward_backward", SystemTime::now()).unwrap()
    }

    #[test]
    fn user_and_system_errors_are_classified() {
        let e = classify(&Error::from_status(400, r#"{"detail":"bad"}"#));
        assert_eq!(e["event"], "GENERIC_EVENT");
        assert_eq!(e["event_name"], "user_error");
        assert_eq!(e["severity"], "WARNING");
        assert_eq!(
            e["event_data"],
            json!({"error_type": "User", "message": "HTTP 400: bad", "status_code": 400,
                   "method": "TrainingClient.forward_backward"})
        );

        for (status, kind) in [(408, "Transient"), (500, "Transient")] {
            let e = classify(&Error::from_status(status, "").with_request_id("req-1"));
            assert_eq!(e["event"], "UNHANDLED_EXCEPTION", "{status}");
            assert_eq!(e["severity"], "ERROR");
            assert_eq!(e["error_type"], kind);
            assert_eq!(e["error_message"], format!("HTTP {status}"));
            assert_eq!(
                e["traceback"],
                format!("in TrainingClient.forward_backward, request req-1, HTTP {status}")
            );
            assert!(e.get("event_data").is_none());
        }

        let failed = Error {
            category: Some(RequestErrorCategory::User),
            ..Error::fatal("invalid loss_fn")
        };
        let e = classify(&failed);
        assert_eq!(e["event_name"], "user_error");
        assert_eq!(e["severity"], "WARNING");
        assert_eq!(
            e["event_data"],
            json!({"error_type": "Fatal", "message": "invalid loss_fn",
                   "method": "TrainingClient.forward_backward"})
        );
        let server = Error {
            category: Some(RequestErrorCategory::Server),
            ..Error::fatal("oom")
        };
        assert_eq!(classify(&server)["event"], "UNHANDLED_EXCEPTION");

        let e = classify(&Error::timeout(Duration::from_secs(3)));
        assert_eq!(e["event"], "UNHANDLED_EXCEPTION");
        assert_eq!(e["error_type"], "Timeout");
        assert_eq!(e["severity"], "ERROR");

        assert!(exception_event(&Error::cancelled(), "m", SystemTime::now()).is_none());
    }

    // ---- batching and flushing ----------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn batches_are_capped_and_order_is_preserved() {
        let mut f = fixture(manual(100), Mode::Ok);
        for i in 0..250 {
            f.t.push(ev(i));
        }
        f.t.flush_now();
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let b = recv(&mut f.rx).await;
            assert_eq!(b.session_id, "sess-1");
            assert_eq!(b.sdk_version, SDK_VERSION);
            assert_eq!(b.platform, platform());
            assert_eq!(b.process_uuid, process_uuid());
            sizes.push(b.events.len());
            all.extend(indices(&b));
            for e in &b.events {
                assert_eq!(
                    e["event_session_index"].as_u64(),
                    e["event_data"]["i"].as_u64()
                );
            }
        }
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(all, (0..250).collect::<Vec<_>>());
        nothing(&mut f.rx, Duration::from_secs(60)).await;
        wait_until(|| f.t.sent_events() == 250).await;
        assert_eq!(f.t.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_on_the_interval() {
        let config = TelemetryConfig {
            flush_interval: Duration::from_secs(10),
            ..TelemetryConfig::default()
        };
        let mut f = fixture(config, Mode::Ok);
        for i in 0..5 {
            f.t.push(ev(i));
        }
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(f.rx.try_recv().is_err(), "flushed before the interval");
        let before = Instant::now();
        let b = recv(&mut f.rx).await;
        assert_eq!(indices(&b), [0, 1, 2, 3, 4]);
        assert!(before.elapsed() <= Duration::from_secs(1));
        // And again one interval later.
        f.t.push(ev(5));
        let b = recv(&mut f.rx).await;
        assert_eq!(indices(&b), [5]);
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_when_a_batch_fills() {
        let mut f = fixture(manual(10), Mode::Ok);
        for i in 0..9 {
            f.t.push(ev(i));
        }
        nothing(&mut f.rx, Duration::from_secs(60)).await;
        f.t.push(ev(9));
        let b = recv(&mut f.rx).await;
        assert_eq!(indices(&b), (0..10).collect::<Vec<_>>());
        // A flush sends everything queued, in batches of at most max_batch.
        for i in 10..35 {
            f.t.push(ev(i));
        }
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while got.len() < 25 {
            let b = recv(&mut f.rx).await;
            sizes.push(b.events.len());
            got.extend(indices(&b));
        }
        assert_eq!(sizes, [10, 10, 5]);
        assert_eq!(got, (10..35).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_sends_everything_through_a_slow_sink() {
        let mut f = fixture(manual(100), Mode::Delay(Duration::from_millis(500)));
        for i in 0..1000 {
            f.t.push(ev(i));
        }
        let t0 = Instant::now();
        assert!(f.t.drain(Duration::from_secs(30)).await);
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        assert_eq!(f.t.sent_events(), 1000);
        assert_eq!(f.t.queued(), 0);
        let mut all = Vec::new();
        while let Ok(b) = f.rx.try_recv() {
            assert!(b.events.len() <= 100);
            all.extend(indices(&b));
        }
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        // The flusher is stopped: later events are ignored.
        f.t.push(ev(1000));
        f.t.flush_now();
        assert_eq!(f.t.queued(), 0);
        wait_until(|| Arc::strong_count(&f.t.shared) == 1).await;
        assert!(f.t.drain(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_times_out_with_a_hanging_sink() {
        let warnings = Warnings::default();
        let _guard = tracing::subscriber::set_default(warnings.clone());
        let config = TelemetryConfig {
            http_timeout: Duration::from_secs(5),
            ..manual(100)
        };
        let mut f = fixture(config, Mode::Hang);
        for i in 0..300 {
            f.t.push(ev(i));
        }
        let t0 = Instant::now();
        assert!(!f.t.drain(Duration::from_secs(2)).await);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
        assert_eq!(
            warnings.count("Timed out draining telemetry during shutdown"),
            1
        );
        assert_eq!(recv(&mut f.rx).await.events.len(), 100);
        // Stopped: no further sends.
        wait_until(|| Arc::strong_count(&f.t.shared) == 1).await;
        f.t.flush_now();
        nothing(&mut f.rx, Duration::from_secs(60)).await;
        assert_eq!(f.t.sent_events(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_counts_timed_out_batches_as_dropped() {
        let config = TelemetryConfig {
            http_timeout: Duration::from_secs(1),
            ..manual(100)
        };
        let mut f = fixture(config, Mode::Hang);
        for i in 0..300 {
            f.t.push(ev(i));
        }
        let t0 = Instant::now();
        assert!(f.t.drain(Duration::from_secs(30)).await);
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        assert_eq!(f.t.sent_events(), 0);
        for _ in 0..3 {
            recv(&mut f.rx).await;
        }
        assert!(f.rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_with_a_failing_sink() {
        let warnings = Warnings::default();
        let _guard = tracing::subscriber::set_default(warnings.clone());
        let mut f = fixture(manual(100), Mode::Fail);
        for i in 0..20_000 {
            f.t.push(ev(i));
            assert!(f.t.queued() <= 10_000);
        }
        assert_eq!(f.t.queued(), 10_000);
        assert_eq!(f.t.dropped(), 10_000);
        assert_eq!(*f.overflow.lock().unwrap(), [1]);
        assert_eq!(warnings.count("Telemetry queue full"), 1);
        // The flush sends 100 batches, all fail and are dropped, then reports the total once.
        f.t.flush_now();
        for _ in 0..100 {
            recv(&mut f.rx).await;
        }
        wait_until(|| f.overflow.lock().unwrap().len() == 2).await;
        assert_eq!(*f.overflow.lock().unwrap(), [1, 10_000]);
        assert_eq!(f.t.queued(), 0);
        assert_eq!(f.t.sent_events(), 0);
        assert_eq!(warnings.count("Failed to send telemetry batch"), 100);
        // No new drops: the next flush reports nothing.
        f.t.push(ev(0));
        f.t.flush_now();
        recv(&mut f.rx).await;
        assert!(f.t.drain(Duration::from_secs(30)).await);
        assert_eq!(*f.overflow.lock().unwrap(), [1, 10_000]);
        assert_eq!(warnings.count("Telemetry queue full"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_while_a_send_hangs() {
        let warnings = Warnings::default();
        let _guard = tracing::subscriber::set_default(warnings.clone());
        let config = TelemetryConfig {
            http_timeout: Duration::from_secs(5),
            ..manual(100)
        };
        let mut f = fixture(config, Mode::Hang);
        for i in 0..100 {
            f.t.push(ev(i));
        }
        recv(&mut f.rx).await; // the flusher is now stuck in a send
        assert_eq!(f.t.queued(), 0);
        for i in 100..20_100 {
            f.t.push(ev(i)); // never waits for the send
        }
        assert_eq!(f.t.queued(), 10_000);
        assert_eq!(f.t.dropped(), 10_000);
        assert_eq!(*f.overflow.lock().unwrap(), [1]);
        assert_eq!(warnings.count("Telemetry queue full"), 1);
        // Each batch is given up after http_timeout and dropped.
        let b = recv(&mut f.rx).await;
        assert_eq!(indices(&b)[0], 100);
        assert_eq!(warnings.count("Telemetry batch send timed out"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_batch_is_dropped_not_requeued() {
        let mut f = fixture(manual(100), Mode::Fail);
        for i in 0..5 {
            f.t.push(ev(i));
        }
        f.t.flush_now();
        assert_eq!(indices(&recv(&mut f.rx).await), [0, 1, 2, 3, 4]);
        wait_until(|| *f.t.shared.completed.borrow() == 5).await;
        assert_eq!(f.t.queued(), 0);
        f.t.flush_now();
        nothing(&mut f.rx, Duration::from_secs(60)).await;
        assert_eq!(f.t.sent_events(), 0);
        assert!(f.t.drain(Duration::from_secs(30)).await);
        assert!(f.rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_sends_nothing() {
        let config = TelemetryConfig {
            enabled: false,
            ..TelemetryConfig::default()
        };
        let mut f = fixture(config, Mode::Ok);
        f.t.session_start();
        f.t.generic("x", Severity::Info, json!({}));
        f.t.exception(&Error::fatal("boom"), "m");
        f.t.push(ev(0));
        f.t.session_end();
        f.t.flush_now();
        assert_eq!(f.t.queued(), 0);
        nothing(&mut f.rx, Duration::from_secs(60)).await;
        assert!(f.t.drain(Duration::from_secs(1)).await);
        assert_eq!(f.t.sent_events(), 0);
        assert_eq!(f.t.dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_pushes_keep_index_order_on_a_multi_thread_runtime() {
        let mut f = fixture(
            TelemetryConfig {
                max_batch: 7,
                ..TelemetryConfig::default()
            },
            Mode::Ok,
        );
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let t = f.t.clone();
                tokio::spawn(async move {
                    for i in 0..500 {
                        t.generic("x", Severity::Info, json!({ "i": i }));
                        if i % 50 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(f.t.drain(Duration::from_secs(30)).await);
        assert_eq!(f.t.sent_events(), 4000);
        let mut seen = Vec::new();
        while let Ok(b) = f.rx.try_recv() {
            assert!(!b.events.is_empty() && b.events.len() <= 7);
            seen.extend(
                b.events
                    .iter()
                    .map(|e| e["event_session_index"].as_u64().unwrap()),
            );
        }
        assert_eq!(seen, (0..4000).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_the_flusher() {
        let f = fixture(manual(100), Mode::Ok);
        assert_eq!(Arc::strong_count(&f.sink), 2);
        drop(f.t);
        wait_until(|| Arc::strong_count(&f.sink) == 1).await;
    }

    // ---- events -------------------------------------------------------------------------

    #[tokio::test(start_paused = true)]
    async fn events_have_the_common_fields_and_increasing_indices() {
        let mut f = fixture(manual(100), Mode::Ok);
        tokio::time::advance(Duration::from_millis(2_100)).await;
        f.t.session_start();
        f.t.generic(
            "RetryHandler.execute.exception",
            Severity::Warning,
            json!({"status_code": 503}),
        );
        f.t.exception(&Error::from_status(500, ""), "SamplingClient.sample");
        f.t.session_end();
        f.t.generic("plain", Severity::Debug, Value::Null);
        assert!(f.t.drain(Duration::from_secs(30)).await);
        let mut events = Vec::new();
        while let Ok(b) = f.rx.try_recv() {
            events.extend(b.events);
        }
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "SESSION_START",
                "GENERIC_EVENT",
                "UNHANDLED_EXCEPTION",
                "SESSION_END",
                "GENERIC_EVENT"
            ]
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["event_session_index"], i as u64);
            let id = e["event_id"].as_str().unwrap();
            assert_eq!((id.len(), &id[14..15]), (36, "4"));
            let ts = e["timestamp"].as_str().unwrap();
            assert_eq!((ts.len(), &ts[10..11], &ts[26..]), (27, "T", "Z"), "{ts}");
        }
        assert_eq!(
            events
                .iter()
                .map(|e| e["severity"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["INFO", "WARNING", "ERROR", "INFO", "DEBUG"]
        );
        assert_eq!(events[1]["event_name"], "RetryHandler.execute.exception");
        assert_eq!(events[1]["event_data"], json!({"status_code": 503}));
        assert_eq!(events[3]["duration"], "0:00:02.100000");
        assert_eq!(events[4]["event_data"], json!({}));
        let start = events[0].as_object().unwrap();
        let mut keys: Vec<&str> = start.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "event",
                "event_id",
                "event_session_index",
                "severity",
                "timestamp"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_api_key_never_leaves() {
        let mut f = fixture(manual(100), Mode::Ok);
        let user = Error::from_status(422, r#"{"detail":"bad key tml-secret123"}"#);
        let system = Error::fatal("auth with tml-secret123 failed").with_request_id("req-1");
        f.t.exception(&user, "ServiceClient.create_lora_training_client");
        f.t.exception(&system, "ServiceClient.create_lora_training_client");
        f.t.generic(
            "APIFuture.result_async.api_status_error",
            Severity::Error,
            json!({"request_headers": {"X-API-Key": "tml-secret123"},
                   "x-api-key": "tml-secret123",
                   "detail": "key tml-secret123 rejected"}),
        );
        let b = recv(&mut f.rx).await; // exception() flushes at once
        let mut text = serde_json::to_string(&b).unwrap();
        assert!(f.t.drain(Duration::from_secs(30)).await);
        while let Ok(b) = f.rx.try_recv() {
            text.push_str(&serde_json::to_string(&b).unwrap());
        }
        assert!(!text.contains("tml-secret123"), "{text}");
        assert!(!text.contains("request_headers"), "{text}");
        assert!(text.contains("bad key tml-<redacted>"), "{text}");
        assert!(text.contains("auth with tml-<redacted> failed"), "{text}");
        assert!(text.contains("key tml-<redacted> rejected"), "{text}");
    }
}
