"""ServiceClient, TrainingClient, SamplingClient and RestClient over the C ABI, with the
official SDK's public names and signatures."""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import json
import logging
import os
import threading
import weakref
import warnings
from ctypes import byref, c_int64, c_void_p
from typing import Any, Callable, Deque, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

from . import _core, _custom_loss, _events, _lib
from ._core import APIFuture, Handle, OpState, check, json_bytes, parse_json
from ._exceptions import ClientStateError, TinkerError
from ._lib import lib
from .types import (
    AdamParams,
    CheckpointsListResponse,
    Datum,
    Event,
    ForwardBackwardOutput,
    GetInfoResponse,
    GetServerCapabilitiesResponse,
    LoadWeightsResponse,
    ModelInput,
    OptimStepResponse,
    ParsedCheckpointTinkerPath,
    QueueState,
    SampleResponse,
    SamplingParams,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    TensorData,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoResponse,
)

logger = logging.getLogger("tinkex")

C = TypeVar("C")


def _buf(data: bytes) -> Tuple[Optional[bytes], int]:
    return (data if data else None), len(data)


def _sync_json(fn: Callable[..., int], ptr: int) -> Any:
    out = c_void_p()
    err = c_void_p()
    check(fn(ptr, byref(out), byref(err)), err)
    return parse_json(_lib.take_bytes(out.value))


