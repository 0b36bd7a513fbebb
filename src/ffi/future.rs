//! `tinkex_future` (Arc-owned): one submitted operation, its completion callback, and its
//! result until taken.

use super::bytes::tinkex_bytes;
use super::error::{tinkex_error, Failure};
use super::runtime::tinkex_runtime;
use super::sampling::tinkex_sampling_client;
use super::status::tinkex_status;
use super::training::tinkex_training_client;
use super::{boundary, out_ptr, write_out};
use super::{tinkex_done_fn, UserData};
use super::{ArcHandle, BoxHandle};
use crate::core::requests::ComputeLogprobsOutput;
use crate::core::types::{ForwardBackwardOutput, SampleResponse};
use crate::core::ApiFuture;
use std::any::Any;
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a finished operation produced.
///
/// The hot operations keep their core value as-is (`Sample`, `Logprobs`, `Forward`): a host
/// reads it through a typed result handle (`tinkex_future_take_sample_result`, ...) with no
/// JSON produced, or takes JSON with `tinkex_future_take_result`, which serializes it then.
pub(crate) enum Output {
    /// JSON bytes (every other result except new clients).
    Json(Vec<u8>),
    /// A `sample` result.
    Sample(Box<SampleResponse>),
    /// A `compute_logprobs` result.
    Logprobs(ComputeLogprobsOutput),
    /// A `forward` / `forward_backward` (also custom-loss) result.
    Forward(Box<ForwardBackwardOutput>),
    /// A new training client.
    Training(Arc<tinkex_training_client>),
    /// A new sampling client.
    Sampling(Arc<tinkex_sampling_client>),
}

impl Output {
    fn type_name(&self) -> &'static str {
        match self {
            Output::Json(_) => "JSON bytes (tinkex_future_take_result)",
            Output::Sample(_) => {
                "a sample result (tinkex_future_take_sample_result or tinkex_future_take_result)"
            }
            Output::Logprobs(_) => {
                "a logprobs result (tinkex_future_take_logprobs_result or tinkex_future_take_result)"
            }
            Output::Forward(_) => {
                "a forward result (tinkex_future_take_forward_result or tinkex_future_take_result)"
            }
            Output::Training(_) => "a training client (tinkex_future_take_training_client)",
            Output::Sampling(_) => "a sampling client (tinkex_future_take_sampling_client)",
        }
    }
}

/// Serializes a result to JSON bytes.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value)
        .map_err(|e| Failure::internal(format!("cannot serialize the result: {e}")))
}

/// Serializes a result to JSON bytes (an [`Output::Json`]).
pub(crate) fn json_output<T: serde::Serialize>(value: &T) -> Result<Output, Failure> {
    to_json(value).map(Output::Json)
}

enum State {
    Pending,
    Done(Result<Output, Failure>),
    Taken,
}

/// The core operation behind a future, type-erased.
trait CoreOp: Send + Sync {
    fn cancel(&self);
    fn request_id(&self) -> Option<String>;
}

impl<T: Send + 'static> CoreOp for ApiFuture<T> {
    fn cancel(&self) {
        ApiFuture::cancel(self)
    }

    fn request_id(&self) -> Option<String> {
        ApiFuture::request_id(self)
    }
}

type DoneCallback = (
    unsafe extern "C" fn(*mut c_void, *const tinkex_future),
    UserData,
);

/// One submitted operation.
///
/// Arc-owned. The submit call hands out one reference; the pending operation holds another
/// (and its client, hence the runtime), so freeing the future, its client or the runtime
/// never cancels it and its callback still fires. Any thread may use it concurrently.
pub struct tinkex_future {
    rt: Arc<tinkex_runtime>,
    _owner: Arc<dyn Any + Send + Sync>,
    id: u64,
    state: Mutex<State>,
    done: Condvar,
    on_done: Mutex<Option<DoneCallback>>,
    op: OnceLock<Box<dyn CoreOp>>,
    /// True once the future is done and its completion callback (if any) has returned:
    /// what `tinkex_future_wait` waits for.
    settled: Mutex<bool>,
    settled_cv: Condvar,
}

