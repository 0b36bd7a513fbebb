"""SamplingClient: sampling and prompt logprobs from a base model or saved sampler weights
(the official SDK's names and signatures)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

from . import _ffi
from ._api_future import APIFuture
from ._client_common import _buf, _load_tokenizer, _sync_json, _unsupported
from ._ffi import Handle, json_bytes, parse_json
from ._lib import lib
from .types import ModelInput, QueueState, SampleResponse, SamplingParams, TensorData

if TYPE_CHECKING:
    from ._service_client import ServiceClient


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
            state = _ffi.submit(call or lib.tinkex_sampling_client_sample, ptr, data, n, converter=converter, label=label)
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
        """Log-probability of every prompt token (None at position 0), or of only the last
        ``prompt_logprobs_last_n`` (earlier entries None). Always retried by the sampling retry
        handler, even when the server turns sampling retries off."""
        body: Dict[str, Any] = {"prompt": prompt._json()}
        if prompt_logprobs_last_n is not None:
            body["prompt_logprobs_last_n"] = int(prompt_logprobs_last_n)
        return self._submit_sample(
            body,
            lambda raw: parse_json(raw),
            "compute_logprobs",
            call=lib.tinkex_sampling_client_compute_logprobs,
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

