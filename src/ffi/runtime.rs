//! `tinkex_runtime` (Arc-owned): a named tokio runtime plus the one dispatcher thread on
//! which every callback runs, and the registry that lets shutdown finish pending work.

use super::error::Failure;
use super::event::tinkex_subscription;
use super::future::tinkex_future;
use super::status::tinkex_status;
use super::ArcHandle;
use super::{boundary, out_ptr, write_out};
use super::{error::tinkex_error, log};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// The name of the dispatcher thread (and of fallback callback threads).
pub const DISPATCHER_THREAD_NAME: &str = "tinkex-callback";
/// The name of the tokio worker threads.
pub const WORKER_THREAD_NAME: &str = "tinkex-worker";
/// Bound on each teardown step after the drain (flushing callbacks, stopping tokio, joining
/// the dispatcher).
const TEARDOWN_BOUND: Duration = Duration::from_secs(5);

/// Options of `tinkex_runtime_new`. Zero-initialise, set `struct_size = sizeof(tinkex_runtime_options)`,
/// then the fields you need (or start from `tinkex_runtime_options_default()`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct tinkex_runtime_options {
    /// `sizeof(tinkex_runtime_options)` as the caller knows it (for later extension).
    pub struct_size: u32,
    /// Tokio worker threads; 0 = one per CPU. At most 1024.
    pub worker_threads: u32,
    /// A `tinkex_log_level`: the library's log lines written to stderr (process-wide; the
    /// last runtime created sets it). 0 (`TINKEX_LOG_LEVEL_OFF`) = silent.
    pub log_level: i32,
}

/// Log levels of `tinkex_runtime_options.log_level`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum tinkex_log_level {
    /// No log output.
    Off = 0,
    /// Errors only.
    Error = 1,
    /// Warnings (heartbeat trouble, queue-state lines, ...) and errors.
    Warn = 2,
    /// Informational lines.
    Info = 3,
    /// Debug lines (every event).
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl TryFrom<i32> for tinkex_log_level {
    type Error = Failure;
    fn try_from(v: i32) -> Result<Self, Failure> {
        Ok(match v {
            0 => tinkex_log_level::Off,
            1 => tinkex_log_level::Error,
            2 => tinkex_log_level::Warn,
            3 => tinkex_log_level::Info,
            4 => tinkex_log_level::Debug,
            5 => tinkex_log_level::Trace,
            other => return Err(Failure::invalid_arg(format!("unknown log_level {other}"))),
        })
    }
}

impl Default for tinkex_runtime_options {
    fn default() -> Self {
        tinkex_runtime_options {
            struct_size: std::mem::size_of::<tinkex_runtime_options>() as u32,
            worker_threads: 0,
            log_level: tinkex_log_level::Off as i32,
        }
    }
}

/// A job run on the dispatcher thread.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// A one-shot flag to wait on with a timeout. (Waiting on a Condvar allocates nothing on
/// the host's thread; std's channel receive would attach a thread handle to it.)
#[derive(Default)]
struct Signal {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    fn set(&self) {
        *self.set.lock().unwrap() = true;
        self.cv.notify_all();
    }

    /// Waits until set or `timeout`; returns whether set.
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut set = self.set.lock().unwrap();
        while !*set {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            set = self.cv.wait_timeout(set, deadline - now).unwrap().0;
        }
        true
    }
}

/// Ids of runtimes (for the dispatcher-thread check).
static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On a dispatcher thread: the id of its runtime; 0 elsewhere. A const-initialised
    /// `Cell` allocates nothing on host threads (unlike `std::thread::current()`).
    static DISPATCHER_OF: Cell<u64> = const { Cell::new(0) };
}

struct Dispatcher {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    exited: Arc<Signal>,
    runtime_id: u64,
}

impl Dispatcher {
    fn start() -> Result<Self, Failure> {
        let runtime_id = NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Job>();
        let exited = Arc::new(Signal::default());
        let exit_signal = exited.clone();
        let thread = std::thread::Builder::new()
            .name(DISPATCHER_THREAD_NAME.into())
            .spawn(move || {
                DISPATCHER_OF.with(|d| d.set(runtime_id));
                while let Ok(job) = rx.recv() {
                    run_job(job);
                }
                exit_signal.set();
            })
            .map_err(|e| Failure::internal(format!("cannot start the dispatcher thread: {e}")))?;
        Ok(Dispatcher {
            tx: Mutex::new(Some(tx)),
            runtime_id,
            thread: Mutex::new(Some(thread)),
            exited,
        })
    }

