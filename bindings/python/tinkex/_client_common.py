"""What the client modules share: buffers for the C calls, the client futures that can
stand in for their client, and the checks of arguments libtinkex does not support."""

from __future__ import annotations

import warnings
from ctypes import byref, c_void_p
import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, TypeVar

from . import _lib
from ._api_future import APIFuture
from ._ffi import check, parse_json

C = TypeVar("C")


def _buf(data: bytes) -> Tuple[Optional[bytes], int]:
    return (data if data else None), len(data)


def _sync_json(fn: Callable[..., int], ptr: int) -> Any:
    out = c_void_p()
    err = c_void_p()
    check(fn(ptr, byref(out), byref(err)), err)
    return parse_json(_lib.take_bytes(out.value))


class _ClientFuture(APIFuture[C]):
    """A future of a client that can also be used, deprecated, as the client (as the
    official SDK's ``Backcompat*ClientFuture``): attribute access waits for the client."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        warnings.warn(
            f"Using the future returned by a client-creation method as the client (`.{name}`) is "
            "deprecated; call .result() on it, or await it, to get the client first.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(self.result(), name)


def _ignored(**kwargs: Any) -> None:
    given = [k for k, v in kwargs.items() if v]
    if given:
        warnings.warn(
            f"tinkex: {', '.join(given)} is not supported by libtinkex's C ABI yet and is ignored",
            RuntimeWarning,
            stacklevel=3,
        )


def _str_map(what: str, m: Mapping[str, Any]) -> Dict[str, str]:
    """A ``{str: str}`` map (user metadata) checked here, naming the bad entry."""
    out: Dict[str, str] = {}
    for k, v in dict(m).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{what} must map str to str; got {k!r}: {v!r}")
        out[k] = v
    return out


def _optimizer_json(optimizer: Any) -> Dict[str, Any]:
    """An optimizer configuration (``AdamOptimizerConfig``, ``DimuonOptimizerConfig``, any
    model with a ``type``, or a mapping) as the JSON object the ABI takes."""
    if isinstance(optimizer, Mapping):
        d = dict(optimizer)
    elif hasattr(optimizer, "model_dump"):
        d = optimizer.model_dump()
    else:
        raise TypeError(f"optimizer must be an optimizer config, got {type(optimizer).__name__}")
    if not isinstance(d.get("type"), str):
        raise ValueError("optimizer config needs a `type` (e.g. 'adamw', 'dimuon')")
    return d


def _optim_params_json(params: Any) -> Dict[str, Any]:
    """``optim_step``'s parameters: AdamParams (sent as its fields), DimuonParams or any
    family's model (sent with its ``type``), or a mapping."""
    if isinstance(params, Mapping):
        d = dict(params)
    elif hasattr(params, "_json"):
        d = params._json()
    elif hasattr(params, "model_dump"):
        d = params.model_dump()
    else:
        raise TypeError(f"Expected AdamParams or OptimParamsBase, got {type(params).__name__}")
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"optimizer parameter {k} must be finite, got {v}")
    return d


def _telemetry_enabled(explicit: Optional[bool], config: Optional[Mapping[str, Any]]) -> bool:
    """Whether a client sends telemetry: the ``telemetry`` argument, else the configuration's,
    else ``TINKER_TELEMETRY`` (off when ``0``/``false``/``no``/``off``)."""
    import os

    if explicit is not None:
        return bool(explicit)
    if config and isinstance(config.get("telemetry"), bool):
        return bool(config["telemetry"])
    return os.environ.get("TINKER_TELEMETRY", "1").strip().lower() not in ("0", "false", "no", "off")


class Telemetry:
    """The telemetry of a client (``get_telemetry()``): the core's counters, read again at
    each access (``counters``, ``snapshot()``, ``[name]``). tinkex's telemetry runs in
    libtinkex; this object only reports it."""

    def __init__(self, read: Callable[[], Dict[str, Any]], first: Dict[str, Any]) -> None:
        self._read = read
        self._first = first

    @classmethod
    def _of(cls, status: Callable[[], Dict[str, Any]], enabled: bool = True) -> "Optional[Telemetry]":
        if not enabled:
            return None
        first = status().get("telemetry")
        if first is None:
            return None
        return cls(lambda: status().get("telemetry") or {}, first)

    def snapshot(self) -> Dict[str, Any]:
        """The counters now."""
        return dict(self._read())

    @property
    def counters(self) -> Dict[str, Any]:
        return self.snapshot()

    def __getitem__(self, key: str) -> Any:
        return self.snapshot()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.snapshot().get(key, default)

    def __repr__(self) -> str:
        return f"<tinkex.Telemetry {self.snapshot()!r}>"


def _load_tokenizer(model_name: str, tokenizer_id: Optional[str] = None) -> Any:
    try:
        from transformers import AutoTokenizer  # type: ignore[import-not-found]
    except ImportError as e:
        raise ImportError(
            "get_tokenizer needs the `transformers` package (and access to the Hugging Face hub "
            "or a local cache of the tokenizer): pip install transformers"
        ) from e
    return AutoTokenizer.from_pretrained(tokenizer_id or model_name)

