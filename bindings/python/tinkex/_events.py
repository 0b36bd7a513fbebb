"""Events of a service client (C ABI event subscription) as Python callables, log lines
through ``logging``, and an optional tqdm progress display.

One subscription per ``ServiceClient``. As for completions, the event callback and the
``user_data_free`` callback are single module-level ``CFUNCTYPE`` objects and ``user_data``
is an integer token into ``_hubs``; ``user_data_free`` (run by the library exactly once,
after the last event) removes the entry. The hub never references its ``ServiceClient``, so
the client can be collected while its subscription drains; the registry holds the hub
weakly (the client owns it), so a listener may reference its client without pinning it.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import logging
import threading
import time
import weakref
from ctypes import byref, c_size_t, c_void_p
from typing import Any, Callable, Dict, Iterable, Optional

from . import _ffi, _lib
from ._lib import lib
from .types import Event, QueueState

logger = logging.getLogger("tinkex")

_KIND_NAMES = {
    _lib.EVENT_QUEUE_STATE: "queue_state",
    _lib.EVENT_PROGRESS: "progress",
    _lib.EVENT_RETRY: "retry",
    _lib.EVENT_HEARTBEAT_WARNING: "heartbeat_warning",
    _lib.EVENT_SESSION_EXPIRED: "session_expired",
    _lib.EVENT_TELEMETRY_OVERFLOW: "telemetry_overflow",
    _lib.EVENT_SUMMARY: "summary",
}

#: The SDK's queue-state log rules (PROTOCOL.md 15.2).
QUEUE_STATE_LOG_INTERVAL = 60.0
TRAINING_PAUSE_GRACE = 15 * 60.0

_TRAINING_TYPES_CREATION = {"CreateModel", "LoadWeights", "create_model"}


def _default_reason(sampling: bool, state: QueueState) -> str:
    if state == QueueState.PAUSED_RATE_LIMIT:
        return "concurrent sampler weights limit hit" if sampling else "concurrent training clients rate limit hit"
    if state == QueueState.PAUSED_CAPACITY:
        return "Tinker backend is running short on capacity, please wait"
    return "unknown"


class _Listener:
    __slots__ = ("fn", "kinds", "id")

    def __init__(self, fn: Callable[[Event], None], kinds: Optional[frozenset], id: int):
        self.fn = fn
        self.kinds = kinds
        self.id = id


class EventHub:
    """Fans one service client's events out to Python listeners and ``logging``."""

    def __init__(self, label: str):
        self.label = label
        self._lock = threading.Lock()
        self._listeners: Dict[int, _Listener] = {}
        self._ids = itertools.count(1)
        # queue-state logging state: category -> [state, since, last_logged]
        self._qs: Dict[str, list] = {}
        self.events_seen = 0

    # -- listeners --

    def add(self, fn: Callable[[Event], None], kinds: Optional[Iterable[str]] = None) -> int:
        with self._lock:
            lid = next(self._ids)
            self._listeners[lid] = _Listener(fn, frozenset(kinds) if kinds is not None else None, lid)
            return lid

    def remove(self, lid: int) -> bool:
        with self._lock:
            return self._listeners.pop(lid, None) is not None

    # -- dispatch (dispatcher thread) --

    def dispatch(self, ev: Event) -> None:
        self.events_seen += 1
        self._log(ev)
        with self._lock:
            listeners = list(self._listeners.values())
        for listener in listeners:
            if listener.kinds is not None and ev.type not in listener.kinds:
                continue
            try:
                listener.fn(ev)
            except Exception:
                _ffi.stats["callback_errors"] += 1
                logger.exception("tinkex: an event listener raised")

    def _log(self, ev: Event) -> None:
        t = ev.type
        d = ev.data
        if t == "queue_state":
            self._log_queue_state(d.get("request_type") or "", QueueState.parse(d.get("state")), d.get("reason"), d.get("request_id"))
        elif t == "progress":
            logger.debug(
                "%s %s pending for %.1fs (attempts %s, polls %s, queue state %s)",
                d.get("request_type"),
                d.get("request_id") or "",
                d.get("elapsed_secs") or 0.0,
                d.get("attempts"),
                d.get("polls"),
                d.get("queue_state"),
            )
            qs = d.get("queue_state")
            if qs and qs != "active":
                self._log_queue_state(d.get("request_type") or "", QueueState.parse(qs), None, d.get("request_id"), from_progress=True)
        elif t == "retry":
            logger.info(
                "Retrying %s in %.2f seconds (attempt %s failed: %s)",
                d.get("operation"),
                d.get("delay_secs") or 0.0,
                d.get("attempt"),
                d.get("error"),
            )
        elif t == "heartbeat_warning":
            logger.warning(
                "Session heartbeats for %s have been failing for %.0f s: %s",
                d.get("session_id"),
                d.get("failing_for_secs") or 0.0,
                d.get("error"),
            )
        elif t == "session_expired":
            logger.warning("Session %s expired: the server ended it", d.get("session_id"))
        elif t == "telemetry_overflow":
            logger.warning("Telemetry events were dropped (%s so far)", d.get("dropped"))
        elif t == "summary":
            logger.debug(
                "operations: %s waiting, %s in flight, %s completed", d.get("waiting"), d.get("in_flight"), d.get("completed")
            )
        else:
            logger.debug("tinkex event %s", d)

    def _log_queue_state(
        self, request_type: str, state: QueueState, reason: Optional[str], request_id: Optional[str], from_progress: bool = False
    ) -> None:
        sampling = request_type in ("Sample", "ComputeLogprobs", "sample")
        category = "sampling" if sampling else ("creation" if request_type in _TRAINING_TYPES_CREATION else "training")
        now = time.monotonic()
        with self._lock:
            rec = self._qs.setdefault(category, [QueueState.ACTIVE, now, -1e18, None])
            if state != rec[0]:
                rec[0], rec[1] = state, now
            if reason:
                rec[3] = reason
            if state == QueueState.ACTIVE:
                return
            grace = 0.0 if sampling else TRAINING_PAUSE_GRACE
            if now - rec[1] < grace or now - rec[2] < QUEUE_STATE_LOG_INTERVAL:
                return
            rec[2] = now
            reason = rec[3] or _default_reason(sampling, state)
        if sampling:
            logger.warning("Sampling is paused for %s. Reason: %s", self.label, reason)
        else:
            prefix = "Model creation" if category == "creation" else "Training"
            logger.warning("%s for %s is paused. Reason: %s.", prefix, request_id or self.label, reason)


