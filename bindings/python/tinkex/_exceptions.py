"""Exceptions, with the official SDK's class names and hierarchy (PROTOCOL.md 13.6).

Every exception raised for a libtinkex failure also carries the core's details:

- ``kind``: the core's error kind (``user``, ``transient``, ``fatal``, ``billing``,
  ``expired``, ``timeout``, ``no_progress``, ``session_expired``, ``auth``, ``panic``, or a
  caller-error kind such as ``invalid_json``);
- ``status``: the ``tinkex_status`` value (``TINKEX_STATUS_*``), ``status_name`` its name;
- ``http_status``: the HTTP status behind it, or ``None``;
- ``request_id``: the server request (future) id involved, or ``None``;
- ``retryable``: whether the same request could succeed if retried.

Mapping (first match): ``CANCELLED`` becomes ``concurrent.futures.CancelledError`` (or
``asyncio.CancelledError`` when awaited); a transport timeout ``APITimeoutError``; another
transport failure ``APIConnectionError``; no progress ``NoProgressError`` (an
``APIConnectionError``); an HTTP status the status-specific ``APIStatusError`` subclass
(400 ``BadRequestError``, 401 ``AuthenticationError``, 402 ``BillingError``, 403
``PermissionDeniedError``, 404 ``NotFoundError``, 409 ``ConflictError``, 422
``UnprocessableEntityError``, 429 ``RateLimitError``, >= 500 ``InternalServerError``, others
plain ``APIStatusError``); a future that failed on the server ``RequestFailedError`` (with
``category`` ``user`` or ``server``); caller errors ``InvalidArgumentError`` (a
``ValueError``); lifecycle and internal errors ``ClientStateError``, ``ShutDownError``,
``InternalError``.
"""

from __future__ import annotations

import json

from typing import Any

from . import _constants as K, _lib

__all__ = [
    "TinkerError",
    "APIError",
    "APIStatusError",
    "APIConnectionError",
    "APITimeoutError",
    "APIResponseValidationError",
    "BadRequestError",
    "AuthenticationError",
    "BillingError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "RequestFailedError",
    "NoProgressError",
    "SessionExpiredError",
    "InvalidArgumentError",
    "ClientStateError",
    "ShutDownError",
    "InternalError",
]


class TinkerError(Exception):
    """Base exception for all Tinker-related errors."""

    kind: str | None = None
    status: int | None = None
    http_status: int | None = None
    request_id: str | None = None
    retryable: bool = False

    @property
    def status_name(self) -> str | None:
        return None if self.status is None else _lib.status_name(self.status)

    def _set_details(
        self,
        *,
        kind: str | None,
        status: int | None,
        http_status: int | None,
        request_id: str | None,
        retryable: bool,
    ) -> None:
        self.kind = kind
        self.status = status
        self.http_status = http_status
        self.request_id = request_id
        self.retryable = retryable

    def __repr__(self) -> str:
        extra = []
        if self.kind:
            extra.append(f"kind={self.kind!r}")
        if self.http_status:
            extra.append(f"http_status={self.http_status}")
        if self.request_id:
            extra.append(f"request_id={self.request_id!r}")
        tail = (", " + ", ".join(extra)) if extra else ""
        return f"{type(self).__name__}({str(self)!r}{tail})"


