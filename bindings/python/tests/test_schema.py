"""The JSON the binding passes to the C ABI matches docs/schema: every JSON body of a short
scenario against the emulator (each operation the binding has) is captured at the ctypes
call and validated against the schema that docs/schema/README.md names for that export."""

from __future__ import annotations

import json
import re

import jsonschema  # installed by bindings/python/run_tests.sh
import numpy as np
import pytest

import tinkex
from conftest import API_KEY, BASE_MODEL, REPO, text_datum
from tinkex import _lib, types

SCHEMA_DIR = REPO / "docs" / "schema"
HEADER = REPO / "include" / "tinkex.h"


def _exports() -> dict[str, str]:
    """export -> input schema name, from the index table of docs/schema/README.md."""
    index = SCHEMA_DIR / "README.md"
    if not index.is_file():
        pytest.fail(f"{index} is missing")
    out: dict[str, str] = {}
    for export, input_cell in re.findall(r"^\|\s*`(tinkex_\w+)[^`]*`\s*\|\s*([^|]*?)\s*\|", index.read_text(), flags=re.M):
        m = re.search(r"\[`(\w+)`\]\((\w+)\.json\)", input_cell)
        if m:
            out[export] = m.group(2)
    assert len(out) >= 10, out
    return out


def _json_param_index() -> dict[str, int]:
    """export -> position of its JSON input (``const uint8_t *json`` or ``*config_json``,
    followed by its length), from the header."""
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    out = {}
    for name, params in re.findall(r"\b(tinkex_\w+)\s*\(([^;{)]*)\)\s*;", text):
        names = [re.split(r"[\s*]+", p.strip())[-1] for p in params.split(",") if p.strip()]
        for i, n in enumerate(names[:-1]):
            if (n == "json" or n.endswith("_json")) and names[i + 1] == n + "_len":
                out[name] = i
    return out


class _Capture:
    """Wraps the ctypes functions of the exports that take a JSON body and records each
    body (export, decoded JSON) before calling the real function."""

    def __init__(self, monkeypatch, exports: dict[str, str]):
        self.bodies: list[tuple[str, object]] = []
        positions = _json_param_index()
        for export in exports:
            if export not in positions or not hasattr(_lib.lib, export):
                continue
            self._wrap(monkeypatch, export, positions[export])

    def _wrap(self, monkeypatch, export: str, pos: int) -> None:
        real = getattr(_lib.lib, export)
        bodies = self.bodies

        def wrapper(*args):
            raw = args[pos]
            n = int(args[pos + 1])
            data = b"" if raw is None else (raw if isinstance(raw, bytes) else bytes(raw))[:n]
            bodies.append((export, json.loads(data) if data else None))
            return real(*args)

        monkeypatch.setattr(_lib.lib, export, wrapper)


