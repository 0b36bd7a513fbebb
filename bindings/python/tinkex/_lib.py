"""Loading libtinkex and declaring its C ABI (include/tinkex.h) for ctypes.

Library discovery, first match wins:

1. ``TINKEX_LIBRARY``: the path of the shared library (or of a directory holding it). When
   set, nothing else is tried;
2. bundled in the package: ``tinkex/libtinkex.so``, put there by setup.py (every wheel
   ``pip install``/``pip wheel`` builds, unless ``TINKEX_BUNDLE_LIBRARY=0``). This is the
   first place an installed package looks, ``TINKEX_LIBRARY`` aside;
3. the source checkout this package file sits in, i.e. this file is
   ``<workspace>/bindings/python/tinkex/_lib.py`` (its own location, symlinks resolved), and
   ``<workspace>`` holds ``Cargo.toml`` and ``include/tinkex.h``:
   ``target/release/libtinkex.so``, then ``target/debug/libtinkex.so``;
4. the workspace the package was built from, recorded by setup.py at install time by a
   build without the library (``tinkex/_build_info.py``; an absolute path holding the same
   two files): the same two library paths;
5. the system's library search path (``ctypes.util.find_library("tinkex")``, then dlopen's own
   search: ``LD_LIBRARY_PATH``, the ld.so cache, the default directories). These are chosen
   by the administrator or by whoever set the process's environment, like the search path
   of every other shared library the interpreter loads.

Nothing is looked up relative to the current working directory or to the parents of the
package's location: a library planted there (e.g. ``./target/release/libtinkex.so`` in a
downloaded project, or ``/tmp/target/...`` above a virtualenv in ``/tmp``) would otherwise run
its code at ``import tinkex``. Only an explicit, relative ``TINKEX_LIBRARY`` is resolved
against the working directory, because the user asked for it.

At import the library's ABI version (``tinkex_abi_version_major()``,
``tinkex_abi_version_minor()``) must have the major of :data:`ABI_VERSION`, the C ABI
revision this package was written for, and at least its minor; otherwise the import fails
with :class:`LibraryError` naming both versions and the library's path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_double,
    c_int32,
    c_int64,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path

from ._constants import ABI_VERSION_MAJOR, ABI_VERSION_MINOR

_LIB_NAMES = {
    "linux": "libtinkex.so",
    "darwin": "libtinkex.dylib",
    "win32": "tinkex.dll",
}
LIB_FILE = _LIB_NAMES.get(sys.platform, "libtinkex.so")


class LibraryError(ImportError):
    """libtinkex could not be found or loaded, or its ABI revision does not match."""


# The status, event-kind, dtype and log-level numbers are in ``_constants`` (generated from
# include/tinkex.h by tools/gen_constants.py; tests/test_constants.py checks every value).
#: The C ABI revision (``TINKEX_ABI_VERSION_MAJOR``, ``TINKEX_ABI_VERSION_MINOR`` of
#: include/tinkex.h) this package targets: a library of the same major and at least this
#: minor is accepted.
ABI_VERSION = (ABI_VERSION_MAJOR, ABI_VERSION_MINOR)


class RuntimeOptions(Structure):
    """``tinkex_runtime_options``."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("worker_threads", c_uint32),
        ("log_level", c_int32),
    ]


