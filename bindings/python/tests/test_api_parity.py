"""Acceptance 1 of issue 14: code written for the official ``tinker`` 0.38 runs with an
import change. Compared with the installed official SDK by introspection (its surface is
dumped by ``_official_surface.py`` under the official SDK's interpreter): every public method
of the six client classes with the official parameter names, order, kinds and defaults and
the same kind of result (a future or the value); none raises NotImplementedError; every
name of ``tinker.__all__`` in ``tinkex``; every public name of ``tinker.types`` in
``tinkex.types`` with the models' fields and defaults; the exception hierarchy."""

from __future__ import annotations

import json
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

import tinkex
from conftest import HERE, official_python
from tinkex import _parity


@lru_cache(maxsize=1)
def _official() -> dict:
    py = official_python()
    if py is None:
        pytest.skip("no official SDK venv (target/official-sdk-venv); run_tests.sh creates it")
    r = subprocess.run([str(py), str(HERE / "_official_surface.py")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["version"] == "0.38.0", data["version"]
    return data


def test_every_official_method_exists_with_the_official_signature():
    official = _official()["methods"]
    n = sum(len(m) for m in official.values())
    assert n >= 116, n  # the issue counted 116 methods of the six classes
    problems = [p for ps in _parity.methods_problems(tinkex, official).values() for p in ps]
    assert not problems, "\n".join(problems)


def test_a_removed_method_or_changed_default_is_reported(monkeypatch):
    # The check must be able to fail: drop one generated REST method and change a default.
    official = _official()["methods"]
    from tinkex import _rest_methods

    monkeypatch.delattr(_rest_methods._RestMethods, "whoami")
    problems = _parity.methods_problems(tinkex, official)
    assert problems[("RestClient", "whoami")] == ["RestClient.whoami: missing"]

    def optim_step(self, optim_params=None, *, adam_params=1):  # wrong default
        raise NotImplementedError

    monkeypatch.setattr(tinkex.TrainingClient, "optim_step", optim_step)
    got = _parity.methods_problems(tinkex, official)[("TrainingClient", "optim_step")]
    assert any("raises NotImplementedError" in p for p in got), got
    assert any("adam_params defaults to 1" in p for p in got), got


def test_every_top_level_name_exists():
    missing = [n for n in _official()["all"] if not hasattr(tinkex, n)]
    assert not missing, missing
    not_exported = [n for n in _official()["all"] if n not in tinkex.__all__]
    assert not not_exported, not_exported


def test_every_types_name_exists_with_the_official_fields_and_defaults():
    official = _official()["types"]
    assert len(official) == 152, len(official)
    problems = _parity.types_problems(tinkex.types, official)
    assert not problems, "\n".join(problems)
    # and they are exported
    assert not [n for n in official if n not in tinkex.types.__all__]


def test_exception_hierarchy_matches():
    problems = _parity.exceptions_problems(tinkex, _official()["exceptions"])
    assert not problems, "\n".join(problems)


def test_generated_files_are_up_to_date():
    # The REST/admin wrappers follow src/core/rest/methods.json; the records follow the
    # official tinker.types.
    tools = HERE.parent / "tools"
    r = subprocess.run(["python3", str(tools / "gen_rest.py"), "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    py = official_python()
    if py is not None:
        r = subprocess.run([str(py), str(tools / "gen_types.py"), "--check"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr


def test_records_behave_like_the_official_models():
    from datetime import datetime, timezone

    t = tinkex.types
    run = t.TrainingRun._from_json(
        {
            "training_run_id": "r",
            "base_model": "m",
            "model_owner": "o",
            "is_lora": True,
            "last_request_time": "2026-01-02T03:04:05.5Z",
            "last_checkpoint": {"checkpoint_id": "weights/a", "checkpoint_type": "training", "time": "2026-01-02T03:04:05Z", "tinker_path": "tinker://r/weights/a"},
            "unknown_future_field": 1,
        }
    )
    assert run.last_request_time == datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=timezone.utc)
    assert isinstance(run.last_checkpoint, t.Checkpoint) and run.last_checkpoint.public is False
    assert run.model_dump(mode="json")["last_request_time"] == "2026-01-02T03:04:05.500000Z"
    # requests reject unknown fields and need their required ones, as pydantic's StrictBase
    with pytest.raises(ValueError):
        t.DimuonParams(learning_rate=1e-3, momentum=0.5)
    with pytest.raises(ValueError):
        t.DimuonParams()
    req = t.SessionSearchRequest(owner={"type": "accessible"}, statuses=[{"type": "active"}])
    assert isinstance(req.owner, t.AccessibleSearchOwner) and isinstance(req.statuses[0], t.ActiveSessionStatusQuery)
    assert t.SessionSearchRequest.model_validate_json(req.model_dump_json()) == req
    usage = t.BillingUsageResponse._from_json(
        {"data": [{"bucket_start": "2026-01-01T00:00:00Z", "bucket_end": "2026-01-01T01:00:00Z", "event_info": {"type": "sampling_prefill", "cached": True, "token_count": 3}}]}
    )
    assert isinstance(usage.data[0].event_info, t.SamplingPrefillBillingEvent) and usage.sessions == {}
    assert t.RequestErrorCategory("user") is t.RequestErrorCategory.User
    assert t.GetInfoResponse.__name__ and t.AdamOptimizerConfig().type == "adamw"


def test_dmel_chunk_length_is_read_from_the_tensor_container_header():
    t = tinkex.types
    # dtype 1, ndim 2, shape [300, 80]: 300 = 0xAC 0x02 as LEB128
    header = bytes([1, 2, 0xAC, 0x02, 80]) + b"\0" * 16
    c = t.DmelChunk(dmel=header)
    assert c.length == 300 and c._json()["type"] == "dmel"
    assert t.DmelChunk(dmel=bytes([254]) + header).length == 300  # constant-tensor marker
    mi = t.ModelInput(chunks=[t.EncodedTextChunk(tokens=[1, 2]), c])
    assert mi.length == 302
    for bad in (b"", bytes([9, 1, 1]), bytes([1, 1]), bytes([1, 0])):
        with pytest.raises(ValueError):
            t.DmelChunk(dmel=bad).length


def test_provenance_spans_tile_their_fields():
    t = tinkex.types
    d = t.Datum(model_input=t.ModelInput.from_ints([1, 2, 3]), loss_fn_inputs={"target_tokens": [2, 3, 4]})
    spans = [t.PromptProvenanceSpan(sequence_id="s", length=2), t.SampledProvenanceSpan(sequence_id="s", length=1)]
    d2 = d.with_provenance(model_input=spans, loss_fn_inputs=spans)
    assert d2.model_input_spans == spans and d.model_input_spans is None
    with pytest.raises(ValueError):
        d.with_provenance(model_input=spans[:1], loss_fn_inputs=spans)
    with pytest.raises(ValueError):
        t.PromptProvenanceSpan(sequence_id="", length=1)


def test_api_coverage_doc_is_up_to_date():
    # docs/api-coverage.md is generated from the installed SDK against the three bindings;
    # regenerate it with `python3 tools/gen_api_coverage.py` after changing any binding.
    if official_python() is None:
        pytest.skip("no official SDK venv")
    import sys

    repo = HERE.parent.parent.parent
    r = subprocess.run(
        ["python3", str(repo / "tools" / "gen_api_coverage.py"), "--check", "--official-python", str(official_python()), "--python", sys.executable],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
