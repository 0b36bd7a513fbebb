#!/usr/bin/env python3
"""Conformance test: the UNMODIFIED official Tinker Python SDK (tinker==0.38.0) against
the tinkex emulator.

Reads TINKER_BASE_URL and TINKER_API_KEY from the environment (run.sh sets both after
starting the emulator). TINKER_TELEMETRY is left as the environment gives it: with the
SDK's default (on) the telemetry batches go to the emulator and must be accepted.

Uses only the SDK's public sync API (`.result()`). Every step asserts with a message
saying what was expected; any failure prints a traceback and exits with status 1.

Steps: capabilities -> LoRA training client -> 20 x (forward_backward + optim_step), loss
must fall -> save_state -> forward (L) -> snapshot sampling client: sample, compute_logprobs
(must equal forward's logprobs) -> 3 more steps -> the snapshot is unchanged -> load_state
and create_training_client_from_state both reproduce L -> RestClient.list_checkpoints ->
first session heartbeat (~10 s after the session starts) -> close -> telemetry accepted.
The httpx request log is captured (logging only) to report every endpoint and status.

CONFORMANCE_MODE (set by run.sh --mode) names how the emulator was started and adds checks
read from the emulator's request journal (GET /_emulator/journal):

* default: plain API key; sampling polls retrieve_future.
* jwt (`pjwt_auth_enabled`): the SDK exchanged its key at POST /api/v1/auth/token and every
  exchange succeeded (PROTOCOL.md 2.5, 2.7).
* retrieve_futures (`sample_use_retrieve_futures`, `sample_cancel_enabled`): sampling went
  through the batched poller POST /api/v1/retrieve_futures (8.2), and a sample abandoned
  while its completion was being waited for sent POST /api/v1/cancel_future (8.3).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import sys
import time
import traceback
import warnings
from collections import Counter
from contextlib import contextmanager
from typing import Iterator, Sequence

import json
import urllib.request

import tinker
from tinker import types

# ------------------------------------------------------------------------------------------
# Parameters of the run
# ------------------------------------------------------------------------------------------

BASE_MODEL = "Qwen/Qwen3-8B"
LORA_RANK = 8
NUM_DATUMS = 4
SEQ_LEN = 24  # tokens per datum (model input length == target length)
TOKEN_LOW, TOKEN_HIGH = 100_000, 150_000
DATA_SEED = 20240601
LEARNING_RATE = float(os.environ.get("CONFORMANCE_LR", "1e-3"))
TRAIN_STEPS = 20
EXTRA_STEPS = 3
# The last of the TRAIN_STEPS losses must be below this fraction of the first one.
# The emulator's tiny model reaches ~0.22-0.25 at lr 1e-3; 0.5 leaves a 2x margin.
MAX_FINAL_LOSS_RATIO = float(os.environ.get("CONFORMANCE_MAX_LOSS_RATIO", "0.5"))
CHECKPOINT_NAME = "conformance-step-20"
RELOAD_TOLERANCE = 1e-4  # abs diff of the per-token loss after restoring the checkpoint
RESULT_TIMEOUT_S = 180.0  # bound on every single .result() wait
HEARTBEAT_DEADLINE_S = 30.0  # the SDK sends its first heartbeat 10 s after the session starts
MODES = ("default", "jwt", "retrieve_futures")
MODE = os.environ.get("CONFORMANCE_MODE", "default")
CANCEL_DEADLINE_S = 20.0  # the abandoned sample's cancel_future must arrive within this
CANCEL_HOLD_MS = 3000  # the poll of the sample to abandon is held this long by a fault rule

# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------


class ConformanceError(AssertionError):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConformanceError(msg)


def log(msg: str) -> None:
    print(msg, flush=True)


STEP_TIMES: list[tuple[str, float]] = []


@contextmanager
def step(name: str) -> Iterator[None]:
    log(f"--- {name}")
    t0 = time.monotonic()
    try:
        yield
    except BaseException:
        log(f"FAILED in step: {name} (after {time.monotonic() - t0:.2f}s)")
        raise
    dt = time.monotonic() - t0
    STEP_TIMES.append((name, dt))
    log(f"    ok ({dt:.2f}s)")


@contextmanager
def deprecated_call() -> Iterator[None]:
    """The SDK marks some still-present methods deprecated (FutureWarning); calling them
    is deliberate here, so keep the output clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def result(fut, what: str):
    try:
        return fut.result(timeout=RESULT_TIMEOUT_S)
    except TimeoutError as e:  # concurrent.futures.TimeoutError is an alias since 3.11
        raise ConformanceError(f"{what}: no result within {RESULT_TIMEOUT_S:.0f}s") from e


