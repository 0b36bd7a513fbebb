"""Datum batches (tinkex_datum_batch_*): numpy arrays go to libtinkex as typed arrays, without
Python lists or JSON text; datums without that form (several chunks) go as JSON in the same
batch."""

from __future__ import annotations

import time

import numpy as np
import pytest

import tinkex
from tinkex import _lib, types
from conftest import BASE_MODEL


@pytest.fixture(scope="module")
def tc(shared_service):
    return shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4, seed=7).result(timeout=60)


class _Spy:
    """Counts calls of a C function and the elements passed through it."""

    def __init__(self, monkeypatch, name: str, len_arg: int):
        self.calls = 0
        self.elements = 0
        real = getattr(_lib.lib, name)
        spy = self

        def wrapper(*args):
            spy.calls += 1
            spy.elements += int(args[len_arg])
            return real(*args)

        monkeypatch.setattr(_lib.lib, name, wrapper)


def test_one_million_tokens_go_through_the_bulk_path(tc, monkeypatch):
    push = _Spy(monkeypatch, "tinkex_datum_batch_push", 2)
    push_json = _Spy(monkeypatch, "tinkex_datum_batch_push_json", 2)
    n_datums, length = 250, 4000  # 1,000,000 tokens
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, size=(n_datums, length + 1), dtype=np.int64)
    weights = np.ones(length, dtype=np.float32)
    data = [
        types.Datum(
            model_input=types.ModelInput.from_ints(tokens[i, :-1]),
            loss_fn_inputs={"target_tokens": tokens[i, 1:], "weights": weights},
        )
        for i in range(n_datums)
    ]
    stats0 = dict(tinkex.diagnostics())
    t0 = time.monotonic()
    fut = tc.forward_backward(data, "cross_entropy")
    submit_s = time.monotonic() - t0
    out = fut.result(timeout=300)
    total_s = time.monotonic() - t0
    assert push.calls == n_datums and push.elements == n_datums * length == 1_000_000
    assert push_json.calls == 0  # no datum went as JSON
    d = tinkex.diagnostics()
    assert d["typed_datums"] - stats0["typed_datums"] == n_datums
    assert d["json_datums"] == stats0["json_datums"]
    assert d["batches"] == stats0["batches"] + 1
    assert len(out.loss_fn_outputs) == n_datums
    assert out.loss_fn_outputs[0]["logprobs"].to_numpy().shape == (length,)
    assert out.metrics["loss:sum"] > 0
    print(f"1M tokens: submit {submit_s * 1000:.0f} ms (batch build), total {total_s:.2f} s")
    assert submit_s < 5.0


def test_bulk_and_json_paths_agree(tc):
    toks = np.arange(1, 41, dtype=np.int32)  # int32 ids: widened by the library
    tgt = np.arange(2, 42, dtype=np.int64)
    w = np.linspace(0, 1, 40, dtype=np.float64)  # float64: rounded to float32 by the library
    bulk = types.Datum(model_input=types.ModelInput.from_ints(toks), loss_fn_inputs={"target_tokens": tgt, "weights": w})
    # Two chunks: the same tokens go as a JSON datum.
    two_chunks = types.ModelInput(
        chunks=[types.EncodedTextChunk(tokens=toks[:20].tolist()), types.EncodedTextChunk(tokens=toks[20:].tolist())]
    )
    js = types.Datum(model_input=two_chunks, loss_fn_inputs={"target_tokens": tgt.tolist(), "weights": w.tolist()})
    before = tinkex.diagnostics()
    a = tc.forward([bulk], "cross_entropy").result(timeout=60)
    b = tc.forward([js], "cross_entropy").result(timeout=60)
    after = tinkex.diagnostics()
    assert after["batches"] == before["batches"] + 2
    assert after["typed_datums"] == before["typed_datums"] + 1
    assert after["json_datums"] == before["json_datums"] + 1
    assert a.metrics["loss:sum"] == pytest.approx(b.metrics["loss:sum"], rel=1e-6)
    np.testing.assert_allclose(a.loss_fn_outputs[0]["logprobs"].to_numpy(), b.loss_fn_outputs[0]["logprobs"].to_numpy(), rtol=1e-6)


def test_arrays_are_copied_at_call_time(tc):
    toks = np.arange(1, 21, dtype=np.int64)
    tgt = np.arange(2, 22, dtype=np.int64)
    d = types.Datum(model_input=types.ModelInput.from_ints(toks), loss_fn_inputs={"target_tokens": tgt, "weights": np.ones(20, np.float32)})
    ref = tc.forward([d], "cross_entropy").result(timeout=60).metrics["loss:sum"]
    fut = tc.forward([d], "cross_entropy")
    toks[:] = 0  # mutating after the call does not change the request
    tgt[:] = 0
    assert fut.result(timeout=60).metrics["loss:sum"] == pytest.approx(ref, rel=1e-6)


def test_importance_sampling_inputs_via_bulk(tc):
    toks = np.arange(1, 11, dtype=np.int64)
    tgt = np.arange(2, 12, dtype=np.int64)
    adv = np.ones((10,), np.float32)
    lp = np.zeros((10,), np.float32)
    d = types.Datum(model_input=types.ModelInput.from_ints(toks), loss_fn_inputs={"target_tokens": tgt, "advantages": adv, "logprobs": lp})
    out = tc.forward([d], "importance_sampling").result(timeout=60)
    assert out.metrics["loss:sum"] == pytest.approx(-10.0 * np.mean(np.exp(out.loss_fn_outputs[0]["logprobs"].to_numpy())) , rel=1e-3)


def test_one_batch_holds_typed_and_json_datums_and_is_freed(tc, monkeypatch):
    toks = np.arange(1, 31, dtype=np.int64)
    tgt = np.arange(2, 32, dtype=np.int64)
    w = np.ones(30, dtype=np.float32)
    typed = types.Datum(model_input=types.ModelInput.from_ints(toks), loss_fn_inputs={"target_tokens": tgt, "weights": w})
    two_chunks = types.ModelInput(
        chunks=[types.EncodedTextChunk(tokens=toks[:10].tolist()), types.EncodedTextChunk(tokens=toks[10:].tolist())]
    )
    js = types.Datum(model_input=two_chunks, loss_fn_inputs={"target_tokens": tgt, "weights": w})
    alone = tc.forward([typed], "cross_entropy").result(timeout=60)
    freed = _Spy(monkeypatch, "tinkex_datum_batch_free", 0)
    pushed_json = _Spy(monkeypatch, "tinkex_datum_batch_push_json", 2)
    before = tinkex.diagnostics()
    fut = tc.forward([typed, js, typed], "cross_entropy")
    # The submit borrowed the batch: the binding freed it before the result arrived.
    assert freed.calls == 1 and pushed_json.calls == 1
    out = fut.result(timeout=60)
    after = tinkex.diagnostics()
    assert after["typed_datums"] - before["typed_datums"] == 2 and after["json_datums"] - before["json_datums"] == 1
    assert len(out.loss_fn_outputs) == 3
    ref = alone.loss_fn_outputs[0]["logprobs"].to_numpy()
    for o in out.loss_fn_outputs:
        np.testing.assert_allclose(o["logprobs"].to_numpy(), ref, rtol=1e-6)
