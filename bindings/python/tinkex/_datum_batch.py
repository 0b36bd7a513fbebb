"""Datum batches (``tinkex_datum_batch``): every forward/backward request hands its datums to
the library in one batch. A datum whose model input is a single token chunk and whose loss
inputs are dense goes in as typed arrays (numpy buffers copied once, into the library; no
JSON text for the numbers); any other datum (several chunks, images, sparse tensors) as its
JSON (``tinkex_datum_batch_push_json``). The library turns both into the same request."""

from __future__ import annotations

from ctypes import byref, c_int64, c_void_p
from typing import Sequence

import numpy as np

from . import _constants as K
from . import _ffi
from ._ffi import Handle, check, json_bytes
from ._lib import lib
from .types import Datum

_DTYPE_CODES = {
    np.dtype(np.int64): K.DTYPE_INT64,
    np.dtype(np.int32): K.DTYPE_INT32,
    np.dtype(np.float32): K.DTYPE_FLOAT32,
    np.dtype(np.float64): K.DTYPE_FLOAT64,
}


def _new() -> Handle:
    out = c_void_p()
    err = c_void_p()
    check(lib.tinkex_datum_batch_new(byref(out), byref(err)), err)
    return Handle(out.value, lib.tinkex_datum_batch_free, "datum batch")


def _set_input(bptr: int, name: str, arr: np.ndarray, code: int, shape: Sequence[int]) -> None:
    err = c_void_p()
    ndim = len(shape)
    shape_arr = (c_int64 * max(ndim, 1))(*shape)
    nb = name.encode()
    status = lib.tinkex_datum_batch_set_loss_input(
        bptr, nb, len(nb), arr.ctypes.data if arr.size else None, arr.size, code, shape_arr, ndim, byref(err)
    )
    check(status, err)


def _push_typed(bptr: int, d: Datum) -> bool:
    """Appends ``d`` as typed arrays; False (nothing appended) when it has no such form."""
    toks = d.model_input._bulk_tokens()
    if toks is None or any(td.sparse_crow_indices is not None for td in d.loss_fn_inputs.values()):
        return False
    err = c_void_p()
    status = lib.tinkex_datum_batch_push(bptr, toks.ctypes.data if toks.size else None, toks.size, _DTYPE_CODES[toks.dtype], byref(err))
    check(status, err)
    for name, td in d.loss_fn_inputs.items():
        arr = td._numpy
        code = _DTYPE_CODES.get(arr.dtype)
        if code is None:
            arr = arr.astype(np.float32 if td.dtype == "float32" else np.int64)
            code = _DTYPE_CODES[arr.dtype]
        arr = np.ascontiguousarray(arr)
        _set_input(bptr, name, arr, code, td.shape if td.shape is not None else list(arr.shape))
    return True


def build(data: Sequence[Datum]) -> Handle:
    """A batch of ``data`` (copied now: later changes to the arrays do not leak in). The
    caller frees it (``close()``) once the submit call returned: submits borrow it."""
    batch = _new()
    typed = 0
    with batch.use() as bptr:
        for d in data:
            if _push_typed(bptr, d):
                typed += 1
                continue
            body = json_bytes(d._json())
            err = c_void_p()
            check(lib.tinkex_datum_batch_push_json(bptr, body, len(body), byref(err)), err)
    _ffi.stats["batches"] += 1
    _ffi.stats["typed_datums"] += typed
    _ffi.stats["json_datums"] += len(data) - typed
    return batch


def build_grads(grads: Sequence[np.ndarray]) -> Handle:
    """The gradient batch of ``tinkex_custom_loss_backward``: per datum no tokens and the
    loss input ``grads`` (``dLoss/dlogprobs``, float64, the shape of its logprobs)."""
    batch = _new()
    empty = np.empty(0, dtype=np.int64)
    with batch.use() as bptr:
        for g in grads:
            err = c_void_p()
            check(lib.tinkex_datum_batch_push(bptr, None, 0, _DTYPE_CODES[empty.dtype], byref(err)), err)
            arr = np.ascontiguousarray(g, dtype=np.float64)
            _set_input(bptr, "grads", arr, K.DTYPE_FLOAT64, list(arr.shape))
    return batch
