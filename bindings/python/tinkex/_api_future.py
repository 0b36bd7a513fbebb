"""The futures the clients return: :class:`APIFuture` (``result()``, ``await``,
``cancel()``, ``concurrent.futures`` interop) over an operation's :class:`_ffi.OpState`."""

from __future__ import annotations

import asyncio
import concurrent.futures
from ctypes import byref, c_void_p
from typing import Any, Callable, Generic, TypeVar

from . import _constants as K, _lib
from ._ffi import OpState
from ._lib import lib

T = TypeVar("T")


class _LinkedFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` whose ``cancel()`` cancels the operation."""

    def __init__(self, state: OpState):
        super().__init__()
        self._tinkex_state = state

    def cancel(self) -> bool:
        self._tinkex_state.cancel()
        return super().cancel()


class APIFuture(Generic[T]):
    """The result of an operation, available synchronously (``result()``) or with ``await``.

    ``result(timeout=None)`` blocks without holding the GIL and raises ``TimeoutError`` when
    ``timeout`` seconds pass first (the operation keeps running). ``await
    result_async(timeout)`` timing out (or the awaiting task being cancelled) abandons a
    *sampling* operation as the official SDK does: it is cancelled, and the server is told
    with ``cancel_future`` when it enables that. ``cancel()`` cancels the
    operation: waiters then get ``concurrent.futures.CancelledError`` (``asyncio``'s when
    awaited). Dropping the future never cancels it.
    """

    __slots__ = ("_state", "_cf", "__weakref__")

    def __init__(self, state: OpState):
        self._state = state
        self._cf: concurrent.futures.Future | None = None

    # -- sync --

    def result(self, timeout: float | None = None) -> T:
        if not self._state.wait(timeout):
            raise TimeoutError(f"the operation did not finish within {timeout} s")
        return self._state.value()

    def done(self) -> bool:
        return self._state.done()

    @property
    def request_id(self) -> str | None:
        """The server's request id once the submission was accepted, else ``None``."""
        h = self._state.handle
        if h is None or not h.ptr:
            return None
        out = c_void_p()
        try:
            with h.use() as ptr:
                status = lib.tinkex_future_request_id(ptr, byref(out), None)
        except Exception:  # noqa: BLE001 - a closed handle has no id to report
            return None
        if status != K.STATUS_OK:
            return None
        return _lib.take_bytes(out.value).decode()

    def cancelled(self) -> bool:
        return self._state.done() and self._state.cancelled()

    def cancel(self) -> bool:
        return self._state.cancel()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except TimeoutError:
            if not self._state.done():
                raise
            return None
        except BaseException as e:  # noqa: BLE001
            return e
        return None

    def add_done_callback(self, fn: Callable[["APIFuture[T]"], None]) -> None:
        """Calls ``fn(self)`` once done (on the thread that completes it; keep it short)."""
        self._state.add_done_callback(lambda _s: fn(self))

    def future(self) -> concurrent.futures.Future:
        """This operation as a ``concurrent.futures.Future`` (cancelling it cancels the
        operation)."""
        if self._cf is None:
            cf = _LinkedFuture(self._state)

            def resolve(state: OpState) -> None:
                if cf.done():
                    return
                try:
                    value = state.value()
                except concurrent.futures.CancelledError:
                    if cf.set_running_or_notify_cancel():
                        cf.set_exception(concurrent.futures.CancelledError())
                    return
                except BaseException as e:  # noqa: BLE001
                    if cf.set_running_or_notify_cancel():
                        cf.set_exception(e)
                    return
                if cf.set_running_or_notify_cancel():
                    cf.set_result(value)

            self._cf = cf
            self._state.add_done_callback(resolve)
        return self._cf

    # -- async --

    async def result_async(self, timeout: float | None = None) -> T:
        state = self._state
        if not state.done():
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def wake(_s: OpState) -> None:
                try:
                    loop.call_soon_threadsafe(_set_if_pending, waiter)
                except RuntimeError:  # the loop is closed
                    pass

            state.add_done_callback(wake)
            try:
                if timeout is None:
                    await waiter
                else:
                    try:
                        await asyncio.wait_for(waiter, timeout)
                    except asyncio.TimeoutError:
                        raise TimeoutError(f"the operation did not finish within {timeout} s") from None
            except (TimeoutError, asyncio.CancelledError):
                # As the official SDK (PROTOCOL.md 8.1.5): an async wait that times out or is
                # cancelled abandons a sampling request: its polling stops and, when the
                # server's `sample_cancel_enabled` flag is on, a cancel_future is sent.
                # Training futures keep running (the SDK would stop polling them too, which
                # cannot stop the server's work and only loses the result).
                if state.label in _ABANDONED_ON_ASYNC_TIMEOUT and not state.done():
                    state.cancel()
                raise
        try:
            return state.value()
        except concurrent.futures.CancelledError as e:
            raise asyncio.CancelledError(str(e)) from None

    def __await__(self):
        return self.result_async().__await__()

    async def coroutine(self) -> T:
        return await self

    def __repr__(self) -> str:
        s = self._state
        if not s.done():
            what = "pending"
        elif s.cancelled():
            what = "cancelled"
        elif s.error_info() is not None:
            what = "failed"
        else:
            what = "done"
        label = f" {s.label}" if s.label else ""
        return f"<{type(self).__name__}{label}: {what}>"


#: Labels of the operations an async wait timeout or cancellation abandons (sampling).
_ABANDONED_ON_ASYNC_TIMEOUT = frozenset({"sample", "compute_logprobs"})


def _set_if_pending(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def completed_future(value: Any) -> APIFuture:
    state = OpState()
    state.set_result_raw(value)
    return APIFuture(state)
