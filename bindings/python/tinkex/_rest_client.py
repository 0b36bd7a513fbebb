"""RestClient and AdminClient: the REST / management methods (PROTOCOL.md 9, 2.8, 6.9, 7.2)
with the official SDK's names and signatures.

The methods are generated from ``src/core/rest/methods.json`` (``_rest_methods.py``, by
``tools/gen_rest.py``); each one calls the generic ABI entry ``tinkex_rest_client_call`` /
``tinkex_admin_client_call`` with the method name and its arguments as JSON. Constructed
directly, both clients are session-less holders (3.3): no session, no heartbeat, no I/O at
creation."""

from __future__ import annotations

from ctypes import byref, c_void_p
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional

from . import _ffi, types
from ._api_future import APIFuture
from ._client_common import _buf
from ._ffi import Handle, check, json_bytes, parse_json
from ._lib import lib
from ._rest_methods import _AdminMethods, _RestMethods

if TYPE_CHECKING:
    from ._service_client import ServiceClient


def _converter(result: str) -> Callable[[bytes], Any]:
    """The typed result of a table entry from the call's JSON."""
    if result == "None":
        return lambda _raw: None
    if result == "str":
        return lambda raw: str(parse_json(raw))
    cls = getattr(types, result)

    def convert(raw: bytes) -> Any:
        d = parse_json(raw)
        return cls._from_json(d) if hasattr(cls, "_from_json") else types._build(cls, d)

    return convert


def _config(base_url: Optional[str], api_key: Optional[str], config: Optional[Mapping[str, Any]]) -> bytes:
    cfg: Dict[str, Any] = dict(config or {})
    if base_url is not None:
        cfg["base_url"] = base_url
    if api_key is not None:
        cfg["api_key"] = api_key
    return json_bytes(cfg)


class _GenericClient:
    _CALL_NAME = ""
    _label = ""

    def __init__(self, handle: Handle, service: "Optional[ServiceClient]") -> None:
        self._handle = handle
        self._service = service

    def _call_method(self, name: str, args: dict, result: str) -> APIFuture[Any]:
        call = getattr(lib, self._CALL_NAME)
        m = name.encode()
        body, n = _buf(json_bytes(args))
        with self._handle.use() as ptr:
            state = _ffi.submit(call, ptr, m, len(m), body, n, converter=_converter(result), label=name)
        if self._service is not None:
            self._service._track(state)
        return APIFuture(state)

    def get_telemetry(self) -> Any:
        """The telemetry of the holder: ``None`` (a session-less holder reports its requests
        through the service client that created it, if any)."""
        if self._service is not None:
            return self._service.get_telemetry()
        return None

    def close(self) -> None:
        """Releases the handle (pending calls still complete)."""
        self._handle.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RestClient(_RestMethods, _GenericClient):
    """Training runs, checkpoints, sessions, samplers, billing and audit logs.

    ``RestClient(base_url=, api_key=)`` (a session-less holder: no session, no heartbeat;
    ``api_key``/``base_url`` resolve as for ``ServiceClient``) or
    ``service_client.create_rest_client()`` (shares the service's connection). Every method
    returns an :class:`APIFuture`; its ``_async`` twin returns the result itself.
    ``config``: more fields of the libtinkex client configuration (tinkex addition)."""

    _CALL_NAME = "tinkex_rest_client_call"

    def __init__(
        self,
        _holder: Any = None,
        *,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        _handle: Optional[Handle] = None,
        _service: "Optional[ServiceClient]" = None,
    ) -> None:
        if _handle is None:
            out = c_void_p()
            err = c_void_p()
            body, n = _buf(_config(base_url, api_key, config))
            check(lib.tinkex_rest_client_new(_ffi.runtime(), body, n, byref(out), byref(err)), err)
            _handle = Handle(out.value, lib.tinkex_rest_client_free, "rest client")
        _GenericClient.__init__(self, _handle, _service)

    def __repr__(self) -> str:
        return "<tinkex.RestClient>"


class AdminClient(_AdminMethods, _GenericClient):
    """Organisation-level reports (PROTOCOL.md 9.12): billing usage, audit log, checkpoint
    storage usage. A session-less holder; ``AdminClient(base_url=, api_key=)``."""

    _CALL_NAME = "tinkex_admin_client_call"

    def __init__(
        self,
        _holder: Any = None,
        *,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        out = c_void_p()
        err = c_void_p()
        body, n = _buf(_config(base_url, api_key, config))
        check(lib.tinkex_admin_client_new(_ffi.runtime(), body, n, byref(out), byref(err)), err)
        _GenericClient.__init__(self, Handle(out.value, lib.tinkex_admin_client_free, "admin client"), None)

    def __repr__(self) -> str:
        return "<tinkex.AdminClient>"
