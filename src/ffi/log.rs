//! The library's own log lines (targets `tinkex…`: queue-state lines already debounced by
//! `core/queue_state.rs`, heartbeat warnings, telemetry drops, retries, ...), delivered by one
//! minimal process-wide `tracing` subscriber to:
//!
//! - stderr, at the `log_level` runtime option (process-wide; the last runtime created sets
//!   it);
//! - the host's log sinks (`tinkex_runtime_set_log_sink`): each line is posted to the sink's
//!   runtime dispatcher thread, in emission order, where `on_log` runs.
//!
//! The subscriber is installed on first use (a level above OFF, or a sink), and only if the
//! process has no global `tracing` subscriber yet; otherwise setting a sink is `WRONG_STATE`.

use super::error::{tinkex_error, Failure};
use super::runtime::{tinkex_log_level, tinkex_runtime, DISPATCHER_THREAD_NAME};
use super::status::tinkex_status;
use super::{boundary, tinkex_free_fn, ArcHandle, UserData};
use std::cell::Cell;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// The stderr level (`log_level` option).
static LEVEL: AtomicI32 = AtomicI32::new(tinkex_log_level::Off as i32);
/// The highest `max_level` of the registered sinks (OFF when none).
static SINK_LEVEL: AtomicI32 = AtomicI32::new(tinkex_log_level::Off as i32);
/// Whether this library's subscriber is the process's global one.
static INSTALLED: OnceLock<bool> = OnceLock::new();
/// The registered sinks (at most one per runtime).
static SINKS: Mutex<Vec<Arc<Sink>>> = Mutex::new(Vec::new());

thread_local! {
    /// Set while this thread forwards a line: a line logged meanwhile (by the glue itself)
    /// is dropped instead of re-entering the sink list.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// Receives one log line on the dispatcher thread: `level`, the `target` (the Rust module,
/// with `.` separators, e.g. `tinkex.core.queue_state`) and the `message` (UTF-8, not
/// NUL-terminated; both borrowed for the call only). Must return quickly.
pub type tinkex_log_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: tinkex_log_level,
        target: *const u8,
        target_len: usize,
        message: *const u8,
        message_len: usize,
    ),
>;

type LogCallback =
    unsafe extern "C" fn(*mut c_void, tinkex_log_level, *const u8, usize, *const u8, usize);

struct Sink {
    runtime_id: u64,
    rt: Weak<tinkex_runtime>,
    on_log: LogCallback,
    user_data: UserData,
    user_data_free: tinkex_free_fn,
    max_level: tinkex_log_level,
}

impl Sink {
    /// Posts `user_data_free` behind every line posted so far (on the dispatcher, or on a
    /// thread of the dispatcher's name once the runtime is gone).
    fn release(self: Arc<Self>) {
        let Some(free) = self.user_data_free else {
            return;
        };
        let user_data = self.user_data;
        let job = move || {
            // SAFETY: the host registered `free` for this `user_data`; it runs once.
            unsafe { free(user_data.get()) }
        };
        match self.rt.upgrade() {
            Some(rt) => rt.post(Box::new(job)),
            None => {
                let _ = std::thread::Builder::new()
                    .name(DISPATCHER_THREAD_NAME.into())
                    .spawn(job);
            }
        }
    }
}

fn install() -> bool {
    *INSTALLED.get_or_init(|| tracing::subscriber::set_global_default(LibLog).is_ok())
}

/// Sets the process-wide stderr level (installing the subscriber when needed).
pub(crate) fn set_level(level: tinkex_log_level) {
    LEVEL.store(level as i32, Ordering::Relaxed);
    if level != tinkex_log_level::Off {
        install();
    }
}

fn recompute_sink_level(sinks: &[Arc<Sink>]) {
    let max = sinks
        .iter()
        .map(|s| s.max_level as i32)
        .max()
        .unwrap_or(tinkex_log_level::Off as i32);
    SINK_LEVEL.store(max, Ordering::Relaxed);
}

/// Replaces the sink of runtime `runtime_id` (`None` removes it); the old sink's
/// `user_data_free` is posted behind its last line.
fn replace_sink(runtime_id: u64, new: Option<Arc<Sink>>) {
    let old = {
        let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
        let old = sinks
            .iter()
            .position(|s| s.runtime_id == runtime_id)
            .map(|i| sinks.remove(i));
        if let Some(s) = new {
            sinks.push(s);
        }
        recompute_sink_level(&sinks);
        old
    };
    if let Some(old) = old {
        old.release();
    }
}

/// Removes a runtime's sink (runtime shutdown or teardown).
pub(crate) fn remove_sink(runtime_id: u64) {
    replace_sink(runtime_id, None);
}

