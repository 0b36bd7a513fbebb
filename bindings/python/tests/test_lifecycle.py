"""Process lifecycle: exit with requests in flight, explicit shutdown, fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from conftest import API_KEY


def _script(code: str, base_url: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, TINKER_BASE_URL=base_url, TINKER_API_KEY=API_KEY, TINKER_TELEMETRY="0")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=timeout)
    return r, time.monotonic() - t0


def test_exit_with_requests_in_flight(emu, base_url):
    emu.set_delays({"OptimStep": 5000})
    r, elapsed = _script(
        """
        import tinkex
        from tinkex import types
        svc = tinkex.ServiceClient(on_event=lambda ev: None)
        sc = svc.create_sampling_client(base_model="Qwen/Qwen3-8B").result()
        tc = svc.create_lora_training_client(base_model="Qwen/Qwen3-8B", rank=2).result()
        futs = [sc.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=32)) for _ in range(200)]
        opt = tc.optim_step(types.AdamParams())
        print("exiting with", tinkex.diagnostics()["inflight"], "in flight", flush=True)
        """,
        base_url,
    )
    assert r.returncode == 0, r.stderr
    assert "exiting with" in r.stdout
    assert elapsed < 20, elapsed
    assert "Traceback" not in r.stderr and "Fatal" not in r.stderr, r.stderr


def test_explicit_shutdown_fails_pending_then_restarts(emu, base_url):
    emu.set_delays({"OptimStep": 3000})
    r, _ = _script(
        """
        import tinkex
        from tinkex import types
        svc = tinkex.ServiceClient()
        tc = svc.create_lora_training_client(base_model="Qwen/Qwen3-8B", rank=2).result()
        fut = tc.optim_step(types.AdamParams())
        tinkex.shutdown(0)
        try:
            fut.result(timeout=10)
            print("no error")
        except tinkex.ShutDownError as e:
            print("shut down:", e.kind)
        try:
            tc.optim_step(types.AdamParams())
        except tinkex.ShutDownError:
            print("old client refuses")
        svc2 = tinkex.ServiceClient()  # a new runtime
        print("capabilities:", len(svc2.get_server_capabilities().supported_models) > 0)
        """,
        base_url,
    )
    assert r.returncode == 0, r.stderr
    assert "shut down: shut_down" in r.stdout
    assert "old client refuses" in r.stdout
    assert "capabilities: True" in r.stdout


def test_forked_child_gets_its_own_runtime(base_url):
    r, _ = _script(
        """
        import multiprocessing as mp
        import tinkex
        from tinkex import types

        def child(q):
            svc = tinkex.ServiceClient()
            sc = svc.create_sampling_client(base_model="Qwen/Qwen3-8B").result(timeout=30)
            q.put(len(sc.sample(types.ModelInput.from_ints([1]), 2, types.SamplingParams(max_tokens=2)).result(timeout=30).sequences))

        svc = tinkex.ServiceClient()
        svc.get_server_capabilities()  # the parent's runtime exists before the fork
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        print("child samples:", q.get(timeout=60))
        p.join(30)
        print("parent still works:", len(svc.get_server_capabilities().supported_models) > 0)
        """,
        base_url,
    )
    assert r.returncode == 0, r.stderr
    assert "child samples: 2" in r.stdout and "parent still works: True" in r.stdout