class _ClientFuture(APIFuture[C]):
    """A future of a client that can also be used, deprecated, as the client (as the
    official SDK's ``Backcompat*ClientFuture``): attribute access waits for the client."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        warnings.warn(
            f"Using the future returned by a client-creation method as the client (`.{name}`) is "
            "deprecated; call .result() on it, or await it, to get the client first.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(self.result(), name)


# ---- service client ------------------------------------------------------------------------


def _merge(dst: Dict[str, Any], src: Mapping[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = dict(v) if isinstance(v, Mapping) else v


class ServiceClient:
    """The entry point: creates training, sampling and REST clients of one session.

    Args (as the official SDK): ``user_metadata``, ``project_id``, ``display_name``,
    ``base_url`` (else ``TINKER_BASE_URL``), ``api_key`` (else ``TINKER_API_KEY``).

    tinkex additions (keyword-only): ``tags``; ``telemetry`` (else ``TINKER_TELEMETRY``);
    ``config``: more fields of the libtinkex client configuration (``timeouts``, ``retry``,
    ``heartbeat``, ``progress_event_interval_ms``, ``allow_insecure_http``; see
    ``tinkex_service_client_new`` in tinkex.h); ``on_event``: a callable receiving every
    :class:`tinkex.types.Event`; ``progress_bar``: show a tqdm bar of the client's
    operations (also ``TINKEX_PROGRESS=1``; needs tqdm).

    The session starts with the first operation. ``close()`` (or leaving a ``with`` block)
    finishes it; dropping the client does not.
    """

    def __init__(
        self,
        user_metadata: Optional[Dict[str, str]] = None,
        project_id: Optional[str] = None,
        *,
        display_name: Optional[str] = None,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        default_headers_overrides: Optional[Mapping[str, str]] = None,
        tags: Optional[Sequence[str]] = None,
        telemetry: Optional[bool] = None,
        config: Optional[Mapping[str, Any]] = None,
        on_event: Optional[Callable[[Event], None]] = None,
        progress_bar: Optional[bool] = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            warnings.warn(
                f"ServiceClient ignores unsupported arguments: {', '.join(sorted(kwargs))}",
                FutureWarning,
                stacklevel=2,
            )
        if user_metadata:
            warnings.warn(
                "tinkex: ServiceClient(user_metadata=...) is not supported by libtinkex's C ABI "
                "yet and is ignored",
                RuntimeWarning,
                stacklevel=2,
            )
        if default_headers_overrides:
            warnings.warn(
                "tinkex: default_headers_overrides is not supported and is ignored",
                RuntimeWarning,
                stacklevel=2,
            )
        cfg: Dict[str, Any] = {}
        if api_key is not None:
            cfg["api_key"] = api_key
        if base_url is not None:
            cfg["base_url"] = base_url
        if project_id is not None:
            cfg["project_id"] = project_id
        if display_name is not None:
            cfg["display_name"] = display_name
        if tags is not None:
            cfg["tags"] = list(tags)
        if telemetry is not None:
            cfg["telemetry"] = bool(telemetry)
        if config:
            _merge(cfg, config)
        self._closed = False
        self._lock = threading.Lock()
        rt = _core.runtime()
        out = c_void_p()
        err = c_void_p()
        body, n = _buf(json_bytes(cfg))
        check(lib.tinkex_service_client_new(rt, body, n, byref(out), byref(err)), err)
        self._handle = Handle(out.value, lib.tinkex_service_client_free, "service client")
        self._hub = _events.EventHub(label=base_url or os.environ.get("TINKER_BASE_URL", "tinker"))
        with self._handle.use() as ptr:
            self._subscription = _events.subscribe(ptr, self._hub)
        if on_event is not None:
            self._hub.add(on_event)
        # Sampling clients by sampling session id, for their on_queue_state_change hook.
        self._samplers: Dict[str, "weakref.WeakSet[SamplingClient]"] = {}
        self._hub.add(self._route_queue_state, kinds=("queue_state",))
        if progress_bar is None:
            progress_bar = os.environ.get("TINKEX_PROGRESS", "") not in ("", "0")
        self._progress = _events.ProgressDisplay(self._hub) if progress_bar else None

    # -- lifecycle --

    def __enter__(self) -> "ServiceClient":
        if self._closed:
            raise RuntimeError("ServiceClient is closed")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            status = "success"
        elif issubclass(exc_type, Exception):
            status = "errored"
        else:
            status = "interrupted"
        self.close(status).result()

    def close(
        self, status: Literal["success", "errored", "interrupted"] = "success", detail: Optional[str] = None
    ) -> APIFuture[None]:
        """Finishes the session (first call wins) and stops its heartbeats."""
        with self._lock:
            if self._closed:
                return _core.completed_future(None)
            self._closed = True
        if self._progress is not None:
            self._progress.close()
        body: Dict[str, Any] = {"reason": {"type": status}}
        if detail is not None:
            body["detail"] = detail
        data, n = _buf(json_bytes(body))
        with self._handle.use() as ptr:
            state = _core.submit(lib.tinkex_service_client_close, ptr, data, n, converter=lambda _raw: None, label="close")
        return APIFuture(state)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("ServiceClient is closed")

    def _track(self, state: OpState) -> OpState:
        if self._progress is not None:
            self._progress.track(state)
        return state

    @property
    def session_id(self) -> Optional[str]:
        """The session id once the session exists (after the first operation), else None."""
        out = c_void_p()
        err = c_void_p()
        with self._handle.use() as ptr:
            status = lib.tinkex_service_client_session_id(ptr, byref(out), byref(err))
        if status == _lib.STATUS_WRONG_STATE:
            _core.ErrorInfo.take(status, err.value)
            return None
        check(status, err)
        return _lib.take_bytes(out.value).decode()

    # -- events --

    def subscribe(self, fn: Callable[[Event], None], kinds: Optional[Sequence[str]] = None) -> int:
        """Calls ``fn(event)`` for events of this client and every client it created
        (``kinds``: e.g. ``["queue_state", "progress", "retry"]``; None = all). Runs on the
        library's callback thread: keep it quick. Returns an id for :meth:`unsubscribe`."""
        return self._hub.add(fn, kinds)

    def unsubscribe(self, listener_id: int) -> bool:
        return self._hub.remove(listener_id)

    def _register_sampler(self, sampler: "SamplingClient") -> None:
        with self._lock:
            self._samplers.setdefault(sampler._sampling_session_id, weakref.WeakSet()).add(sampler)

    def _route_queue_state(self, ev: Event) -> None:
        """Calls ``on_queue_state_change`` of the sampling clients the event is about."""
        with self._lock:
            clients = list(self._samplers.get(ev.get("client_id") or "", ()))
        for client in clients:
            client.on_queue_state_change(QueueState.parse(ev.get("state")), ev.get("reason"))

    def add_queue_state_observer(self, fn: Callable[..., None]) -> int:
        """Calls ``fn(queue_state: QueueState, queue_state_reason: str | None)`` whenever a
        pending request's queue state changes (the official ``QueueStateObserver`` shape)."""

        def on_event(ev: Event) -> None:
            fn(QueueState.parse(ev.get("state")), ev.get("reason"))

        return self._hub.add(on_event, kinds=("queue_state",))

    # -- capabilities --

    def _capabilities_state(self) -> OpState:
        self._check_open()
        with self._handle.use() as ptr:
            return self._track(
                _core.submit(
                    lib.tinkex_service_client_get_server_capabilities,
                    ptr,
                    converter=lambda raw: GetServerCapabilitiesResponse._from_json(parse_json(raw)),
                    label="get_server_capabilities",
                )
            )

    def get_server_capabilities(self) -> GetServerCapabilitiesResponse:
        return APIFuture(self._capabilities_state()).result()

    async def get_server_capabilities_async(self) -> GetServerCapabilitiesResponse:
        return await APIFuture(self._capabilities_state())

    # -- training clients --

    def _training_client_future(self, call: Any, body: Dict[str, Any], label: str) -> "_ClientFuture[TrainingClient]":
        self._check_open()
        data, n = _buf(json_bytes(body))
        with self._handle.use() as ptr:
            state = _core.submit(
                call,
                ptr,
                data,
                n,
                converter=lambda h: TrainingClient._from_handle(h, self),
                take_kind=_core.TAKE_TRAINING,
                label=label,
            )
        return _ClientFuture(self._track(state))

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: Optional[int] = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: Optional[Dict[str, str]] = None,
        optimizer: Any = None,
    ) -> "_ClientFuture[TrainingClient]":
        """A future of a LoRA ``TrainingClient``: ``.result()`` or ``await`` it."""
        assert any([train_mlp, train_attn, train_unembed]), (
            "At least one of train_mlp, train_attn, or train_unembed must be True"
        )
        _only_adamw(optimizer)
        _ignored(user_metadata=user_metadata)
        lora: Dict[str, Any] = {
            "rank": int(rank),
            "train_unembed": bool(train_unembed),
            "train_mlp": bool(train_mlp),
            "train_attn": bool(train_attn),
        }
        if seed is not None:
            lora["seed"] = int(seed)
        return self._training_client_future(
            lib.tinkex_service_client_create_lora_training_client,
            {"base_model": base_model, "lora_config": lora},
            "create_lora_training_client",
        )

    async def create_lora_training_client_async(self, base_model: str, rank: int = 32, seed: Optional[int] = None, train_mlp: bool = True, train_attn: bool = True, train_unembed: bool = True, user_metadata: Optional[Dict[str, str]] = None, optimizer: Any = None) -> "TrainingClient":
        return await self.create_lora_training_client(
            base_model, rank, seed, train_mlp, train_attn, train_unembed, user_metadata, optimizer
        )

    def create_training_client_from_state(
        self,
        path: str,
        base_model: Optional[str] = None,
        user_metadata: Optional[Dict[str, str]] = None,
        weights_access_token: Optional[str] = None,
        optimizer: Any = None,
    ) -> "_ClientFuture[TrainingClient]":
        """A future of a ``TrainingClient`` loaded from a training checkpoint (weights only)."""
        _unsupported(base_model=base_model, weights_access_token=weights_access_token)
        _ignored(user_metadata=user_metadata)
        _only_adamw(optimizer)
        return self._training_client_future(
            lib.tinkex_service_client_create_training_client_from_state,
            {"path": path, "optimizer": False},
            "create_training_client_from_state",
        )

    async def create_training_client_from_state_async(self, path: str, base_model: Optional[str] = None, user_metadata: Optional[Dict[str, str]] = None, weights_access_token: Optional[str] = None, optimizer: Any = None) -> "TrainingClient":
        return await self.create_training_client_from_state(path, base_model, user_metadata, weights_access_token, optimizer)

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        base_model: Optional[str] = None,
        user_metadata: Optional[Dict[str, str]] = None,
        weights_access_token: Optional[str] = None,
    ) -> "_ClientFuture[TrainingClient]":
        """As :meth:`create_training_client_from_state`, also restoring the optimizer state."""
        _unsupported(base_model=base_model, weights_access_token=weights_access_token)
        _ignored(user_metadata=user_metadata)
        return self._training_client_future(
            lib.tinkex_service_client_create_training_client_from_state,
            {"path": path, "optimizer": True},
            "create_training_client_from_state_with_optimizer",
        )

    async def create_training_client_from_state_with_optimizer_async(self, path: str, base_model: Optional[str] = None, user_metadata: Optional[Dict[str, str]] = None, weights_access_token: Optional[str] = None) -> "TrainingClient":
        return await self.create_training_client_from_state_with_optimizer(path, base_model, user_metadata, weights_access_token)

    # -- sampling clients --

    def create_sampling_client(
        self,
        model_path: Optional[str] = None,
        base_model: Optional[str] = None,
        retry_config: Any = None,
        record_stability_info: bool = False,
    ) -> "_ClientFuture[SamplingClient]":
        """A future of a ``SamplingClient`` for saved sampler weights (``model_path``) or a
        base model. ``retry_config`` is accepted for compatibility; libtinkex's own retry
        policy (``config={"retry": ...}``) applies."""
        self._check_open()
        if model_path is None and base_model is None:
            raise ValueError("Either model_path or base_model must be provided")
        if record_stability_info:
            _unsupported(record_stability_info=True)
        body = {"model_path": model_path} if model_path is not None else {"base_model": base_model}
        data, n = _buf(json_bytes(body))
        with self._handle.use() as ptr:
            state = _core.submit(
                lib.tinkex_service_client_create_sampling_client,
                ptr,
                data,
                n,
                converter=lambda h: SamplingClient._from_handle(h, self),
                take_kind=_core.TAKE_SAMPLING,
                label="create_sampling_client",
            )
        return _ClientFuture(self._track(state))

    async def create_sampling_client_async(self, model_path: Optional[str] = None, base_model: Optional[str] = None, retry_config: Any = None, record_stability_info: bool = False) -> "SamplingClient":
        return await self.create_sampling_client(model_path, base_model, retry_config, record_stability_info)

    # -- others --

    def create_rest_client(self) -> "RestClient":
        out = c_void_p()
        err = c_void_p()
        with self._handle.use() as ptr:
            check(lib.tinkex_service_client_create_rest_client(ptr, byref(out), byref(err)), err)
        return RestClient(_handle=Handle(out.value, lib.tinkex_rest_client_free, "rest client"), _service=self)

    def create_custom_loss(self, fn: Any, input_ranks: Any) -> APIFuture[Any]:
        raise NotImplementedError(
            "tinkex: server-side custom losses (create_custom_loss) are not in libtinkex's C ABI; "
            "pass the loss function itself to TrainingClient.forward_backward_custom"
        )

    def __repr__(self) -> str:
        return f"<tinkex.ServiceClient session={self.session_id!r}{' closed' if self._closed else ''}>"


