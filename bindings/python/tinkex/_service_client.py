"""ServiceClient: the entry point of a session, which creates the training, sampling and
REST clients (the official SDK's names and signatures)."""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from ctypes import byref, c_void_p
from typing import Any, Callable, Dict, Literal, Mapping, Optional, Sequence

from . import _events, _ffi, _lib
from . import _constants as K
from ._api_future import APIFuture, completed_future
from . import _custom_loss_graph, types
from ._client_common import Telemetry, _telemetry_enabled, _buf, _ClientFuture, _optimizer_json, _str_map, _sync_json
from ._custom_loss_graph import LossHandle
from ._ffi import Handle, OpState, check, json_bytes, parse_json
from ._lib import lib
from ._rest_client import RestClient
from ._sampling_client import SamplingClient
from ._training_client import TrainingClient
from .types import Event, GetServerCapabilitiesResponse, QueueState


def _from_state_body(
    path: str,
    optimizer: bool,
    base_model: Optional[str],
    user_metadata: Optional[Mapping[str, str]],
    weights_access_token: Optional[str],
    optimizer_config: Any,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"path": path, "optimizer": optimizer}
    if base_model is not None:
        body["base_model"] = base_model
    if user_metadata is not None:
        body["user_metadata"] = _str_map("user_metadata", user_metadata)
    if weights_access_token is not None:
        body["weights_access_token"] = weights_access_token
    if optimizer_config is not None:
        body["optimizer_config"] = _optimizer_json(optimizer_config)
    return body


