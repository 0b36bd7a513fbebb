"""Official top-level names that configure the HTTP layer in the official SDK
(``Timeout``, ``RequestOptions``) and its ``ExperimentalWarning``. libtinkex owns the
transport: these exist so code written for the SDK imports and type-checks; timeouts are set
with ``ServiceClient(config={"timeouts": {...}})``."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

try:
    from typing import TypedDict
except ImportError:  # pragma: no cover - Python < 3.8
    TypedDict = dict  # type: ignore[misc,assignment]


class ExperimentalWarning(FutureWarning):
    """Warns about an experimental API (e.g. session search)."""


class Timeout:
    """Timeout settings in seconds (``timeout`` for all phases, else ``connect``, ``read``,
    ``write``, ``pool``), as the official SDK's (httpx's) ``Timeout``. ``config_json()``
    gives the libtinkex ``timeouts`` configuration of the same values."""

    def __init__(
        self,
        timeout: Union[float, None, "Timeout"] = None,
        *,
        connect: Optional[float] = None,
        read: Optional[float] = None,
        write: Optional[float] = None,
        pool: Optional[float] = None,
    ) -> None:
        if isinstance(timeout, Timeout):
            connect, read, write, pool = timeout.connect, timeout.read, timeout.write, timeout.pool
        elif timeout is not None:
            connect = timeout if connect is None else connect
            read = timeout if read is None else read
            write = timeout if write is None else write
            pool = timeout if pool is None else pool
        self.connect = connect
        self.read = read
        self.write = write
        self.pool = pool

    def as_dict(self) -> Dict[str, Optional[float]]:
        return {"connect": self.connect, "read": self.read, "write": self.write, "pool": self.pool}

    def config_json(self) -> Dict[str, Any]:
        """The ``timeouts`` object of a libtinkex configuration (milliseconds)."""
        out: Dict[str, Any] = {}
        if self.connect is not None:
            out["connect_ms"] = int(self.connect * 1000)
        if self.read is not None:
            out["request_ms"] = int(self.read * 1000)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timeout) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return "Timeout(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"


class RequestOptions(TypedDict, total=False):  # type: ignore[misc,call-arg]
    """Per-request options of the official SDK's generated client (headers, query, body,
    timeout, retries); accepted for typing only."""

    headers: Mapping[str, str]
    max_retries: int
    timeout: Union[float, Timeout, None]
    params: Mapping[str, object]
    extra_json: Mapping[str, object]
    idempotency_key: str
