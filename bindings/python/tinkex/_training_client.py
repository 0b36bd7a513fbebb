"""TrainingClient: forward/backward passes, optimizer steps and checkpoints of one model
(the official SDK's names and signatures)."""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _custom_loss, _ffi
from ._api_future import APIFuture
from ._client_common import _buf, _ClientFuture, _load_tokenizer, _sync_json, _unsupported
from ._datum_batch import _build_batch, _bulk_ok
from ._exceptions import TinkerError
from ._ffi import Handle, OpState, json_bytes, parse_json
from ._lib import lib
from ._sampling_client import SamplingClient
from .types import (
    AdamParams,
    Datum,
    ForwardBackwardOutput,
    GetInfoResponse,
    LoadWeightsResponse,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
)

if TYPE_CHECKING:
    from ._service_client import ServiceClient


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
                with self._handle.use() as ptr:
                    bptr, batch.ptr = batch.ptr, None  # consumed by the call, also on failure
                    _ffi.submit(call, ptr, bptr, body, n, converter=_fbo, state=state)

            return submit, batch.close
        loss["data"] = [d._json() for d in data]
        body, n = _buf(json_bytes(loss))
        _ffi.stats["json_batches"] += 1
        call = lib.tinkex_training_client_forward if forward_only else lib.tinkex_training_client_forward_backward

        def submit_json(state: OpState) -> None:
            with self._handle.use() as ptr:
                _ffi.submit(call, ptr, body, n, converter=_fbo, state=state)

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
                _ffi.submit(call, ptr, data, n, converter=converter, state=state)

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
                _ffi.submit(
                    lib.tinkex_training_client_save_weights_and_get_sampling_client,
                    ptr,
                    converter=lambda h: SamplingClient._from_handle(h, service),
                    take_kind=_ffi.TAKE_SAMPLING,
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