class SampleParams(Structure):
    """``tinkex_sample_params`` (the typed sample submit's scalar fields)."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("num_samples", c_uint32),
        ("max_tokens", c_int64),
        ("seed", c_int64),
        ("has_seed", c_bool),
        ("prompt_logprobs", c_bool),
        ("temperature", c_double),
        ("top_k", c_int64),
        ("top_p", c_double),
        ("topk_prompt_logprobs", c_uint32),
        ("topk_sample_logprobs", c_uint32),
        ("prompt_logprobs_last_n", c_uint32),
        ("prompt_alt_tokens_k", c_uint32),
    ]


#: ``void (*tinkex_done_fn)(void *user_data, tinkex_future *fut)``
DONE_FN = CFUNCTYPE(None, c_void_p, c_void_p)
#: ``void (*tinkex_event_fn)(void *user_data, const tinkex_event *ev)``
EVENT_FN = CFUNCTYPE(None, c_void_p, c_void_p)
#: ``void (*tinkex_free_fn)(void *user_data)``
FREE_FN = CFUNCTYPE(None, c_void_p)
#: ``void (*tinkex_log_fn)(void *user_data, tinkex_log_level level, const uint8_t *target,
#: size_t target_len, const uint8_t *message, size_t message_len)``
LOG_FN = CFUNCTYPE(None, c_void_p, c_int32, c_void_p, c_size_t, c_void_p, c_size_t)

_P = c_void_p  # every opaque handle
_PP = POINTER(c_void_p)  # every out-handle / out_err
_BUF = c_void_p  # (const uint8_t *) inputs: passed as bytes or an address
_ST = c_int32  # tinkex_status

# name: (restype, argtypes)
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    # bytes
    "tinkex_bytes_data": (c_void_p, [_P]),
    "tinkex_bytes_len": (c_size_t, [_P]),
    "tinkex_bytes_free": (None, [_P]),
    # custom loss (forward_backward_custom)
    "tinkex_training_client_forward_backward_custom": (_ST, [_P, _P, DONE_FN, c_void_p, _PP, _PP, _PP]),
    "tinkex_custom_loss_set_metrics": (_ST, [_P, _BUF, c_size_t, _PP]),
    "tinkex_custom_loss_backward": (_ST, [_P, _P, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_custom_loss_abort": (_ST, [_P, _BUF, c_size_t, _PP]),
    "tinkex_custom_loss_free": (None, [_P]),
    # datum batch
    "tinkex_datum_batch_new": (_ST, [_PP, _PP]),
    "tinkex_datum_batch_clone": (_P, [_P]),
    "tinkex_datum_batch_push_json": (_ST, [_P, _BUF, c_size_t, _PP]),
    "tinkex_datum_batch_push": (_ST, [_P, c_void_p, c_size_t, c_int32, _PP]),
    "tinkex_datum_batch_set_loss_input": (
        _ST,
        [_P, _BUF, c_size_t, c_void_p, c_size_t, c_int32, POINTER(c_int64), c_size_t, _PP],
    ),
    "tinkex_datum_batch_len": (c_size_t, [_P]),
    "tinkex_datum_batch_free": (None, [_P]),
    # errors
    "tinkex_error_status": (_ST, [_P]),
    "tinkex_error_kind": (c_char_p, [_P]),
    "tinkex_error_message": (c_char_p, [_P]),
    "tinkex_error_http_status": (c_uint16, [_P]),
    "tinkex_error_is_retryable": (c_bool, [_P]),
    "tinkex_error_request_id": (c_char_p, [_P]),
    "tinkex_error_category": (c_char_p, [_P]),
    "tinkex_error_body": (c_char_p, [_P]),
    "tinkex_error_free": (None, [_P]),
    # events
    "tinkex_service_client_subscribe": (_ST, [_P, EVENT_FN, c_void_p, FREE_FN, _PP, _PP]),
    "tinkex_subscription_free": (None, [_P]),
    "tinkex_event_get_kind": (c_int32, [_P]),
    "tinkex_event_json": (c_void_p, [_P, POINTER(c_size_t)]),
    "tinkex_event_request_id": (c_char_p, [_P]),
    # typed results (sample, compute_logprobs, forward / forward_backward)
    "tinkex_sampling_client_sample_tokens": (
        _ST,
        [_P, c_void_p, c_size_t, c_int32, POINTER(SampleParams), _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_sample_params_default": (SampleParams, []),
    "tinkex_future_take_sample_result": (_ST, [_P, _PP, _PP]),
    "tinkex_future_take_logprobs_result": (_ST, [_P, _PP, _PP]),
    "tinkex_future_take_forward_result": (_ST, [_P, _PP, _PP]),
    "tinkex_sample_result_num_sequences": (c_size_t, [_P]),
    "tinkex_sample_result_tokens": (_ST, [_P, c_size_t, _PP, POINTER(c_size_t), _PP]),
    "tinkex_sample_result_logprobs": (_ST, [_P, c_size_t, _PP, POINTER(c_size_t), _PP]),
    "tinkex_sample_result_stop_reason": (_ST, [_P, c_size_t, POINTER(c_int32), _PP]),
    "tinkex_sample_result_sequence_id": (_ST, [_P, c_size_t, _PP, POINTER(c_size_t), _PP]),
    "tinkex_sample_result_has_topk": (c_bool, [_P, c_size_t]),
    "tinkex_sample_result_prompt_logprobs": (_ST, [_P, _PP, POINTER(c_size_t), _PP]),
    "tinkex_sample_result_has_topk_prompt_logprobs": (c_bool, [_P]),
    "tinkex_sample_result_prompt_cache_hit_tokens": (c_int64, [_P]),
    "tinkex_sample_result_target_prompt_logprobs": (_ST, [_P, _PP, _PP]),
    "tinkex_sample_result_prompt_alt_tokens": (_ST, [_P, _PP, _PP, _PP]),
    "tinkex_sample_result_to_json": (_ST, [_P, _PP, _PP]),
    "tinkex_sample_result_free": (None, [_P]),
    "tinkex_logprobs_result_data": (c_void_p, [_P]),
    "tinkex_logprobs_result_len": (c_size_t, [_P]),
    "tinkex_logprobs_result_to_json": (_ST, [_P, _PP, _PP]),
    "tinkex_logprobs_result_free": (None, [_P]),
    "tinkex_forward_result_output_type": (_ST, [_P, _PP, POINTER(c_size_t), _PP]),
    "tinkex_forward_result_num_datums": (c_size_t, [_P]),
    "tinkex_forward_result_num_outputs": (_ST, [_P, c_size_t, POINTER(c_size_t), _PP]),
    "tinkex_forward_result_output_at": (_ST, [_P, c_size_t, c_size_t, _PP, POINTER(c_size_t), _PP, _PP]),
    "tinkex_forward_result_output": (_ST, [_P, c_size_t, _BUF, c_size_t, _PP, _PP]),
    "tinkex_forward_result_num_metrics": (c_size_t, [_P]),
    "tinkex_forward_result_metric_at": (_ST, [_P, c_size_t, _PP, POINTER(c_size_t), POINTER(c_double), _PP]),
    "tinkex_forward_result_to_json": (_ST, [_P, _PP, _PP]),
    "tinkex_forward_result_free": (None, [_P]),
    "tinkex_tensor_dtype": (c_int32, [_P]),
    "tinkex_tensor_data": (_ST, [_P, _PP, POINTER(c_size_t), _PP]),
    "tinkex_tensor_shape": (_ST, [_P, _PP, POINTER(c_size_t), _PP]),
    "tinkex_tensor_sparse_indices": (_ST, [_P, _PP, POINTER(c_size_t), _PP, POINTER(c_size_t), _PP]),
    # futures
    "tinkex_future_take_result": (_ST, [_P, _PP, _PP]),
    "tinkex_future_take_training_client": (_ST, [_P, _PP, _PP]),
    "tinkex_future_take_sampling_client": (_ST, [_P, _PP, _PP]),
    "tinkex_future_is_done": (c_bool, [_P]),
    "tinkex_future_request_id": (_ST, [_P, _PP, _PP]),
    "tinkex_future_cancel": (_ST, [_P]),
    "tinkex_future_wait": (_ST, [_P, c_uint64, _PP]),
    "tinkex_future_clone": (_P, [_P]),
    "tinkex_future_free": (None, [_P]),
    # REST and admin clients (generic calls by method name, src/core/rest/methods.json)
    "tinkex_rest_client_new": (_ST, [_P, _BUF, c_size_t, _PP, _PP]),
    "tinkex_rest_client_call": (_ST, [_P, _BUF, c_size_t, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_rest_client_clone": (_P, [_P]),
    "tinkex_rest_client_free": (None, [_P]),
    "tinkex_admin_client_new": (_ST, [_P, _BUF, c_size_t, _PP, _PP]),
    "tinkex_admin_client_call": (_ST, [_P, _BUF, c_size_t, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_admin_client_clone": (_P, [_P]),
    "tinkex_admin_client_free": (None, [_P]),
    # runtime
    "tinkex_runtime_options_default": (RuntimeOptions, []),
    "tinkex_runtime_new": (_ST, [POINTER(RuntimeOptions), _PP, _PP]),
    "tinkex_runtime_clone": (_P, [_P]),
    "tinkex_runtime_shutdown": (_ST, [_P, c_uint64, _PP]),
    "tinkex_runtime_free": (None, [_P]),
    "tinkex_runtime_set_log_sink": (_ST, [_P, LOG_FN, c_void_p, FREE_FN, c_int32, _PP]),
    # paths
    "tinkex_tinker_path_parse": (_ST, [_BUF, c_size_t, _PP, _PP]),
    # sampling client
    "tinkex_sampling_client_clone": (_P, [_P]),
    "tinkex_sampling_client_free": (None, [_P]),
    "tinkex_sampling_client_get_info": (_ST, [_P, _PP, _PP]),
    "tinkex_sampling_client_sample": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_sampling_client_compute_logprobs": (
        _ST,
        [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_sampling_client_get_sampler_handle": (_ST, [_P, _PP, _PP]),
    "tinkex_sampling_client_from_sampler_handle": (_ST, [_P, _BUF, c_size_t, _BUF, c_size_t, _PP, _PP]),
    "tinkex_sampling_client_status": (_ST, [_P, _PP, _PP]),
    # service client
    "tinkex_service_client_new": (_ST, [_P, _BUF, c_size_t, _PP, _PP]),
    "tinkex_service_client_clone": (_P, [_P]),
    "tinkex_service_client_free": (None, [_P]),
    "tinkex_service_client_session_id": (_ST, [_P, _PP, _PP]),
    "tinkex_service_client_get_server_capabilities": (_ST, [_P, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_service_client_create_lora_training_client": (
        _ST,
        [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_service_client_create_training_client_from_state": (
        _ST,
        [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_service_client_create_sampling_client": (
        _ST,
        [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_service_client_create_rest_client": (_ST, [_P, _PP, _PP]),
    "tinkex_service_client_close": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_service_client_copy_weights": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_service_client_create_custom_loss": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_service_client_resume_training_run": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_service_client_get_console_url": (_ST, [_P, _PP, _PP]),
    "tinkex_service_client_status": (_ST, [_P, _PP, _PP]),
    "tinkex_status_name": (c_char_p, [c_int32]),
    # training client
    "tinkex_training_client_clone": (_P, [_P]),
    "tinkex_training_client_free": (None, [_P]),
    "tinkex_training_client_get_info": (_ST, [_P, _PP, _PP]),
    "tinkex_training_client_forward_backward": (
        _ST,
        [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_training_client_forward": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_training_client_forward_backward_batch": (
        _ST,
        [_P, _P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_training_client_forward_batch": (
        _ST,
        [_P, _P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_training_client_optim_step": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_training_client_save_state": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_training_client_save_weights_for_sampler": (
        _ST,
        [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_training_client_save_weights_and_get_sampling_client": (
        _ST,
        [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP],
    ),
    "tinkex_training_client_save_weights_external": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_training_client_get_console_url": (_ST, [_P, _PP, _PP]),
    "tinkex_training_client_status": (_ST, [_P, _PP, _PP]),
    "tinkex_training_client_load_state": (_ST, [_P, _BUF, c_size_t, DONE_FN, c_void_p, _PP, _PP]),
    # test-only exports (cargo feature `testing`): bound when present
    "tinkex_testing_panic_in_export": (_ST, [_PP]),
    "tinkex_testing_panic_in_task": (_ST, [_P, c_int32, DONE_FN, c_void_p, _PP, _PP]),
    "tinkex_testing_log": (_ST, [c_int32, _BUF, c_size_t, _PP]),
    # version
    "tinkex_version": (c_char_p, []),
    "tinkex_version_number": (c_uint32, []),
    "tinkex_abi_version_major": (c_uint32, []),
    "tinkex_abi_version_minor": (c_uint32, []),
}

#: Symbols the package can do without (exports of later minor versions, test-only exports).
_OPTIONAL: set[str] = {"tinkex_testing_panic_in_export", "tinkex_testing_panic_in_task", "tinkex_testing_log"}



def _is_workspace(d: Path) -> bool:
    """A libtinkex source tree (the markers setup.py looks for too)."""
    return (d / "Cargo.toml").is_file() and (d / "include" / "tinkex.h").is_file()


def _workspace_libs(origin: str, ws: Path) -> list[tuple[str, Path]]:
    return [(f"{origin} target/{profile}", ws / "target" / profile / LIB_FILE) for profile in ("release", "debug")]


def _candidates() -> list[tuple[str, Path]]:
    """Where to look for the library, in order, as (origin, path). Never derived from the
    current working directory (see the module docstring)."""
    out: list[tuple[str, Path]] = []
    env = os.environ.get("TINKEX_LIBRARY")
    if env:
        # Made absolute here: dlopen() would search the system path for a bare file name
        # instead of loading the file that was checked.
        p = Path(env).expanduser().absolute()
        out.append(("TINKEX_LIBRARY", p / LIB_FILE if p.is_dir() else p))
        return out  # an explicit choice is never second-guessed
    here = Path(__file__).resolve().parent  # .../tinkex
    out.append(("bundled in the package", here / LIB_FILE))
    # A source checkout: exactly <workspace>/bindings/python/tinkex, no walk up the parents.
    if here.parent.name == "python" and here.parent.parent.name == "bindings":
        ws = here.parent.parent.parent
        if _is_workspace(ws):
            out.extend(_workspace_libs("source checkout", ws))
    try:  # written by setup.py: the workspace an installed copy was built from
        from ._build_info import WORKSPACE  # type: ignore[import-not-found]
    except ImportError:
        WORKSPACE = None
    if WORKSPACE:
        ws = Path(WORKSPACE)
        # Only an absolute path: a relative one would depend on the working directory.
        if ws.is_absolute() and _is_workspace(ws):
            out.extend(_workspace_libs("build workspace", ws))
    return out


def _load() -> tuple[ctypes.CDLL, str]:
    tried: list[str] = []
    for origin, path in _candidates():
        if path.is_file():
            try:
                return ctypes.CDLL(str(path)), str(path)
            except OSError as e:
                raise LibraryError(f"tinkex: cannot load {path} ({origin}): {e}") from e
        tried.append(f"{path} ({origin})")
    if not os.environ.get("TINKEX_LIBRARY"):
        # The system's search path (ld.so cache, default directories, LD_LIBRARY_PATH): set by
        # the administrator or the process's environment, as for every other shared library.
        found = ctypes.util.find_library("tinkex")
        if found:
            try:
                return ctypes.CDLL(found), found
            except OSError as e:
                raise LibraryError(f"tinkex: cannot load {found} (system path): {e}") from e
        tried.append("the system library path (ctypes.util.find_library('tinkex'))")
    raise LibraryError(
        "tinkex: libtinkex was not found. `pip install ./bindings/python` in the libtinkex "
        "workspace builds it and bundles it into the package; or build it with `cargo build "
        "--release --lib` there, or set TINKEX_LIBRARY to the library's path. The current "
        "directory is never searched. "
        "Looked in:\n  "
        + "\n  ".join(tried)
    )


def _declare(lib: ctypes.CDLL) -> None:
    missing = []
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            if name not in _OPTIONAL:
                missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise LibraryError(
            f"tinkex: {LIBRARY_PATH} lacks {len(missing)} export(s) this package needs: "
            + ", ".join(missing)
        )


lib, LIBRARY_PATH = _load()


def _abi_of(library: ctypes.CDLL) -> tuple[int, int]:
    try:
        major, minor = library.tinkex_abi_version_major, library.tinkex_abi_version_minor
    except AttributeError as e:  # an ABI 1 library (tinkex_abi_version only) or not libtinkex
        old = getattr(library, "tinkex_abi_version", None)
        if old is not None:
            old.restype, old.argtypes = c_uint32, []
            return int(old()), 0
        raise LibraryError(f"tinkex: {LIBRARY_PATH} does not export tinkex_abi_version_major") from e
    for fn in (major, minor):
        fn.restype, fn.argtypes = c_uint32, []
    return int(major()), int(minor())


LIBRARY_ABI_VERSION = _abi_of(lib)
if LIBRARY_ABI_VERSION[0] != ABI_VERSION[0] or LIBRARY_ABI_VERSION[1] < ABI_VERSION[1]:
    raise LibraryError(
        f"tinkex: ABI mismatch: {LIBRARY_PATH} has C ABI version "
        f"{LIBRARY_ABI_VERSION[0]}.{LIBRARY_ABI_VERSION[1]}, but this Python package needs "
        f"{ABI_VERSION[0]}.x with x >= {ABI_VERSION[1]}. Install the tinkex Python package from "
        "the same libtinkex source tree as the library, or point TINKEX_LIBRARY at a matching "
        "build."
    )
_declare(lib)

LIBRARY_VERSION: str = lib.tinkex_version().decode()


def status_name(status: int) -> str:
    return lib.tinkex_status_name(int(status)).decode()


def take_bytes(ptr: int | None) -> bytes:
    """Copies a ``tinkex_bytes`` into Python bytes and frees it."""
    if not ptr:
        return b""
    try:
        n = lib.tinkex_bytes_len(ptr)
        data = lib.tinkex_bytes_data(ptr)
        return ctypes.string_at(data, n) if n else b""
    finally:
        lib.tinkex_bytes_free(ptr)
