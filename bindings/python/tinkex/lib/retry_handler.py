"""``RetryConfig``: the configuration of the sampling retry handler, at the official SDK's
``tinker.lib.retry_handler`` path (PROTOCOL.md 13.5).

The handler itself runs inside libtinkex: ``ServiceClient.create_sampling_client(...,
retry_config=RetryConfig(...))`` forwards the fields below to the core, which applies them to
every ``sample()`` (unless the server's ``sample_no_retries`` is on) and ``compute_logprobs()``
of that client. As in the official SDK, ``max_connections`` is always replaced by the server's
``sample_max_concurrent_requests`` (or removed when ``sample_use_retrieve_futures`` is on).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Type

from .._exceptions import APIConnectionError, APITimeoutError


class RetryableException(Exception):
    """An error the sampling retry handler retries: a sample's future expired on the server
    (HTTP 410 from ``retrieve_future``); the sample is re-run with a new ``seq_id``."""


def _default_retryable() -> Tuple[Type[BaseException], ...]:
    return (asyncio.TimeoutError, APIConnectionError, TimeoutError, RetryableException)


@dataclass
class RetryConfig:
    """Configuration for retrying failed sampling requests (the official SDK's fields and
    defaults)."""

    max_connections: Optional[int] = 1000
    """Concurrency limit of the handler; ``None`` = none. For sampling it is replaced by the
    server's ``sample_max_concurrent_requests``."""

    progress_timeout: float = 120 * 60
    """Seconds without any completed request before the calls fail ("Requests appear to be
    stuck")."""

    retry_delay_base: float = 0.5
    """Delay before the first retry, seconds."""

    retry_delay_max: float = 10.0
    """Maximum delay between retries, seconds."""

    jitter_factor: float = 0.25
    """Random jitter (0-1) applied to retry delays."""

    enable_retry_logic: bool = True
    """Whether to retry at all."""

    enable_stuck_detection: bool = True
    """Whether ``progress_timeout`` applies."""

    retryable_exceptions: Tuple[Type[BaseException], ...] = _default_retryable()
    """Exception types retried: timeouts, connection errors, ``RetryableException`` (status
    errors 408/409/429/5xx of the send are always retried). Mapped onto the core's
    categories ``timeout``, ``connection`` and ``expired``; other types have no effect."""

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections <= 0:
            raise ValueError(f"max_connections must be positive, got {self.max_connections}")

    def __hash__(self) -> int:
        return hash(
            (
                self.max_connections,
                self.progress_timeout,
                self.retry_delay_base,
                self.retry_delay_max,
                self.jitter_factor,
                self.enable_retry_logic,
                self.enable_stuck_detection,
                self.retryable_exceptions,
            )
        )

    def _kinds(self) -> List[str]:
        kinds: List[str] = []

        def add(k: str) -> None:
            if k not in kinds:
                kinds.append(k)

        for cls in self.retryable_exceptions:
            if not isinstance(cls, type):
                continue
            if issubclass(cls, RetryableException):
                add("expired")
            elif issubclass(cls, APITimeoutError) or issubclass(cls, (asyncio.TimeoutError, TimeoutError)) or cls.__name__ == "TimeoutException":
                add("timeout")
            elif issubclass(cls, APIConnectionError):
                add("connection")
        return kinds

    def _json(self) -> Dict[str, Any]:
        """The core's ``retry_config`` input (seconds as floats, as here)."""
        body: Dict[str, Any] = {
            "progress_timeout": float(self.progress_timeout),
            "retry_delay_base": float(self.retry_delay_base),
            "retry_delay_max": float(self.retry_delay_max),
            "jitter_factor": float(self.jitter_factor),
            "enable_retry_logic": bool(self.enable_retry_logic),
            "enable_stuck_detection": bool(self.enable_stuck_detection),
            "retryable_exceptions": self._kinds(),
        }
        if self.max_connections is not None:
            body["max_connections"] = int(self.max_connections)
        return body


__all__ = ["RetryConfig", "RetryableException"]
