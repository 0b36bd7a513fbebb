"""Typed result handles of the hot operations (sample, compute_logprobs, forward,
forward_backward): the results are read through the C ABI's accessors (pointer + length
into memory owned by the result handle) instead of JSON text, and turned into the same
Python objects as the JSON path.

Copy out once: every array is copied out of the handle while building the result object
and the handle is freed right after, so the objects own plain Python lists / numpy arrays
and no object keeps library memory alive (views would tie a numpy array's lifetime to a C
handle that the GC frees in arbitrary order, for a saving that is small next to building
the Python objects themselves).

Values: token ids, tensors (numpy-backed ``TensorData``, float32 / int64) and metrics are
identical to the JSON path's. Per-token logprobs (``SampledSequence.logprobs``,
``prompt_logprobs``, compute_logprobs) are Python floats holding the exact float32 value,
where the JSON path gives the float nearest to its shortest decimal text: equal as float32
(``np.float32(a) == np.float32(b)``), not always as float64. ``None`` where the JSON has
``null`` (the library gives NaN there). Top-k logprob lists have no typed accessor: a
result that carries them is read as a whole from the handle's JSON.
"""

from __future__ import annotations

import ctypes
import json
from ctypes import byref, c_double, c_float, c_int32, c_int64, c_size_t, c_void_p
from typing import Any, List, Optional

import numpy as np

from . import _constants as K, _lib
from ._lib import lib

_STOP_REASONS = {K.STOP_REASON_LENGTH: "length", K.STOP_REASON_STOP: "stop"}


class TypedResult:
    """An owned typed result handle until a converter consumes it (``take``); freed on
    garbage collection otherwise (a result nobody asked for)."""

    __slots__ = ("ptr", "_free")

    def __init__(self, ptr: int, free: Any) -> None:
        self.ptr: Optional[int] = ptr
        self._free = free

    def take(self) -> int:
        ptr, self.ptr = self.ptr, None
        if not ptr:
            raise RuntimeError("tinkex: this typed result was already read")
        return ptr

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            try:
                self._free(ptr)
            except Exception:  # interpreter teardown
                pass


def _check(status: int, err: c_void_p) -> None:
    if status != K.STATUS_OK:
        from ._ffi import ErrorInfo

        raise ErrorInfo.take(status, err.value).exception()


def _ints(ptr: Optional[int], n: int) -> List[int]:
    return (c_int64 * n).from_address(ptr)[:] if n else []


def _floats(ptr: Optional[int], n: int) -> List[float]:
    return (c_float * n).from_address(ptr)[:] if n else []


def _nullable_floats(ptr: Optional[int], n: int) -> List[Optional[float]]:
    return [None if x != x else x for x in _floats(ptr, n)]


def _text(ptr: Optional[int], n: int) -> str:
    return ctypes.string_at(ptr, n).decode() if n else ""


def _array(ptr: Optional[int], n: int, dtype: Any) -> np.ndarray:
    if not n:
        return np.empty(0, dtype=dtype)
    ctype = c_int64 if dtype == np.int64 else c_float
    return np.frombuffer((ctype * n).from_address(ptr), dtype=dtype).copy()


def _tensor(t: Optional[int]) -> Any:
    """A ``TensorData`` copied out of a borrowed ``tinkex_tensor`` (None for NULL)."""
    from .types import TensorData

    if not t:
        return None
    err = c_void_p()
    data, n = c_void_p(), c_size_t()
    _check(lib.tinkex_tensor_data(t, byref(data), byref(n), byref(err)), err)
    int64 = lib.tinkex_tensor_dtype(t) == K.DTYPE_INT64
    arr = _array(data.value, n.value, np.int64 if int64 else np.float32)
    shape, ndim = c_void_p(), c_size_t()
    _check(lib.tinkex_tensor_shape(t, byref(shape), byref(ndim), byref(err)), err)
    crow, ncrow, col, ncol = c_void_p(), c_size_t(), c_void_p(), c_size_t()
    _check(
        lib.tinkex_tensor_sparse_indices(t, byref(crow), byref(ncrow), byref(col), byref(ncol), byref(err)),
        err,
    )
    return TensorData(
        data=arr,
        dtype="int64" if int64 else "float32",
        shape=_ints(shape.value, ndim.value) if shape.value else None,
        sparse_crow_indices=_ints(crow.value, ncrow.value) if crow.value else None,
        sparse_col_indices=_ints(col.value, ncol.value) if col.value else None,
    )


def _json_of(fn: Any, ptr: int) -> Any:
    out, err = c_void_p(), c_void_p()
    _check(fn(ptr, byref(out), byref(err)), err)
    return json.loads(_lib.take_bytes(out.value))


