"""What the client modules share: buffers for the C calls, the client futures that can
stand in for their client, and the checks of arguments libtinkex does not support."""

from __future__ import annotations

import warnings
from ctypes import byref, c_void_p
from typing import Any, Callable, Mapping, Optional, Tuple, TypeVar

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


def _unsupported(**kwargs: Any) -> None:
    given = [k for k, v in kwargs.items() if v]
    if given:
        raise NotImplementedError(
            f"tinkex: {', '.join(given)} is not supported by libtinkex's C ABI yet"
        )


def _only_adamw(optimizer: Any) -> None:
    if optimizer is None:
        return
    kind = optimizer.get("type") if isinstance(optimizer, Mapping) else getattr(optimizer, "type", None)
    if kind not in (None, "adamw"):
        raise NotImplementedError(f"tinkex: optimizer {kind!r} is not supported (only adamw)")


def _load_tokenizer(model_name: str, tokenizer_id: Optional[str] = None) -> Any:
    try:
        from transformers import AutoTokenizer  # type: ignore[import-not-found]
    except ImportError as e:
        raise ImportError("get_tokenizer needs the `transformers` package") from e
    return AutoTokenizer.from_pretrained(tokenizer_id or model_name)

