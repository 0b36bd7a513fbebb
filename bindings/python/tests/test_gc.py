"""Garbage collection of clients and futures, in any order, while requests are in flight:
no crash, no callback into a freed object, no leak (handles, fds, threads, memory)."""

from __future__ import annotations

import gc
import os
import random
import threading
import weakref

import pytest

import tinkex
from tinkex import types
from conftest import API_KEY, BASE_MODEL, text_datum, wait_until


def _fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _threads() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _round(base_url: str, rng: random.Random) -> None:
    """One service client with a sampling and a training client and requests in flight,
    everything dropped in a random order (sometimes closing first, sometimes collecting on
    another thread)."""
    svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, on_event=lambda ev: None)
    sc = svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    tc = svc.create_lora_training_client(base_model=BASE_MODEL, rank=2).result(timeout=60)
    objs: list = [svc, sc, tc]
    objs += [sc.sample(types.ModelInput.from_ints([1, 2, 3]), 1, types.SamplingParams(max_tokens=8)) for _ in range(8)]
    objs.append(tc.forward_backward([text_datum("garbage collection")], "cross_entropy"))
    objs.append(tc.optim_step(types.AdamParams()))
    objs.append(svc.create_sampling_client(base_model=BASE_MODEL))  # a client future never taken
    objs.append(tc.save_weights_and_get_sampling_client())  # ditto, from the training client
    if rng.random() < 0.3:
        objs[rng.randrange(3, len(objs))].cancel()
    del svc, sc, tc
    rng.shuffle(objs)
    while objs:
        o = objs.pop()
        if rng.random() < 0.3 and isinstance(o, (tinkex.TrainingClient, tinkex.SamplingClient)):
            o.close()  # an explicit release while its requests are in flight
        del o
        r = rng.random()
        if r < 0.2:
            gc.collect()
        elif r < 0.3:
            t = threading.Thread(target=gc.collect)  # a collection on another thread
            t.start()
            t.join()


def test_gc_in_any_order_while_in_flight(base_url):
    rng = random.Random(1234)
    _round(base_url, rng)  # warm-up: runtime, connection pools, caches
    assert wait_until(lambda: tinkex.diagnostics()["inflight"] == 0, 60)
    gc.collect()
    base = tinkex.diagnostics()
    fds0, rss0, thr0 = _fds(), _rss_mb(), _threads()

    iterations = int(os.environ.get("TINKEX_GC_ITERATIONS", "150"))
    for _ in range(iterations):
        _round(base_url, rng)

    # Every completion ran (it found its state), every subscription's user_data_free ran.
    assert wait_until(lambda: tinkex.diagnostics()["inflight"] == 0, 120), tinkex.diagnostics()
    gc.collect()
    assert wait_until(lambda: tinkex.diagnostics()["subscriptions"] <= base["subscriptions"], 60), tinkex.diagnostics()
    d = tinkex.diagnostics()
    assert d["orphan_callbacks"] == 0
    assert d["callback_errors"] == base["callback_errors"]
    assert d["completed"] - base["completed"] >= iterations * 12

    assert wait_until(lambda: _fds() <= fds0 + 8, 30), (fds0, _fds())
    assert _threads() <= thr0 + 4, (thr0, _threads())
    growth = _rss_mb() - rss0
    print(f"{iterations} rounds: fds {fds0}->{_fds()}, threads {thr0}->{_threads()}, rss +{growth:.1f} MB")
    assert growth < 60, growth


def test_dropped_future_completes_into_the_registry_not_the_object(emu, shared_service):
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=2).result(timeout=60)
    emu.set_delays({"OptimStep": 400})
    fut = tc.optim_step(types.AdamParams())
    ref = weakref.ref(fut)
    state_ref = weakref.ref(fut._state)
    before = tinkex.diagnostics()["completed"]
    del fut
    gc.collect()
    assert ref() is None  # the user's future is gone at once
    assert state_ref() is not None  # its state waits in the registry for the completion
    assert wait_until(lambda: state_ref() is None, 30)  # released after the callback ran
    assert tinkex.diagnostics()["completed"] > before
    assert tinkex.diagnostics()["orphan_callbacks"] == 0


def test_handles_close_in_any_order(base_url):
    for order in range(6):
        svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY)
        sc = svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
        f = sc.sample(types.ModelInput.from_ints([1]), 1, types.SamplingParams(max_tokens=2))
        items = [svc._handle, sc._handle, f._state.handle]
        rng = random.Random(order)
        rng.shuffle(items)
        for h in items:
            h.close()
            h.close()  # idempotent
        with pytest.raises(tinkex.ClientStateError):
            sc.sample(types.ModelInput.from_ints([1]), 1, types.SamplingParams(max_tokens=2))
        assert f.result(timeout=30).sequences  # the operation still completes


def test_listener_referencing_its_client_does_not_pin_it(base_url):
    gc.collect()
    base = tinkex.diagnostics()["subscriptions"]
    refs = []
    for _ in range(20):
        svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY)
        svc.subscribe(lambda ev, svc=svc: svc.session_id)  # a cycle through the listener
        svc.get_server_capabilities()
        refs.append(weakref.ref(svc))
        del svc
    gc.collect()
    assert all(r() is None for r in refs)
    assert wait_until(lambda: tinkex.diagnostics()["subscriptions"] <= base, 30), tinkex.diagnostics()