/// Marks a future settled when dropped: after its callback returned, or when the callback
/// job is dropped without running (a dispatcher that could not run it), so a waiter is
/// never left behind.
struct Settle(Arc<tinkex_future>);

impl Drop for Settle {
    fn drop(&mut self) {
        self.0.settle();
    }
}

impl tinkex_future {
    /// Completes the future once (first caller wins); wakes waiters and posts the callback
    /// to the dispatcher. Returns whether this call completed it.
    pub(crate) fn complete(self: &Arc<Self>, result: Result<Output, Failure>) -> bool {
        {
            let mut state = self.state.lock().unwrap();
            if !matches!(*state, State::Pending) {
                return false;
            }
            *state = State::Done(result);
        }
        self.done.notify_all();
        self.rt.unregister_future(self.id);
        let callback = self.on_done.lock().unwrap().take();
        match callback {
            Some((f, user_data)) => {
                let settle = Settle(self.clone());
                self.rt.post(Box::new(move || {
                    let ptr = Arc::as_ptr(&settle.0);
                    // SAFETY: the host registered `f` for this future; `ptr` stays valid
                    // during the call because `settle` holds a reference.
                    unsafe { f(user_data.get(), ptr) };
                    // The callback has returned: now `tinkex_future_wait` may return.
                    drop(settle);
                }));
            }
            None => self.settle(),
        }
        true
    }

    fn settle(&self) {
        *self.settled.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.settled_cv.notify_all();
    }

    /// Completes with `SHUT_DOWN` (runtime shutdown) and stops the core operation.
    pub(crate) fn complete_shut_down(self: &Arc<Self>) {
        if self.complete(Err(Failure::shut_down())) {
            if let Some(op) = self.op.get() {
                op.cancel();
            }
        }
    }

    fn cancel(self: &Arc<Self>) {
        if self.complete(Err(Failure::cancelled())) {
            if let Some(op) = self.op.get() {
                op.cancel();
            }
        }
    }

    fn is_done(&self) -> bool {
        !matches!(*self.state.lock().unwrap(), State::Pending)
    }