class APIError(TinkerError):
    """Base class for all API-related errors."""

    message: str
    request: Any
    body: object | None

    def __init__(self, message: str, request: Any = None, *, body: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.body = body


class APIResponseValidationError(APIError):
    """The server's answer did not match the expected schema."""

    status_code: int

    def __init__(
        self,
        response: Any = None,
        body: object | None = None,
        message: str | None = None,
        *,
        status_code: int = 200,
    ) -> None:
        super().__init__(message or "Data returned by API invalid for expected schema.", None, body=body)
        self.response = response
        self.status_code = status_code


class APIStatusError(APIError):
    """An API response had a status code of 4xx or 5xx."""

    status_code: int

    def __init__(
        self,
        message: str,
        response: Any = None,
        body: object | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, None, body=body)
        self.response = response
        if status_code is not None:
            self.status_code = status_code
        elif not hasattr(self, "status_code"):
            self.status_code = 0


class APIConnectionError(APIError):
    """A connection error occurred while making an API request."""

    def __init__(self, request: Any = None, message: str = "Connection error.") -> None:
        super().__init__(message, request, body=None)


class APITimeoutError(APIConnectionError):
    """An API request timed out."""

    def __init__(self, request: Any = None, message: str = "Request timed out.") -> None:
        super().__init__(request=request, message=message)


class BadRequestError(APIStatusError):
    """HTTP 400: the request was invalid or malformed."""

    status_code: int = 400


class AuthenticationError(APIStatusError):
    """HTTP 401: authentication credentials are missing or invalid."""

    status_code: int = 401


class BillingError(APIStatusError):
    """HTTP 402: the account has a billing issue."""

    status_code: int = 402


class PermissionDeniedError(APIStatusError):
    """HTTP 403: insufficient permissions."""

    status_code: int = 403


class NotFoundError(APIStatusError):
    """HTTP 404: the requested resource was not found."""

    status_code: int = 404


class ConflictError(APIStatusError):
    """HTTP 409: the request conflicts with the current state of the resource."""

    status_code: int = 409


class UnprocessableEntityError(APIStatusError):
    """HTTP 422: the request was well-formed but semantically invalid."""

    status_code: int = 422


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests."""

    status_code: int = 429


class InternalServerError(APIStatusError):
    """HTTP 500+: an error occurred on the server."""


class SessionExpiredError(APIStatusError):
    """The server ended the session (HTTP 410 on heartbeat); later operations fail fast."""

    status_code: int = 410


class RequestFailedError(TinkerError):
    """An asynchronous request completed in a failed state."""

    def __init__(self, message: str, request_id: str | None, category: str) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.category = category

    def __reduce__(self):
        return (self.__class__, (self.message, self.request_id, self.category), None)


class NoProgressError(APIConnectionError):
    """Nothing progressed for the client's whole progress timeout (requests appear stuck)."""


class InvalidArgumentError(TinkerError, ValueError):
    """libtinkex rejected an argument (bad JSON, bad dtype or shape, ...)."""


class ClientStateError(TinkerError, RuntimeError):
    """The call is not allowed in the current state (closed client, result already taken)."""


class ShutDownError(TinkerError, RuntimeError):
    """The libtinkex runtime is shut down."""


class InternalError(TinkerError):
    """A bug or a caught panic inside libtinkex."""


_BY_HTTP = {
    400: BadRequestError,
    401: AuthenticationError,
    402: BillingError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def make_error(
    status: int,
    kind: str | None,
    message: str,
    http_status: int,
    request_id: str | None,
    retryable: bool,
    category: str | None = None,
    body: str | None = None,
) -> BaseException:
    """The exception for one libtinkex failure (see the module docs for the mapping)."""
    S = K
    http = http_status or None
    exc: TinkerError
    if status == S.STATUS_TIMEOUT and not http:
        exc = APITimeoutError(message=message or "Request timed out.")
    elif status in (S.STATUS_CONNECT, S.STATUS_TLS, S.STATUS_IO):
        exc = APIConnectionError(message=message or "Connection error.")
    elif status == S.STATUS_NO_PROGRESS:
        exc = NoProgressError(message=message)
    elif status == S.STATUS_SESSION_EXPIRED:
        exc = SessionExpiredError(message, status_code=http or 410)
    elif http:
        cls = _BY_HTTP.get(http)
        if cls is None:
            cls = InternalServerError if http >= 500 else APIStatusError
        exc = cls(message, status_code=http)
    elif status == S.STATUS_AUTH:
        exc = AuthenticationError(message, status_code=401)
    elif status == S.STATUS_BILLING:
        exc = BillingError(message, status_code=402)
    elif status == S.STATUS_EXPIRED:
        exc = APIStatusError(message, status_code=410)
    elif category is not None:
        # The server failed the future ({"error", "category"}): the official RequestFailedError.
        exc = RequestFailedError(message, request_id, category)
    elif status == S.STATUS_USER:
        exc = InvalidArgumentError(message)
    elif status == S.STATUS_FATAL:
        exc = APIResponseValidationError(message=message)
    elif status == S.STATUS_TRANSIENT:
        exc = APIConnectionError(message=message)
    elif status in (S.STATUS_NULL_ARG, S.STATUS_INVALID_ARG, S.STATUS_INVALID_UTF8, S.STATUS_INVALID_JSON):
        exc = InvalidArgumentError(message)
    elif status in (S.STATUS_ALREADY_TAKEN, S.STATUS_WRONG_STATE, S.STATUS_WRONG_TYPE):
        exc = ClientStateError(message)
    elif status == S.STATUS_SHUT_DOWN:
        exc = ShutDownError(message)
    else:
        exc = InternalError(message)
    exc._set_details(
        kind=kind,
        status=status,
        http_status=http,
        request_id=request_id,
        retryable=retryable,
    )
    if body is not None:
        # As the official SDK: the parsed JSON body when it is JSON, else the text.
        try:
            exc.body = json.loads(body)
        except ValueError:
            exc.body = body
    return exc
