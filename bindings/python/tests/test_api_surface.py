"""The common surface has the official SDK's names and parameters (compared with the
installed tinker 0.38 by introspection)."""

from __future__ import annotations

import inspect
import json
import subprocess

import pytest

import tinkex
from conftest import official_python

SURFACE = {
    "ServiceClient": [
        "__init__",
        "get_server_capabilities",
        "get_server_capabilities_async",
        "create_lora_training_client",
        "create_lora_training_client_async",
        "create_training_client_from_state",
        "create_training_client_from_state_async",
        "create_training_client_from_state_with_optimizer",
        "create_training_client_from_state_with_optimizer_async",
        "create_sampling_client",
        "create_sampling_client_async",
        "create_rest_client",
        "close",
    ],
    "TrainingClient": [
        "forward",
        "forward_async",
        "forward_backward",
        "forward_backward_async",
        "forward_backward_custom",
        "forward_backward_custom_async",
        "optim_step",
        "optim_step_async",
        "save_state",
        "save_state_async",
        "load_state",
        "load_state_async",
        "load_state_with_optimizer",
        "load_state_with_optimizer_async",
        "save_weights_for_sampler",
        "save_weights_for_sampler_async",
        "save_weights_and_get_sampling_client",
        "save_weights_and_get_sampling_client_async",
        "create_sampling_client",
        "create_sampling_client_async",
        "get_info",
        "get_info_async",
        "get_tokenizer",
    ],
    "SamplingClient": [
        "sample",
        "sample_async",
        "compute_logprobs",
        "compute_logprobs_async",
        "get_base_model",
        "get_base_model_async",
        "get_tokenizer",
        "on_queue_state_change",
    ],
    "APIFuture": ["result", "result_async", "future", "coroutine"],
}

DUMP = """
import inspect, json, tinker
surface = json.loads(SURFACE)
out = {}
for cls, names in surface.items():
    for n in names:
        f = getattr(getattr(tinker, cls), n)
        out[f"{cls}.{n}"] = [(p.name, str(p.kind), repr(p.default)) for p in inspect.signature(f).parameters.values()]
print(json.dumps(out))
"""


def _ours(cls: str, name: str):
    f = getattr(getattr(tinkex, cls), name)
    return [(p.name, str(p.kind), repr(p.default)) for p in inspect.signature(f).parameters.values()]


def test_signatures_match_the_official_sdk():
    py = official_python()
    if py is None:
        pytest.skip("no official SDK venv")
    code = f"SURFACE = {json.dumps(json.dumps(SURFACE))}\n" + DUMP
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    official = json.loads(r.stdout)
    problems = []
    for key, params in official.items():
        cls, name = key.split(".")
        ours = _ours(cls, name)
        theirs = [tuple(p) for p in params if p[1] != "VAR_KEYWORD"]
        mine = {p[0]: p for p in ours}
        for p in theirs:
            if p[0] not in mine:
                problems.append(f"{key}: missing parameter {p[0]}")
            elif mine[p[0]][1] != p[1]:
                problems.append(f"{key}: {p[0]} is {mine[p[0]][1]}, official {p[1]}")
            elif p[2] != mine[p[0]][2] and p[2] != "<class 'inspect._empty'>":
                problems.append(f"{key}: {p[0]} defaults to {mine[p[0]][2]}, official {p[2]}")
        # positional order of the official parameters is kept
        pos = [p[0] for p in theirs if "POSITIONAL" in p[1]]
        assert [p[0] for p in ours if "POSITIONAL" in p[1]][: len(pos)] == pos, key
    assert not problems, "\n".join(problems)
