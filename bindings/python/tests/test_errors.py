"""Exceptions: the official class names, carrying the core's kind and status."""

from __future__ import annotations

import socket

import pytest

import tinkex
from tinkex import types
from conftest import API_KEY, BASE_MODEL, text_datum

NO_RETRY = {"retry": {"max_attempts": 1, "base_delay_ms": 10, "max_delay_ms": 20, "billing_max_pause_ms": 0, "billing_pause_step_ms": 10}}


def _svc(base_url, **cfg):
    config = {**NO_RETRY, **cfg}
    return tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, config=config)


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, tinkex.BadRequestError),
        (401, tinkex.AuthenticationError),
        (402, tinkex.BillingError),
        (403, tinkex.PermissionDeniedError),
        (404, tinkex.NotFoundError),
        (409, tinkex.ConflictError),
        (422, tinkex.UnprocessableEntityError),
        (429, tinkex.RateLimitError),
        (500, tinkex.InternalServerError),
        (503, tinkex.InternalServerError),
        (418, tinkex.APIStatusError),
    ],
)
def test_http_status_classes(emu, base_url, status, cls):
    emu.post("faults", {"path": "/api/v1/get_server_capabilities", "status": status, "body": {"detail": f"injected {status}"}})
    with pytest.raises(cls) as ei:
        _svc(base_url).get_server_capabilities()
    e = ei.value
    assert type(e) is cls
    assert e.status_code == status and e.http_status == status
    assert e.kind in ("user", "transient", "fatal", "billing", "auth", "expired")
    assert e.status_name.startswith("TINKEX_STATUS_")
    assert isinstance(e, tinkex.APIStatusError) and isinstance(e, tinkex.TinkerError)


def test_failed_future_is_request_failed_error(shared_service):
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    # The emulator rejects this loss in its turn: the future fails with category "user".
    with pytest.raises(tinkex.RequestFailedError) as ei:
        tc.forward_backward([text_datum("abc")], "cispo").result(timeout=60)
    e = ei.value
    assert e.category == "user" and e.kind == "user" and e.request_id
    assert "cispo" in str(e)


def test_connection_refused_is_api_connection_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    svc = tinkex.ServiceClient(
        base_url=f"http://127.0.0.1:{port}", api_key=API_KEY, config={"retry": {"max_attempts": 1, "progress_timeout_ms": 5000}}
    )
    with pytest.raises(tinkex.APIConnectionError) as ei:
        svc.get_server_capabilities()
    assert not isinstance(ei.value, tinkex.APITimeoutError)
    assert ei.value.kind == "transient"


def test_bad_key_and_bad_arguments(base_url, shared_service, monkeypatch):
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    with pytest.raises(tinkex.AuthenticationError) as ei:
        tinkex.ServiceClient(base_url=base_url)  # no key at all
    assert ei.value.kind == "auth" and ei.value.status_name == "TINKEX_STATUS_AUTH"
    with pytest.raises(tinkex.InvalidArgumentError, match="tml-"):
        tinkex.ServiceClient(base_url=base_url, api_key="not-a-key")  # malformed: a caller error
    with pytest.raises(tinkex.InvalidArgumentError) as ei2:
        tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, config={"retry": {"jitter": 5}})
    # Checked by the core's config builder, naming the field (a caller error: a ValueError).
    assert isinstance(ei2.value, ValueError) and "retry.jitter" in str(ei2.value)
    with pytest.raises(tinkex.InvalidArgumentError):
        tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, config={"no_such_field": 1})
    with pytest.raises(ValueError):
        shared_service.create_sampling_client()
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    with pytest.raises(ValueError, match="No data"):
        tc.forward_backward([], "cross_entropy")


def test_unknown_model_fails(shared_service):
    with pytest.raises(tinkex.TinkerError) as ei:
        shared_service.create_lora_training_client(base_model="no/such-model", rank=4).result(timeout=60)
    assert ei.value.kind == "user"


def test_closed_client_is_client_state_error(shared_service):
    sc = shared_service.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    sc.close()
    with pytest.raises(tinkex.ClientStateError):
        sc.sample(types.ModelInput.from_ints([1]), 1, types.SamplingParams(max_tokens=1))


def test_status_errors_carry_the_parsed_body(shared_service):
    with pytest.raises(tinkex.BadRequestError) as ei:
        shared_service.create_lora_training_client(base_model="no/such-model", rank=4).result(timeout=60)
    assert isinstance(ei.value.body, dict) and "not supported" in ei.value.body["detail"]