def _ignored(**kwargs: Any) -> None:
    given = [k for k, v in kwargs.items() if v]
    if given:
        warnings.warn(
            f"tinkex: {', '.join(given)} is not supported by libtinkex's C ABI yet and is ignored",
            RuntimeWarning,
            stacklevel=3,
        )


def _unsupported(**kwargs: Any) -> None:
    given = [k for k, v in kwargs.items() if v]
    if given:
        raise NotImplementedError(
            f"tinkex: {', '.join(given)} is not supported by libtinkex's C ABI yet"
        )


def _only_adamw(optimizer: Any) -> None:
    if optimizer is None:
        return
    kind = optimizer.get("type") if isinstance(optimizer, Mapping) else getattr(optimizer, "type", None)
    if kind not in (None, "adamw"):
        raise NotImplementedError(f"tinkex: optimizer {kind!r} is not supported (only adamw)")


# ---- training client -----------------------------------------------------------------------

_DTYPE_CODES = {
    np.dtype(np.int64): _lib.DTYPE_INT64,
    np.dtype(np.int32): _lib.DTYPE_INT32,
    np.dtype(np.float32): _lib.DTYPE_FLOAT32,
    np.dtype(np.float64): _lib.DTYPE_FLOAT64,
}


def _bulk_ok(data: Sequence[Datum]) -> bool:
    for d in data:
        chunks = d.model_input.chunks
        if len(chunks) > 1 or (chunks and chunks[0].type != "encoded_text"):
            return False
        for td in d.loss_fn_inputs.values():
            if td.sparse_crow_indices is not None:
                return False
    return True