class _Recorder(logging.Handler):
    """Records the SDK's log output (warnings, errors) and httpx's one-line request log
    (`HTTP Request: POST http://.../api/v1/... "HTTP/1.1 200 OK"`), so the run can report
    which endpoints were called and with what status, without touching the SDK."""

    REQ = re.compile(r'HTTP Request: (\S+) (\S+) "(\S+) (\d+)')

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.requests: list[tuple[str, str, int]] = []
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover - defensive
            msg = str(record.msg)
        m = self.REQ.search(msg)
        if m:
            method, url, _http, status = m.groups()
            path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
            self.requests.append((method, path, int(status)))
            return
        if record.levelno >= logging.WARNING:
            self.problems.append(f"{record.levelname} {record.name}: {msg}")


RECORDER = _Recorder()


def install_log_recorder() -> None:
    httpx_logger = logging.getLogger("httpx")
    httpx_logger.setLevel(logging.INFO)
    httpx_logger.addHandler(RECORDER)
    httpx_logger.propagate = False
    tinker_logger = logging.getLogger("tinker")
    tinker_logger.addHandler(RECORDER)
    # Keep the SDK's own warnings visible on stderr too.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def endpoint_summary() -> Counter:
    def normalise(path: str) -> str:
        path = re.sub(r"/sessions/[^/]+/finish$", "/sessions/{id}/finish", path)
        path = re.sub(r"/samplers/.+$", "/samplers/{id}", path)
        path = re.sub(r"/training_runs/[^/]+/checkpoints$", "/training_runs/{id}/checkpoints", path)
        path = re.sub(r"/training_runs/[^/]+$", "/training_runs/{id}", path)
        return path

    return Counter((m, normalise(p), s) for m, p, s in RECORDER.requests)


