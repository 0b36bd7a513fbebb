"""Datum batches for the C ABI's typed-array path (``tinkex_datum_batch``): numpy buffers
are copied once, into the library, instead of being encoded as JSON."""

from __future__ import annotations

from ctypes import byref, c_int64, c_void_p
from typing import Sequence

import numpy as np

from . import _ffi, _lib
from ._ffi import Handle, check
from ._lib import lib
from .types import Datum

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
    _ffi.stats["bulk_batches"] += 1
    _ffi.stats["bulk_datums"] += len(data)
    return batch