fn level_of(level: &Level) -> tinkex_log_level {
    match *level {
        Level::ERROR => tinkex_log_level::Error,
        Level::WARN => tinkex_log_level::Warn,
        Level::INFO => tinkex_log_level::Info,
        Level::DEBUG => tinkex_log_level::Debug,
        Level::TRACE => tinkex_log_level::Trace,
    }
}

fn stderr_allows(level: tinkex_log_level) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as i32
}

fn sinks_allow(level: tinkex_log_level) -> bool {
    SINK_LEVEL.load(Ordering::Relaxed) >= level as i32
}

/// The subscriber: stderr lines and sink forwarding.
struct LibLog;

/// The event's message followed by its other fields (`name=value`).
#[derive(Default)]
struct Line(String);

impl Line {
    fn sep(&mut self) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.sep();
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.sep();
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

impl Subscriber for LibLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Levels and sinks change at run time: ask `enabled` every time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let level = level_of(metadata.level());
        metadata.target().starts_with("tinkex") && (stderr_allows(level) || sinks_allow(level))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let level = level_of(meta.level());
        let mut line = Line::default();
        event.record(&mut line);
        if stderr_allows(level) {
            eprintln!("[tinkex {}] {}: {}", meta.level(), meta.target(), line.0);
        }
        if sinks_allow(level) {
            forward(level, meta.target(), line.0);
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Posts one line to every sink that wants its level. The sink list stays locked while
/// posting, so lines reach each dispatcher in emission order.
fn forward(level: tinkex_log_level, target: &str, message: String) {
    if FORWARDING.with(|f| f.replace(true)) {
        return;
    }
    let target: Arc<str> = target.replace("::", ".").into();
    let message: Arc<str> = message.into();
    {
        let sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
        for sink in sinks.iter().filter(|s| s.max_level >= level) {
            let Some(rt) = sink.rt.upgrade() else {
                continue;
            };
            let (sink, target, message) = (sink.clone(), target.clone(), message.clone());
            rt.post(Box::new(move || {
                // SAFETY: the host registered `on_log` with this `user_data`; the strings
                // live in this closure for the call.
                unsafe {
                    (sink.on_log)(
                        sink.user_data.get(),
                        level,
                        target.as_ptr(),
                        target.len(),
                        message.as_ptr(),
                        message.len(),
                    )
                }
            }));
        }
    }
    FORWARDING.with(|f| f.set(false));
}

/// Sends the library's log lines of at most `max_level` to `on_log(user_data, level, target,
/// target_len, message, message_len)`, on `rt`'s dispatcher thread, in emission order. The
/// lines are the library's own, already debounced (e.g. one queue-state line per change,
/// heartbeat warnings, telemetry drops); a Python binding forwards them to
/// `logging.getLogger(target)`, an Elixir binding to `Logger`.
///
/// Process-wide like `log_level`: a sink receives the lines of every runtime's operations.
/// One sink per runtime: setting another replaces it; `on_log` NULL removes it. The replaced
/// or removed sink's `user_data_free` (may be NULL) runs once on the dispatcher after its last
/// `on_log`; runtime shutdown removes the sink too. Independent of the stderr output of the
/// `log_level` option. `max_level` `TINKEX_LOG_LEVEL_OFF` also removes the sink.
///
/// Errors: `NULL_ARG` (`rt`), `INVALID_ARG` (unknown `max_level`), `SHUT_DOWN`,
/// `WRONG_STATE` (the process already has another global `tracing` subscriber, so the
/// library's lines cannot be captured). On a non-OK status nothing is registered and
/// neither callback runs. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_runtime_set_log_sink(
    rt: *const tinkex_runtime,
    on_log: tinkex_log_fn,
    user_data: *mut c_void,
    user_data_free: tinkex_free_fn,
    max_level: i32,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `rt` is a live handle (caller contract).
        let rt = unsafe { ArcHandle::clone_from_ptr(rt, "rt") }?;
        // A `tinkex_log_level` (int32_t in C): validated before use.
        let level = tinkex_log_level::try_from(max_level)?;
        rt.check_open()?;
        let runtime_id = rt.id();
        let Some(on_log) = on_log.filter(|_| level != tinkex_log_level::Off) else {
            remove_sink(runtime_id);
            return Ok(tinkex_status::Ok);
        };
        if !install() {
            return Err(Failure::wrong_state(
                "another global tracing subscriber is installed in this process; the \
                 library's log lines cannot be captured",
            ));
        }
        replace_sink(
            runtime_id,
            Some(Arc::new(Sink {
                runtime_id,
                rt: Arc::downgrade(&rt),
                on_log,
                user_data: UserData(user_data),
                user_data_free,
                max_level: level,
            })),
        );
        Ok(tinkex_status::Ok)
    })
}