def _validator(name: str):
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _scenario(base_url: str, emu) -> None:
    svc = tinkex.ServiceClient(
        base_url=base_url,
        api_key=API_KEY,
        telemetry=False,
        project_id="proj-schema",
        tags=["schema"],
        config={"retry": {"base_delay_ms": 10}, "progress_event_interval_ms": 1000},
    )
    tc = svc.create_lora_training_client(base_model=BASE_MODEL, rank=4, seed=1, train_unembed=False).result(timeout=60)
    toks = np.arange(1, 21, dtype=np.int64)
    typed = types.Datum(
        model_input=types.ModelInput.from_ints(toks),
        loss_fn_inputs={"target_tokens": toks + 1, "weights": np.ones(20, np.float32)},
    )
    chunks = types.ModelInput(chunks=[types.EncodedTextChunk(tokens=[1, 2]), types.EncodedTextChunk(tokens=[3, 4])])
    as_json = types.Datum(model_input=chunks, loss_fn_inputs={"target_tokens": [2, 3, 4, 5], "weights": [1.0, 1.0, 0.5, 0.0]})
    tc.forward_backward([typed, text_datum("hello")], "cross_entropy").result(timeout=60)
    tc.forward_backward([typed, as_json], "cross_entropy").result(timeout=60)
    tc.forward([typed], "cross_entropy").result(timeout=60)
    tc.optim_step(types.AdamParams(learning_rate=1e-3, weight_decay=0.01)).result(timeout=60)
    saved = tc.save_state("schema-ck", ttl_seconds=3600, user_metadata={"k": "v"}).result(timeout=60)
    tc.load_state(saved.path).result(timeout=60)
    tc.load_state_with_optimizer(saved.path).result(timeout=60)
    sampler_path = tc.save_weights_for_sampler("schema-sampler").result(timeout=60).path
    svc.create_training_client_from_state(saved.path).result(timeout=60)
    svc.create_training_client_from_state_with_optimizer(saved.path).result(timeout=60)
    for sc in (svc.create_sampling_client(model_path=sampler_path).result(timeout=60),
               svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)):
        sc.sample(
            types.ModelInput.from_ints([1, 2, 3]),
            2,
            types.SamplingParams(max_tokens=3, temperature=0.7, stop=[9], seed=5),
            include_prompt_logprobs=True,
            topk_prompt_logprobs=2,
        ).result(timeout=60)
        # One token chunk goes through the typed submit (no JSON); two chunks through the
        # JSON call, whose body the schema checks.
        two = types.ModelInput(chunks=[types.EncodedTextChunk(tokens=[1, 2]), types.EncodedTextChunk(tokens=[3])])
        sc.sample(two, 1, types.SamplingParams(max_tokens=2, stop="\n"), include_prompt_logprobs=True).result(timeout=60)
        sc.compute_logprobs(types.ModelInput.from_ints([1, 2, 3])).result(timeout=60)
        sc.compute_logprobs(types.ModelInput.from_ints([1, 2, 3]), prompt_logprobs_last_n=2).result(timeout=60)
    svc.close("success", detail="schema test").result(timeout=60)


def test_request_bodies_match_the_schema(emu, base_url, monkeypatch):
    exports = _exports()
    cap = _Capture(monkeypatch, exports)
    _scenario(base_url, emu)
    seen = {e for e, _ in cap.bodies}
    # Every JSON-taking operation of the scenario was captured (so nothing escaped the check).
    expected = {
        "tinkex_service_client_new",
        "tinkex_service_client_create_lora_training_client",
        "tinkex_service_client_create_training_client_from_state",
        "tinkex_service_client_create_sampling_client",
        "tinkex_service_client_close",
        "tinkex_training_client_forward_backward_batch",
        "tinkex_training_client_forward_batch",
        "tinkex_training_client_optim_step",
        "tinkex_training_client_save_state",
        "tinkex_training_client_save_weights_for_sampler",
        "tinkex_training_client_load_state",
        "tinkex_sampling_client_sample",
        "tinkex_sampling_client_compute_logprobs",
    }
    # Datums that are not one token chunk: JSON datums in the batch (ABI 2), else the JSON path.
    expected.add("tinkex_datum_batch_push_json" if hasattr(_lib.lib, "tinkex_datum_batch_push_json") else "tinkex_training_client_forward_backward")
    assert expected <= seen, sorted(expected - seen)
    validators = {name: _validator(name) for name in set(exports.values())}
    errors = []
    for export, body in cap.bodies:
        v = validators[exports[export]]
        for e in v.iter_errors(body):
            errors.append(f"{export} ({exports[export]}): {e.message} at {list(e.absolute_path)} in {body!r:.300}")
    assert not errors, "\n".join(errors)
    print(f"{len(cap.bodies)} bodies of {len(seen)} exports validated")


def test_the_schema_rejects_what_the_library_rejects():
    """The check can fail: a misspelled field of a closed model is a schema error."""
    exports = _exports()
    v = _validator(exports["tinkex_training_client_optim_step"])
    assert v.is_valid({"learning_rate": 1e-3})
    assert not v.is_valid({"learning_rat": 1e-3})