def sample_response(raw: TypedResult) -> Any:
    """``SampleResponse`` from a ``tinkex_sample_result`` (consumed)."""
    from .types import PromptAltTokens, SampledSequence, SampleResponse

    ptr = raw.take()
    try:
        n = lib.tinkex_sample_result_num_sequences(ptr)
        if lib.tinkex_sample_result_has_topk_prompt_logprobs(ptr) or any(
            lib.tinkex_sample_result_has_topk(ptr, i) for i in range(n)
        ):
            return SampleResponse._from_json(_json_of(lib.tinkex_sample_result_to_json, ptr))
        err = c_void_p()
        data, length, reason = c_void_p(), c_size_t(), c_int32()
        sequences = []
        for i in range(n):
            _check(lib.tinkex_sample_result_tokens(ptr, i, byref(data), byref(length), byref(err)), err)
            tokens = _ints(data.value, length.value)
            _check(lib.tinkex_sample_result_logprobs(ptr, i, byref(data), byref(length), byref(err)), err)
            logprobs = _floats(data.value, length.value) if data.value else None
            _check(lib.tinkex_sample_result_stop_reason(ptr, i, byref(reason), byref(err)), err)
            _check(lib.tinkex_sample_result_sequence_id(ptr, i, byref(data), byref(length), byref(err)), err)
            sequence_id = _text(data.value, length.value) if data.value else None
            sequences.append(
                SampledSequence(
                    stop_reason=_STOP_REASONS.get(reason.value, "stop"),
                    tokens=tokens,
                    logprobs=logprobs,
                    topk_logprobs=None,
                    sequence_id=sequence_id,
                )
            )
        _check(lib.tinkex_sample_result_prompt_logprobs(ptr, byref(data), byref(length), byref(err)), err)
        prompt_logprobs = _nullable_floats(data.value, length.value) if data.value else None
        target = c_void_p()
        _check(lib.tinkex_sample_result_target_prompt_logprobs(ptr, byref(target), byref(err)), err)
        alt_tokens, alt_logprobs = c_void_p(), c_void_p()
        _check(lib.tinkex_sample_result_prompt_alt_tokens(ptr, byref(alt_tokens), byref(alt_logprobs), byref(err)), err)
        return SampleResponse(
            sequences=sequences,
            prompt_logprobs=prompt_logprobs,
            topk_prompt_logprobs=None,
            prompt_cache_hit_tokens=int(lib.tinkex_sample_result_prompt_cache_hit_tokens(ptr)),
            target_prompt_logprobs=_tensor(target.value),
            prompt_alt_tokens=(
                PromptAltTokens(tokens=_tensor(alt_tokens.value), logprobs=_tensor(alt_logprobs.value))
                if alt_tokens.value
                else None
            ),
        )
    finally:
        lib.tinkex_sample_result_free(ptr)


def logprobs(raw: TypedResult) -> List[Optional[float]]:
    """compute_logprobs' list (``None`` at position 0 and unscored positions) from a
    ``tinkex_logprobs_result`` (consumed)."""
    ptr = raw.take()
    try:
        return _nullable_floats(lib.tinkex_logprobs_result_data(ptr), lib.tinkex_logprobs_result_len(ptr))
    finally:
        lib.tinkex_logprobs_result_free(ptr)


def forward_output(raw: TypedResult) -> Any:
    """``ForwardBackwardOutput`` from a ``tinkex_forward_result`` (consumed)."""
    from .types import ForwardBackwardOutput

    ptr = raw.take()
    try:
        err = c_void_p()
        name, name_len, tensor, count = c_void_p(), c_size_t(), c_void_p(), c_size_t()
        _check(lib.tinkex_forward_result_output_type(ptr, byref(name), byref(name_len), byref(err)), err)
        output_type = _text(name.value, name_len.value)
        outputs = []
        for d in range(lib.tinkex_forward_result_num_datums(ptr)):
            _check(lib.tinkex_forward_result_num_outputs(ptr, d, byref(count), byref(err)), err)
            one = {}
            for i in range(count.value):
                _check(
                    lib.tinkex_forward_result_output_at(
                        ptr, d, i, byref(name), byref(name_len), byref(tensor), byref(err)
                    ),
                    err,
                )
                one[_text(name.value, name_len.value)] = _tensor(tensor.value)
            outputs.append(one)
        metrics = {}
        value = c_double()
        for i in range(lib.tinkex_forward_result_num_metrics(ptr)):
            _check(
                lib.tinkex_forward_result_metric_at(ptr, i, byref(name), byref(name_len), byref(value), byref(err)),
                err,
            )
            metrics[_text(name.value, name_len.value)] = float(value.value)
        return ForwardBackwardOutput(loss_fn_output_type=output_type, loss_fn_outputs=outputs, metrics=metrics)
    finally:
        lib.tinkex_forward_result_free(ptr)
