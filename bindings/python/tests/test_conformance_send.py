"""The send path of PROTOCOL.md through the Python binding (13.2, 13.4, 13.7, 8.1.3, 14.1),
read back from the emulator's request journal."""

from __future__ import annotations

import time

import pytest

import tinkex
from tinkex import types
from conftest import API_KEY, BASE_MODEL, text_datum

FAST = {
    "retry": {
        "base_delay_ms": 10,
        "max_delay_ms": 50,
        "holder_base_delay_ms": 10,
        "holder_max_delay_ms": 50,
        "billing_pause_step_ms": 50,
        "progress_timeout_ms": 60000,
    }
}


def _svc(base_url, **retry):
    config = {"retry": {**FAST["retry"], **retry}}
    return tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, telemetry=False, config=config)


def _journal(emu, path):
    return [e for e in emu.get("journal")["journal"] if e["path"] == path]


@pytest.fixture
def flags(emu):
    """Sets client/config flags for clients created afterwards; restores them after the test."""
    touched: set[str] = set()

    def set_flags(values: dict) -> None:
        touched.update(values)
        emu.post("flags", {"client_config": values})

    yield set_flags
    if touched:
        emu.post("flags", {"client_config": {k: None for k in touched}})


def test_each_holder_attempt_has_its_own_idempotency_key(emu, base_url):
    tc = _svc(base_url).create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    # save_weights is sent with max_retries=0: each retry is a holder-loop re-issue.
    emu.post("faults", {"path": "/api/v1/save_weights", "status": 503, "count": 2})
    emu.control("DELETE", "journal")
    tc.save_state("conf-send-keys").result(timeout=60)
    j = _journal(emu, "/api/v1/save_weights")
    assert len(j) == 3, j
    assert len({e["idempotency_key"] for e in j}) == 3, j
    assert all(e["retry_count"] == "0" for e in j), j
    # optim_step has HTTP-layer retries: same key, counted retries.
    emu.post("faults", {"path": "/api/v1/optim_step", "status": 503, "count": 2})
    emu.control("DELETE", "journal")
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=60)
    j = _journal(emu, "/api/v1/optim_step")
    assert [e["retry_count"] for e in j] == ["0", "1", "2"], j
    assert len({e["idempotency_key"] for e in j}) == 1, j


def test_billing_error_after_the_pause_limit(emu, base_url, flags):
    flags({"billing_exception_max_pause_duration_sec": 1})
    tc = _svc(base_url).create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    emu.post("faults", {"path": "/api/v1/optim_step", "status": 402, "body": {"detail": "billing"}})
    started = time.monotonic()
    with pytest.raises(tinkex.BillingError) as ei:
        tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=60)
    assert ei.value.kind == "billing" and ei.value.status_code == 402
    assert 0.9 <= time.monotonic() - started < 30
    assert len(_journal(emu, "/api/v1/optim_step")) >= 3


def test_training_410_reaches_the_caller(emu, base_url):
    tc = _svc(base_url).create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    emu.post("faults", {"path": "/api/v1/retrieve_future", "status": 410, "count": 1, "body": {"detail": "gone"}})
    emu.control("DELETE", "journal")
    with pytest.raises(tinkex.APIStatusError) as ei:
        tc.forward_backward([text_datum("abcdef")], "cross_entropy").result(timeout=60)
    assert ei.value.status_code == 410 and ei.value.kind == "expired"
    assert len(_journal(emu, "/api/v1/forward_backward")) == 1, "not resubmitted"


def test_forward_backward_bodies_are_zstd_when_the_flag_is_on(emu, base_url, flags):
    flags({"proto_compress_fwdbwd": True})
    tc = _svc(base_url).create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    emu.control("DELETE", "journal")
    out = tc.forward_backward([text_datum("hello zstd")], "cross_entropy").result(timeout=60)
    assert len(out.loss_fn_outputs) == 1
    j = _journal(emu, "/api/v1/forward_backward")
    assert j and all(e["content_encoding"] == "zstd" and e["status"] == 200 for e in j), j
