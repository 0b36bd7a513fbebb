"""Events: queue-state observers, progress and retry events, logging, tqdm."""

from __future__ import annotations

import ctypes
import logging
import threading
import time

import pytest

import tinkex
from tinkex import types
from conftest import API_KEY, BASE_MODEL, text_datum, wait_until


def test_queue_state_observer_is_called(emu, base_url):
    svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY)
    tc = svc.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    states = []
    events = []
    seen = threading.Event()

    def observer(queue_state, reason):
        states.append((queue_state, reason))
        if queue_state == types.QueueState.PAUSED_CAPACITY:
            seen.set()

    svc.add_queue_state_observer(observer)
    svc.subscribe(events.append, kinds=["queue_state"])
    emu.set_delays({"OptimStep": 1500})
    emu.post("queue_state", {"queue_state": "paused_capacity", "reason": "test"})
    fut = tc.optim_step(types.AdamParams())
    assert seen.wait(15), states
    emu.post("queue_state", {"queue_state": None})
    fut.result(timeout=30)
    assert (types.QueueState.PAUSED_CAPACITY, "test") in states
    ev = next(e for e in events if e.get("state") == "paused_capacity")
    assert ev.type == "queue_state" and ev.request_id and ev.get("request_type") == "OptimStep"


def test_sampling_client_on_queue_state_change_is_called(emu, base_url, caplog):
    svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY)
    sampler = svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    other = svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    mine, theirs = [], []
    sampler.on_queue_state_change = lambda state, reason: mine.append((state, reason))
    other.on_queue_state_change = lambda state, reason: theirs.append((state, reason))
    # The first two polls of the sample answer try_again with a paused queue state.
    emu.post("faults", {"path": "/api/v1/retrieve_future", "status": 200, "count": 2,
                        "body": {"type": "try_again", "request_id": "x", "queue_state": "paused_capacity",
                                 "queue_state_reason": "busy"}})
    with caplog.at_level(logging.WARNING, logger="tinkex"):
        sampler.sample(
            prompt=types.ModelInput.from_ints([1, 2, 3]),
            num_samples=1,
            sampling_params=types.SamplingParams(max_tokens=2),
        ).result(timeout=60)
        # The library's own (debounced) line reaches logging through the log sink, under
        # the target's logger: once for the two paused polls.
        line = f"Sampling is paused for sampler {sampler.sampling_session_id}. Reason: busy"
        assert wait_until(lambda: any(line in r.getMessage() for r in caplog.records)), caplog.text
        paused = [r for r in caplog.records if "Sampling is paused" in r.getMessage()]
    assert len(paused) == 1, [r.getMessage() for r in paused]
    assert paused[0].name.startswith("tinkex.") and paused[0].levelno == logging.WARNING
    # Events arrive on the library's callback thread, possibly after result() returned.
    deadline = time.monotonic() + 10
    while (types.QueueState.PAUSED_CAPACITY, "busy") not in mine:
        assert time.monotonic() < deadline, mine
        time.sleep(0.01)
    assert theirs == [], "only the sampling client whose request it was is told"


def test_retry_and_progress_events_and_log_lines(emu, base_url, caplog):
    svc = tinkex.ServiceClient(
        base_url=base_url,
        api_key=API_KEY,
        config={"progress_event_interval_ms": 100, "retry": {"base_delay_ms": 20, "max_delay_ms": 50}},
    )
    sc = svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    tc = svc.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    kinds = []
    svc.subscribe(lambda ev: kinds.append(ev.type))
    emu.post("faults", {"path": "/api/v1/asample", "status": 503, "count": 2})
    with caplog.at_level(logging.DEBUG, logger="tinkex"):
        res = sc.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2)).result(timeout=30)
        emu.set_delays({"OptimStep": 600})
        tc.optim_step(types.AdamParams()).result(timeout=30)
    assert len(res.sequences) == 1
    assert kinds.count("retry") >= 2
    assert "progress" in kinds and "summary" in kinds
    # The library's own lines (through the log sink, DEBUG: one per event), under its
    # targets' loggers.
    lines = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("tinkex.")]
    assert any("POST /api/v1/asample" in m and "503" in m for _, m in lines), caplog.text
    assert any("OptimStep" in m for _, m in lines), caplog.text  # progress


def test_listener_errors_are_contained(emu, base_url):
    svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY)

    def bad(ev):
        raise ValueError("listener bug")

    svc.subscribe(bad)
    emu.post("faults", {"path": "/api/v1/get_server_capabilities", "status": 503, "count": 1})
    before = tinkex.diagnostics()["callback_errors"]
    assert svc.get_server_capabilities().supported_models
    assert wait_until(lambda: tinkex.diagnostics()["callback_errors"] > before)


def test_on_event_argument_and_unsubscribe(emu, base_url):
    got = []
    svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, on_event=got.append)
    lid = svc.subscribe(got.append)
    assert svc.unsubscribe(lid) and not svc.unsubscribe(lid)
    emu.post("faults", {"path": "/api/v1/get_server_capabilities", "status": 503, "count": 1})
    svc.get_server_capabilities()
    assert wait_until(lambda: any(e.type == "retry" for e in got))
    assert sum(1 for e in got if e.type == "retry") == 1  # only the on_event listener


def test_tqdm_progress_bar(base_url, capsys):
    pytest.importorskip("tqdm")
    svc = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, progress_bar=True)
    assert svc._progress is not None and svc._progress.enabled
    sc = svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    futs = [sc.sample(types.ModelInput.from_ints([3, 4]), 1, types.SamplingParams(max_tokens=2)) for _ in range(20)]
    for f in futs:
        f.result(timeout=30)
    bar = svc._progress._bar
    assert wait_until(lambda: bar.n == bar.total == 21)
    svc.close("success").result(timeout=30)


def test_library_log_lines_reach_logging(caplog):
    """The core's log lines go through the runtime's log sink to logging.getLogger(target),
    at the mapped level, verbatim, in order; TRACE is not sent."""
    from tinkex import _constants, _ffi, _lib

    if not hasattr(_lib.lib, "tinkex_testing_log"):
        pytest.skip("library built without the `testing` feature")
    _ffi.runtime()  # the sink is installed with the runtime
    marker = f"sink-{time.monotonic_ns()}"

    def emit(level: str, text: str) -> None:
        data = f"{marker} {text}".encode()
        err = ctypes.c_void_p()
        _ffi.check(_lib.lib.tinkex_testing_log(_constants.LOG_LEVELS[level], data, len(data), ctypes.byref(err)), err)

    with caplog.at_level(5, logger="tinkex"):
        emit("trace", "trace line")
        emit("error", "error 100% %s")  # no %-formatting of the library's text
        emit("warn", "warn line")
        emit("info", "info line")
        emit("debug", "debug line")
        # In order: once the debug line is there, every earlier line was delivered.
        assert wait_until(lambda: any("debug line" in r.getMessage() for r in caplog.records)), caplog.text
    got = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if marker in r.getMessage()]
    assert got == [
        ("tinkex.testing", logging.ERROR, f"{marker} error 100% %s"),
        ("tinkex.testing", logging.WARNING, f"{marker} warn line"),
        ("tinkex.testing", logging.INFO, f"{marker} info line"),
        ("tinkex.testing", logging.DEBUG, f"{marker} debug line"),
    ], got