    /// Waits until settled (done and the callback returned) or the timeout (`None`: no
    /// limit); returns whether settled.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let unlimited = timeout.is_none();
        let mut settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *settled {
                return true;
            }
            match deadline {
                None if unlimited => {
                    settled = self
                        .settled_cv
                        .wait(settled)
                        .unwrap_or_else(|e| e.into_inner())
                }
                // A timeout too large for the clock: wait in bounded steps.
                None => {
                    settled = self
                        .settled_cv
                        .wait_timeout(settled, Duration::from_secs(3600))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    settled = self
                        .settled_cv
                        .wait_timeout(settled, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Takes the result if `accept` likes its type: `Ok(None)` while pending; errors are
    /// taken by any take function.
    pub(crate) fn take(&self, accept: fn(&Output) -> bool) -> Result<Option<Output>, Failure> {
        let mut state = self.state.lock().unwrap();
        match &*state {
            State::Pending => return Ok(None),
            State::Taken => {
                return Err(Failure::new(
                    tinkex_status::AlreadyTaken,
                    "the result of this future was already taken",
                ))
            }
            State::Done(Ok(out)) if !accept(out) => {
                return Err(Failure::new(
                    tinkex_status::WrongType,
                    format!("this future's result is {}", out.type_name()),
                ))
            }
            State::Done(_) => {}
        }
        match std::mem::replace(&mut *state, State::Taken) {
            State::Done(r) => r.map(Some),
            _ => unreachable!("checked above"),
        }
    }
}

/// Completes the future if its task is dropped before finishing (runtime teardown) or
/// panics outside the core's own guard.
struct CompletionGuard(Arc<tinkex_future>);

impl Drop for CompletionGuard {
    fn drop(&mut self) {
        let failure = if std::thread::panicking() {
            Failure::new(
                tinkex_status::Panic,
                "internal panic while completing the operation",
            )
        } else {
            Failure::shut_down()
        };
        self.0.complete(Err(failure));
    }
}

/// A client handle whose operations are submitted on its runtime (service, training,
/// sampling and REST clients).
pub(crate) trait ClientHandle: Send + Sync + 'static {
    /// The core client the handle wraps.
    type Client;
    /// The parameter name used in `NULL_ARG` messages.
    const ARG: &'static str;
    /// The runtime operations run on.
    fn runtime(&self) -> &Arc<tinkex_runtime>;
    /// The core client.
    fn client(&self) -> &Self::Client;
}

/// The common shape of every client submit call: check the handle and `out_future`, submit
/// `start`'s operation (the handle is kept alive by the future), write the future.
///
/// # Safety
/// `handle` must be NULL or a live handle of type `H` (from `ArcHandle::into_ptr`);
/// `out_future` must be NULL or writable.
pub(crate) unsafe fn submit_on<H, T, C>(
    handle: *const H,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    start: impl FnOnce(&H::Client) -> Result<ApiFuture<T>, Failure>,
    convert: impl FnOnce(Arc<H>) -> C,
) -> Result<tinkex_status, Failure>
where
    H: ClientHandle + ArcHandle,
    T: Send + 'static,
    C: FnOnce(T) -> Result<Output, Failure> + Send + 'static,
{
    // SAFETY: a non-NULL `handle` is a live handle (this function's contract).
    let h = unsafe { H::clone_from_ptr(handle, H::ARG) }?;
    out_ptr(out_future, "out_future")?;
    let convert = convert(h.clone());
    let owner: Arc<dyn Any + Send + Sync> = h.clone();
    let fut = submit(
        h.runtime(),
        owner,
        on_done,
        user_data,
        || start(h.client()),
        convert,
    )?;
    // SAFETY: checked non-NULL above.
    unsafe { write_out(out_future, fut) };
    Ok(tinkex_status::Ok)
}

/// [`submit_on`] for operations whose result is returned as JSON.
///
/// # Safety
/// As [`submit_on`].
pub(crate) unsafe fn submit_json_on<H, T>(
    handle: *const H,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    start: impl FnOnce(&H::Client) -> ApiFuture<T>,
) -> Result<tinkex_status, Failure>
where
    H: ClientHandle + ArcHandle,
    T: serde::Serialize + Send + 'static,
{
    // SAFETY: forwarded (same contract).
    unsafe {
        submit_on(
            handle,
            on_done,
            user_data,
            out_future,
            |c| Ok(start(c)),
            |_| |v: T| json_output(&v),
        )
    }
}

/// Submits a core operation: `start` (run inside the runtime context) returns its
/// `ApiFuture` (or rejects the input: then nothing is submitted), `convert` turns its value into the output. Returns the future handed to
/// the host. Never blocks; never calls `on_done` itself (an error here is a status).
pub(crate) fn submit<T, S, C>(
    rt: &Arc<tinkex_runtime>,
    owner: Arc<dyn Any + Send + Sync>,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    start: S,
    convert: C,
) -> Result<*mut tinkex_future, Failure>
where
    T: Send + 'static,
    S: FnOnce() -> Result<ApiFuture<T>, Failure>,
    C: FnOnce(T) -> Result<Output, Failure> + Send + 'static,
{
    rt.check_open()?;
    let api = {
        let _entered = rt.handle().enter();
        start()?
    };
    // Everything is attached before the future becomes visible to shutdown (registered):
    // a concurrent `tinkex_runtime_shutdown` then finds a future whose callback fires and
    // whose operation it cancels — exactly once either way.
    let id = rt.next_id();
    let fut = Arc::new(tinkex_future {
        rt: rt.clone(),
        _owner: owner,
        id,
        state: Mutex::new(State::Pending),
        done: Condvar::new(),
        on_done: Mutex::new(on_done.map(|f| (f, UserData(user_data)))),
        op: OnceLock::from(Box::new(api.clone()) as Box<dyn CoreOp>),
        settled: Mutex::new(false),
        settled_cv: Condvar::new(),
    });
    if let Err(f) = rt.register_future(id, &fut) {
        // Never visible: the submit fails with a status and the callback never fires.
        fut.on_done.lock().unwrap().take();
        api.cancel();
        return Err(f);
    }
    // Completed from the operation's own task as it finishes (no waiter task per
    // operation). Dropped unrun if that task is dropped unfinished: the guard then
    // completes the future with SHUT_DOWN.
    let guard = CompletionGuard(fut.clone());
    let done = api.clone();
    api.on_done(move || {
        let api = done;
        let result = match api.try_take() {
            Some(Ok(value)) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| convert(value)))
                    .unwrap_or_else(|p| Err(Failure::panic(&*p)))
            }
            Some(Err(e)) => Err(Failure::from(e)),
            None => Err(Failure::internal("the operation finished without a result")),
        };
        guard.0.complete(result);
        drop(guard);
    });
    Ok(ArcHandle::into_ptr(fut))
}