    fn post(&self, job: Job) -> Result<(), Job> {
        match &*self.tx.lock().unwrap() {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Stops accepting jobs; the thread runs what is queued, then exits.
    fn close(&self) {
        self.tx.lock().unwrap().take();
    }

    /// Closes and waits (bounded) for the thread to finish the queued jobs.
    fn close_and_join(&self, bound: Duration) {
        self.close();
        if self.exited.wait(bound) {
            if let Some(t) = self.thread.lock().unwrap().take() {
                let _ = t.join();
            }
        }
    }
}

fn run_job(job: Job) {
    // A host callback cannot unwind into Rust (it is `extern "C"`); this catches panics of
    // the library's own glue around it.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
}

#[derive(Default)]
struct Registry {
    closing: bool,
    shut_down: bool,
    futures: HashMap<u64, Weak<tinkex_future>>,
    subscriptions: HashMap<u64, Weak<tinkex_subscription>>,
}

/// A tokio runtime and the dispatcher thread of its callbacks.
///
/// Arc-owned: `tinkex_runtime_new` hands out one reference, `tinkex_runtime_clone` adds
/// one, `tinkex_runtime_free` drops one. Every client, future and subscription holds a
/// reference, so the runtime lives until the last of them is freed; the final teardown then
/// runs on a background thread. Any thread may use it.
pub struct tinkex_runtime {
    tokio: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    dispatcher: Dispatcher,
    registry: Mutex<Registry>,
    drained: Condvar,
    next_id: AtomicU64,
}

impl tinkex_runtime {
    fn new(options: tinkex_runtime_options) -> Result<Self, Failure> {
        if options.worker_threads > 1024 {
            return Err(Failure::invalid_arg(format!(
                "worker_threads {} is above 1024",
                options.worker_threads
            )));
        }
        let level = tinkex_log_level::try_from(options.log_level)?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name(WORKER_THREAD_NAME);
        if options.worker_threads > 0 {
            builder.worker_threads(options.worker_threads as usize);
        }
        let runtime = builder
            .build()
            .map_err(|e| Failure::internal(format!("cannot start the tokio runtime: {e}")))?;
        let dispatcher = Dispatcher::start()?;
        log::set_level(level);
        Ok(tinkex_runtime {
            handle: runtime.handle().clone(),
            tokio: Mutex::new(Some(runtime)),
            dispatcher,
            registry: Mutex::new(Registry::default()),
            drained: Condvar::new(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The runtime's id (unique in the process).
    pub(crate) fn id(&self) -> u64 {
        self.dispatcher.runtime_id
    }

    /// The tokio handle operations run on.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// A fresh id for a registry entry.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `SHUT_DOWN` once shutdown has begun.
    pub(crate) fn check_open(&self) -> Result<(), Failure> {
        if self.registry.lock().unwrap().closing {
            Err(Failure::shut_down())
        } else {
            Ok(())
        }
    }

    /// Tracks a pending future so that shutdown can complete it; `SHUT_DOWN` if closing.
    pub(crate) fn register_future(&self, id: u64, f: &Arc<tinkex_future>) -> Result<(), Failure> {
        let mut r = self.registry.lock().unwrap();
        if r.closing {
            return Err(Failure::shut_down());
        }
        r.futures.insert(id, Arc::downgrade(f));
        Ok(())
    }

    /// Forgets a completed future.
    pub(crate) fn unregister_future(&self, id: u64) {
        let mut r = self.registry.lock().unwrap();
        r.futures.remove(&id);
        if r.futures.is_empty() {
            self.drained.notify_all();
        }
    }

    /// Tracks an open subscription so that shutdown can close it; `SHUT_DOWN` if closing.
    pub(crate) fn register_subscription(
        &self,
        id: u64,
        s: &Arc<tinkex_subscription>,
    ) -> Result<(), Failure> {
        let mut r = self.registry.lock().unwrap();
        if r.closing {
            return Err(Failure::shut_down());
        }
        r.subscriptions.insert(id, Arc::downgrade(s));
        Ok(())
    }

    /// Forgets a closed subscription.
    pub(crate) fn unregister_subscription(&self, id: u64) {
        self.registry.lock().unwrap().subscriptions.remove(&id);
    }

    /// Runs `job` on the dispatcher thread, after every job posted before it. If the
    /// dispatcher has stopped (after shutdown), the job runs on a new thread of the same
    /// name instead, so a callback never runs on the caller's thread or a tokio worker.
    pub(crate) fn post(&self, job: Job) {
        if let Err(job) = self.dispatcher.post(job) {
            let spawned = std::thread::Builder::new()
                .name(DISPATCHER_THREAD_NAME.into())
                .spawn(move || run_job(job));
            if let Err(e) = spawned {
                tracing::error!("tinkex: cannot start a callback thread, a callback is lost: {e}");
            }
        }
    }

    /// Whether the current thread is this runtime's dispatcher.
    pub(crate) fn on_dispatcher(&self) -> bool {
        DISPATCHER_OF.with(|d| d.get()) == self.dispatcher.runtime_id
    }

    /// `WRONG_STATE` where blocking would deadlock or stall IO: on the dispatcher thread or
    /// inside any tokio runtime.
    pub(crate) fn check_may_block(&self, what: &str) -> Result<(), Failure> {
        if self.on_dispatcher() {
            return Err(Failure::wrong_state(format!(
                "{what} must not be called from a tinkex callback (it would deadlock)"
            )));
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Failure::wrong_state(format!(
                "{what} must not be called from a tokio runtime thread"
            )));
        }
        Ok(())
    }

    /// The blocking drain of `tinkex_runtime_shutdown`.
    fn shutdown(&self, drain: Option<Duration>) -> Result<(), Failure> {
        self.check_may_block("tinkex_runtime_shutdown")?;
        // `None` (no limit) or a drain too long for the clock: wait until drained.
        let deadline = drain.and_then(|d| Instant::now().checked_add(d));
        {
            let mut r = self.registry.lock().unwrap();
            if r.shut_down {
                return Ok(());
            }
            r.closing = true;
            // 1. Let pending work finish, up to the deadline.
            loop {
                r.futures.retain(|_, w| w.strong_count() > 0);
                if r.futures.is_empty() {
                    break;
                }
                match deadline {
                    None => r = self.drained.wait(r).unwrap(),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        r = self.drained.wait_timeout(r, deadline - now).unwrap().0;
                    }
                }
            }
        }
        // 2. Whatever is left completes with SHUT_DOWN; subscriptions close.
        let (futures, subscriptions) = {
            let mut r = self.registry.lock().unwrap();
            let f: Vec<_> = r.futures.drain().filter_map(|(_, w)| w.upgrade()).collect();
            let s: Vec<_> = r
                .subscriptions
                .drain()
                .filter_map(|(_, w)| w.upgrade())
                .collect();
            (f, s)
        };
        for f in futures {
            f.complete_shut_down();
        }
        for s in subscriptions {
            s.close();
        }
        log::remove_sink(self.id());
        // 3. Run every callback posted so far.
        let flushed = Arc::new(Signal::default());
        let signal = flushed.clone();
        self.post(Box::new(move || signal.set()));
        flushed.wait(TEARDOWN_BOUND);
        // 4. Stop tokio (drops every remaining task), then the dispatcher.
        let runtime = self.tokio.lock().unwrap().take();
        if let Some(rt) = runtime {
            rt.shutdown_timeout(TEARDOWN_BOUND);
        }
        self.dispatcher.close_and_join(TEARDOWN_BOUND);
        self.registry.lock().unwrap().shut_down = true;
        Ok(())
    }
}

impl Drop for tinkex_runtime {
    fn drop(&mut self) {
        // The last reference can go on any thread, including a tokio worker or the
        // dispatcher: tokio cannot drop a runtime from its own threads and a plain drop may
        // wait for ever, so teardown is a bounded shutdown on a background thread.
        log::remove_sink(self.id());
        self.dispatcher.close();
        if let Some(rt) = self.tokio.get_mut().unwrap().take() {
            let (tx, rx) = mpsc::channel::<tokio::runtime::Runtime>();
            let spawned = std::thread::Builder::new()
                .name("tinkex-teardown".into())
                .spawn(move || {
                    if let Ok(rt) = rx.recv() {
                        rt.shutdown_timeout(TEARDOWN_BOUND);
                    }
                });
            match spawned {
                Ok(_) => {
                    if let Err(back) = tx.send(rt) {
                        back.0.shutdown_background();
                    }
                }
                Err(_) => rt.shutdown_background(),
            }
        }
    }
}

/// The default options: `struct_size` set, one worker per CPU, logging off.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_runtime_options_default() -> tinkex_runtime_options {
    boundary!(value tinkex_runtime_options::default(), {
        tinkex_runtime_options::default()
    })
}

/// Starts a runtime: a tokio runtime with `worker_threads` workers named `tinkex-worker`,
/// and the dispatcher thread `tinkex-callback` on which every callback of every client of
/// this runtime runs.
///
/// `opts` may be NULL (defaults). A `struct_size` smaller than the first version of the
/// struct (12) gives `INVALID_ARG`; a larger one is accepted (unknown trailing fields are
/// ignored). Unknown `log_level` values give `INVALID_ARG`.
///
/// Blocks: briefly (starts threads); call it from a NIF `load` or a dirty scheduler.
/// Not callback-safe. Caller owns the result; release with `tinkex_runtime_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_runtime_new(
    opts: *const tinkex_runtime_options,
    out: *mut *mut tinkex_runtime,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        out_ptr(out, "out")?;
        let options = if opts.is_null() {
            tinkex_runtime_options::default()
        } else {
            // SAFETY: a non-NULL `opts` points to at least a `uint32_t struct_size` (caller
            // contract); the whole v1 struct is read only when it is declared that large.
            let size = unsafe { (opts as *const u32).read_unaligned() } as usize;
            if size < std::mem::size_of::<tinkex_runtime_options>() {
                return Err(Failure::invalid_arg(format!(
                    "opts->struct_size is {size}, expected at least {}",
                    std::mem::size_of::<tinkex_runtime_options>()
                )));
            }
            // SAFETY: the caller declared at least this many readable bytes.
            unsafe { opts.read_unaligned() }
        };
        let rt = Arc::new(tinkex_runtime::new(options)?);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(rt)) };
        Ok(tinkex_status::Ok)
    })
}