def control(method: str, path: str, body: object = None) -> object:
    """The emulator's control API (/_emulator/...), not the SDK."""
    base = os.environ["TINKER_BASE_URL"].rstrip("/")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/_emulator/{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def journal(path_suffix: str) -> list[int]:
    """Statuses of the API requests whose path ends with `path_suffix`, in order (0: the
    connection was broken), from the emulator's journal."""
    entries = control("GET", "journal")["journal"]  # type: ignore[index]
    return [e["status"] for e in entries if e["path"].endswith(path_suffix)]


def polls_received() -> int:
    """retrieve_future and retrieve_futures requests that reached the emulator, including
    those still held (the journal lists a request only once answered)."""
    counts = control("GET", "requests")["requests"]  # type: ignore[index]
    return sum(n for p, n in counts.items() if p.startswith("/api/v1/retrieve_future"))


def wait_journal(path_suffix: str, deadline_s: float) -> list[int]:
    """The statuses of `path_suffix` requests once there is one, or [] after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        seen = journal(path_suffix)
        if seen or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def telemetry_enabled() -> bool:
    # Same rule as the SDK (tinker/lib/telemetry.py).
    return os.environ.get("TINKER_TELEMETRY", "1").lower() in {"1", "true", "yes", "on"}


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def make_sequences() -> list[list[int]]:
    rng = random.Random(DATA_SEED)
    return [[rng.randint(TOKEN_LOW, TOKEN_HIGH) for _ in range(SEQ_LEN + 1)] for _ in range(NUM_DATUMS)]


def make_batch(seqs: Sequence[Sequence[int]]) -> list[types.Datum]:
    batch = []
    for seq in seqs:
        inputs = list(seq[:-1])
        targets = list(seq[1:])  # inputs shifted by one
        batch.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(inputs),
                loss_fn_inputs={
                    "target_tokens": types.TensorData(data=targets, dtype="int64", shape=[len(targets)]),
                    "weights": types.TensorData(data=[1.0] * len(targets), dtype="float32", shape=[len(targets)]),
                },
            )
        )
    return batch


def total_weight(batch: Sequence[types.Datum]) -> float:
    return float(sum(sum(d.loss_fn_inputs["weights"].tolist()) for d in batch))


def check_fwd_output(out: types.ForwardBackwardOutput, batch: Sequence[types.Datum], what: str) -> float:
    """Validate a cross-entropy ForwardBackwardOutput; return the per-token loss."""
    check(isinstance(out, types.ForwardBackwardOutput), f"{what}: expected ForwardBackwardOutput, got {type(out)!r}")
    check("loss:sum" in out.metrics, f"{what}: metrics lack 'loss:sum' (got keys {sorted(out.metrics)})")
    for key in out.metrics:
        check(key.count(":") == 1, f"{what}: metric key {key!r} must contain exactly one ':' (PROTOCOL.md 6.3)")
    loss_sum = float(out.metrics["loss:sum"])
    check(math.isfinite(loss_sum) and loss_sum > 0, f"{what}: loss:sum should be finite and > 0, got {loss_sum}")
    check(
        len(out.loss_fn_outputs) == len(batch),
        f"{what}: expected {len(batch)} loss_fn_outputs (one per datum), got {len(out.loss_fn_outputs)}",
    )
    # Cross entropy: loss:sum == -sum(weights * logprobs) over all datums (PROTOCOL.md 11.6).
    recomputed = 0.0
    for i, (o, d) in enumerate(zip(out.loss_fn_outputs, batch)):
        check("logprobs" in o, f"{what}: loss_fn_outputs[{i}] lacks 'logprobs' (keys {sorted(o)})")
        lp = o["logprobs"]
        n = len(d.loss_fn_inputs["target_tokens"].tolist())
        shape = list(lp.shape) if lp.shape is not None else [len(lp.tolist())]
        check(shape == [n], f"{what}: loss_fn_outputs[{i}]['logprobs'] shape {shape}, expected [{n}] (target_tokens)")
        vals = lp.tolist()
        check(all(math.isfinite(v) and v <= 1e-6 for v in vals), f"{what}: logprobs must be finite and <= 0: {vals}")
        w = d.loss_fn_inputs["weights"].tolist()
        recomputed += -sum(wi * vi for wi, vi in zip(w, vals))
    check(
        abs(recomputed - loss_sum) <= 1e-3 * max(1.0, abs(loss_sum)),
        f"{what}: loss:sum {loss_sum} != -sum(weights*logprobs) {recomputed}",
    )
    return loss_sum / total_weight(batch)


def fwd_loss(tc: tinker.TrainingClient, batch, what: str) -> tuple[float, list[list[float]]]:
    out = result(tc.forward(batch, "cross_entropy"), what)
    loss = check_fwd_output(out, batch, what)
    return loss, [o["logprobs"].tolist() for o in out.loss_fn_outputs]


def train_step(tc: tinker.TrainingClient, batch, what: str) -> float:
    # Submit both before awaiting (the SDK orders them by seq_id), as real training loops do.
    fb_fut = tc.forward_backward(batch, "cross_entropy")
    opt_fut = tc.optim_step(types.AdamParams(learning_rate=LEARNING_RATE))
    out = result(fb_fut, f"{what} forward_backward")
    loss = check_fwd_output(out, batch, f"{what} forward_backward")
    opt = result(opt_fut, f"{what} optim_step")
    check(isinstance(opt, types.OptimStepResponse), f"{what} optim_step: got {type(opt)!r}")
    if opt.metrics is not None:
        for k, v in opt.metrics.items():
            check(k.count(":") == 1, f"{what} optim_step: metric key {k!r} must contain exactly one ':'")
            check(math.isfinite(float(v)), f"{what} optim_step: metric {k}={v} not finite")
    return loss


def max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


# ------------------------------------------------------------------------------------------
# The scenario
# ------------------------------------------------------------------------------------------


def run() -> dict:
    summary: dict = {}
    base_url = os.environ.get("TINKER_BASE_URL", "")
    api_key = os.environ.get("TINKER_API_KEY", "")
    check(base_url != "", "TINKER_BASE_URL must be set (the emulator's base URL)")
    check(api_key.startswith("tml-"), "TINKER_API_KEY must be set to a key starting with 'tml-'")
    check(MODE in MODES, f"CONFORMANCE_MODE must be one of {MODES}, got {MODE!r}")
    log(f"tinker SDK {tinker.__version__} -> {base_url} (mode {MODE}, "
        f"telemetry {'on' if telemetry_enabled() else 'off'})")
    check(tinker.__version__ == "0.38.0", f"expected tinker 0.38.0, imported {tinker.__version__}")

    seqs = make_sequences()
    batch = make_batch(seqs)

    service = tinker.ServiceClient()
    closed = False
    try:
        with step("get_server_capabilities (ServiceClient, deprecated) and RestClient"):
            with deprecated_call():
                caps = service.get_server_capabilities()
            names = [m.model_name for m in caps.supported_models]
            log(f"    supported models: {names}")
            check(BASE_MODEL in names, f"get_server_capabilities should list {BASE_MODEL}, got {names}")
            qwen = next(m for m in caps.supported_models if m.model_name == BASE_MODEL)
            check(qwen.trainable is not False, f"{BASE_MODEL} should be trainable: {qwen}")
            check(qwen.sampleable is not False, f"{BASE_MODEL} should be sampleable: {qwen}")
            rest = tinker.RestClient()
            caps2 = result(rest.get_server_capabilities(), "RestClient.get_server_capabilities")
            check(
                BASE_MODEL in [m.model_name for m in caps2.supported_models],
                f"RestClient.get_server_capabilities should list {BASE_MODEL}",
            )

        with step(f"create_lora_training_client(base_model={BASE_MODEL!r}, rank={LORA_RANK})"):
            tc = result(service.create_lora_training_client(base_model=BASE_MODEL, rank=LORA_RANK), "create_lora_training_client")
            check(isinstance(tc, tinker.TrainingClient), f"expected a TrainingClient, got {type(tc)!r}")
            run_id = tc.model_id
            check(bool(run_id), "training client has no model_id")
            info = tc.get_info()
            log(f"    model_id={run_id} model_name={info.model_data.model_name} lora_rank={info.lora_rank}")
            check(info.model_data.model_name == BASE_MODEL, f"get_info model_data.model_name should be {BASE_MODEL}: {info}")
            if info.lora_rank is not None:
                check(info.lora_rank == LORA_RANK, f"get_info lora_rank should be {LORA_RANK}: {info.lora_rank}")
            summary["run_id"] = run_id

        losses: list[float] = []
        with step(f"{TRAIN_STEPS} x (forward_backward cross_entropy + optim_step lr={LEARNING_RATE:g})"):
            for i in range(1, TRAIN_STEPS + 1):
                loss = train_step(tc, batch, f"step {i}")
                losses.append(loss)
                log(f"    step {i:2d} loss {loss:.6f}")
            ratio = losses[-1] / losses[0]
            log(f"    first {losses[0]:.6f} last {losses[-1]:.6f} ratio {ratio:.3f} (must be < {MAX_FINAL_LOSS_RATIO})")
            check(
                ratio < MAX_FINAL_LOSS_RATIO,
                f"loss did not go down enough: first {losses[0]:.6f}, last {losses[-1]:.6f}, "
                f"ratio {ratio:.3f} >= {MAX_FINAL_LOSS_RATIO}",
            )
            summary["losses"] = losses

        with step(f"save_state({CHECKPOINT_NAME!r})"):
            saved = result(tc.save_state(CHECKPOINT_NAME), "save_state")
            path = saved.path
            log(f"    path {path}")
            check(
                isinstance(path, str) and path.startswith("tinker://") and f"/weights/{CHECKPOINT_NAME}" in path,
                f"save_state should return tinker://<run>/weights/{CHECKPOINT_NAME}, got {path!r}",
            )
            check(path == f"tinker://{run_id}/weights/{CHECKPOINT_NAME}",
                  f"save_state path {path!r} should be tinker://{run_id}/weights/{CHECKPOINT_NAME} (PROTOCOL.md 6.5)")
            summary["checkpoint"] = path

        with step("forward(batch) at the saved state -> L"):
            L, L_logprobs = fwd_loss(tc, batch, "forward at step 20")
            log(f"    L = {L:.6f}")
            # forward must not accumulate gradients or change weights
            L_again, _ = fwd_loss(tc, batch, "second forward at step 20")
            check(abs(L_again - L) < 1e-6, f"forward changed the model: L={L} then {L_again}")
            # The training loss of step 20 was measured before its optim_step, so L differs.
            summary["L"] = L

        with step("save_weights_and_get_sampling_client() + sample(num_samples=4)"):
            sc = result(tc.save_weights_and_get_sampling_client(), "save_weights_and_get_sampling_client")
            check(isinstance(sc, tinker.SamplingClient), f"expected SamplingClient, got {type(sc)!r}")
            check(sc.get_base_model() == BASE_MODEL, f"sampling client base model {sc.get_base_model()!r} != {BASE_MODEL}")
            prompt = types.ModelInput.from_ints(seqs[0][:8])
            resp = result(
                sc.sample(
                    prompt=prompt,
                    num_samples=4,
                    sampling_params=types.SamplingParams(max_tokens=8, temperature=1.0),
                ),
                "sample",
            )
            check(isinstance(resp, types.SampleResponse), f"sample: expected SampleResponse, got {type(resp)!r}")
            check(len(resp.sequences) == 4, f"sample: expected 4 sequences, got {len(resp.sequences)}")
            ids = set()
            for j, s in enumerate(resp.sequences):
                toks = s.tokens
                lps = s.logprobs
                check(1 <= len(toks) <= 8, f"sample: sequence {j} has {len(toks)} tokens, expected 1..8 (max_tokens=8)")
                check(all(isinstance(t, int) and t >= 0 for t in toks), f"sample: sequence {j} has bad token ids {toks}")
                check(lps is not None and len(lps) == len(toks),
                      f"sample: sequence {j} logprobs {lps} should have one entry per token ({len(toks)})")
                check(all(math.isfinite(v) and v <= 1e-6 for v in lps), f"sample: sequence {j} logprobs not <= 0: {lps}")
                check(s.stop_reason in ("length", "stop"), f"sample: sequence {j} stop_reason {s.stop_reason!r}")
                if s.stop_reason == "length":
                    check(len(toks) == 8, f"sample: sequence {j} stopped for 'length' with {len(toks)} tokens")
                check(bool(s.sequence_id), f"sample: sequence {j} has no sequence_id (from sample_sequence_ids)")
                ids.add(s.sequence_id)
                log(f"    seq {j}: stop={s.stop_reason} tokens={toks} logprobs={[round(v, 3) for v in lps]}")
            check(len(ids) == 4, f"sample: sequence ids should be distinct, got {[s.sequence_id for s in resp.sequences]}")

        if MODE == "retrieve_futures":
            with step("retrieve_futures mode: sampling used the poller; an abandoned sample sends cancel_future"):
                polls = journal("/api/v1/retrieve_futures")
                log(f"    retrieve_futures statuses so far: {polls}")
                check(any(200 <= s < 300 for s in polls),
                      f"sample_use_retrieve_futures is on but no 2xx POST /api/v1/retrieve_futures "
                      f"was seen (statuses {polls}) (PROTOCOL.md 8.2)")
                # Hold every poll (both endpoints share the prefix) so the sample is still
                # pending when it is abandoned, then abandon it.
                polls_before = polls_received()
                control("POST", "faults", {"path": "/api/v1/retrieve_future", "latency_ms": CANCEL_HOLD_MS,
                                           "duration_ms": CANCEL_HOLD_MS})
                try:
                    fut = sc.sample(prompt=prompt, num_samples=1,
                                    sampling_params=types.SamplingParams(max_tokens=8))
                    # Abandon it once its completion is being waited for (a poll reached the
                    # server and is held): before that the SDK has no request id to cancel.
                    deadline = time.monotonic() + 10
                    while polls_received() <= polls_before and time.monotonic() < deadline:
                        time.sleep(0.02)
                    check(polls_received() > polls_before, "the sample to abandon was never polled")
                    cancelled = fut.future().cancel()
                    log(f"    future().cancel() -> {cancelled}")
                    check(cancelled, "the sample to abandon completed before it could be cancelled")
                    cancels = wait_journal("/api/v1/cancel_future", CANCEL_DEADLINE_S)
                finally:
                    control("DELETE", "faults")
                log(f"    cancel_future statuses: {cancels}")
                check(len(cancels) == 1, f"expected one POST /api/v1/cancel_future within "
                                         f"{CANCEL_DEADLINE_S:.0f}s, got {cancels} (PROTOCOL.md 8.3)")
                check(200 <= cancels[0] < 300, f"cancel_future answered {cancels[0]} (PROTOCOL.md 8.3)")

        with step("compute_logprobs on the step-20 sampling client"):
            full = seqs[0]  # datum 0: inputs = full[:-1], targets = full[1:]
            cl = result(sc.compute_logprobs(types.ModelInput.from_ints(full)), "compute_logprobs")
            check(isinstance(cl, list) and len(cl) == len(full),
                  f"compute_logprobs: expected a list of {len(full)} entries, got {cl!r}")
            check(cl[0] is None, f"compute_logprobs: position 0 has no context and should be None, got {cl[0]!r}")
            check(all(v is not None and math.isfinite(v) and v <= 1e-6 for v in cl[1:]),
                  f"compute_logprobs: positions 1.. should be finite logprobs <= 0: {cl}")
            d = max_abs_diff(cl[1:], L_logprobs[0])
            log(f"    max |compute_logprobs - forward logprobs| = {d:.2e}")
            check(d < 1e-3, f"compute_logprobs of the step-20 snapshot should match forward() logprobs of datum 0 "
                            f"at step 20 (max abs diff {d:.3e}): {cl[1:]} vs {L_logprobs[0]}")
            summary["compute_logprobs_vs_forward"] = d

        with step(f"train {EXTRA_STEPS} more steps (loss changes)"):
            extra = []
            for i in range(TRAIN_STEPS + 1, TRAIN_STEPS + EXTRA_STEPS + 1):
                loss = train_step(tc, batch, f"step {i}")
                extra.append(loss)
                log(f"    step {i:2d} loss {loss:.6f}")
            L_after, _ = fwd_loss(tc, batch, f"forward after step {TRAIN_STEPS + EXTRA_STEPS}")
            log(f"    loss after {TRAIN_STEPS + EXTRA_STEPS} steps {L_after:.6f} (L was {L:.6f})")
            check(abs(L_after - L) > 10 * RELOAD_TOLERANCE,
                  f"training {EXTRA_STEPS} more steps should change the loss: L={L}, now {L_after}")
            summary["extra_losses"] = extra
            summary["L_after_extra"] = L_after

        with step("snapshot sampler still serves step-20 weights"):
            cl2 = result(sc.compute_logprobs(types.ModelInput.from_ints(seqs[0])), "compute_logprobs (after more training)")
            d2 = max_abs_diff(cl2[1:], cl[1:])
            log(f"    max |logprobs now - logprobs before| = {d2:.2e}")
            check(d2 < 1e-5, f"a 'snapshot' sampling client must keep its weights (PROTOCOL.md 6.6); "
                             f"compute_logprobs moved by {d2:.3e} after more training")

        with step("load_state(path) (deprecated) -> forward reproduces L"):
            with deprecated_call():
                lr = result(tc.load_state(path), "load_state")
            log(f"    load_state -> {lr}")
            L_load, _ = fwd_loss(tc, batch, "forward after load_state")
            log(f"    L after load_state {L_load:.6f} (diff {abs(L_load - L):.2e})")
            check(abs(L_load - L) < RELOAD_TOLERANCE,
                  f"forward after load_state({path}) should reproduce L={L:.6f}, got {L_load:.6f}")
            summary["L_load_state"] = L_load

        with step("create_training_client_from_state(path) -> forward reproduces L"):
            tc2 = result(service.create_training_client_from_state(path), "create_training_client_from_state")
            check(isinstance(tc2, tinker.TrainingClient), f"expected TrainingClient, got {type(tc2)!r}")
            check(tc2.model_id != run_id, f"the new training client should be a new training run, got {tc2.model_id}")
            info2 = tc2.get_info()
            check(info2.model_data.model_name == BASE_MODEL,
                  f"get_info of the restored client: model_name {info2.model_data.model_name!r} != {BASE_MODEL}")
            L_new, _ = fwd_loss(tc2, batch, "forward on create_training_client_from_state client")
            log(f"    model_id={tc2.model_id} L {L_new:.6f} (diff {abs(L_new - L):.2e})")
            check(abs(L_new - L) < RELOAD_TOLERANCE,
                  f"forward on the client restored from {path} should reproduce L={L:.6f}, got {L_new:.6f}")
            # and it must be trainable
            l_step = train_step(tc2, batch, "restored client step 1")
            check(abs(l_step - L) < RELOAD_TOLERANCE,
                  f"first forward_backward on the restored client should see L={L:.6f}, got {l_step:.6f}")
            L_new_after, _ = fwd_loss(tc2, batch, "forward on restored client after one step")
            check(L_new_after < L, f"one optim step on the restored client should lower the loss: {L} -> {L_new_after}")
            summary["L_from_state"] = L_new
            summary["tc2"] = tc2.model_id

        with step("RestClient.list_checkpoints(run_id) lists the saved checkpoint"):
            rest = tinker.RestClient()
            cps = result(rest.list_checkpoints(run_id), "list_checkpoints")
            listed = [(c.checkpoint_id, c.checkpoint_type, c.tinker_path) for c in cps.checkpoints]
            log(f"    checkpoints: {listed}")
            mine = [c for c in cps.checkpoints if c.tinker_path == path]
            check(len(mine) == 1, f"list_checkpoints({run_id}) should list {path} exactly once: {listed}")
            c = mine[0]
            check(c.checkpoint_id == f"weights/{CHECKPOINT_NAME}",
                  f"checkpoint_id should be 'weights/{CHECKPOINT_NAME}', got {c.checkpoint_id!r}")
            check(c.checkpoint_type == "training", f"checkpoint_type should be 'training', got {c.checkpoint_type!r}")

        with step(f"session heartbeat accepted (waiting up to {HEARTBEAT_DEADLINE_S:.0f}s)"):
            deadline = time.monotonic() + HEARTBEAT_DEADLINE_S
            while True:
                beats = [s for m, p, s in RECORDER.requests if p.endswith("/api/v1/session_heartbeat")]
                if beats or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            check(len(beats) > 0, f"no POST /api/v1/session_heartbeat seen within {HEARTBEAT_DEADLINE_S:.0f}s")
            check(all(200 <= s < 300 for s in beats), f"session_heartbeat statuses: {beats} (PROTOCOL.md 5.6)")
            log(f"    {len(beats)} heartbeat(s), statuses {beats}")

        if MODE == "jwt":
            with step("jwt mode: the API key was exchanged for a JWT at /api/v1/auth/token"):
                tokens = journal("/api/v1/auth/token")
                log(f"    auth/token statuses: {tokens}")
                check(len(tokens) > 0, "pjwt_auth_enabled is on but the SDK never called "
                                       "POST /api/v1/auth/token (PROTOCOL.md 2.5, 2.7)")
                check(all(200 <= s < 300 for s in tokens), f"auth/token statuses: {tokens} (PROTOCOL.md 2.7)")

        with step("ServiceClient.close('success')"):
            result(service.close("success"), "close")
            closed = True
    finally:
        if not closed:
            try:
                service.close("errored", "conformance test failed").result(timeout=60)
            except Exception as e:  # best effort
                log(f"(close after failure also failed: {e!r})")

    with step("telemetry reached the emulator" if telemetry_enabled() else "telemetry disabled by TINKER_TELEMETRY"):
        tel = [s for m, p, s in RECORDER.requests if p.endswith("/api/v1/telemetry")]
        dropped = [p for p in RECORDER.problems if "telemetry" in p.lower()]
        check(not dropped, f"telemetry problems logged by the SDK: {dropped}")
        if telemetry_enabled():
            check(len(tel) > 0, "TINKER_TELEMETRY is on but no POST /api/v1/telemetry was logged by httpx")
            check(all(200 <= s < 300 for s in tel), f"telemetry POST statuses: {tel}")
            log(f"    {len(tel)} telemetry batch(es) accepted")
        else:
            check(len(tel) == 0, f"TINKER_TELEMETRY is off but telemetry was sent: {tel}")

    return summary


def main() -> int:
    install_log_recorder()
    t0 = time.monotonic()
    ok = False
    summary: dict = {}
    try:
        summary = run()
        ok = True
    except ConformanceError as e:
        log(f"\nCONFORMANCE FAILURE: {e}")
        traceback.print_exc()
    except Exception as e:
        log(f"\nCONFORMANCE ERROR: {type(e).__name__}: {e}")
        traceback.print_exc()
    elapsed = time.monotonic() - t0

    log("\n=== HTTP requests seen (method path status: count) ===")
    for (m, p, s), n in sorted(endpoint_summary().items()):
        log(f"  {m:6s} {p} {s}: {n}")
    non2xx = [(m, p, s) for m, p, s in RECORDER.requests if not (200 <= s < 300)]
    if non2xx:
        log(f"  non-2xx responses: {len(non2xx)} (first: {non2xx[:5]})")
    if RECORDER.problems:
        log("=== SDK warnings/errors logged ===")
        for p in RECORDER.problems[:30]:
            log(f"  {p[:500]}")

    log("\n=== summary ===")
    for name, dt in STEP_TIMES:
        log(f"  {dt:7.2f}s  {name}")
    if ok:
        losses = summary["losses"]
        log(f"  loss curve: {' '.join(f'{x:.4f}' for x in losses)}")
        log(f"  extra steps: {' '.join(f'{x:.4f}' for x in summary['extra_losses'])}")
        log(f"  L={summary['L']:.6f} load_state={summary['L_load_state']:.6f} "
            f"from_state={summary['L_from_state']:.6f} checkpoint={summary['checkpoint']}")
    log(f"  total {elapsed:.1f}s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
