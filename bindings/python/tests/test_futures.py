"""Futures: timeouts, cancel, GIL released while waiting, callbacks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

import tinkex
from tinkex import types
from conftest import API_KEY, BASE_MODEL, text_datum


@pytest.fixture(scope="module")
def tc(shared_service):
    return shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)


def test_result_timeout_then_result(emu, tc):
    emu.set_delays({"OptimStep": 1200})
    fut = tc.optim_step(types.AdamParams(learning_rate=1e-4))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        fut.result(timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 3.0
    assert not fut.done()
    # The submission was accepted long before the delayed step completes.
    deadline = time.monotonic() + 10
    while fut.request_id is None:
        assert time.monotonic() < deadline, "the request id becomes known"
        time.sleep(0.01)
    assert isinstance(fut.request_id, str) and fut.request_id
    assert isinstance(fut.result(timeout=30), types.OptimStepResponse)  # a timeout never cancels
    assert fut.done()


def test_await_with_timeout(emu, tc):
    emu.set_delays({"OptimStep": 1200})

    async def main():
        fut = tc.optim_step(types.AdamParams(learning_rate=1e-4))
        with pytest.raises(TimeoutError):
            await fut.result_async(timeout=0.2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fut.coroutine(), 0.1)
        return await fut

    assert isinstance(asyncio.run(main()), types.OptimStepResponse)


def test_request_timeout_maps_to_api_timeout_error(emu, base_url):
    emu.post("faults", {"path": "/api/v1/get_server_capabilities", "latency_ms": 3000})
    svc = tinkex.ServiceClient(
        base_url=base_url,
        api_key=API_KEY,
        config={"timeouts": {"request_ms": 300}, "retry": {"max_attempts": 1}},
    )
    t0 = time.monotonic()
    with pytest.raises(tinkex.APITimeoutError) as ei:
        svc.get_server_capabilities()
    assert time.monotonic() - t0 < 2.5
    assert ei.value.status_name == "TINKEX_STATUS_TIMEOUT"
    assert isinstance(ei.value, tinkex.APIConnectionError)


def test_cancel_sync_and_async(emu, tc):
    emu.set_delays({"OptimStep": 3000})
    fut = tc.optim_step(types.AdamParams())
    assert fut.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(timeout=10)
    assert fut.cancelled() and fut.done()
    assert not fut.cancel()  # already done

    async def main():
        f = tc.optim_step(types.AdamParams())
        waiter = asyncio.ensure_future(f.result_async())
        await asyncio.sleep(0.05)
        f.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(main())

    # Cancelling the concurrent.futures view cancels the operation.
    f2 = tc.optim_step(types.AdamParams())
    cf = f2.future()
    cf.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        f2.result(timeout=10)


def test_cancel_many_samples(shared_sampler):
    futs = [shared_sampler.sample(types.ModelInput.from_ints([7, 8, 9]), 1, types.SamplingParams(max_tokens=64)) for _ in range(200)]
    for f in futs[::2]:
        f.cancel()
    cancelled = ok = 0
    for f in futs:
        try:
            f.result(timeout=30)
            ok += 1
        except concurrent.futures.CancelledError:
            cancelled += 1
    assert ok + cancelled == 200 and ok >= 100
    assert tinkex.diagnostics()["orphan_callbacks"] == 0


def test_gil_is_released_while_waiting(emu, shared_service):
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    emu.set_delays({"OptimStep": 800})
    fut = tc.optim_step(types.AdamParams())
    waiter = threading.Thread(target=fut.result, kwargs={"timeout": 30})
    waiter.start()
    counter = 0
    t0 = time.monotonic()
    while waiter.is_alive() and time.monotonic() - t0 < 0.5:
        counter += 1  # pure Python: needs the GIL
    waiter.join(30)
    # The main thread ran ~millions of iterations while the other thread was blocked.
    assert counter > 100_000, counter


def test_done_callbacks_and_repr(tc):
    seen = threading.Event()
    fut = tc.forward([text_datum("callbacks")], "cross_entropy")
    fut.add_done_callback(lambda f: seen.set())
    assert seen.wait(30)
    assert "done" in repr(fut)
    assert fut.exception() is None


def test_many_waiters_on_one_future(emu, tc):
    emu.set_delays({"OptimStep": 300})
    fut = tc.optim_step(types.AdamParams())
    results = []
    threads = [threading.Thread(target=lambda: results.append(fut.result(timeout=30))) for _ in range(8)]
    for t in threads:
        t.start()

    async def main():
        return await asyncio.gather(*[fut.result_async() for _ in range(8)])

    aio = asyncio.run(main())
    for t in threads:
        t.join(30)
    assert len(results) == 8 and len(aio) == 8
    assert all(r is results[0] for r in results + aio)