_hub_tokens = itertools.count(1)
# token -> weak reference: the ServiceClient owns its hub, so listeners that reference the
# client form an ordinary (collectable) cycle instead of being pinned by this registry.
_hubs: Dict[int, "weakref.ref[EventHub]"] = {}


def _on_event(user_data: Optional[int], ev: Optional[int]) -> None:
    try:
        ref = _hubs.get(user_data or 0)
        hub = ref() if ref is not None else None
        if hub is None or not ev:
            return
        kind = int(lib.tinkex_event_kind(ev))
        n = c_size_t(0)
        ptr = lib.tinkex_event_json(ev, byref(n))
        data = json.loads(ctypes.string_at(ptr, n.value)) if ptr and n.value else {}
        rid = lib.tinkex_event_request_id(ev)
        event = Event(
            type=data.get("type") or _KIND_NAMES.get(kind, "other"),
            data=data,
            request_id=rid.decode() if rid else None,
        )
        hub.dispatch(event)
    except BaseException:  # noqa: BLE001 - nothing may unwind into C
        _ffi.stats["callback_errors"] += 1
        try:
            logger.exception("tinkex: event callback failed")
        except Exception:
            pass


def _on_free(user_data: Optional[int]) -> None:
    try:
        _hubs.pop(user_data or 0, None)
    except BaseException:  # noqa: BLE001
        pass


_EVENT_CB = _lib.EVENT_FN(_on_event)
_FREE_CB = _lib.FREE_FN(_on_free)


def subscribe(svc_ptr: int, hub: EventHub) -> _ffi.Handle:
    """Subscribes ``hub`` to the events of the service client ``svc_ptr``."""
    token = next(_hub_tokens)
    _hubs[token] = weakref.ref(hub)
    out = c_void_p()
    err = c_void_p()
    status = lib.tinkex_service_client_subscribe(svc_ptr, _EVENT_CB, token, _FREE_CB, byref(out), byref(err))
    if status != _lib.STATUS_OK:
        _hubs.pop(token, None)
        _ffi.check(status, err)
    return _ffi.Handle(out.value, lib.tinkex_subscription_free, "subscription")


def hub_count() -> int:
    """Live event hubs (subscriptions whose ``user_data_free`` has not run yet)."""
    return len(_hubs)


# ---- optional tqdm display ---------------------------------------------------------------


class ProgressDisplay:
    """A tqdm bar of a service client's operations: total submitted, completed, and the
    queue state / last retry as postfix. Needs ``tqdm``; does nothing without it."""

    def __init__(self, hub: EventHub, desc: str = "tinkex"):
        self._bar: Any = None
        self._lock = threading.Lock()
        self._postfix: Dict[str, str] = {}
        try:
            from tqdm.auto import tqdm  # type: ignore[import-not-found]
        except ImportError:
            logger.info("tinkex: progress display requested but tqdm is not installed")
            return
        self._bar = tqdm(total=0, desc=desc, unit="op", leave=False, dynamic_ncols=True)
        self._listener = hub.add(self._on_event, kinds={"queue_state", "retry"})
        self._hub = hub

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def track(self, state: "_ffi.OpState") -> None:
        if self._bar is None:
            return
        with self._lock:
            self._bar.total += 1
            self._bar.refresh()
        state.add_done_callback(self._done)

    def _done(self, _state: "_ffi.OpState") -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(1)

    def _on_event(self, ev: Event) -> None:
        with self._lock:
            if self._bar is None:
                return
            if ev.type == "queue_state":
                self._postfix["queue"] = str(ev.get("state"))
            elif ev.type == "retry":
                self._postfix["retry"] = f"{ev.get('operation')} #{ev.get('attempt')}"
            self._bar.set_postfix(self._postfix, refresh=True)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
                self._hub.remove(self._listener)
