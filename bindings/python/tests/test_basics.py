"""Import, library discovery, the ABI check, types."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinkex
from tinkex import types


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=60)


def test_abi_and_version():
    from tinkex import _constants, _lib

    assert tinkex.ABI_VERSION == (_constants.ABI_VERSION_MAJOR, _constants.ABI_VERSION_MINOR)
    assert _lib.lib.tinkex_abi_version_major() == tinkex.ABI_VERSION[0]
    assert _lib.lib.tinkex_abi_version_minor() >= tinkex.ABI_VERSION[1]
    assert Path(tinkex.LIBRARY_PATH).is_file()
    assert tinkex.LIBRARY_VERSION.count(".") == 2
    assert _lib.status_name(101) == "TINKEX_STATUS_INVALID_ARG"


def test_library_from_env_var_file_and_dir(tmp_path):
    lib = Path(tinkex.LIBRARY_PATH)
    for value in (str(lib), str(lib.parent)):
        r = _run("import tinkex; print(tinkex.LIBRARY_PATH)", {"TINKEX_LIBRARY": value})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(lib)


def test_missing_library_is_a_clear_error(tmp_path):
    r = _run("import tinkex", {"TINKEX_LIBRARY": str(tmp_path / "nope.so")})
    assert r.returncode != 0
    assert "LibraryError" in r.stderr and "libtinkex was not found" in r.stderr
    assert "TINKEX_LIBRARY" in r.stderr


def _load_lib_expecting(major: int, minor: int) -> subprocess.CompletedProcess:
    """Runs the binding's loader in a subprocess, as written for ABI ``major.minor``."""
    from tinkex import _lib

    line = "from ._constants import ABI_VERSION_MAJOR, ABI_VERSION_MINOR\n"
    src = Path(_lib.__file__).read_text()
    assert line in src
    src = src.replace(line, f"ABI_VERSION_MAJOR, ABI_VERSION_MINOR = {major}, {minor}\n", 1)
    code = (
        "import types, sys\n"
        "m = types.ModuleType('tinkex_lib_probe')\n"
        f"m.__file__ = {_lib.__file__!r}\n"
        "sys.modules['tinkex_lib_probe'] = m\n"
        f"exec(compile({src!r}, 'probe', 'exec'), m.__dict__)\n"
        "print('loaded', m.LIBRARY_ABI_VERSION)\n"
    )
    # The probe is not inside the package (no _build_info, not a checkout): name the library.
    return _run(code, {"TINKEX_LIBRARY": tinkex.LIBRARY_PATH})


def test_abi_mismatch_is_a_clear_error():
    from tinkex import _lib

    major, minor = _lib.LIBRARY_ABI_VERSION
    # Another major: refused, naming both versions.
    r = _load_lib_expecting(major + 997, 0)
    assert r.returncode != 0
    assert "ABI mismatch" in r.stderr and f"version {major}.{minor}" in r.stderr and f"needs {major + 997}.x" in r.stderr
    # A newer minor than the library's: refused (the package may call what the library lacks).
    r = _load_lib_expecting(major, minor + 1)
    assert r.returncode != 0 and "ABI mismatch" in r.stderr, r.stderr
    # An older minor: accepted (additions only).
    if minor > 0:
        r = _load_lib_expecting(major, minor - 1)
        assert r.returncode == 0 and "loaded" in r.stdout, r.stderr
    r = _load_lib_expecting(major, minor)
    assert r.returncode == 0 and "loaded" in r.stdout, r.stderr


def test_public_names_match_the_official_sdk():
    for name in [
        "ServiceClient",
        "TrainingClient",
        "SamplingClient",
        "RestClient",
        "APIFuture",
        "TinkerError",
        "APIError",
        "APIStatusError",
        "APITimeoutError",
        "APIConnectionError",
        "APIResponseValidationError",
        "RequestFailedError",
        "BadRequestError",
        "AuthenticationError",
        "BillingError",
        "PermissionDeniedError",
        "NotFoundError",
        "ConflictError",
        "UnprocessableEntityError",
        "RateLimitError",
        "InternalServerError",
        "AdamParams",
        "Datum",
        "ModelInput",
        "SamplingParams",
        "TensorData",
        "types",
    ]:
        assert hasattr(tinkex, name), name
    assert issubclass(tinkex.APITimeoutError, tinkex.APIConnectionError)
    assert issubclass(tinkex.BadRequestError, tinkex.APIStatusError)
    assert issubclass(tinkex.APIStatusError, tinkex.APIError)
    assert issubclass(tinkex.RequestFailedError, tinkex.TinkerError)


