"""Typed results (issue 15, W4): SamplingClient.sample / compute_logprobs and
TrainingClient.forward / forward_backward read their results through the C ABI's typed
result handles; the objects equal those the JSON path (``tinkex_future_take_result`` +
``_from_json``) builds for the same deterministic request (seeded sampling; forward passes
without an optimizer step in between)."""

from __future__ import annotations

import numpy as np
import pytest

from tinkex import _ffi, types
from tinkex._ffi import json_bytes, parse_json
from tinkex._lib import lib

from conftest import BASE_MODEL, text_datum

PROMPT = [100000, 100007, 100311, 101000, 100042, 100999, 100500]


def _json_call(handle, call, body: dict, converter):
    """Submits ``call(handle, json)`` and takes its result as JSON (the path the typed one
    must equal)."""
    data = json_bytes(body)
    with handle.use() as ptr:
        state = _ffi.submit(call, ptr, data, len(data), converter=converter, label="json")
    assert state.wait(60)
    return state.value()


def _json_sample(sc, body: dict) -> types.SampleResponse:
    return _json_call(sc._handle, lib.tinkex_sampling_client_sample, body, lambda raw: types.SampleResponse._from_json(parse_json(raw)))


def _same_f32(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    x = np.array([np.nan if v is None else v for v in a], dtype=np.float32)
    y = np.array([np.nan if v is None else v for v in b], dtype=np.float32)
    return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=True)) and [v is None for v in a] == [
        v is None for v in b
    ]


def _same_tensor(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and a.sparse_crow_indices == b.sparse_crow_indices
        and a.sparse_col_indices == b.sparse_col_indices
        and np.array_equal(a.to_numpy(), b.to_numpy())
    )


def _assert_same_sample(typed: types.SampleResponse, js: types.SampleResponse) -> None:
    assert type(typed) is type(js)
    assert len(typed.sequences) == len(js.sequences)
    for t, j in zip(typed.sequences, js.sequences):
        assert type(t) is type(j)
        assert t.tokens == j.tokens and all(type(x) is int for x in t.tokens)
        assert t.stop_reason == j.stop_reason
        assert _same_f32(t.logprobs, j.logprobs)
        assert t.logprobs is None or all(type(x) is float for x in t.logprobs)
        assert t.topk_logprobs == j.topk_logprobs
        assert (t.sequence_id is None) == (j.sequence_id is None)
    assert _same_f32(typed.prompt_logprobs, js.prompt_logprobs)
    assert typed.topk_prompt_logprobs == js.topk_prompt_logprobs
    assert typed.prompt_cache_hit_tokens == js.prompt_cache_hit_tokens
    assert typed.type == js.type
    assert _same_tensor(typed.target_prompt_logprobs, js.target_prompt_logprobs)
    assert (typed.prompt_alt_tokens is None) == (js.prompt_alt_tokens is None)
    if typed.prompt_alt_tokens is not None:
        assert _same_tensor(typed.prompt_alt_tokens.tokens, js.prompt_alt_tokens.tokens)
        assert _same_tensor(typed.prompt_alt_tokens.logprobs, js.prompt_alt_tokens.logprobs)


@pytest.mark.parametrize(
    "kwargs, extra",
    [
        (dict(), {}),
        (dict(include_prompt_logprobs=True, prompt_logprobs_last_n=3), {"prompt_logprobs": True, "prompt_logprobs_last_n": 3}),
        (
            dict(include_prompt_logprobs=True, topk_prompt_logprobs=2, topk_sample_logprobs=2),
            {"prompt_logprobs": True, "topk_prompt_logprobs": 2, "topk_sample_logprobs": 2},
        ),
        (dict(prompt_alt_tokens_k=2), {"prompt_alt_tokens_k": 2}),
    ],
    ids=["plain", "prompt_logprobs", "topk", "alt_tokens"],
)
def test_sample_typed_equals_json(shared_sampler, kwargs, extra):
    sc = shared_sampler
    prompt = types.ModelInput.from_ints(PROMPT)
    params = types.SamplingParams(max_tokens=5, seed=17, temperature=1.0)
    typed = sc.sample(prompt, 2, params, **kwargs).result(timeout=60)
    body = {"prompt": prompt._json(), "num_samples": 2, "sampling_params": params._json(), **extra}
    js = _json_sample(sc, body)
    _assert_same_sample(typed, js)