/// Takes the JSON result of a finished future without blocking.
///
/// Returns `TINKEX_STATUS_PENDING` while the operation runs (nothing written), then once:
/// `TINKEX_STATUS_OK` with `*out_bytes` set to the result (UTF-8 JSON), or the operation's
/// failure status with `*out_err` set; later calls give `TINKEX_STATUS_ALREADY_TAKEN`. A
/// future whose result is a client gives `TINKEX_STATUS_WRONG_TYPE` (nothing is taken).
/// The results of sample, compute_logprobs, forward and forward_backward are kept typed
/// until taken: this call serializes them to JSON then (the typed takes,
/// `tinkex_future_take_sample_result` and its siblings, produce no JSON at all).
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_take_result(
    fut: *const tinkex_future,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `fut` is a live future handle (caller contract).
        let fut = unsafe { ArcHandle::from_ptr(fut, "fut") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let bytes = match fut.take(|o| {
            matches!(
                o,
                Output::Json(_) | Output::Sample(_) | Output::Logprobs(_) | Output::Forward(_)
            )
        })? {
            None => return Ok(tinkex_status::Pending),
            Some(Output::Json(bytes)) => bytes,
            Some(Output::Sample(v)) => to_json(&*v)?,
            Some(Output::Logprobs(v)) => to_json(&v)?,
            Some(Output::Forward(v)) => to_json(&*v)?,
            Some(_) => return Err(Failure::internal("take accepted another type")),
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(bytes))) };
        Ok(tinkex_status::Ok)
    })
}

/// Takes the training client produced by a finished `create_*training_client*` future.
/// Statuses as `tinkex_future_take_result`; a JSON result gives `TINKEX_STATUS_WRONG_TYPE`.
///
/// Blocks: never. Callback-safe. Caller owns `*out_client`; release with
/// `tinkex_training_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_take_training_client(
    fut: *const tinkex_future,
    out_client: *mut *mut tinkex_training_client,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: as in `tinkex_future_take_result`.
        let fut = unsafe { ArcHandle::from_ptr(fut, "fut") }?;
        out_ptr(out_client, "out_client")?;
        match fut.take(|o| matches!(o, Output::Training(_)))? {
            None => Ok(tinkex_status::Pending),
            Some(Output::Training(client)) => {
                // SAFETY: checked non-NULL above.
                unsafe { write_out(out_client, ArcHandle::into_ptr(client)) };
                Ok(tinkex_status::Ok)
            }
            Some(_) => Err(Failure::internal("take accepted another type")),
        }
    })
}

/// Takes the sampling client produced by a finished `create_sampling_client` or
/// `save_weights_and_get_sampling_client` future. Statuses as `tinkex_future_take_result`.
///
/// Blocks: never. Callback-safe. Caller owns `*out_client`; release with
/// `tinkex_sampling_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_take_sampling_client(
    fut: *const tinkex_future,
    out_client: *mut *mut tinkex_sampling_client,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: as in `tinkex_future_take_result`.
        let fut = unsafe { ArcHandle::from_ptr(fut, "fut") }?;
        out_ptr(out_client, "out_client")?;
        match fut.take(|o| matches!(o, Output::Sampling(_)))? {
            None => Ok(tinkex_status::Pending),
            Some(Output::Sampling(client)) => {
                // SAFETY: checked non-NULL above.
                unsafe { write_out(out_client, ArcHandle::into_ptr(client)) };
                Ok(tinkex_status::Ok)
            }
            Some(_) => Err(Failure::internal("take accepted another type")),
        }
    })
}

