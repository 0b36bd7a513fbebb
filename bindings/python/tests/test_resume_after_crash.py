"""A training run whose client process was killed mid-run is resumed from its latest
checkpoint by another process (issue 14, acceptance 3; PROTOCOL.md 6.8, 11.1-11.3).

The child process trains, saves a checkpoint, reports it, and keeps training until it is
killed with SIGKILL (no close, no finish: the crash case). This process then resumes the run
with ``ServiceClient.resume_training_run`` (one call that finds the run's latest training
checkpoint) and keeps training the new model.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import API_KEY, BASE_MODEL, text_datum

CHILD = r"""
import json, sys
import tinkex
from tinkex import types
sys.path.insert(0, sys.argv[2])
from conftest import text_datum
svc = tinkex.ServiceClient(base_url=sys.argv[1], api_key=sys.argv[3], telemetry=False)
tc = svc.create_lora_training_client(sys.argv[4], rank=8).result(timeout=60)
data = [text_datum("resume me after a crash")]
for step in range(2):
    tc.forward_backward(data, "cross_entropy").result(timeout=60)
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=60)
path = tc.save_state("before-crash").result(timeout=60).path
loss = tc.forward(data, "cross_entropy").result(timeout=60).metrics["loss:sum"]
print(json.dumps({"run": tc.model_id, "path": path, "loss": loss}), flush=True)
while True:  # mid-run when the parent kills us
    tc.forward_backward(data, "cross_entropy").result(timeout=60)
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=60)
"""


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            return proc.stdout.readline().decode()
    raise AssertionError(f"the child printed nothing within {timeout} s")


def test_a_killed_run_is_resumed_from_its_latest_checkpoint_by_another_process(emulator):
    import tinkex
    from tinkex import types

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, emulator.base_url, tests_dir, API_KEY, BASE_MODEL],
        stdout=subprocess.PIPE,
        env={**os.environ, "TINKER_TELEMETRY": "0"},
    )
    try:
        saved = json.loads(_read_line(child, 120))
        run, path = saved["run"], saved["path"]
        assert path.startswith(f"tinker://{run}/weights/before-crash")
        # Let it get into the next step, then kill it without any chance to clean up.
        before = emulator.get(f"models/{run}")
        deadline = time.monotonic() + 30
        while emulator.get(f"models/{run}") == before and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)

    emulator.control("DELETE", "journal")
    svc = tinkex.ServiceClient(base_url=emulator.base_url, api_key=API_KEY, telemetry=False)
    try:
        tc = svc.resume_training_run(run).result(timeout=60)
        assert tc.model_id != run, "resuming creates a new model from the checkpoint"
        journal = emulator.get("journal")["journal"]
        loads = [e for e in journal if e["path"].endswith("/load_weights")]
        assert loads, f"no load_weights was sent: {[e['path'] for e in journal]}"
        # The resumed model has the checkpoint's weights (not the killed client's later ones)...
        data = [text_datum("resume me after a crash")]
        at_checkpoint = tc.forward(data, "cross_entropy").result(timeout=60).metrics["loss:sum"]
        assert at_checkpoint == pytest.approx(saved["loss"], rel=1e-5)
        # ...and trains on (its seq_ids run from the load, no gap, no replay).
        out = tc.forward_backward(data, "cross_entropy").result(timeout=60)
        assert out.loss_fn_outputs
        tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=60)
        info = tc.get_info()
        assert info.model_id == tc.model_id
    finally:
        svc.close("success").result(timeout=30)