def test_target_prompt_logprobs_typed_equals_json(shared_sampler):
    sc = shared_sampler
    prompt = types.ModelInput.from_ints(PROMPT)
    n = len(PROMPT) - 1
    target = types.TensorData(data=np.array([[100001 + i, -1] for i in range(n)], dtype=np.int64), dtype="int64", shape=[n, 2])
    params = types.SamplingParams(max_tokens=2, seed=3)
    typed = sc.sample(prompt, 2, params, target_prompt_logprobs=target).result(timeout=60)
    body = {"prompt": prompt._json(), "num_samples": 2, "sampling_params": params._json(), "target_prompt_logprobs": target._json()}
    js = _json_sample(sc, body)
    assert typed.target_prompt_logprobs is not None and typed.target_prompt_logprobs.shape == [n, 2]
    _assert_same_sample(typed, js)


def test_compute_logprobs_typed_equals_json(shared_sampler):
    sc = shared_sampler
    prompt = types.ModelInput.from_ints(PROMPT)
    for last_n in (None, 2):
        typed = sc.compute_logprobs(prompt, last_n).result(timeout=60)
        body = {"prompt": prompt._json()}
        if last_n is not None:
            body["prompt_logprobs_last_n"] = last_n
        js = _json_call(sc._handle, lib.tinkex_sampling_client_compute_logprobs, body, parse_json)
        assert typed[0] is None and len(typed) == len(PROMPT)
        assert _same_f32(typed, js)


@pytest.mark.parametrize("loss_fn", ["cross_entropy", "importance_sampling"])
def test_forward_typed_equals_json(shared_service, loss_fn):
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    data = [text_datum("typed results"), text_datum("equal the json path")]
    if loss_fn != "cross_entropy":
        for d in data:
            n = len(d.loss_fn_inputs["target_tokens"].to_numpy())
            d.loss_fn_inputs.pop("weights")
            d.loss_fn_inputs["logprobs"] = types.TensorData(data=np.full(n, -1.5, dtype=np.float32), dtype="float32")
            d.loss_fn_inputs["advantages"] = types.TensorData(data=np.linspace(-1, 1, n, dtype=np.float32), dtype="float32")
    body = {"data": [d._json() for d in data], "loss_fn": loss_fn}
    to_fbo = lambda raw: types.ForwardBackwardOutput._from_json(parse_json(raw))  # noqa: E731
    for typed_call, json_call in (
        (tc.forward, lib.tinkex_training_client_forward),
        (tc.forward_backward, lib.tinkex_training_client_forward_backward),
    ):
        typed = typed_call(data, loss_fn).result(timeout=60)
        js = _json_call(tc._handle, json_call, body, to_fbo)
        assert type(typed) is type(js)
        assert typed.loss_fn_output_type == js.loss_fn_output_type
        assert typed.metrics == js.metrics and typed.metrics
        assert len(typed.loss_fn_outputs) == len(js.loss_fn_outputs) == len(data)
        for t, j in zip(typed.loss_fn_outputs, js.loss_fn_outputs):
            assert sorted(t) == sorted(j)
            for name in t:
                assert _same_tensor(t[name], j[name]), name


@pytest.mark.parametrize("stop", ["\n", ["a", "b"], [100007, 100311], None])
def test_typed_sample_submit_equals_json_with_stop_and_seedless_params(shared_sampler, stop):
    sc = shared_sampler
    prompt = types.ModelInput.from_ints(np.array(PROMPT, dtype=np.int32))
    params = types.SamplingParams(max_tokens=6, seed=99, temperature=0.5, top_k=20, top_p=0.9, stop=stop)
    typed = sc.sample(prompt, 3, params).result(timeout=60)
    body = {"prompt": prompt._json(), "num_samples": 3, "sampling_params": params._json()}
    js = _json_sample(sc, body)
    _assert_same_sample(typed, js)


def test_typed_sample_submit_falls_back_to_json_for_what_the_struct_cannot_state(shared_sampler):
    sc = shared_sampler
    prompt = types.ModelInput.from_ints(PROMPT)
    # prompt_logprobs_last_n=0: the JSON call's own INVALID_ARG, as before typed submits.
    with pytest.raises(Exception) as e:
        sc.sample(prompt, 1, types.SamplingParams(max_tokens=2), include_prompt_logprobs=True, prompt_logprobs_last_n=0).result(
            timeout=60
        )
    assert "prompt_logprobs_last_n" in str(e.value)
    # Two chunks: the JSON call.
    two = types.ModelInput(chunks=[types.EncodedTextChunk(tokens=PROMPT[:3]), types.EncodedTextChunk(tokens=PROMPT[3:])])
    out = sc.sample(two, 1, types.SamplingParams(max_tokens=2, seed=1)).result(timeout=60)
    assert len(out.sequences) == 1 and len(out.sequences[0].tokens) <= 2