/// The server's request (future) id of the operation, once its submission was accepted, as
/// UTF-8 bytes. Returns `TINKEX_STATUS_PENDING` (nothing written) while it is not known yet
/// — before the submission is accepted, or for operations without a server future.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_request_id(
    fut: *const tinkex_future,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `fut` is a live future handle (caller contract).
        let fut = unsafe { ArcHandle::from_ptr(fut, "fut") }?;
        out_ptr(out_bytes, "out_bytes")?;
        match fut.op.get().and_then(|op| op.request_id()) {
            None => Ok(tinkex_status::Pending),
            Some(id) => {
                // SAFETY: checked non-NULL above.
                unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(id.into_bytes()))) };
                Ok(tinkex_status::Ok)
            }
        }
    })
}

/// Whether the operation has finished (success, failure, cancel or shutdown); false when
/// `fut` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_is_done(fut: *const tinkex_future) -> bool {
    boundary!(value false, {
        // SAFETY: as in `tinkex_future_take_result`.
        match unsafe { ArcHandle::from_ptr(fut, "fut") } {
            Ok(f) => f.is_done(),
            Err(_) => false,
        }
    })
}

/// Cancels the operation: if it has not finished, it completes with
/// `TINKEX_STATUS_CANCELLED` (the callback fires, on the dispatcher) and its HTTP work
/// stops. Idempotent; after completion it does nothing. Returns `TINKEX_STATUS_NULL_ARG`
/// for NULL, else `TINKEX_STATUS_OK`.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_cancel(fut: *const tinkex_future) -> tinkex_status {
    boundary!(value tinkex_status::Panic, {
        // SAFETY: as in `tinkex_future_take_result`.
        match unsafe { ArcHandle::clone_from_ptr(fut, "fut") } {
            Ok(f) => {
                f.cancel();
                tinkex_status::Ok
            }
            Err(e) => e.status,
        }
    })
}

/// Blocks until the operation has finished AND its completion callback (if any) has
/// returned, or until `timeout_ms` passes: 0 = do not wait (check once),
/// `TINKEX_WAIT_FOREVER` = no limit. Returns `TINKEX_STATUS_OK` when settled (then take the
/// result; the callback has already run), `TINKEX_STATUS_PENDING` on timeout.
///
/// Order: complete → callback runs on the dispatcher → callback returns → `wait` returns.
/// (`tinkex_future_is_done` turns true at "complete", possibly before the callback runs.)
///
/// For synchronous facades only (C++, Python sync API). Blocks: yes. Never call it from a
/// BEAM scheduler, a tinkex callback or a tokio thread (`TINKEX_STATUS_WRONG_STATE`).
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_wait(
    fut: *const tinkex_future,
    timeout_ms: u64,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: as in `tinkex_future_take_result`.
        let fut = unsafe { ArcHandle::from_ptr(fut, "fut") }?;
        fut.rt.check_may_block("tinkex_future_wait")?;
        Ok(if fut.wait(super::timeout(timeout_ms)) {
            tinkex_status::Ok
        } else {
            tinkex_status::Pending
        })
    })
}

/// A new reference to the same future; NULL when `fut` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with `tinkex_future_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_clone(fut: *const tinkex_future) -> *mut tinkex_future {
    // SAFETY: a non-NULL `fut` is a live handle (caller contract).
    unsafe { super::clone_export(fut) }
}

/// Drops one reference. NULL does nothing. Does not cancel: the operation completes and
/// its callback fires.
///
/// Consumes: `fut`. Blocks: never. Callback-safe (also on the `fut` passed to the
/// callback, when it is the host's own reference); any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_free(fut: *mut tinkex_future) {
    // SAFETY: a non-NULL `fut` came from this library; the host gives up this reference.
    unsafe { super::free_export(fut) }
}