def _build_batch(data: Sequence[Datum]) -> Handle:
    """Builds a ``tinkex_datum_batch`` from numpy buffers (one copy, into the library)."""
    out = c_void_p()
    err = c_void_p()
    check(lib.tinkex_datum_batch_new(byref(out), byref(err)), err)
    batch = Handle(out.value, lib.tinkex_datum_batch_free, "datum batch")
    bptr = out.value
    push = lib.tinkex_datum_batch_push
    set_input = lib.tinkex_datum_batch_set_loss_input
    for d in data:
        toks = d.model_input._bulk_tokens()
        assert toks is not None
        status = push(bptr, toks.ctypes.data if toks.size else None, toks.size, _DTYPE_CODES[toks.dtype], byref(err))
        check(status, err)
        for name, td in d.loss_fn_inputs.items():
            arr = td._numpy
            code = _DTYPE_CODES.get(arr.dtype)
            if code is None:
                arr = arr.astype(np.float32 if td.dtype == "float32" else np.int64)
                code = _DTYPE_CODES[arr.dtype]
            arr = np.ascontiguousarray(arr)
            shape = td.shape if td.shape is not None else list(arr.shape)
            ndim = len(shape)
            shape_arr = (c_int64 * max(ndim, 1))(*shape)
            nb = name.encode()
            status = set_input(
                bptr, nb, len(nb), arr.ctypes.data if arr.size else None, arr.size, code, shape_arr, ndim, byref(err)
            )
            check(status, err)
    _core.stats["bulk_batches"] += 1
    _core.stats["bulk_datums"] += len(data)
    return batch


def _fbo(raw: bytes) -> ForwardBackwardOutput:
    return ForwardBackwardOutput._from_json(parse_json(raw))


class _Poisoned(TinkerError):
    pass


