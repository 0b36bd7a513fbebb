"""Sampling conformance through the Python binding (PROTOCOL.md 12.5, 12.6, 13.5, 15.2):
RetryConfig's import paths, defaults and mapping onto the core's retry handler, the 429
back-off protocol, and the debounced queue-state line."""

from __future__ import annotations

import dataclasses
import logging

import pytest

import tinkex
from tinkex import types
from conftest import BASE_MODEL, wait_until

KEY = "tml-pytest-conformance-sampling"


@pytest.fixture
def capacity(emu):
    """Sets the emulator's sampling capacity/behaviour; reset after the test."""

    def set_capacity(body: dict) -> None:
        emu.post("sampling_capacity", body)

    yield set_capacity
    emu.post("sampling_capacity", {})


def _service(base_url: str, **sampling) -> tinkex.ServiceClient:
    cfg = {"retry": {"base_delay_ms": 10, "max_delay_ms": 100}}
    if sampling:
        cfg["sampling"] = sampling
    return tinkex.ServiceClient(base_url=base_url, api_key=KEY, telemetry=False, config=cfg)


def _sample(sampler):
    return sampler.sample(
        prompt=types.ModelInput.from_ints([1, 2, 3]),
        num_samples=1,
        sampling_params=types.SamplingParams(max_tokens=2),
    )


def _arrivals(emu, session: str):
    return [a for a in emu.get("sampling_capacity")["arrivals"] if a["sampling_session_id"] == session]


def test_retry_config_is_importable_where_the_sdk_has_it_with_its_defaults():
    from tinkex.lib.retry_handler import RetryConfig, RetryableException

    assert tinkex.RetryConfig is RetryConfig and types.RetryConfig is RetryConfig
    c = RetryConfig()
    assert (c.max_connections, c.progress_timeout, c.retry_delay_base, c.retry_delay_max) == (1000, 7200, 0.5, 10.0)
    assert (c.jitter_factor, c.enable_retry_logic, c.enable_stuck_detection) == (0.25, True, True)
    assert RetryableException in c.retryable_exceptions
    assert c._json()["retryable_exceptions"] == ["timeout", "connection", "expired"]
    assert hash(c) == hash(RetryConfig())
    with pytest.raises(ValueError):
        RetryConfig(max_connections=0)
    only_expired = RetryConfig(retryable_exceptions=(RetryableException,), max_connections=None)
    assert only_expired._json() == {
        "progress_timeout": 7200.0,
        "retry_delay_base": 0.5,
        "retry_delay_max": 10.0,
        "jitter_factor": 0.25,
        "enable_retry_logic": True,
        "enable_stuck_detection": True,
        "retryable_exceptions": ["expired"],
    }
    assert dataclasses.replace(c, max_connections=5).max_connections == 5


def test_retry_config_is_applied_by_the_core(emu, capacity, base_url):
    capacity({})
    svc = _service(base_url)
    fast = tinkex.RetryConfig(retry_delay_base=0.01, retry_delay_max=0.05)
    retried = svc.create_sampling_client(base_model=BASE_MODEL, retry_config=fast).result(timeout=60)
    # An expired future (410 on a poll) is re-run with a new seq_id.
    emu.post("faults", {"path": "retrieve_future", "status": 410, "count": 1})
    out = _sample(retried).result(timeout=60)
    assert len(out.sequences) == 1
    seqs = [a["seq_id"] for a in _arrivals(emu, retried.sampling_session_id)]
    assert seqs == [0, 1], seqs
    # enable_retry_logic=False: one call.
    once = svc.create_sampling_client(
        base_model=BASE_MODEL, retry_config=tinkex.RetryConfig(enable_retry_logic=False)
    ).result(timeout=60)
    emu.post("faults", {"path": "retrieve_future", "status": 410, "count": 1})
    with pytest.raises(tinkex.APIStatusError) as e:
        _sample(once).result(timeout=60)
    assert e.value.status_code == 410
    assert [a["seq_id"] for a in _arrivals(emu, once.sampling_session_id)] == [0]
    # An invalid configuration is refused before anything is sent.
    with pytest.raises(ValueError):
        svc.create_sampling_client(base_model=BASE_MODEL, retry_config=tinkex.RetryConfig(jitter_factor=2.0))
    # prompt_logprobs_last_n without prompt logprobs is refused by the core at submit time.
    with pytest.raises(ValueError):
        retried.sample(
            prompt=types.ModelInput.from_ints([1, 2, 3]),
            num_samples=1,
            sampling_params=types.SamplingParams(max_tokens=2),
            prompt_logprobs_last_n=1,
        )
    lps = retried.compute_logprobs(types.ModelInput.from_ints([4, 5, 6, 7]), prompt_logprobs_last_n=2).result(timeout=60)
    assert [x is not None for x in lps] == [False, False, True, True]


def test_429_backs_off_and_resends_the_same_seq_id(emu, capacity, base_url):
    capacity({"per_key": 1, "sample_hold_ms": 300, "retry_after_secs": 0})
    svc = _service(base_url, backoff_short_ms=200, backoff_step_ms=10, honour_retry_after=False)
    sampler = svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    futs = [_sample(sampler) for _ in range(3)]
    assert all(len(f.result(timeout=60).sequences) == 1 for f in futs)
    arrivals = _arrivals(emu, sampler.sampling_session_id)
    assert {a["seq_id"] for a in arrivals} == {0, 1, 2}, "a back-off never takes a new seq_id"
    rejected = [a for a in arrivals if a["status"] == 429]
    assert rejected, arrivals
    for seq in {a["seq_id"] for a in rejected}:
        sends = [a for a in arrivals if a["seq_id"] == seq]
        assert sends[-1]["status"] == 200
        gaps = [b["at_ms"] - a["at_ms"] for a, b in zip(sends, sends[1:])]
        assert all(g >= 195 for g in gaps), gaps


def test_sampling_pause_line_uses_the_default_reason_and_is_debounced(emu, capacity, base_url, caplog):
    capacity({"sample_hold_ms": 700})
    svc = _service(base_url, queue_state_log_interval_ms=250)
    sampler = svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    emu.post("queue_state", {"queue_state": "paused_rate_limit"})
    line = f"Sampling is paused for sampler {sampler.sampling_session_id}. Reason: concurrent sampler weights limit hit"
    with caplog.at_level(logging.WARNING, logger="tinkex"):
        _sample(sampler).result(timeout=60)
        assert wait_until(lambda: any(line == r.getMessage() for r in caplog.records)), caplog.text
        # The pause lines of this sampler (the poll loop's own "Retrying request … because of
        # try_again" WARNING, 8.1.3, also names the request and is not counted here).
        paused = [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith("Sampling is paused") and sampler.sampling_session_id in r.getMessage()
        ]
    assert all(p == line for p in paused), paused
    # About 700 ms paused with a 250 ms interval: 2 to 4 lines, not one per poll.
    assert 1 <= len(paused) <= 4, paused