/// A new reference to the same runtime; NULL when `rt` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with `tinkex_runtime_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_runtime_clone(rt: *const tinkex_runtime) -> *mut tinkex_runtime {
    // SAFETY: a non-NULL `rt` is a live handle (caller contract).
    unsafe { super::clone_export(rt) }
}

/// Shuts the runtime down with a bounded drain:
/// 1. new submissions and subscriptions fail with `TINKEX_STATUS_SHUT_DOWN`;
/// 2. pending futures get up to `timeout_ms` to finish (0 = do not wait,
///    `TINKEX_WAIT_FOREVER` = no limit);
/// 3. futures still pending then complete with `TINKEX_STATUS_SHUT_DOWN` (their callbacks
///    fire), and every subscription closes (its `user_data_free` runs);
/// 4. the callbacks queued so far run, tokio stops, and the dispatcher thread exits (each of
///    these steps bounded by 5 s).
///
/// Idempotent: a second call returns `TINKEX_STATUS_OK` at once. Handles stay valid and must
/// still be freed; their operations fail with `SHUT_DOWN`.
///
/// Takes `rt` as `const` like every non-consuming call: handles are internally synchronised.
///
/// Blocks: yes, up to `timeout_ms` plus the bounded teardown. Never call it from a tinkex
/// callback or a tokio thread (`TINKEX_STATUS_WRONG_STATE`): it would deadlock.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_runtime_shutdown(
    rt: *const tinkex_runtime,
    timeout_ms: u64,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `rt` is a live runtime handle (caller contract).
        let rt = unsafe { ArcHandle::from_ptr(rt, "rt") }?;
        rt.shutdown(super::timeout(timeout_ms))?;
        Ok(tinkex_status::Ok)
    })
}

/// Drops one reference. NULL does nothing. Never blocks and never cancels: clients, futures
/// and subscriptions keep the runtime alive; when the last reference goes, teardown runs on
/// a background thread (bounded).
///
/// Consumes: `rt`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_runtime_free(rt: *mut tinkex_runtime) {
    // SAFETY: a non-NULL `rt` came from this library; the host gives up this reference.
    unsafe { super::free_export(rt) }
}
