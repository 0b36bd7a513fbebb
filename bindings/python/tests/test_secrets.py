"""The secrets test through the Python binding (issue 11).

A child interpreter (this file run as a script) does a full training + sampling + REST run
against the session emulator with the library's log at DEBUG (``TINKEX_LOG_LEVEL=debug``,
the Rust stderr log) and the package's Python logging at DEBUG (``TINKER_LOG=debug``),
telemetry on, every event printed (``on_event``), every exception printed (``str`` and
``repr``), plus errors from bad input: a base URL with credentials, wrongly-typed config
values, a key with a control character. The parent asserts the canary key appears in no
byte of the child's output and in no telemetry batch the emulator received.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CANARY_KEY = "tml-SECRET-CANARY-0123456789"
BASE_MODEL = "Qwen/Qwen3-8B"


def test_the_key_appears_nowhere(emulator):
    before = len(emulator.get("telemetry")["batches"])
    # Some retries (their events and log lines carry server text) and slow operations.
    emulator.post("faults", {"path": "/api/v1/optim_step", "status": 503, "count": 2,
                             "body": {"detail": "overloaded, retry"}})
    emulator.post("delays", {"ForwardBackward": 300})
    env = dict(os.environ)
    env.update({"TINKEX_LOG_LEVEL": "debug", "TINKER_LOG": "debug", "TINKER_TELEMETRY": "1",
                "PYTHONFAULTHANDLER": "1"})
    env.pop("TINKER_API_KEY", None)
    child = subprocess.run(
        [sys.executable, str(Path(__file__)), "child", emulator.base_url],
        env=env, capture_output=True, timeout=300,
    )
    emulator.control("DELETE", "faults")
    emulator.post("delays", {"ForwardBackward": None})
    out = child.stdout + b"\n" + child.stderr
    text = out.decode("utf-8", "replace")
    batches = emulator.get("telemetry")["batches"][before:]
    print(f"child exit {child.returncode}; {len(out)} bytes of output; "
          f"{sum(l.startswith('EVENT ') for l in text.splitlines())} events, "
          f"{sum(l.startswith('ERROR ') for l in text.splitlines())} errors, "
          f"{sum('[tinkex ' in l for l in text.splitlines())} library log lines; "
          f"{len(batches)} telemetry batches")
    assert child.returncode == 0, text[-3000:]
    assert "SECRETS-DONE" in text, text[-3000:]
    assert any(l.startswith("EVENT ") for l in text.splitlines()), "no event captured"
    assert any(l.startswith("ERROR ") for l in text.splitlines()), "no error captured"
    assert batches, "the emulator received no telemetry batch"
    leaks = [l[:300] for l in text.splitlines() if "SECRET-CANARY" in l]
    assert not leaks, "the canary is in the output:\n" + "\n".join(leaks)
    assert "SECRET-CANARY" not in repr(batches), "the canary is in a telemetry batch"


def _child(url: str) -> None:
    import tinkex
    from tinkex import types

    def err(what, e):
        print(f"ERROR {what}: {type(e).__name__}: {e} | {e!r}", flush=True)

    # Bad input.
    bad_configs = [
        dict(base_url=f"http://user:{CANARY_KEY}@127.0.0.1:9/", api_key=CANARY_KEY),
        dict(base_url=f"http://localhost:{CANARY_KEY}@attacker.example/", api_key=CANARY_KEY),
        dict(base_url=url, api_key=CANARY_KEY + "\x07"),
        dict(base_url=url, api_key=CANARY_KEY, config={"timeouts": CANARY_KEY}),
        dict(base_url=url, api_key=CANARY_KEY, config={"telemetry": CANARY_KEY}),
        dict(base_url=url, api_key={"value": CANARY_KEY}),
    ]
    for kw in bad_configs:
        try:
            c = tinkex.ServiceClient(telemetry=False, **kw)
            print(f"CONFIG accepted: {c!r}", flush=True)
            c.close("success")
        except BaseException as e:  # noqa: BLE001
            err("bad config", e)

    events = []

    def on_event(ev):
        events.append(ev)
        print(f"EVENT {ev!r}", flush=True)

    svc = tinkex.ServiceClient(
        base_url=url, api_key=CANARY_KEY, telemetry=True, on_event=on_event,
        config={"telemetry_settings": {"flush_interval_ms": 100},
                "retry": {"base_delay_ms": 10, "max_delay_ms": 100, "min_poll_duration_ms": 50},
                "progress_event_interval_ms": 50},
    )
    print(f"REPR {svc!r}", flush=True)
    toks = list(b"the cat sat on the mat")
    datum = types.Datum(model_input=types.ModelInput.from_ints(toks[:-1]),
                        loss_fn_inputs={"target_tokens": toks[1:], "weights": [1.0] * (len(toks) - 1)})
    tc = svc.create_lora_training_client(base_model=BASE_MODEL, rank=8).result(timeout=60)
    for _ in range(3):
        fb = tc.forward_backward([datum], "cross_entropy")
        opt = tc.optim_step(types.AdamParams(learning_rate=1e-3))
        print("RESULT", fb.result(timeout=60).metrics, opt.result(timeout=60), flush=True)
    path = tc.save_state("secrets").result(timeout=60).path
    sc = tc.save_weights_and_get_sampling_client()
    print("RESULT", sc.sample(types.ModelInput.from_ints([1, 2, 3]), 2, types.SamplingParams(max_tokens=4)).result(timeout=60), flush=True)
    print("RESULT", sc.compute_logprobs(types.ModelInput.from_ints([1, 2, 3])).result(timeout=60), flush=True)
    rest = svc.create_rest_client()
    print("RESULT", rest.list_training_runs().result(timeout=60), flush=True)
    print("RESULT", rest.get_training_run(tc.model_id).result(timeout=60), flush=True)
    print("RESULT", rest.list_checkpoints(tc.model_id).result(timeout=60), flush=True)
    print("RESULT", rest.list_user_checkpoints().result(timeout=60), flush=True)
    print("RESULT", rest.get_weights_info_by_tinker_path(path).result(timeout=60), flush=True)
    for what, fn in [
        ("no such run", lambda: rest.get_training_run("no-such-run").result(timeout=60)),
        ("bad loss", lambda: tc.forward_backward([datum], "no_such_loss").result(timeout=60)),
        ("bad sampler", lambda: svc.create_sampling_client(model_path="tinker://nope/sampler_weights/x").result(timeout=60)),
        ("bad delete", lambda: rest.delete_checkpoint_from_tinker_path("not-a-path").result(timeout=60)),
        ("bad load", lambda: tc.load_state("tinker://nope/weights/nope").result(timeout=60)),
    ]:
        try:
            fn()
            print(f"UNEXPECTED success: {what}", flush=True)
        except BaseException as e:  # noqa: BLE001
            err(what, e)
    svc.close("success")
    print(f"EVENTS seen {len(events)}", flush=True)
    print("SECRETS-DONE", flush=True)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "child":
    _child(sys.argv[2])
