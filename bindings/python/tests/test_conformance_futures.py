"""Conformance of futures through the Python binding (PROTOCOL.md 8.1-8.3): the batched
retrieve_futures poller end to end, cancel_future after a timed-out async wait (and none after
a timed-out sync wait, as the official SDK), and the no-spinning bound of the poll loop."""

from __future__ import annotations

import asyncio
import time

import pytest

import tinkex
from tinkex import types
from conftest import API_KEY, BASE_MODEL, wait_until

RF = "/api/v1/retrieve_future"
RFS = "/api/v1/retrieve_futures"
PROMPT = types.ModelInput.from_ints([5, 6, 7])
PARAMS = types.SamplingParams(max_tokens=3)


def journal(emu, path: str) -> list[int]:
    return [e["status"] for e in emu.get("journal")["journal"] if e["path"] == path]


def polls_of(emu, request_id: str) -> int:
    return emu.get("polls")["polls"].get(request_id, 0)


@pytest.fixture
def flags(emu):
    """Sets server flags for one test (a new ServiceClient reads them) and restores them."""
    touched: dict[str, set[str]] = {"client_config": set(), "dynamic_config": set()}

    def set_flags(client_config: dict | None = None, dynamic_config: dict | None = None) -> None:
        body = {}
        if client_config:
            body["client_config"] = client_config
            touched["client_config"].update(client_config)
        if dynamic_config:
            body["dynamic_config"] = dynamic_config
            touched["dynamic_config"].update(dynamic_config)
        emu.post("flags", body)

    yield set_flags
    emu.post("flags", {k: {name: None for name in v} for k, v in touched.items() if v})


def new_sampler(base_url: str):
    svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, telemetry=False)
    return svc, svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)


def test_poller_mode_end_to_end(emu, flags, base_url):
    flags(client_config={"sample_use_retrieve_futures": True})
    _svc, sampler = new_sampler(base_url)
    before = len(emu.get("retrieve_futures")["requests"])
    emu.set_delays({"Sample": 200})
    futs = [sampler.sample(types.ModelInput.from_ints([5 + i, 6, 7]), 1, PARAMS) for i in range(3)]
    for f in futs:
        assert len(f.result(timeout=30).sequences) == 1
    ids = sorted(f.request_id for f in futs)
    # Each result was fetched with one retrieve_future, after the poller reported it.
    for rid in ids:
        assert polls_of(emu, rid) == 1, rid
    mine = lambda: [
        r for r in emu.get("retrieve_futures")["requests"][before:]
        if r["target"]["sampling_session_id"] == sampler.sampling_session_id
    ]
    assert mine(), "the poller long-polled retrieve_futures"
    assert "timeout" not in mine()[0], mine()[0]
    # Acks: every retrieved id is reported back in an ack-only poll.
    assert wait_until(
        lambda: sorted(i for r in mine() for i in r.get("retrieved_request_ids", [])) == ids, timeout=10
    ), mine()
    assert any(r.get("timeout") == 0 for r in mine())


def test_cancel_future_after_a_timed_out_async_wait(emu, flags, base_url):
    flags(dynamic_config={"sample_cancel_enabled": True})
    _svc, sampler = new_sampler(base_url)
    emu.set_delays({"Sample": 30_000})
    cancelled_before = emu.get("retrieve_futures")["cancelled"]
    sent_before = len(journal(emu, "/api/v1/cancel_future"))

    async def main():
        f = sampler.sample(PROMPT, 1, PARAMS)
        with pytest.raises(TimeoutError):
            await f.result_async(timeout=0.5)
        return f

    f = asyncio.run(main())
    assert wait_until(lambda: emu.get("retrieve_futures")["cancelled"] == cancelled_before + 1, timeout=10)
    assert f.cancelled()
    rid = f.request_id
    polls = polls_of(emu, rid)
    # Another sample completes; the abandoned one is never polled again, and one cancel went out.
    emu.set_delays({"Sample": None})
    sampler.sample(PROMPT, 1, PARAMS).result(timeout=30)
    assert polls_of(emu, rid) == polls
    assert len(journal(emu, "/api/v1/cancel_future")) == sent_before + 1


def test_a_timed_out_sync_wait_does_not_cancel(emu, flags, base_url):
    flags(dynamic_config={"sample_cancel_enabled": True})
    _svc, sampler = new_sampler(base_url)
    emu.set_delays({"Sample": 1000})
    sent_before = len(journal(emu, "/api/v1/cancel_future"))
    f = sampler.sample(PROMPT, 1, PARAMS)
    with pytest.raises(TimeoutError):
        f.result(timeout=0.2)
    assert len(f.result(timeout=30).sequences) == 1  # as the official SDK: the wait only
    assert len(journal(emu, "/api/v1/cancel_future")) == sent_before


def test_spin_bound_instant_503s(emu, base_url):
    _svc, sampler = new_sampler(base_url)
    emu.control("DELETE", "journal")
    window = 3.0
    emu.post("faults", {"path": RF, "status": 503, "duration_ms": int(window * 1000)})
    t0 = time.monotonic()
    out = sampler.sample(PROMPT, 1, PARAMS).result(timeout=60)
    took = time.monotonic() - t0
    assert len(out.sequences) == 1
    failed = [s for s in journal(emu, RF) if s == 503]
    assert len(failed) <= 10, f"{len(failed)} polls during {window} s of instant 503s"
    assert took <= window + 2.0, f"the result arrived {took - window:.2f} s after the fault ended"
