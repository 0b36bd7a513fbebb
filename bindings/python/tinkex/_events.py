"""Events of a service client (C ABI event subscription) as Python callables, and an
optional tqdm progress display. (Log lines, including the debounced queue-state lines, are
the library's own: they reach ``logging`` through the runtime's log sink, see ``_ffi``.)

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
import weakref
from ctypes import byref, c_size_t, c_void_p
from typing import Any, Callable, Dict, Iterable, Optional

from . import _ffi, _lib
from . import _constants as K
from ._lib import lib
from .types import Event

logger = logging.getLogger("tinkex")

# Event kind number -> name ("queue_state", ...): the header's TINKEX_EVENT_KIND_* names.
_KIND_NAMES = {v: n for n, v in K.EVENT_KINDS.items()}


class _Listener:
    __slots__ = ("fn", "kinds", "id")

    def __init__(self, fn: Callable[[Event], None], kinds: Optional[frozenset], id: int):
        self.fn = fn
        self.kinds = kinds
        self.id = id


class EventHub:
    """Fans one service client's events out to Python listeners."""

    def __init__(self, label: str):
        self.label = label
        self._lock = threading.Lock()
        self._listeners: Dict[int, _Listener] = {}
        self._ids = itertools.count(1)
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
        kind = int(lib.tinkex_event_get_kind(ev))
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
    if status != K.STATUS_OK:
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