def test_types_mirror_the_sdk():
    mi = types.ModelInput.from_ints([1, 2, 3])
    assert mi.to_ints() == [1, 2, 3] and mi.length == 3
    assert mi.append_int(4).to_ints() == [1, 2, 3, 4]
    d = types.Datum(model_input=mi, loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1, 1, 0]})
    assert d.loss_fn_inputs["target_tokens"].dtype == "int64"
    assert d.loss_fn_inputs["weights"].dtype == "float32"
    assert d.loss_fn_inputs["weights"].tolist() == [1.0, 1.0, 0.0]
    sp = types.SamplingParams(max_tokens=5, temperature=0.5)
    assert sp._json() == {"max_tokens": 5, "temperature": 0.5, "top_k": -1, "top_p": 1.0}
    assert types.AdamParams().learning_rate == 1e-4
    p = types.ParsedCheckpointTinkerPath.from_tinker_path("tinker://run/weights/ck")
    assert (p.training_run_id, p.checkpoint_type, p.checkpoint_id) == ("run", "training", "weights/ck")
    p = types.ParsedCheckpointTinkerPath.from_tinker_path("tinker://a:b:0/sampler_weights/s-1")
    assert (p.training_run_id, p.checkpoint_type, p.checkpoint_id) == ("a:b:0", "sampler", "sampler_weights/s-1")
    # The library's parser (tinkex_tinker_path_parse) says what is wrong, as a ValueError.
    for bad, why in [
        ("http://x/weights/a", "tinker://"),
        ("tinker://run/weights", "tinker://<training_run_id>"),
        ("tinker://run/checkpoints/a", "kind must be"),
        ("tinker://run/weights/..", "must not be"),
    ]:
        with pytest.raises(ValueError, match=why):
            types.ParsedCheckpointTinkerPath.from_tinker_path(bad)


def test_tensor_data_keeps_numpy_arrays_without_copy():
    a = np.arange(10, dtype=np.int64)
    td = types.TensorData.from_numpy(a)
    assert td._numpy is a
    f = np.ones(4, dtype=np.float32)
    d = types.Datum(model_input=types.ModelInput.from_ints(a), loss_fn_inputs={"weights": f})
    assert d.loss_fn_inputs["weights"]._numpy is f
    assert d.model_input.chunks[0].tokens is a
    assert types.TensorData(data=[1.5, 2.5], dtype="float32").to_numpy().dtype == np.float32


def test_bindings_match_the_header():
    """Every function of include/tinkex.h is declared, with its parameter count."""
    import re

    from tinkex import _lib

    header = Path(__file__).resolve().parents[3] / "include" / "tinkex.h"
    if not header.is_file():
        pytest.skip("no include/tinkex.h next to this checkout")
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    decls = re.findall(r"\b(tinkex_[a-z_]+)\s*\(([^;{)]*)\)\s*;", text)
    assert len(decls) > 60
    for name, args in decls:
        args = args.strip()
        n = 0 if args in ("", "void") else len(args.split(","))
        assert name in _lib._SIGNATURES, f"{name} is not bound"
        assert len(_lib._SIGNATURES[name][1]) == n, f"{name}: header has {n} parameters"


def test_panics_in_the_library_map_to_internal_error():
    from tinkex import _constants, _ffi, _lib

    if not hasattr(_lib.lib, "tinkex_testing_panic_in_task"):
        pytest.skip("library built without the `testing` feature")
    state = _ffi.submit(_lib.lib.tinkex_testing_panic_in_task, _ffi.runtime(), 0)
    with pytest.raises(tinkex.InternalError) as ei:
        tinkex.APIFuture(state).result(timeout=10)
    assert ei.value.status == _constants.STATUS_PANIC and ei.value.kind == "panic"


def test_tensor_data_and_datum_model_validate_accept_tensor_json():
    # As the official pydantic models: TensorData JSON, and a Datum whose loss_fn_inputs are
    # TensorData JSON (finding 2 of docs/parity.md, now fixed).
    t = types.TensorData.model_validate({"data": [1, 2, 3, 4], "dtype": "int64", "shape": [2, 2]})
    assert (t.dtype, t.shape, t.data) == ("int64", [2, 2], [1, 2, 3, 4])
    assert types.TensorData.model_validate(t) is t
    assert types.TensorData.model_validate_json('{"data": [0.5], "dtype": "float32"}').data == [0.5]
    d = types.Datum.model_validate(
        {
            "model_input": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
            "loss_fn_inputs": {
                "target_tokens": {"data": [2, 3, 4], "dtype": "int64", "shape": [3]},
                "weights": {"data": [1.0, 0.5, 0.0], "dtype": "float32"},
            },
        }
    )
    assert d.loss_fn_inputs["target_tokens"] == types.TensorData(data=[2, 3, 4], dtype="int64", shape=[3])
    assert d.loss_fn_inputs["weights"].data == [1.0, 0.5, 0.0]
    assert d.model_dump()["loss_fn_inputs"]["target_tokens"] == {"data": [2, 3, 4], "dtype": "int64", "shape": [3]}
    # The constructor takes the same JSON.
    assert types.Datum(model_input=d.model_input, loss_fn_inputs={"weights": {"data": [1.0], "dtype": "float32"}}).loss_fn_inputs["weights"].dtype == "float32"
    # Malformed tensors are a ValidationError (a ValueError), as pydantic's.
    for bad in ({"data": [1]}, {"dtype": "int64"}, {"data": [1], "dtype": "int32"}, {"data": [1], "dtype": "int64", "bogus": 1}, [1, 2]):
        with pytest.raises(ValueError):
            types.TensorData.model_validate(bad)
    with pytest.raises(ValueError):
        types.Datum.model_validate({"model_input": {"chunks": []}, "loss_fn_inputs": {"weights": {"data": [1.0]}}})