def _merge(dst: Dict[str, Any], src: Mapping[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = dict(v) if isinstance(v, Mapping) else v


class ServiceClient:
    """The entry point: creates training, sampling and REST clients of one session.

    Args (as the official SDK): ``user_metadata``, ``project_id``, ``display_name``,
    ``base_url`` (else ``TINKER_BASE_URL``), ``api_key`` (else ``TINKER_API_KEY``, else
    ``TINKER_CREDENTIAL_CMD``, else the default key of ``~/.tinker/credentials.json``; with
    ``api_key=None`` the library resolves these as the official SDK does, PROTOCOL.md 2.3).

    tinkex additions (keyword-only): ``tags``; ``telemetry`` (else ``TINKER_TELEMETRY``);
    ``config``: more fields of the libtinkex client configuration (``timeouts``, ``retry``,
    ``heartbeat``, ``progress_event_interval_ms``, ``allow_insecure_http``,
    ``credential_cmd``, ``credentials_file``, ``auth``; see
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
        cfg: Dict[str, Any] = {}
        if user_metadata is not None:
            # the session's metadata (create_session, PROTOCOL.md 5.5)
            cfg["user_metadata"] = _str_map("user_metadata", user_metadata)
        if default_headers_overrides is not None:
            # extra headers on every request to the service origin (1.6.1)
            cfg["default_headers_overrides"] = _str_map("default_headers_overrides", default_headers_overrides)
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
        self._telemetry_on = _telemetry_enabled(telemetry, config)
        if config:
            _merge(cfg, config)
        self._closed = False
        self._lock = threading.Lock()
        rt = _ffi.runtime()
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
        self, status: Literal["success", "errored", "interrupted"], detail: Optional[str] = None
    ) -> APIFuture[None]:
        """Finishes the session (first call wins) and stops its heartbeats."""
        with self._lock:
            if self._closed:
                return completed_future(None)
            self._closed = True
        if self._progress is not None:
            self._progress.close()
        body: Dict[str, Any] = {"reason": {"type": status}}
        if detail is not None:
            body["detail"] = detail
        data, n = _buf(json_bytes(body))
        with self._handle.use() as ptr:
            state = _ffi.submit(lib.tinkex_service_client_close, ptr, data, n, converter=lambda _raw: None, label="close")
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
        if status == K.STATUS_WRONG_STATE:
            _ffi.ErrorInfo.take(status, err.value)
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
                _ffi.submit(
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
            state = _ffi.submit(
                call,
                ptr,
                data,
                n,
                converter=lambda h: TrainingClient._from_handle(h, self),
                take_kind=_ffi.TAKE_TRAINING,
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
        lora: Dict[str, Any] = {
            "rank": int(rank),
            "train_unembed": bool(train_unembed),
            "train_mlp": bool(train_mlp),
            "train_attn": bool(train_attn),
        }
        if seed is not None:
            lora["seed"] = int(seed)
        body: Dict[str, Any] = {"base_model": base_model, "lora_config": lora}
        if user_metadata is not None:
            body["user_metadata"] = _str_map("user_metadata", user_metadata)
        if optimizer is not None:
            body["optimizer"] = _optimizer_json(optimizer)
        return self._training_client_future(
            lib.tinkex_service_client_create_lora_training_client, body, "create_lora_training_client"
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
        """A future of a ``TrainingClient`` loaded from a training checkpoint (weights only).
        ``base_model`` skips the weights-info lookup; ``optimizer``: the optimizer family of
        the new model (default: the checkpoint's)."""
        return self._training_client_future(
            lib.tinkex_service_client_create_training_client_from_state,
            _from_state_body(path, False, base_model, user_metadata, weights_access_token, optimizer),
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
        return self._training_client_future(
            lib.tinkex_service_client_create_training_client_from_state,
            _from_state_body(path, True, base_model, user_metadata, weights_access_token, None),
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
        base model. ``retry_config`` (a :class:`tinkex.RetryConfig`) configures the sampling
        retry handler of the client's ``sample``/``compute_logprobs`` calls in the core."""
        if model_path is None and base_model is None:
            raise ValueError("Either model_path or base_model must be provided")
        return SamplingClient.create(
            self,
            model_path=model_path,
            base_model=base_model if model_path is None else None,
            retry_config=retry_config,
            record_stability_info=record_stability_info,
        )

    async def create_sampling_client_async(self, model_path: Optional[str] = None, base_model: Optional[str] = None, retry_config: Any = None, record_stability_info: bool = False) -> "SamplingClient":
        return await self.create_sampling_client(model_path, base_model, retry_config, record_stability_info)

    # -- others --

    def create_rest_client(self) -> "RestClient":
        out = c_void_p()
        err = c_void_p()
        with self._handle.use() as ptr:
            check(lib.tinkex_service_client_create_rest_client(ptr, byref(out), byref(err)), err)
        return RestClient(_handle=Handle(out.value, lib.tinkex_rest_client_free, "rest client"), _service=self)

    def create_custom_loss(self, fn: Any, input_ranks: Mapping[str, int]) -> APIFuture[LossHandle]:
        """Registers a per-datum loss on the server (PROTOCOL.md 5.10, 11.6): ``fn`` is traced
        with ``torch.fx`` (torch is imported here; install it with ``pip install torch``) into
        a graph the server runs; ``input_ranks`` gives the rank (0, 1 or 2) of each
        ``loss_fn_inputs`` key ``fn`` reads after ``logprobs``. The result, a
        :class:`LossHandle`, is passed to ``TrainingClient.forward_backward_custom``. Needs a
        server with ``custom_loss_server_side``; otherwise the future fails with a user
        error."""
        self._check_open()
        request = _custom_loss_graph.trace(fn, input_ranks)
        return self._create_custom_loss(request["name"], request["inputs"], request["graph"])

    def _create_custom_loss(self, name: str, inputs: Sequence[Mapping[str, Any]], graph: Mapping[str, Any]) -> APIFuture[LossHandle]:
        """Registers an already traced loss graph (the body of 5.10 without its counters)."""
        self._check_open()
        request = {"name": name, "inputs": [dict(i) for i in inputs], "graph": dict(graph)}
        data, n = _buf(json_bytes(request))
        handle_inputs = tuple(types.CustomLossInput(**i) for i in request["inputs"])

        def convert(raw: bytes) -> LossHandle:
            return LossHandle(name=name, inputs=handle_inputs, session_id=self.session_id or "", graph=request["graph"], loss_id=parse_json(raw)["loss_id"])

        with self._handle.use() as ptr:
            state = _ffi.submit(lib.tinkex_service_client_create_custom_loss, ptr, data, n, converter=convert, label="create_custom_loss")
        return APIFuture(self._track(state))

    def copy_weights(self, path: str, *, ttl_seconds: Optional[int] = None, weights_access_token: Optional[str] = None) -> APIFuture[str]:
        """Copies the checkpoint at ``path`` into this client's project (``project_id``) by
        reference (PROTOCOL.md 6.9); the future gives the new tinker path."""
        self._check_open()
        body: Dict[str, Any] = {"path": path}
        if ttl_seconds is not None:
            body["ttl_seconds"] = int(ttl_seconds)
        if weights_access_token is not None:
            body["weights_access_token"] = weights_access_token
        data, n = _buf(json_bytes(body))
        with self._handle.use() as ptr:
            state = _ffi.submit(
                lib.tinkex_service_client_copy_weights, ptr, data, n, converter=lambda raw: str(parse_json(raw)), label="copy_weights"
            )
        return APIFuture(self._track(state))

    def get_console_url(self) -> str:
        """The web console URL of this session (PROTOCOL.md 20.2)."""
        with self._handle.use() as ptr:
            return str(_sync_json(lib.tinkex_service_client_get_console_url, ptr))

    def status(self) -> Dict[str, Any]:
        """The core's state of this client, right now (tinkex addition): ``session_id``,
        ``queue_state`` and ``queue_state_reason``, ``billing_paused_ms``,
        ``backoff_remaining_ms``, ``last_progress_ms_ago``, ``operations_waiting``,
        ``operations_in_flight`` and ``telemetry`` (counters, or None when off)."""
        with self._handle.use() as ptr:
            return _sync_json(lib.tinkex_service_client_status, ptr)

    def get_telemetry(self) -> Optional[Telemetry]:
        """The telemetry of this session, or None when telemetry is off."""
        return Telemetry._of(self.status, self._telemetry_on)

    @property
    def holder(self) -> "ServiceClient":
        """The official SDK's internal client holder; in tinkex the service client itself
        (libtinkex holds the connection, session and loops)."""
        return self

    def resume_training_run(self, training_run_id: str, optimizer: bool = True) -> "_ClientFuture[TrainingClient]":
        """A future of a ``TrainingClient`` continuing ``training_run_id`` from its latest
        training checkpoint (a new model created from that state; with the optimizer state
        unless ``optimizer=False``). tinkex addition: resumes a run whose client died."""
        return self._training_client_future(
            lib.tinkex_service_client_resume_training_run,
            {"training_run_id": training_run_id, "optimizer": bool(optimizer)},
            "resume_training_run",
        )

    async def resume_training_run_async(self, training_run_id: str, optimizer: bool = True) -> "TrainingClient":
        return await self.resume_training_run(training_run_id, optimizer)

    def __repr__(self) -> str:
        return f"<tinkex.ServiceClient session={self.session_id!r}{' closed' if self._closed else ''}>"

