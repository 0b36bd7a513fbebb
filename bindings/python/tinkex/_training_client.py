"""TrainingClient: forward/backward passes, optimizer steps and checkpoints of one model
(the official SDK's names and signatures)."""

from __future__ import annotations

import concurrent.futures
import warnings
from ctypes import byref, c_void_p
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

from . import _custom_loss, _datum_batch, _ffi, _typed_results
from ._api_future import APIFuture
from ._client_common import Telemetry, _buf, _ClientFuture, _load_tokenizer, _optim_params_json, _str_map, _sync_json
from ._custom_loss_graph import LossHandle
from ._ffi import Handle, OpState, check, json_bytes, parse_json
from ._lib import lib
from ._sampling_client import SamplingClient
from .types import (
    AdamParams,
    Datum,
    ForwardBackwardOutput,
    GetInfoResponse,
    LoadWeightsResponse,
    OptimStepResponse,
    SaveWeightsExternalResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
)

if TYPE_CHECKING:
    from ._service_client import ServiceClient


def _fbo(raw: Any) -> ForwardBackwardOutput:
    """The result of forward / forward_backward (also custom loss), read through the typed
    result handle (``_typed_results``: no JSON)."""
    return _typed_results.forward_output(raw)


class TrainingClient:
    """A model being trained. Operations are sent in call order (also across threads; the
    library reserves each one's turn at the call) and return :class:`APIFuture` s at once;
    submit the next request before waiting."""

    def __init__(self, _handle: Handle, _service: ServiceClient) -> None:
        self._handle = _handle
        self._service = _service
        with _handle.use() as ptr:
            self._info = GetInfoResponse._from_json(_sync_json(lib.tinkex_training_client_get_info, ptr))
        self.model_id: str = self._info.model_id

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

    # -- forward / backward --

    def _submit_batch(self, call: Any, data: Sequence[Any], label: str, *args: Any, **kwargs: Any) -> OpState:
        """Submits ``call(client, batch, *args, ...)`` over a datum batch of ``data``; the
        batch is borrowed by the call and freed here."""
        data = [d if isinstance(d, Datum) else Datum(**d) for d in data]
        if not data:
            raise ValueError("No data provided")
        batch = _datum_batch.build(data)  # copies the arrays now: later changes do not leak in
        try:
            with self._handle.use() as ptr, batch.use() as bptr:
                state = _ffi.submit(
                    call, ptr, bptr, *args, converter=_fbo, take_kind=_ffi.TAKE_FORWARD, label=label, **kwargs
                )
        finally:
            batch.close()
        return self._service._track(state)

    def _forward(self, call: Any, label: str, data: Sequence[Any], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]]) -> APIFuture[ForwardBackwardOutput]:
        loss: Dict[str, Any] = {"loss_fn": loss_fn}
        if loss_fn_config is not None:
            loss["loss_fn_config"] = dict(loss_fn_config)
        body, n = _buf(json_bytes(loss))
        return APIFuture(self._submit_batch(call, data, label, body, n))

    def forward(
        self, data: List[Datum], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]] = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Forward pass without gradients."""
        return self._forward(lib.tinkex_training_client_forward_batch, "forward", data, loss_fn, loss_fn_config)

    async def forward_async(self, data: List[Datum], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]] = None) -> APIFuture[ForwardBackwardOutput]:
        return self.forward(data, loss_fn, loss_fn_config)

    def forward_backward(
        self, data: List[Datum], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]] = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Forward and backward pass; gradients accumulate until the next ``optim_step``.
        Datums with a single token chunk go to libtinkex as typed arrays (no JSON text)."""
        return self._forward(
            lib.tinkex_training_client_forward_backward_batch, "forward_backward", data, loss_fn, loss_fn_config
        )

    async def forward_backward_async(self, data: List[Datum], loss_fn: str, loss_fn_config: Optional[Mapping[str, Any]] = None) -> APIFuture[ForwardBackwardOutput]:
        return self.forward_backward(data, loss_fn, loss_fn_config)

    def forward_backward_custom(
        self, data: List[Datum], loss_fn: Callable[..., Any], *, loss_type_input: Optional[str] = None
    ) -> APIFuture[ForwardBackwardOutput]:
        """Forward/backward with a client-side loss on the target logprobs (PROTOCOL.md 11.6).

        ``loss_fn(data, logprobs_list) -> (loss, metrics)``: torch tensors when torch is
        installed (autograd gives the gradient), else numpy arrays (see
        :mod:`tinkex._custom_loss` for the gradient rules). The library runs the two passes
        in one reserved turn of this client (later requests are sent after the backward
        pass); the loss runs here, on a worker thread. If any step fails or is cancelled,
        the client is poisoned (later training requests fail), as in the official SDK."""
        if loss_type_input not in (None, "logprobs"):
            raise ValueError("loss_type_input must be 'logprobs' (deprecated argument)")
        if isinstance(loss_fn, LossHandle):
            # A server-side loss (5.10): one forward_backward with loss_fn "custom".
            if loss_fn.loss_id is None:
                raise ValueError(f"{loss_fn!r} was not registered on the server (no loss_id)")
            return self.forward_backward(data, "custom", {"loss_id": loss_fn.loss_id})
        if not callable(loss_fn):
            raise TypeError("forward_backward_custom needs a callable loss or a LossHandle")
        data = [d if isinstance(d, Datum) else Datum(**d) for d in data]
        out_pass = c_void_p()
        fwd_state = self._submit_batch(
            lib.tinkex_training_client_forward_backward_custom,
            data,
            "forward_backward_custom/forward",
            extra_out=out_pass,
        )
        loss_pass = Handle(out_pass.value, lib.tinkex_custom_loss_free, "custom loss pass")
        visible = OpState(label="forward_backward_custom")
        phase: Dict[str, OpState] = {"current": fwd_state}
        visible._cancel_hook = lambda: phase["current"].cancel()

        def abort(e: BaseException) -> None:
            # Releases the turn and poisons the client, naming the cause (idempotent).
            reason = f"{type(e).__name__}: {e}".encode("utf-8", "replace")
            try:
                with loss_pass.use() as pp:
                    lib.tinkex_custom_loss_abort(pp, reason, len(reason), None)
            finally:
                loss_pass.close()
                visible.set_exception(e)

        def run_loss() -> None:
            try:
                fwd = fwd_state.value()
                value, metrics, grads = _custom_loss.compute(loss_fn, data, fwd)
                reported = json_bytes({**metrics, "loss:sum": value})
                grads_batch = _datum_batch.build_grads(grads)
                try:
                    with loss_pass.use() as pp, grads_batch.use() as gp:
                        err = c_void_p()
                        check(lib.tinkex_custom_loss_set_metrics(pp, reported, len(reported), byref(err)), err)
                        bwd_state = _ffi.submit(
                            lib.tinkex_custom_loss_backward,
                            pp,
                            gp,
                            converter=_fbo,
                            take_kind=_ffi.TAKE_FORWARD,
                            label="forward_backward_custom/backward",
                        )
                finally:
                    grads_batch.close()
            except BaseException as e:  # noqa: BLE001
                if isinstance(e, concurrent.futures.CancelledError) or fwd_state.cancelled():
                    e = concurrent.futures.CancelledError("the operation was cancelled")
                abort(e)
                return
            loss_pass.close()
            phase["current"] = bwd_state
            self._service._track(bwd_state)

            def after_backward(s: OpState) -> None:
                if s.error_info() is not None:
                    visible._finish(error=s.error_info())
                else:
                    visible.set_result_raw(s, converter=lambda st: st.value())

            bwd_state.add_done_callback(after_backward)

        # The loss never runs on the library's dispatcher thread.
        fwd_state.add_done_callback(lambda _s: _custom_loss.executor().submit(run_loss))
        return APIFuture(self._service._track(visible))

    async def forward_backward_custom_async(self, data: List[Datum], loss_fn: Callable[..., Any], *, loss_type_input: Optional[str] = None) -> APIFuture[ForwardBackwardOutput]:
        return self.forward_backward_custom(data, loss_fn, loss_type_input=loss_type_input)

    # -- optimizer, checkpoints --

    def _simple(self, label: str, call: Any, body: Any, converter: Callable[[bytes], Any]) -> APIFuture[Any]:
        data, n = _buf(json_bytes(body))
        with self._handle.use() as ptr:
            state = _ffi.submit(call, ptr, data, n, converter=converter, label=label)
        return APIFuture(self._service._track(state))

    def optim_step(self, optim_params: Any = None, *, adam_params: Optional[AdamParams] = None) -> APIFuture[OptimStepResponse]:
        """Applies the accumulated gradients: ``AdamParams`` or ``DimuonParams`` (or any
        optimizer family's parameters, sent with their ``type``)."""
        if optim_params is not None and adam_params is not None:
            raise ValueError("Specify optim_params or legacy adam_params, not both")
        params = optim_params if optim_params is not None else adam_params
        if params is None:
            raise TypeError("Expected AdamParams or OptimParamsBase")
        body = _optim_params_json(params)
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
        body: Dict[str, Any] = {"path": path, "optimizer": optimizer}
        if weights_access_token is not None:
            body["weights_access_token"] = weights_access_token
        return self._simple(
            "load_state",
            lib.tinkex_training_client_load_state,
            body,
            # The server's LoadWeightsResponse (PROTOCOL.md 6.8), as libtinkex passes it on.
            lambda raw: LoadWeightsResponse.model_validate(parse_json(raw)),
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
        body: Dict[str, Any] = {"path": name}
        if ttl_seconds is not None:
            body["ttl_seconds"] = int(ttl_seconds)
        if user_metadata is not None:
            body["user_metadata"] = _str_map("user_metadata", user_metadata)
        return self._simple(
            "save_weights_for_sampler",
            lib.tinkex_training_client_save_weights_for_sampler,
            body,
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
        if kind not in ("snapshot", "inflight"):
            raise ValueError(f"kind must be 'snapshot' or 'inflight', got {kind!r}")
        body: Dict[str, Any] = {"kind": kind}
        if retry_config is not None:
            body["retry_config"] = retry_config._json()
        if record_stability_info:
            body["record_stability_info"] = True
        data, n = _buf(json_bytes(body))
        service = self._service
        with self._handle.use() as ptr:
            state = _ffi.submit(
                lib.tinkex_training_client_save_weights_and_get_sampling_client,
                ptr,
                data,
                n,
                converter=lambda h: SamplingClient._from_handle(h, service),
                take_kind=_ffi.TAKE_SAMPLING,
                label="save_weights_and_get_sampling_client",
            )
        return _ClientFuture(service._track(state))

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
        """The model's tokenizer (imports ``transformers`` now; raises ImportError naming it
        when missing)."""
        return _load_tokenizer(self._info.model_data.model_name or "", self._info.model_data.tokenizer_id)

    def get_console_url(self) -> str:
        """The web console URL of this training run (PROTOCOL.md 20.2)."""
        with self._handle.use() as ptr:
            return str(_sync_json(lib.tinkex_training_client_get_console_url, ptr))

    def status(self) -> Dict[str, Any]:
        """The core's state of this client now (tinkex addition; the keys of
        ``ServiceClient.status``, for this model's requests)."""
        with self._handle.use() as ptr:
            return _sync_json(lib.tinkex_training_client_status, ptr)

    def get_telemetry(self) -> Optional[Telemetry]:
        """The telemetry of this client's session, or None when telemetry is off."""
        return Telemetry._of(self.status, self._service._telemetry_on)

    # -- external weights --

    def save_weights_external(
        self, name: str, ttl_seconds: Optional[int] = None, age_encryption_recipients: Optional[List[str]] = None
    ) -> APIFuture[SaveWeightsExternalResponse]:
        """Exports the current weights as an external checkpoint (PROTOCOL.md 6.7), whose
        files ``RestClient.get_external_weights_urls`` gives as signed URLs;
        ``age_encryption_recipients`` encrypts them to those age public keys."""
        body: Dict[str, Any] = {"path": name}
        if ttl_seconds is not None:
            body["ttl_seconds"] = int(ttl_seconds)
        if age_encryption_recipients is not None:
            if isinstance(age_encryption_recipients, str) or not all(isinstance(r, str) for r in age_encryption_recipients):
                raise TypeError("age_encryption_recipients must be a list of str")
            body["age_encryption_recipients"] = list(age_encryption_recipients)
        return self._simple(
            "save_weights_external",
            lib.tinkex_training_client_save_weights_external,
            body,
            lambda raw: SaveWeightsExternalResponse(path=parse_json(raw)["path"], type="save_weights_external"),
        )

    async def save_weights_external_async(
        self, name: str, ttl_seconds: Optional[int] = None, age_encryption_recipients: Optional[List[str]] = None
    ) -> APIFuture[SaveWeightsExternalResponse]:
        return self.save_weights_external(name, ttl_seconds, age_encryption_recipients)