class TrainingClient:
    """A model being trained. Operations are sent in call order (also across threads) and
    return :class:`APIFuture` s at once; submit the next request before waiting."""

    def __init__(self, _handle: Handle, _service: ServiceClient) -> None:
        self._handle = _handle
        self._service = _service
        with _handle.use() as ptr:
            self._info = GetInfoResponse._from_json(_sync_json(lib.tinkex_training_client_get_info, ptr))
        self.model_id: str = self._info.model_id
        # Ordering gate for client-side custom losses (see forward_backward_custom).
        self._order_lock = threading.RLock()
        self._queue: Deque[Tuple[Callable[[OpState], None], OpState, bool]] = collections.deque()
        self._blocked = False
        self._poisoned: Optional[BaseException] = None

    @classmethod
    def _from_handle(cls, h: Handle, service: ServiceClient) -> "TrainingClient":
        return cls(h, service)

    # -- lifecycle --

    def close(self) -> None:
        """Releases this client's handle (pending operations still complete)."""
        self._handle.close()

    def __enter__(self) -> "TrainingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tinkex.TrainingClient model_id={self.model_id!r}>"

    # -- ordered submission --

    def _ordered(self, label: str, submit: Callable[[OpState], None], *, blocks: bool = False, on_drop: Optional[Callable[[], None]] = None) -> OpState:
        """Submits now, or queues behind a custom-loss operation whose backward pass is not
        sent yet (so call order is send order). ``submit(state)`` performs the C call."""
        state = OpState(label=label)
        with self._order_lock:
            if self._poisoned is not None:
                if on_drop:
                    on_drop()
                state.set_exception(self._poison_error())
                return state
            if not self._blocked and not self._queue:
                submit(state)  # raises for a rejected request: nothing was submitted
                if blocks:
                    self._blocked = True
                return self._service._track(state)
            self._queue.append((submit, state, blocks))
            state._cancel_hook = lambda: self._drop_queued(state, on_drop)
        return self._service._track(state)

    def _drop_queued(self, state: OpState, on_drop: Optional[Callable[[], None]]) -> None:
        with self._order_lock:
            for i, (_s, st, _b) in enumerate(self._queue):
                if st is state:
                    del self._queue[i]
                    if on_drop:
                        on_drop()
                    state.set_exception(concurrent.futures.CancelledError("the operation was cancelled"))
                    return

    def _drain(self) -> None:
        with self._order_lock:
            while self._queue and not self._blocked:
                submit, state, blocks = self._queue.popleft()
                if state.done():
                    continue
                if self._poisoned is not None:
                    state.set_exception(self._poison_error())
                    continue
                try:
                    submit(state)
                    if blocks:
                        self._blocked = True
                except BaseException as e:  # noqa: BLE001
                    state.set_exception(e)

    def _poison(self, error: BaseException) -> None:
        with self._order_lock:
            if self._poisoned is None:
                self._poisoned = error
            self._blocked = False
        self._drain()

    def _poison_error(self) -> TinkerError:
        return _Poisoned(
            "A previous request failed; this TrainingClient is poisoned and rejects further "
            f"training requests (cause: {self._poisoned!r})"
        )

    # -- forward / backward --

    def _fwd_submitter(
        self, data: Sequence[Any], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]], forward_only: bool
    ) -> Tuple[Callable[[OpState], None], Optional[Callable[[], None]]]:
        data = [d if isinstance(d, Datum) else Datum(**d) for d in data]
        if not data:
            raise ValueError("No data provided")
        loss: Dict[str, Any] = {"loss_fn": loss_fn}
        if loss_fn_config is not None:
            loss["loss_fn_config"] = dict(loss_fn_config)
        if _bulk_ok(data):
            batch = _build_batch(data)  # copies the arrays now: later changes do not leak in
            body, n = _buf(json_bytes(loss))
            call = lib.tinkex_training_client_forward_batch if forward_only else lib.tinkex_training_client_forward_backward_batch

            def submit(state: OpState) -> None:
                with self._handle.use() as ptr, batch.use() as bptr:
                    # Borrowed by the call (it copies the datums); released by batch.close.
                    _core.submit(call, ptr, bptr, body, n, converter=_fbo, state=state)

            return submit, batch.close
        loss["data"] = [d._json() for d in data]
        body, n = _buf(json_bytes(loss))
        _core.stats["json_batches"] += 1
        call = lib.tinkex_training_client_forward if forward_only else lib.tinkex_training_client_forward_backward

        def submit_json(state: OpState) -> None:
            with self._handle.use() as ptr:
                _core.submit(call, ptr, body, n, converter=_fbo, state=state)

        return submit_json, None

    def forward(
        self, data: List[Datum], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]] = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Forward pass without gradients."""
        submit, on_drop = self._fwd_submitter(data, loss_fn, loss_fn_config, True)
        return APIFuture(self._ordered("forward", submit, on_drop=on_drop))

    async def forward_async(self, data: List[Datum], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]] = None) -> APIFuture[ForwardBackwardOutput]:
        return self.forward(data, loss_fn, loss_fn_config)

    def forward_backward(
        self, data: List[Datum], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]] = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Forward and backward pass; gradients accumulate until the next ``optim_step``.
        Datums with a single token chunk go through libtinkex's typed-array bulk path."""
        submit, on_drop = self._fwd_submitter(data, loss_fn, loss_fn_config, False)
        return APIFuture(self._ordered("forward_backward", submit, on_drop=on_drop))

    async def forward_backward_async(self, data: List[Datum], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]] = None) -> APIFuture[ForwardBackwardOutput]:
        return self.forward_backward(data, loss_fn, loss_fn_config)

    def forward_backward_custom(
        self, data: List[Datum], loss_fn: Callable[..., Any], *, loss_type_input: Optional[str] = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Forward/backward with a client-side loss on the target logprobs (PROTOCOL.md 11.6).

        ``loss_fn(data, logprobs_list) -> (loss, metrics)``: torch tensors when torch is
        installed (autograd gives the gradient), else numpy arrays (see
        :mod:`tinkex._custom_loss` for the gradient rules). Later requests of this client
        are sent after the backward pass; if any step fails or is cancelled, the client is
        poisoned (later training requests fail), as in the official SDK."""
        if loss_type_input not in (None, "logprobs"):
            raise ValueError("loss_type_input must be 'logprobs' (deprecated argument)")
        if not callable(loss_fn):
            raise TypeError("forward_backward_custom needs a callable loss (LossHandle is not supported)")
        data = [d if isinstance(d, Datum) else Datum(**d) for d in data]
        fwd_submit, on_drop = self._fwd_submitter(_custom_loss.forward_data(data), "cross_entropy", None, True)
        visible = OpState(label="forward_backward_custom")
        fwd_state = self._ordered("forward_backward_custom/forward", fwd_submit, blocks=True, on_drop=on_drop)
        phase: Dict[str, OpState] = {"current": fwd_state}

        def cancel_hook() -> None:
            phase["current"].cancel()

        visible._cancel_hook = cancel_hook

        def fail(e: BaseException) -> None:
            visible.set_exception(e)
            self._poison(e)

        def after_forward(_s: OpState) -> None:
            _custom_loss.executor().submit(run_loss)

        def run_loss() -> None:
            try:
                fwd = fwd_state.value()
                value, metrics, grads = _custom_loss.compute(loss_fn, data, fwd)
                bwd_submit, _drop = self._fwd_submitter(_custom_loss.backward_data(data, grads), "cross_entropy", None, False)
                bwd_state = OpState(label="forward_backward_custom/backward")
                with self._order_lock:
                    if self._poisoned is not None:
                        raise self._poison_error()
                    bwd_submit(bwd_state)
                    self._blocked = False
                phase["current"] = bwd_state
                self._service._track(bwd_state)
            except BaseException as e:  # noqa: BLE001
                err = e
                if isinstance(e, concurrent.futures.CancelledError) or fwd_state.cancelled():
                    err = concurrent.futures.CancelledError("the operation was cancelled")
                fail(err)
                return
            self._drain()

            def after_backward(s: OpState) -> None:
                e = s.error_info()
                if e is not None:
                    try:
                        s.value()
                    except BaseException as exc:  # noqa: BLE001
                        fail(exc)
                    return
                visible.set_result_raw(s, converter=lambda st: _custom_loss.adjust(st.value(), value, metrics))

            bwd_state.add_done_callback(after_backward)

        fwd_state.add_done_callback(after_forward)
        return APIFuture(self._service._track(visible))

    async def forward_backward_custom_async(self, data: List[Datum], loss_fn: Callable[..., Any], *, loss_type_input: Optional[str] = None) -> APIFuture[ForwardBackwardOutput]:
        return self.forward_backward_custom(data, loss_fn, loss_type_input=loss_type_input)

    # -- optimizer, checkpoints --

    def _simple(self, label: str, call: Any, body: Any, converter: Callable[[bytes], Any]) -> APIFuture[Any]:
        data, n = _buf(json_bytes(body))

        def submit(state: OpState) -> None:
            with self._handle.use() as ptr:
                _core.submit(call, ptr, data, n, converter=converter, state=state)

        return APIFuture(self._ordered(label, submit))

    def optim_step(self, optim_params: Any = None, *, adam_params: Optional[AdamParams] = None) -> APIFuture[OptimStepResponse]:
        """Applies the accumulated gradients (Adam)."""
        if optim_params is not None and adam_params is not None:
            raise ValueError("Specify optim_params or legacy adam_params, not both")
        params = optim_params if optim_params is not None else adam_params
        if params is None:
            raise TypeError("Expected AdamParams or OptimParamsBase")
        if isinstance(params, AdamParams):
            body = params._json()
        elif isinstance(params, Mapping):
            body = dict(params)
        elif hasattr(params, "model_dump") and getattr(params, "type", "adamw") in (None, "adamw"):
            body = params.model_dump()
        else:
            raise NotImplementedError(f"tinkex: optimizer parameters {type(params).__name__} are not supported (only AdamParams)")
        return self._simple(
            "optim_step",
            lib.tinkex_training_client_optim_step,
            body,
            lambda raw: OptimStepResponse(metrics=(parse_json(raw) or {}).get("metrics")),
        )

    async def optim_step_async(self, optim_params: Any = None, *, adam_params: Optional[AdamParams] = None) -> APIFuture[OptimStepResponse]:
        return self.optim_step(optim_params, adam_params=adam_params)

    def save_state(
        self, name: str, ttl_seconds: Optional[int] = None, overwrite: bool = False, user_metadata: Optional[Dict[str, str]] = None
    ) -> APIFuture[SaveWeightsResponse]:
        """Saves a training checkpoint (weights and optimizer state)."""
        body: Dict[str, Any] = {"path": name, "overwrite": bool(overwrite)}
        if ttl_seconds is not None:
            body["ttl_seconds"] = int(ttl_seconds)
        if user_metadata is not None:
            body["user_metadata"] = dict(user_metadata)
        return self._simple(
            "save_state",
            lib.tinkex_training_client_save_state,
            body,
            lambda raw: SaveWeightsResponse(path=parse_json(raw)["path"], type="save_weights"),
        )

    async def save_state_async(self, name: str, ttl_seconds: Optional[int] = None, overwrite: bool = False, user_metadata: Optional[Dict[str, str]] = None) -> APIFuture[SaveWeightsResponse]:
        return self.save_state(name, ttl_seconds, overwrite, user_metadata)

    def _load(self, path: str, optimizer: bool, weights_access_token: Optional[str]) -> APIFuture[LoadWeightsResponse]:
        _unsupported(weights_access_token=weights_access_token)
        return self._simple(
            "load_state",
            lib.tinkex_training_client_load_state,
            {"path": path, "optimizer": optimizer},
            lambda raw: LoadWeightsResponse(path=path, model_id=self.model_id, type="load_weights"),
        )

    def load_state(self, path: str, weights_access_token: Optional[str] = None) -> APIFuture[LoadWeightsResponse]:
        """Loads checkpoint weights into this model (not the optimizer state)."""
        return self._load(path, False, weights_access_token)

    async def load_state_async(self, path: str, weights_access_token: Optional[str] = None) -> APIFuture[LoadWeightsResponse]:
        return self.load_state(path, weights_access_token)

    def load_state_with_optimizer(self, path: str, weights_access_token: Optional[str] = None) -> APIFuture[LoadWeightsResponse]:
        """Loads checkpoint weights and optimizer state into this model."""
        return self._load(path, True, weights_access_token)

    async def load_state_with_optimizer_async(self, path: str, weights_access_token: Optional[str] = None) -> APIFuture[LoadWeightsResponse]:
        return self.load_state_with_optimizer(path, weights_access_token)

    def save_weights_for_sampler(
        self, name: str, ttl_seconds: Optional[int] = None, user_metadata: Optional[Dict[str, str]] = None
    ) -> APIFuture[SaveWeightsForSamplerResponse]:
        """Saves named sampler weights; the result's ``path`` feeds ``create_sampling_client``."""
        _unsupported(ttl_seconds=ttl_seconds, user_metadata=user_metadata)
        return self._simple(
            "save_weights_for_sampler",
            lib.tinkex_training_client_save_weights_for_sampler,
            {"path": name},
            lambda raw: SaveWeightsForSamplerResponse(path=parse_json(raw)["path"], type="save_weights_for_sampler"),
        )

    async def save_weights_for_sampler_async(self, name: str, ttl_seconds: Optional[int] = None, user_metadata: Optional[Dict[str, str]] = None) -> APIFuture[SaveWeightsForSamplerResponse]:
        return self.save_weights_for_sampler(name, ttl_seconds, user_metadata)

    def save_weights_and_get_sampling_client(
        self,
        name: Optional[str] = None,
        retry_config: Any = None,
        record_stability_info: bool = False,
        kind: str = "snapshot",
    ) -> "_ClientFuture[SamplingClient]":
        """Saves the current weights (ephemeral) and gives a future of a ``SamplingClient``."""
        if name is not None:
            warnings.warn(
                "The 'name' parameter of save_weights_and_get_sampling_client() is deprecated and has no effect",
                DeprecationWarning,
                stacklevel=2,
            )
        if kind != "snapshot":
            raise NotImplementedError("tinkex: only kind='snapshot' is supported")
        _unsupported(record_stability_info=record_stability_info)
        service = self._service

        def submit(state: OpState) -> None:
            with self._handle.use() as ptr:
                _core.submit(
                    lib.tinkex_training_client_save_weights_and_get_sampling_client,
                    ptr,
                    converter=lambda h: SamplingClient._from_handle(h, service),
                    take_kind=_core.TAKE_SAMPLING,
                    state=state,
                )

        return _ClientFuture(self._ordered("save_weights_and_get_sampling_client", submit))

    async def save_weights_and_get_sampling_client_async(self, name: Optional[str] = None, retry_config: Any = None, record_stability_info: bool = False, kind: str = "snapshot") -> "SamplingClient":
        return await self.save_weights_and_get_sampling_client(name, retry_config, record_stability_info, kind)

    def create_sampling_client(self, model_path: str, retry_config: Any = None, record_stability_info: bool = False) -> "_ClientFuture[SamplingClient]":
        return self._service.create_sampling_client(model_path=model_path, retry_config=retry_config, record_stability_info=record_stability_info)

    async def create_sampling_client_async(self, model_path: str, retry_config: Any = None, record_stability_info: bool = False) -> "SamplingClient":
        return await self.create_sampling_client(model_path, retry_config, record_stability_info)

    # -- info --

    def get_info(self) -> GetInfoResponse:
        """The model's information (fetched at creation; no request)."""
        return self._info

    async def get_info_async(self) -> GetInfoResponse:
        return self._info

    def get_tokenizer(self) -> Any:
        return _load_tokenizer(self._info.model_data.model_name or "", self._info.model_data.tokenizer_id)


def _load_tokenizer(model_name: str, tokenizer_id: Optional[str] = None) -> Any:
    try:
        from transformers import AutoTokenizer  # type: ignore[import-not-found]
    except ImportError as e:
        raise ImportError("get_tokenizer needs the `transformers` package") from e
    return AutoTokenizer.from_pretrained(tokenizer_id or model_name)


# ---- sampling client -----------------------------------------------------------------------


class SamplingClient:
    """Samples from a base model or saved sampler weights. ``sample`` returns an
    :class:`APIFuture` at once; any number may be in flight."""

    def __init__(self, _handle: Handle, _service: ServiceClient) -> None:
        self._handle = _handle
        self._service = _service
        with _handle.use() as ptr:
            info = _sync_json(lib.tinkex_sampling_client_get_info, ptr)
        self._sampling_session_id: str = info.get("sampling_session_id") or ""
        self._base_model: str = info.get("base_model") or ""
        _service._register_sampler(self)

    @classmethod
    def _from_handle(cls, h: Handle, service: ServiceClient) -> "SamplingClient":
        return cls(h, service)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "SamplingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tinkex.SamplingClient {self._sampling_session_id} base_model={self._base_model!r}>"

    @property
    def sampling_session_id(self) -> str:
        return self._sampling_session_id

    def _submit_sample(self, body: Dict[str, Any], converter: Callable[[bytes], Any], label: str, call: Any = None) -> APIFuture[Any]:
        data, n = _buf(json_bytes(body))
        with self._handle.use() as ptr:
            state = _core.submit(call or lib.tinkex_sampling_client_sample, ptr, data, n, converter=converter, label=label)
        return APIFuture(self._service._track(state))

    def sample(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: Optional[TensorData] = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: Optional[int] = None,
    ) -> APIFuture[SampleResponse]:
        """Draws ``num_samples`` continuations of ``prompt``."""
        if target_prompt_logprobs is not None or prompt_alt_tokens_k:
            _unsupported(target_prompt_logprobs=target_prompt_logprobs is not None, prompt_alt_tokens_k=prompt_alt_tokens_k)
        if prompt_logprobs_last_n is not None and not include_prompt_logprobs:
            raise ValueError("prompt_logprobs_last_n requires include_prompt_logprobs")
        if isinstance(sampling_params, Mapping):
            sampling_params = SamplingParams(**sampling_params)
        body: Dict[str, Any] = {
            "prompt": prompt._json(),
            "num_samples": int(num_samples),
            "sampling_params": sampling_params._json(),
        }
        if include_prompt_logprobs:
            body["prompt_logprobs"] = True
        if topk_prompt_logprobs:
            body["topk_prompt_logprobs"] = int(topk_prompt_logprobs)
        if topk_sample_logprobs:
            body["topk_sample_logprobs"] = int(topk_sample_logprobs)
        if prompt_logprobs_last_n is not None:
            body["prompt_logprobs_last_n"] = int(prompt_logprobs_last_n)
        return self._submit_sample(body, lambda raw: SampleResponse._from_json(parse_json(raw)), "sample")

    async def sample_async(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: Optional[TensorData] = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: Optional[int] = None,
    ) -> SampleResponse:
        return await self.sample(
            prompt,
            num_samples,
            sampling_params,
            include_prompt_logprobs,
            topk_prompt_logprobs,
            topk_sample_logprobs,
            target_prompt_logprobs,
            prompt_alt_tokens_k,
            prompt_logprobs_last_n,
        )

    def compute_logprobs(self, prompt: ModelInput, prompt_logprobs_last_n: Optional[int] = None) -> APIFuture[List[Optional[float]]]:
        """Log-probability of every prompt token (None at position 0)."""
        if prompt_logprobs_last_n is None:
            return self._submit_sample(
                {"prompt": prompt._json()},
                lambda raw: parse_json(raw),
                "compute_logprobs",
                call=lib.tinkex_sampling_client_compute_logprobs,
            )
        body = {
            "prompt": prompt._json(),
            "num_samples": 1,
            "sampling_params": SamplingParams(max_tokens=1)._json(),
            "prompt_logprobs": True,
            "prompt_logprobs_last_n": int(prompt_logprobs_last_n),
        }
        return self._submit_sample(body, lambda raw: parse_json(raw).get("prompt_logprobs"), "compute_logprobs")

    async def compute_logprobs_async(self, prompt: ModelInput, prompt_logprobs_last_n: Optional[int] = None) -> List[Optional[float]]:
        return await self.compute_logprobs(prompt, prompt_logprobs_last_n)

    def get_base_model(self) -> str:
        return self._base_model

    async def get_base_model_async(self) -> str:
        return self._base_model

    def get_tokenizer(self) -> Any:
        return _load_tokenizer(self._base_model)

    def on_queue_state_change(self, queue_state: QueueState, queue_state_reason: Optional[str]) -> None:
        """The official observer hook: called (on the library's callback thread) whenever
        the queue state of one of this sampling session's requests changes. Override it in a
        subclass, or use ``ServiceClient.add_queue_state_observer``; libtinkex logs queue
        states itself."""


# ---- REST client ---------------------------------------------------------------------------


class RestClient:
    """Training runs and checkpoints. ``RestClient(base_url=, api_key=)`` or
    ``service_client.create_rest_client()``."""

    def __init__(
        self,
        _holder: Any = None,
        *,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        _handle: Optional[Handle] = None,
        _service: Optional[ServiceClient] = None,
    ) -> None:
        if _handle is None:
            _service = ServiceClient(base_url=base_url, api_key=api_key)
            out = c_void_p()
            err = c_void_p()
            with _service._handle.use() as ptr:
                check(lib.tinkex_service_client_create_rest_client(ptr, byref(out), byref(err)), err)
            _handle = Handle(out.value, lib.tinkex_rest_client_free, "rest client")
        self._handle = _handle
        self._service = _service

    def _call(self, call: Any, args: Tuple[Any, ...], converter: Callable[[bytes], Any], label: str) -> APIFuture[Any]:
        with self._handle.use() as ptr:
            state = _core.submit(call, ptr, *args, converter=converter, label=label)
        return APIFuture(state)

    def get_server_capabilities(self) -> APIFuture[GetServerCapabilitiesResponse]:
        assert self._service is not None
        return APIFuture(self._service._capabilities_state())

    def list_training_runs(self, limit: int = 20, offset: int = 0, access_scope: str = "owned", project_id: Optional[str] = None) -> APIFuture[TrainingRunsResponse]:
        return self._call(
            lib.tinkex_rest_client_list_training_runs,
            (int(limit), int(offset)),
            lambda raw: TrainingRunsResponse._from_json(parse_json(raw)),
            "list_training_runs",
        )

    def get_training_run(self, training_run_id: str, access_scope: str = "owned") -> APIFuture[TrainingRun]:
        b = training_run_id.encode()
        return self._call(
            lib.tinkex_rest_client_get_training_run, (b, len(b)), lambda raw: TrainingRun._from_json(parse_json(raw)), "get_training_run"
        )

    def get_training_run_by_tinker_path(self, tinker_path: str, access_scope: str = "owned") -> APIFuture[TrainingRun]:
        return self.get_training_run(ParsedCheckpointTinkerPath.from_tinker_path(tinker_path).training_run_id)

    def list_checkpoints(self, training_run_id: str) -> APIFuture[CheckpointsListResponse]:
        b = training_run_id.encode()
        return self._call(
            lib.tinkex_rest_client_list_checkpoints,
            (b, len(b)),
            lambda raw: CheckpointsListResponse._from_json(parse_json(raw)),
            "list_checkpoints",
        )

    def list_user_checkpoints(self, limit: int = 100, offset: int = 0) -> APIFuture[CheckpointsListResponse]:
        return self._call(
            lib.tinkex_rest_client_list_user_checkpoints,
            (int(limit), int(offset)),
            lambda raw: CheckpointsListResponse._from_json(parse_json(raw)),
            "list_user_checkpoints",
        )

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        b = tinker_path.encode()
        return self._call(lib.tinkex_rest_client_delete_checkpoint, (b, len(b)), lambda raw: None, "delete_checkpoint")

    def delete_checkpoint(self, training_run_id: str, checkpoint_id: str) -> APIFuture[None]:
        return self.delete_checkpoint_from_tinker_path(f"tinker://{training_run_id}/{checkpoint_id}")

    def get_weights_info_by_tinker_path(self, tinker_path: str) -> APIFuture[WeightsInfoResponse]:
        b = tinker_path.encode()
        from .types import _build

        return self._call(
            lib.tinkex_rest_client_get_weights_info,
            (b, len(b)),
            lambda raw: _build(WeightsInfoResponse, parse_json(raw)),
            "get_weights_info",
        )

    def close(self) -> None:
        self._handle.close()
