"""The Python driver of the parity suite (tests/parity, docs/parity.md).

Runs one scenario's line form through the Python binding's public API — the official SDK's
names and signatures (``tinkex.ServiceClient``, ``TrainingClient.forward_backward``,
``types.Datum``, ``APIFuture.result`` ...) — and prints the transcript lines ("@@ " + JSON).
Op arguments (the C ABI's JSON) become the SDK's keyword arguments and types here; errors
are mapped from the exception raised (class and attributes) to the common form.

    python driver.py SCENARIO.tsv BASE_URL
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import re
import sys
import threading
import time
from typing import Any, Dict, List

import tinkex
from tinkex import types

OP_WAIT_S = 120.0
REF = re.compile(r'"\$ref:(\d+):(\w+)"')
RESULTS: Dict[int, Any] = {}


def emit(rec: Dict[str, Any]) -> None:
    if "ok" in rec and isinstance(rec.get("i"), int):
        RESULTS.setdefault(rec["i"], rec["ok"])
    _write(rec)


def substitute(args: str) -> str:
    """Replaces each "$ref:<i>:<key>" string by that member of op i's result."""
    return REF.sub(lambda m: json.dumps(RESULTS[int(m.group(1))][m.group(2)]), args)


def _write(rec: Dict[str, Any]) -> None:
    sys.stdout.write("@@ " + json.dumps(rec, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def dump(v: Any) -> Any:
    """A result object as JSON data."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [dump(x) for x in v]
    if isinstance(v, dict):
        return {str(k): dump(x) for k, x in v.items()}
    if hasattr(v, "model_dump"):
        return dump(v.model_dump())
    if isinstance(v, (datetime.datetime, datetime.date)):
        return v.isoformat()
    if dataclasses.is_dataclass(v):
        return {f.name: dump(getattr(v, f.name)) for f in dataclasses.fields(v) if not f.name.startswith("_")}
    if hasattr(v, "tolist"):
        return v.tolist()
    if hasattr(v, "value"):  # enums
        return v.value
    if hasattr(v, "__dict__"):
        return {k: dump(x) for k, x in vars(v).items() if not k.startswith("_")}
    raise TypeError(f"cannot dump {type(v).__name__}")


# The official SDK's exception class of an HTTP status (PROTOCOL.md 13.6).
HTTP_CLASSES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    402: "BillingError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
}


def class_agrees(e: BaseException, kind: Any, http: Any, category: Any) -> bool:
    """Whether the exception's class is the one the SDK's hierarchy gives for its details:
    the class is how Python code tells errors apart, so it is compared too."""
    if kind == "session_expired":
        return isinstance(e, tinkex.SessionExpiredError)
    if kind == "no_progress":
        return isinstance(e, tinkex.NoProgressError)
    if http:
        want = HTTP_CLASSES.get(http) or ("InternalServerError" if http >= 500 else "APIStatusError")
        return type(e).__name__ == want
    if category:
        return isinstance(e, tinkex.RequestFailedError)
    if kind == "timeout":
        return isinstance(e, tinkex.APITimeoutError)
    return True


def error_of(e: BaseException) -> Dict[str, Any]:
    """The common form of an exception: the SDK's classes and tinkex's attributes."""
    if isinstance(e, concurrent.futures.CancelledError):
        return {"kind": "cancelled"}
    if isinstance(e, (concurrent.futures.TimeoutError, TimeoutError)) and not isinstance(e, tinkex.TinkerError):
        return {"kind": "await_timeout"}
    if isinstance(e, tinkex.TinkerError):
        out: Dict[str, Any] = {"kind": e.kind, "http_status": e.http_status}
        if isinstance(e, tinkex.RequestFailedError):
            out["category"] = e.category
        if not class_agrees(e, e.kind, e.http_status, out.get("category")):
            out["python_class"] = type(e).__name__  # differs from every other language
        return out
    if isinstance(e, (TypeError, ValueError, AssertionError)):
        return {"kind": "invalid_input", "python": f"{type(e).__name__}: {e}"}
    raise e


class Driver:
    def __init__(self, base_url: str) -> None:
        self.objects: Dict[str, Any] = {}
        self.futures: Dict[str, Any] = {}
        self.events: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        self.svc: Any = None
        self.rest: Any = None
        self.record_events = False

    def on_event(self, ev: Any) -> None:
        with self.lock:
            self.events.append(dict(ev.data))

    def start(self, config: Dict[str, Any]) -> None:
        cfg = dict(config)
        base_url = cfg.pop("base_url")
        api_key = cfg.pop("api_key")
        self.svc = tinkex.ServiceClient(base_url=base_url, api_key=api_key, config=cfg, on_event=self.on_event)

    # -- ops: each returns a future-like (with .result) or a value --

    def submit(self, name: str, target: str, param: str, a: Dict[str, Any]) -> Any:
        a = dict(a)
        obj = self.objects.get(target)
        if name == "capabilities":
            return self.svc.get_server_capabilities()
        if name == "create_lora":
            lora = dict(a.pop("lora_config", None) or {})
            if "optimizer" in a:
                a["optimizer"] = optimizer(a["optimizer"])
            return self.svc.create_lora_training_client(a.pop("base_model"), **lora, **a)
        if name == "from_state":
            path = a.pop("path")
            if a.pop("optimizer", False):
                return self.svc.create_training_client_from_state_with_optimizer(path, **a)
            return self.svc.create_training_client_from_state(path, **a)
        if name == "resume":
            return self.svc.resume_training_run(**a)
        if name == "create_sampling":
            return self.svc.create_sampling_client(**a)
        if name == "copy_weights":
            return self.svc.copy_weights(**a)
        if name == "close":
            reason = (a.pop("reason", None) or {}).get("type", "success")
            return self.svc.close(reason, **a)
        if name == "rest":
            if self.rest is None:
                self.rest = self.svc.create_rest_client()
            return getattr(self.rest, param)(**a)
        if name in ("forward_backward", "forward"):
            data = [datum(d) for d in a.pop("data")]
            return getattr(obj, name)(data, a.pop("loss_fn"), **a)
        if name == "forward_backward_custom":
            return obj.forward_backward_custom([datum(d) for d in a.pop("data")], suite_loss, **a)
        if name == "optim_step":
            if a.get("type") == "dimuon":
                a.pop("type")
                return obj.optim_step(types.DimuonParams(**a))
            return obj.optim_step(types.AdamParams(**a))
        if name == "save_state":
            return obj.save_state(a.pop("path"), **a)
        if name == "save_weights_for_sampler":
            return obj.save_weights_for_sampler(a.pop("path"), **a)
        if name == "save_weights_external":
            return obj.save_weights_external(a.pop("path"), **a)
        if name == "load_state":
            path = a.pop("path")
            if a.pop("optimizer", False):
                return obj.load_state_with_optimizer(path, **a)
            return obj.load_state(path, **a)
        if name == "save_weights_and_get_sampling_client":
            return obj.save_weights_and_get_sampling_client(**a)
        if name == "sample":
            prompt = types.ModelInput.model_validate(a.pop("prompt"))
            params = types.SamplingParams(**a.pop("sampling_params", {}))
            if "prompt_logprobs" in a:
                a["include_prompt_logprobs"] = a.pop("prompt_logprobs")
            if "target_prompt_logprobs" in a:
                a["target_prompt_logprobs"] = tensor(a["target_prompt_logprobs"])
            return obj.sample(prompt, a.pop("num_samples", 1), params, **a)
        if name == "compute_logprobs":
            return obj.compute_logprobs(types.ModelInput.model_validate(a.pop("prompt")), **a)
        raise SystemExit(f"driver.py: unknown op {name}")

    def result_of(self, name: str, value: Any, save_as: str) -> Any:
        """The JSON of a finished op's value (a created client is stored under save_as)."""
        if isinstance(value, tinkex.TrainingClient):
            if save_as:
                self.objects[save_as] = value
            return dump(value.get_info())
        if isinstance(value, tinkex.SamplingClient):
            if save_as:
                self.objects[save_as] = value
            return {"base_model": value.get_base_model(), "sampling_session_id": value.sampling_session_id}
        return dump(value)

    def run(self, i: int, name: str, target: str, save_as: str, param: str, wait: bool, args: Any) -> None:
        if name == "control":
            emit({"control": i})
            if not sys.stdin.readline():
                raise SystemExit("driver.py: stdin closed during control")
            return
        if name == "wait_event":
            # Waits (bounded: 10 s) until an event of type `param` was received.
            deadline = time.monotonic() + 10
            while True:
                with self.lock:
                    found = any(e.get("type") == param for e in self.events)
                if found or time.monotonic() > deadline:
                    break
                time.sleep(0.005)  # polling the recorded events for the condition, bounded
            emit({"i": i, "op": "wait_event", "ok": found})
            return
        if name == "await":
            fut = self.futures[target]
            timeout = float(param) / 1000.0 if param else OP_WAIT_S
            try:
                value = fut.result(timeout=timeout)
            except BaseException as e:  # noqa: BLE001 - mapped to the common form
                emit({"i": i, "op": "await", "error": error_of(e)})
                return
            emit({"i": i, "op": "await", "ok": self.result_of(name, value, save_as)})
            return
        if name == "cancel":
            self.futures[target].cancel()
            emit({"i": i, "op": "cancel", "ok": None})
            return
        try:
            fut = self.submit(name, target, param, args)
            if not wait:
                self.futures[save_as] = fut
                emit({"i": i, "op": name, "submitted": True})
                return
            value = fut.result(timeout=OP_WAIT_S) if hasattr(fut, "result") else fut
        except BaseException as e:  # noqa: BLE001 - mapped to the common form
            emit({"i": i, "op": name, "error": error_of(e)})
            return
        emit({"i": i, "op": name, "ok": self.result_of(name, value, save_as)})


def datum(d: Dict[str, Any]) -> Any:
    """A ``types.Datum`` from its JSON (TensorData JSON in ``loss_fn_inputs``), as the
    official SDK's pydantic model validates it."""
    return types.Datum.model_validate(d)


@tinkex.numpy_loss
def suite_loss(data: Any, logprobs_list: Any) -> Any:
    """The suite's custom loss (every driver has the same): loss = -(sum of all target
    logprobs), gradient -1 everywhere; metric ``n_logprobs``."""
    import numpy as np

    total = sum(float(np.sum(np.asarray(lp, dtype=np.float64))) for lp in logprobs_list)
    n = sum(int(np.asarray(lp).size) for lp in logprobs_list)
    return -total, {"n_logprobs": float(n)}, [-np.ones_like(np.asarray(lp, dtype=np.float64)) for lp in logprobs_list]


def tensor(v: Dict[str, Any]) -> Any:
    return types.TensorData.model_validate(v)


def optimizer(o: Dict[str, Any]) -> Any:
    kind = o.get("type", "adamw")
    if kind == "dimuon":
        return types.DimuonOptimizerConfig(**{k: v for k, v in o.items() if k != "type"})
    return types.AdamOptimizerConfig(**{k: v for k, v in o.items() if k != "type"})


def main() -> None:
    path, _base_url = sys.argv[1], sys.argv[2]
    d = Driver(_base_url)
    with open(path) as f:
        for raw in f:
            fields = raw.rstrip("\n").split("\t")
            if fields[0] == "config":
                d.start(json.loads(fields[1]))
            elif fields[0] == "events":
                d.record_events = True
            elif fields[0] == "op":
                i, name, target, save_as, param, wait, args = fields[1:8]
                d.run(int(i), name, target, save_as, param, wait == "1", json.loads(substitute(args)))
            else:
                raise SystemExit(f"driver.py: bad line {raw!r}")
    with d.lock:
        emit({"events": d.events if d.record_events else []})
    emit({"done": True})


if __name__ == "__main__":
    main()
