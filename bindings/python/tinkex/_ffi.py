"""The ctypes glue between Python and the C ABI: the process-wide runtime, owned handles,
errors, the state of pending operations and the one completion callback. The futures the
clients return (:class:`tinkex.APIFuture`) are in ``_api_future``.

Callbacks. There is exactly one completion callback object (``_DONE_CB``) and one pair of
event callbacks for the whole process; they live as long as the module, so no ``CFUNCTYPE``
object can be collected while the library may still call it. ``user_data`` is never a
Python object pointer: it is an integer token, looked up in a registry that holds the
pending operation's state until its completion has run (the C ABI fires each completion
exactly once, on its dispatcher thread). A user's future or client can therefore be
garbage collected at any moment: the callback only ever touches the registry's state.

Waiting. ``APIFuture.result()`` blocks in ``tinkex_future_wait`` (ctypes releases the GIL
for the call) in short slices, then takes the result itself, so it never depends on the
dispatcher thread. ``await`` registers an asyncio future that the completion resolves with
``loop.call_soon_threadsafe``: no thread per request.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import ctypes
import itertools
import json
import logging
import os
import threading
import time
from ctypes import byref, c_void_p
from typing import Any, Callable, Optional

from . import _constants as K, _lib
from ._exceptions import make_error
from ._lib import lib
from ._typed_results import TypedResult

logger = logging.getLogger("tinkex")

#: Counters for tests and diagnostics (read with :func:`tinkex.diagnostics`).
stats = {
    "submitted": 0,
    "completed": 0,
    "orphan_callbacks": 0,
    "callback_errors": 0,
    "batches": 0,
    "typed_datums": 0,
    "json_datums": 0,
}

# After the atexit shutdown, handles are no longer freed (the process is exiting, and a free
# must never start a callback into a finalizing interpreter).
_finalizing = False


# ---- errors --------------------------------------------------------------------------------


class ErrorInfo:
    """A copy of a ``tinkex_error`` (which is freed at once)."""

    __slots__ = ("status", "kind", "message", "http_status", "request_id", "retryable", "category", "body")

    def __init__(self, status, kind, message, http_status, request_id, retryable, category=None, body=None):
        self.status = status
        self.kind = kind
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.retryable = retryable
        self.category = category
        self.body = body

    @classmethod
    def take(cls, status: int, err: int | None) -> "ErrorInfo":
        """Copies and frees ``err`` (may be NULL: then only the status is known)."""
        if not err:
            return cls(status, None, _lib.status_name(status), 0, None, False)
        try:
            kind = lib.tinkex_error_kind(err)
            msg = lib.tinkex_error_message(err)
            rid = lib.tinkex_error_request_id(err)
            category = lib.tinkex_error_category(err)
            body = lib.tinkex_error_body(err)
            return cls(
                int(lib.tinkex_error_status(err)),
                kind.decode() if kind else None,
                msg.decode("utf-8", "replace") if msg else "",
                int(lib.tinkex_error_http_status(err)),
                rid.decode() if rid else None,
                bool(lib.tinkex_error_is_retryable(err)),
                category.decode() if category else None,
                body.decode("utf-8", "replace") if body else None,
            )
        finally:
            lib.tinkex_error_free(err)

    @property
    def cancelled(self) -> bool:
        return self.status == K.STATUS_CANCELLED

    def exception(self) -> BaseException:
        if self.cancelled:
            return concurrent.futures.CancelledError(self.message)
        return make_error(
            self.status,
            self.kind,
            self.message,
            self.http_status,
            self.request_id,
            self.retryable,
            category=self.category,
            body=self.body,
        )


def check(status: int, err: c_void_p) -> None:
    """Raises the exception for a non-OK status of a synchronous call."""
    if status != K.STATUS_OK:
        raise ErrorInfo.take(status, err.value).exception()


# ---- runtime -------------------------------------------------------------------------------

# TINKEX_LOG_LEVEL values by name ("off", "error", "warn", "info", "debug", "trace").
_LOG_LEVELS = {**K.LOG_LEVELS, "warning": K.LOG_LEVEL_WARN}

# The library's log lines (already debounced by the core) -> ``logging``: the target names
# the logger (``tinkex.core.queue_state``, ...: children of the ``tinkex`` logger).
_PY_LEVELS = {
    K.LOG_LEVEL_ERROR: logging.ERROR,
    K.LOG_LEVEL_WARN: logging.WARNING,
    K.LOG_LEVEL_INFO: logging.INFO,
    K.LOG_LEVEL_DEBUG: logging.DEBUG,
    K.LOG_LEVEL_TRACE: logging.DEBUG - 5,
}


def _on_log(_user_data: int | None, level: int, target: int | None, target_len: int, message: int | None, message_len: int) -> None:
    try:
        name = ctypes.string_at(target, target_len).decode("utf-8", "replace") if target and target_len else "tinkex"
        py_level = _PY_LEVELS.get(level, logging.DEBUG)
        log = logging.getLogger(name)
        if log.isEnabledFor(py_level):
            text = ctypes.string_at(message, message_len).decode("utf-8", "replace") if message and message_len else ""
            log.log(py_level, text)
    except BaseException:  # noqa: BLE001 - nothing may unwind into C
        stats["callback_errors"] += 1


#: The one log callback of the process (kept alive by this module); it needs no user_data
#: release (a NULL ``tinkex_free_fn``).
_LOG_CB = _lib.LOG_FN(_on_log)
_NO_FREE = _lib.FREE_FN()


#: The most detailed level the library sends to the sink. Its DEBUG lines are few (one per
#: event: retries, progress, summaries; none per request), and ``logging`` then decides per
#: logger, so a level set later (``caplog``, ``setLevel``) takes effect.
_SINK_LEVEL = K.LOG_LEVEL_DEBUG


_rt_lock = threading.Lock()
_rt: Optional["Handle"] = None
_rt_pid: int | None = None


def runtime() -> int:
    """The process-wide runtime (created on first use; recreated in a forked child).

    ``TINKEX_WORKER_THREADS`` sets the tokio worker count (default: one per CPU) and
    ``TINKEX_LOG_LEVEL`` (off, error, warn, info, debug, trace) the library's own stderr log.
    The library's log lines also reach ``logging`` (logger = their target, e.g.
    ``tinkex.core.queue_state``) through its log sink.
    """
    global _rt, _rt_pid
    pid = os.getpid()
    with _rt_lock:
        if _rt is not None and _rt_pid == pid:
            return _rt.ptr
        if _rt is not None and _rt_pid != pid:
            # A fork: the parent's runtime threads do not exist here. Leak its handle.
            _rt.ptr = None
            _rt = None
        opts = lib.tinkex_runtime_options_default()
        threads = os.environ.get("TINKEX_WORKER_THREADS")
        if threads:
            opts.worker_threads = int(threads)
        level = os.environ.get("TINKEX_LOG_LEVEL", "").strip().lower()
        if level:
            if level not in _LOG_LEVELS:
                raise ValueError(f"TINKEX_LOG_LEVEL={level!r}: use one of {sorted(_LOG_LEVELS)}")
            opts.log_level = _LOG_LEVELS[level]
        out = c_void_p()
        err = c_void_p()
        check(lib.tinkex_runtime_new(byref(opts), byref(out), byref(err)), err)
        _rt = Handle(out.value, lib.tinkex_runtime_free, "runtime")
        _rt_pid = pid
        status = lib.tinkex_runtime_set_log_sink(_rt.ptr, _LOG_CB, None, _NO_FREE, _SINK_LEVEL, byref(err))
        if status != K.STATUS_OK:  # e.g. the process has its own global `tracing` subscriber
            logger.debug("tinkex: the library's log lines stay on stderr: %s", ErrorInfo.take(status, err.value).message)
        return _rt.ptr


def shutdown(timeout: float = 0.25) -> None:
    """Shuts the process-wide runtime down: pending operations get ``timeout`` seconds, then
    fail with ``ShutDownError``. Runs automatically at interpreter exit. A later call to the
    library starts a new runtime."""
    global _rt
    with _rt_lock:
        rt = _rt
        if rt is None or _rt_pid != os.getpid() or not rt.ptr:
            return
        err = c_void_p()
        status = lib.tinkex_runtime_shutdown(rt.ptr, int(timeout * 1000), byref(err))
        if status != K.STATUS_OK:
            logger.warning("tinkex: runtime shutdown: %s", ErrorInfo.take(status, err.value).message)
        _rt = None
        rt.close()


def _at_exit() -> None:
    global _finalizing
    try:
        shutdown(float(os.environ.get("TINKEX_SHUTDOWN_TIMEOUT", "0.25")))
    finally:
        _finalizing = True


atexit.register(_at_exit)


# ---- owned handles -------------------------------------------------------------------------


class Handle:
    """One owned reference to a C handle, released exactly once.

    ``close()`` releases it as soon as no call is using it (calls borrow it with ``use()``);
    ``__del__`` releases it when the owner is collected. Safe on any thread, in any order.
    """

    __slots__ = ("ptr", "_free", "what", "_lock", "_uses", "_closed", "__weakref__")

    def __init__(self, ptr: int | None, free: Callable[[int], None], what: str):
        if not ptr:
            raise ValueError(f"tinkex: NULL {what} handle")
        self.ptr: int | None = ptr
        self._free = free
        self.what = what
        self._lock = threading.Lock()
        self._uses = 0
        self._closed = False

    def use(self) -> "_Use":
        return _Use(self)

    def _acquire(self) -> int:
        with self._lock:
            if self._closed or not self.ptr:
                from ._exceptions import ClientStateError

                raise ClientStateError(f"this {self.what} is closed")
            self._uses += 1
            return self.ptr

    def _release(self) -> None:
        with self._lock:
            self._uses -= 1
            ptr = self._take_if_idle()
        if ptr:
            self._free(ptr)

    def _take_if_idle(self) -> int | None:
        if self._closed and self._uses == 0 and self.ptr:
            ptr, self.ptr = self.ptr, None
            return ptr
        return None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ptr = self._take_if_idle()
        if ptr:
            self._free(ptr)

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr and not _finalizing:
            try:
                self._free(ptr)
            except Exception:  # interpreter teardown
                pass


class _Use:
    __slots__ = ("h", "ptr")

    def __init__(self, h: Handle):
        self.h = h

    def __enter__(self) -> int:
        self.ptr = self.h._acquire()
        return self.ptr

    def __exit__(self, *exc: object) -> None:
        self.h._release()


# ---- operation state and completion callbacks ----------------------------------------------

TAKE_JSON = 0
TAKE_TRAINING = 1
TAKE_SAMPLING = 2
#: Typed result handles (``_typed_results``): the raw result is a ``TypedResult``.
TAKE_SAMPLE = 3
TAKE_LOGPROBS = 4
TAKE_FORWARD = 5

_TAKE_FNS = {
    TAKE_JSON: lib.tinkex_future_take_result,
    TAKE_TRAINING: lib.tinkex_future_take_training_client,
    TAKE_SAMPLING: lib.tinkex_future_take_sampling_client,
    TAKE_SAMPLE: lib.tinkex_future_take_sample_result,
    TAKE_LOGPROBS: lib.tinkex_future_take_logprobs_result,
    TAKE_FORWARD: lib.tinkex_future_take_forward_result,
}

_TYPED_FREE = {
    TAKE_SAMPLE: lib.tinkex_sample_result_free,
    TAKE_LOGPROBS: lib.tinkex_logprobs_result_free,
    TAKE_FORWARD: lib.tinkex_forward_result_free,
}

_PENDING = object()


class OpState:
    """The state of one logical operation: a C future, or a Python-composed operation.

    Completion happens once (``_finish``): with a raw result and a converter, or with an
    error. Waiters: ``threading.Event`` for sync waits without a C future, done-callbacks
    for asyncio and ``concurrent.futures``.
    """

    __slots__ = (
        "_lock",
        "_done",
        "_raw",
        "_error",
        "_value",
        "_converter",
        "_callbacks",
        "_event",
        "handle",
        "take_kind",
        "_cancel_hook",
        "label",
        "__weakref__",
    )

    def __init__(self, converter: Callable[[Any], Any] | None = None, take_kind: int = TAKE_JSON, label: str = ""):
        self._lock = threading.Lock()
        self._done = False
        self._raw: Any = None
        self._error: Any = None  # ErrorInfo or BaseException
        self._value: Any = _PENDING
        self._converter = converter
        self._callbacks: list[Callable[["OpState"], None]] = []
        self._event = threading.Event()
        self.handle: Handle | None = None
        self.take_kind = take_kind
        self._cancel_hook: Callable[[], None] | None = None
        self.label = label

    # -- completion --

    def done(self) -> bool:
        return self._done

    def _finish(self, raw: Any = None, error: Any = None) -> bool:
        with self._lock:
            if self._done:
                return False
            self._raw = raw
            self._error = error
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        self._event.set()
        stats["completed"] += 1
        for cb in callbacks:
            _run_callback(cb, self)
        return True

    def set_result_raw(self, raw: Any, converter: Callable[[Any], Any] | None = None) -> bool:
        if converter is not None:
            self._converter = converter
        return self._finish(raw=raw)

    def set_exception(self, exc: BaseException) -> bool:
        return self._finish(error=exc)

    def take_from(self, fut: int) -> None:
        """Takes the C future's result (callback-safe; never raises). The first caller of
        any thread wins; later ones find the state done."""
        if self._done:
            return
        out = c_void_p()
        err = c_void_p()
        with self._lock:
            if self._done:
                return
            status = _TAKE_FNS[self.take_kind](fut, byref(out), byref(err))
        if status == K.STATUS_PENDING:
            return
        if status == K.STATUS_ALREADY_TAKEN:
            return  # another thread took it and is finishing
        if status == K.STATUS_OK:
            if self.take_kind == TAKE_JSON:
                raw = _lib.take_bytes(out.value)
            elif self.take_kind in _TYPED_FREE:
                raw = TypedResult(out.value, _TYPED_FREE[self.take_kind])
            elif self.take_kind == TAKE_TRAINING:
                raw = Handle(out.value, lib.tinkex_training_client_free, "training client")
            else:
                raw = Handle(out.value, lib.tinkex_sampling_client_free, "sampling client")
            if not self._finish(raw=raw) and isinstance(raw, Handle):
                raw.close()
        else:
            self._finish(error=ErrorInfo.take(status, err.value))

    def add_done_callback(self, fn: Callable[["OpState"], None]) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(fn)
                return
        _run_callback(fn, self)

    # -- results --

    def error_info(self) -> Any:
        return self._error

    def cancelled(self) -> bool:
        e = self._error
        return (isinstance(e, ErrorInfo) and e.cancelled) or isinstance(
            e, (concurrent.futures.CancelledError, asyncio.CancelledError)
        )

    def value(self) -> Any:
        """The converted result (raises the operation's exception). Call only when done."""
        e = self._error
        if e is not None:
            if isinstance(e, ErrorInfo):
                raise e.exception()
            raise e
        if self._value is _PENDING:
            with self._lock:
                if self._value is _PENDING:
                    raw = self._raw
                    self._value = self._converter(raw) if self._converter else raw
                    self._raw = None
        return self._value

    def wait(self, timeout: float | None) -> bool:
        """Blocks (GIL released) until done or ``timeout`` seconds; returns whether done."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while not self._done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return self._done
            # Short slices keep Ctrl-C responsive and pick up a late-submitted C future.
            slice_s = 0.2 if remaining is None else min(0.2, remaining)
            h = self.handle
            if h is not None and h.ptr:
                try:
                    with h.use() as ptr:
                        err = c_void_p()
                        status = lib.tinkex_future_wait(ptr, max(1, int(slice_s * 1000)), byref(err))
                        if status == K.STATUS_OK:
                            self.take_from(ptr)
                            if not self._done:  # another thread is finishing it
                                self._event.wait(slice_s)
                        elif status != K.STATUS_PENDING:
                            info = ErrorInfo.take(status, err.value)
                            raise info.exception()
                except Exception as e:
                    from ._exceptions import ClientStateError

                    if isinstance(e, ClientStateError) and h.closed:
                        self._event.wait(slice_s)
                    else:
                        raise
            else:
                self._event.wait(slice_s)
        return True

    def cancel(self) -> bool:
        """Requests cancellation; returns False when already done."""
        if self._done:
            return False
        hook = self._cancel_hook
        if hook is not None:
            hook()
        h = self.handle
        if h is not None:
            try:
                with h.use() as ptr:
                    lib.tinkex_future_cancel(ptr)
            except Exception:
                pass
        return True


def _run_callback(cb: Callable[[OpState], None], state: OpState) -> None:
    try:
        cb(state)
    except Exception:  # never let an exception escape into a C callback
        stats["callback_errors"] += 1
        logger.exception("tinkex: a completion callback raised")


_tokens = itertools.count(1)
_inflight: dict[int, OpState] = {}


def _on_done(user_data: int | None, fut: int | None) -> None:
    try:
        state = _inflight.pop(user_data or 0, None)
        if state is None:
            stats["orphan_callbacks"] += 1
            return
        state.take_from(fut)
    except BaseException:  # noqa: BLE001 - nothing may unwind into C
        stats["callback_errors"] += 1
        try:
            logger.exception("tinkex: completion callback failed")
        except Exception:
            pass


#: The one completion callback of the process (kept alive by this module).
_DONE_CB = _lib.DONE_FN(_on_done)


def inflight_count() -> int:
    """Operations submitted whose completion callback has not run yet."""
    return len(_inflight)


def submit(
    call: Callable[..., int],
    *args: Any,
    converter: Callable[[Any], Any] | None = None,
    take_kind: int = TAKE_JSON,
    label: str = "",
    extra_out: c_void_p | None = None,
) -> OpState:
    """Runs one submit call ``call(*args, on_done, user_data, &out_future, &out_err)``, or
    ``call(*args, on_done, user_data, &extra_out, &out_future, &out_err)`` when ``extra_out``
    is given (``tinkex_training_client_forward_backward_custom``'s pass).

    Registers the state before the call (the callback may fire on the dispatcher as soon as
    the call returns) and raises the call's error, in which case nothing was submitted."""
    state = OpState(converter, take_kind, label)
    token = next(_tokens)
    _inflight[token] = state
    out = c_void_p()
    err = c_void_p()
    try:
        if extra_out is None:
            status = call(*args, _DONE_CB, token, byref(out), byref(err))
        else:
            status = call(*args, _DONE_CB, token, byref(extra_out), byref(out), byref(err))
    except BaseException:
        _inflight.pop(token, None)
        raise
    if status != K.STATUS_OK:
        _inflight.pop(token, None)
        raise ErrorInfo.take(status, err.value).exception()
    state.handle = Handle(out.value, lib.tinkex_future_free, "future")
    stats["submitted"] += 1
    return state


def parse_tinker_path(path: str) -> dict:
    """``tinkex_tinker_path_parse``: ``{"training_run_id", "kind", "name", "checkpoint_id"}``;
    raises :class:`tinkex.InvalidArgumentError` (a ``ValueError``) naming the problem."""
    data = path.encode("utf-8", "surrogatepass")
    out = c_void_p()
    err = c_void_p()
    check(lib.tinkex_tinker_path_parse(data if data else None, len(data), byref(out), byref(err)), err)
    return json.loads(_lib.take_bytes(out.value))


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def parse_json(raw: bytes) -> Any:
    return json.loads(raw) if raw else None
