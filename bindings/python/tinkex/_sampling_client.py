"""SamplingClient: sampling and prompt logprobs from a base model or saved sampler weights
(the official SDK's names and signatures)."""

from __future__ import annotations

import ctypes
from ctypes import byref, c_void_p
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from . import _constants as K, _ffi, _lib, _typed_results
from ._api_future import APIFuture
from ._client_common import Telemetry, _telemetry_enabled, _buf, _ClientFuture, _load_tokenizer, _sync_json
from ._ffi import Handle, check, json_bytes
from ._lib import lib
from .types import ModelInput, QueueState, SampleResponse, SamplingParams, TensorData

if TYPE_CHECKING:
    from ._service_client import ServiceClient


class SamplingClient:
    """Samples from a base model or saved sampler weights. ``sample`` returns an
    :class:`APIFuture` at once; any number may be in flight."""

    def __init__(self, _handle: Handle, _service: "Optional[ServiceClient]") -> None:
        self._handle = _handle
        self._service = _service
        with _handle.use() as ptr:
            info = _sync_json(lib.tinkex_sampling_client_get_info, ptr)
        self._sampling_session_id: str = info.get("sampling_session_id") or ""
        self._base_model: str = info.get("base_model") or ""
        if _service is not None:
            _service._register_sampler(self)

    @classmethod
    def _from_handle(cls, h: Handle, service: "Optional[ServiceClient]") -> "SamplingClient":
        return cls(h, service)

    @staticmethod
    def create(
        holder: "ServiceClient",
        *,
        model_path: Optional[str] = None,
        base_model: Optional[str] = None,
        sampling_session_id: Optional[str] = None,
        retry_config: Any = None,
        record_stability_info: bool = False,
    ) -> "_ClientFuture[SamplingClient]":
        """A future of a sampling client of ``holder`` (a :class:`ServiceClient`): a new
        sampling session for ``model_path`` or ``base_model``, or the existing
        ``sampling_session_id`` (exactly one of the three)."""
        given = [k for k, v in (("model_path", model_path), ("base_model", base_model), ("sampling_session_id", sampling_session_id)) if v is not None]
        if len(given) != 1:
            raise ValueError("Exactly one of model_path, base_model or sampling_session_id must be provided")
        holder._check_open()
        body: Dict[str, Any] = {given[0]: {"model_path": model_path, "base_model": base_model, "sampling_session_id": sampling_session_id}[given[0]]}
        if retry_config is not None:
            body["retry_config"] = retry_config._json()
        if record_stability_info:
            body["record_stability_info"] = True
        data, n = _buf(json_bytes(body))
        with holder._handle.use() as ptr:
            state = _ffi.submit(
                lib.tinkex_service_client_create_sampling_client,
                ptr,
                data,
                n,
                converter=lambda h: SamplingClient._from_handle(h, holder),
                take_kind=_ffi.TAKE_SAMPLING,
                label="create_sampling_client",
            )
        return _ClientFuture(holder._track(state))

    # -- sharing across processes (3.4, 12.2, 20.4) --

    def get_sampler_handle(self) -> str:
        """A string another process (or language) turns back into a sampling client of the
        same sampling session with :meth:`from_sampler_handle`; it carries no API key."""
        with self._handle.use() as ptr:
            return str(_sync_json(lib.tinkex_sampling_client_get_sampler_handle, ptr))

    @staticmethod
    def from_sampler_handle(handle: str, *, api_key: Optional[str] = None) -> "SamplingClient":
        """A clone of the sampling client a handle was made from (no I/O now): it samples
        from the same sampling session under its own clone id, so its ``seq_id`` s never
        collide with the original's. Authenticates with ``api_key`` or this process's
        credentials (``TINKER_API_KEY``, ...)."""
        if not isinstance(handle, str) or not handle:
            raise ValueError("from_sampler_handle needs the string of get_sampler_handle()")
        cfg: Dict[str, Any] = {}
        if api_key is not None:
            cfg["api_key"] = api_key
        h = handle.encode()
        body, n = _buf(json_bytes(cfg))
        out = c_void_p()
        err = c_void_p()
        check(lib.tinkex_sampling_client_from_sampler_handle(_ffi.runtime(), h, len(h), body, n, byref(out), byref(err)), err)
        return SamplingClient(Handle(out.value, lib.tinkex_sampling_client_free, "sampling client"), None)

    def __reduce__(self) -> Any:
        # Pickling goes through the sampler handle (no API key in the pickle).
        return (_unpickle_sampling_client, (self.get_sampler_handle(),))

    def status(self) -> Dict[str, Any]:
        """The core's state of this client now (tinkex addition): the keys of
        ``ServiceClient.status`` for this sampler (dispatch statistics of sampling)."""
        with self._handle.use() as ptr:
            return _sync_json(lib.tinkex_sampling_client_status, ptr)

    def get_telemetry(self) -> Optional[Telemetry]:
        """The telemetry of this client's session, or None when telemetry is off."""
        enabled = self._service._telemetry_on if self._service is not None else _telemetry_enabled(None, None)
        return Telemetry._of(self.status, enabled)

    def _track(self, state: Any) -> Any:
        return self._service._track(state) if self._service is not None else state

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

    def _submit_sample(
        self, body: Dict[str, Any], converter: Callable[[Any], Any], label: str, call: Any = None, take_kind: int = _ffi.TAKE_SAMPLE
    ) -> APIFuture[Any]:
        data, n = _buf(json_bytes(body))
        with self._handle.use() as ptr:
            state = _ffi.submit(
                call or lib.tinkex_sampling_client_sample, ptr, data, n, converter=converter, take_kind=take_kind, label=label
            )
        return APIFuture(self._track(state))

    def _sample_tokens(
        self,
        prompt: ModelInput,
        sp: SamplingParams,
        include_prompt_logprobs: bool,
        prompt_logprobs_last_n: Optional[int],
        counts: tuple,
    ) -> Optional[APIFuture[SampleResponse]]:
        """The typed sample submit (``tinkex_sampling_client_sample_tokens``: token ids as
        an array, parameters as a struct, no JSON), or None when the request needs the JSON
        call: a prompt that is not one token chunk, or a value the struct cannot state as the
        JSON call would (negative counts, a negative ``max_tokens``, ``prompt_logprobs_last_n``
        below 1, ids or seeds outside int64) — the JSON call then reports it as before."""
        try:
            tokens = prompt._bulk_tokens()
            if tokens is None:
                return None
            # num_samples, topk_prompt_logprobs, topk_sample_logprobs, prompt_alt_tokens_k
            u32 = tuple(int(v) for v in counts)
            if any(not 0 <= v < 2**32 for v in u32):
                return None
            if prompt_logprobs_last_n is not None and not 1 <= int(prompt_logprobs_last_n) < 2**32:
                return None
            if sp.max_tokens is not None and not 0 <= int(sp.max_tokens) < 2**63:
                return None
            if sp.seed is not None and not -(2**63) <= int(sp.seed) < 2**63:
                return None
            params = _lib.SampleParams(
                ctypes.sizeof(_lib.SampleParams),
                u32[0],
                -1 if sp.max_tokens is None else int(sp.max_tokens),
                0 if sp.seed is None else int(sp.seed),
                sp.seed is not None,
                bool(include_prompt_logprobs),
                float(sp.temperature),
                int(sp.top_k),
                float(sp.top_p),
                u32[1],
                u32[2],
                0 if prompt_logprobs_last_n is None else int(prompt_logprobs_last_n),
                u32[3],
            )
        except (OverflowError, TypeError, ValueError):
            return None
        stop = b""
        if sp.stop is not None:
            stop = json_bytes(sp.stop if isinstance(sp.stop, str) else list(sp.stop))
        dtype = K.DTYPE_INT32 if tokens.dtype == np.int32 else K.DTYPE_INT64
        with self._handle.use() as ptr:
            state = _ffi.submit(
                lib.tinkex_sampling_client_sample_tokens,
                ptr,
                tokens.ctypes.data if len(tokens) else None,
                len(tokens),
                dtype,
                ctypes.byref(params),
                stop if stop else None,
                len(stop),
                converter=_typed_results.sample_response,
                take_kind=_ffi.TAKE_SAMPLE,
                label="sample",
            )
        return APIFuture(self._track(state))

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
        """Draws ``num_samples`` continuations of ``prompt``. ``target_prompt_logprobs``: an
        int64 ``[len(prompt) - 1, K]`` tensor of token ids whose logprobs the response
        reports; ``prompt_alt_tokens_k``: draw that many alternatives at each prompt
        position."""
        if target_prompt_logprobs is not None:
            if not isinstance(target_prompt_logprobs, TensorData):
                target_prompt_logprobs = TensorData.from_numpy(__import__("numpy").asarray(target_prompt_logprobs))
            if target_prompt_logprobs.dtype != "int64":
                raise ValueError(f"target_prompt_logprobs must be an int64 tensor of token ids, got {target_prompt_logprobs.dtype}")
            if target_prompt_logprobs.shape is None or len(target_prompt_logprobs.shape) != 2:
                raise ValueError(f"target_prompt_logprobs must be 2-D, [len(prompt) - 1, K], got shape {target_prompt_logprobs.shape}")
        if int(prompt_alt_tokens_k) < 0:
            raise ValueError(f"prompt_alt_tokens_k must be 0 or greater, got {prompt_alt_tokens_k}")
        if isinstance(sampling_params, Mapping):
            sampling_params = SamplingParams(**sampling_params)
        if target_prompt_logprobs is None:
            counts = (num_samples, topk_prompt_logprobs, topk_sample_logprobs, prompt_alt_tokens_k)
            typed = self._sample_tokens(prompt, sampling_params, include_prompt_logprobs, prompt_logprobs_last_n, counts)
            if typed is not None:
                return typed
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
        if target_prompt_logprobs is not None:
            body["target_prompt_logprobs"] = target_prompt_logprobs._json()
        if prompt_alt_tokens_k:
            body["prompt_alt_tokens_k"] = int(prompt_alt_tokens_k)
        return self._submit_sample(body, _typed_results.sample_response, "sample")

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
        """Log-probability of every prompt token (None at position 0), or of only the last
        ``prompt_logprobs_last_n`` (earlier entries None). Always retried by the sampling retry
        handler, even when the server turns sampling retries off."""
        body: Dict[str, Any] = {"prompt": prompt._json()}
        if prompt_logprobs_last_n is not None:
            body["prompt_logprobs_last_n"] = int(prompt_logprobs_last_n)
        return self._submit_sample(
            body,
            _typed_results.logprobs,
            "compute_logprobs",
            call=lib.tinkex_sampling_client_compute_logprobs,
            take_kind=_ffi.TAKE_LOGPROBS,
        )

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


def _unpickle_sampling_client(handle: str) -> SamplingClient:
    return SamplingClient.from_sampler_handle(handle)
