"""Training: a loop with falling loss, async variants, checkpoints, custom losses."""

from __future__ import annotations

import asyncio
import concurrent.futures

import numpy as np
import pytest

import tinkex
from tinkex import types
from conftest import BASE_MODEL, text_datum

TEXTS = [
    "the cat sat on the mat and looked at the hat",
    "tinkex talks to the tinker api through a c abi",
]


@pytest.fixture(scope="module")
def training_client(shared_service):
    return shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=1).result(timeout=60)


def test_training_loop_loss_falls(shared_service):
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=16).result(timeout=60)
    info = tc.get_info()
    assert info.model_id == tc.model_id and info.lora_rank == 16 and info.model_data.model_name == BASE_MODEL
    data = [text_datum(t) for t in TEXTS]
    n_tokens = sum(len(d.loss_fn_inputs["weights"]) for d in data)
    losses = []
    for _ in range(10):
        fb = tc.forward_backward(data, "cross_entropy")
        opt = tc.optim_step(types.AdamParams(learning_rate=2e-3))
        out = fb.result(timeout=60)
        step = opt.result(timeout=60)
        assert isinstance(out, types.ForwardBackwardOutput)
        assert len(out.loss_fn_outputs) == len(data)
        assert out.loss_fn_outputs[0]["logprobs"].to_numpy().shape == (len(TEXTS[0]) - 1,)
        assert isinstance(step, types.OptimStepResponse) and step.metrics["lr:mean"] == pytest.approx(2e-3)
        losses.append(out.metrics["loss:sum"] / n_tokens)
    assert losses[-1] < losses[0] * 0.8, losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_async_variants(shared_service):
    async def main():
        tc = await shared_service.create_lora_training_client_async(base_model=BASE_MODEL, rank=4)
        fut = await tc.forward_backward_async([text_datum(TEXTS[0])], "cross_entropy")
        opt = await tc.optim_step_async(types.AdamParams(learning_rate=1e-3))
        out = await fut
        await opt
        fwd = await (await tc.forward_async([text_datum(TEXTS[0])], "cross_entropy"))
        info = await tc.get_info_async()
        sc = await tc.save_weights_and_get_sampling_client_async()
        res = await sc.sample_async(types.ModelInput.from_ints([1, 2, 3]), 2, types.SamplingParams(max_tokens=3))
        lps = await sc.compute_logprobs_async(types.ModelInput.from_ints([1, 2, 3]))
        return out, fwd, info, res, lps

    out, fwd, info, res, lps = asyncio.run(main())
    assert out.metrics["loss:sum"] > 0
    assert fwd.metrics["loss:sum"] < out.metrics["loss:sum"]  # one step of learning
    assert info.is_lora
    assert len(res.sequences) == 2 and all(len(s.tokens) == 3 for s in res.sequences)
    assert lps[0] is None and len(lps) == 3


def test_creation_future_doubles_as_client_with_warning(shared_service):
    fut = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4)
    with pytest.warns(FutureWarning):
        model_id = fut.model_id
    assert model_id == fut.result().model_id


def test_checkpoints_round_trip(shared_service, training_client):
    tc = training_client
    d = [text_datum(TEXTS[1])]
    tc.forward_backward(d, "cross_entropy")
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=60)
    before = tc.forward(d, "cross_entropy").result(timeout=60).metrics["loss:sum"]
    saved = tc.save_state("ckpt-a").result(timeout=60)
    assert isinstance(saved, types.SaveWeightsResponse) and saved.path.startswith("tinker://")
    sampler_path = tc.save_weights_for_sampler("sampler-a").result(timeout=60).path
    assert "/sampler_weights/" in sampler_path

    restored = shared_service.create_training_client_from_state(saved.path).result(timeout=60)
    assert restored.model_id != tc.model_id
    assert restored.forward(d, "cross_entropy").result(timeout=60).metrics["loss:sum"] == pytest.approx(before, rel=1e-5)
    with_opt = shared_service.create_training_client_from_state_with_optimizer(saved.path).result(timeout=60)
    assert with_opt.forward(d, "cross_entropy").result(timeout=60).metrics["loss:sum"] == pytest.approx(before, rel=1e-5)

    # Train further, then load the checkpoint back.
    tc.forward_backward(d, "cross_entropy")
    tc.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=60)
    assert tc.forward(d, "cross_entropy").result(timeout=60).metrics["loss:sum"] != pytest.approx(before, rel=1e-5)
    loaded = tc.load_state(saved.path).result(timeout=60)
    assert isinstance(loaded, types.LoadWeightsResponse)
    assert tc.forward(d, "cross_entropy").result(timeout=60).metrics["loss:sum"] == pytest.approx(before, rel=1e-5)

    sc = tc.create_sampling_client(sampler_path).result(timeout=60)
    assert sc.get_base_model() == BASE_MODEL
    assert len(sc.sample(types.ModelInput.from_ints([5, 6]), 1, types.SamplingParams(max_tokens=2)).result(timeout=60).sequences) == 1

    rest = shared_service.create_rest_client()
    run_id = types.ParsedCheckpointTinkerPath.from_tinker_path(saved.path).training_run_id
    cks = rest.list_checkpoints(run_id).result(timeout=60)
    assert any(c.tinker_path == saved.path for c in cks.checkpoints)
    assert rest.get_training_run(run_id).result(timeout=60).base_model == BASE_MODEL


@tinkex.numpy_loss
def _weighted_nll(data, logprobs_list):
    """Cross entropy as a custom loss, with its exact gradient."""
    loss = 0.0
    grads = []
    for d, lp in zip(data, logprobs_list):
        w = d.loss_fn_inputs["weights"].to_numpy().astype(np.float64)
        loss += float(-(lp * w).sum())
        grads.append(-w)
    return loss, {"custom/nll:sum": loss}, grads


def test_forward_backward_custom_matches_cross_entropy_and_trains(emu, shared_service):
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=8, seed=3).result(timeout=60)
    data = [text_datum(t) for t in TEXTS]
    ce = tc.forward(data, "cross_entropy").result(timeout=60).metrics["loss:sum"]
    emu.set_delays({"Forward": 200})  # the custom op's forward pass is still pending below
    losses = []
    for _ in range(4):
        fut = tc.forward_backward_custom(data, _weighted_nll)
        # Submitted before the custom op finished: libtinkex sends it after the backward pass
        # (the step then applies this iteration's gradient: the loss falls below).
        opt = tc.optim_step(types.AdamParams(learning_rate=2e-3))
        out = fut.result(timeout=60)
        opt.result(timeout=60)
        assert out.metrics["surrogate_loss:sum"] == pytest.approx(out.metrics["loss:sum"], rel=1e-4)
        assert out.metrics["custom/nll:sum"] == pytest.approx(out.metrics["loss:sum"])
        losses.append(out.metrics["loss:sum"])
    assert losses[0] == pytest.approx(ce, rel=1e-4)
    assert losses[-1] < losses[0]


def test_forward_backward_custom_finite_differences(shared_service):
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    data = [text_datum("short text")]

    @tinkex.numpy_loss
    def quadratic(data, logprobs_list):  # (loss, metrics): gradient by finite differences
        lp = logprobs_list[0]
        return float(((lp + 1.0) ** 2).sum()), {}

    out = tc.forward_backward_custom(data, quadratic).result(timeout=60)
    assert out.metrics["loss:sum"] > 0 and "surrogate_loss:sum" in out.metrics


def test_custom_loss_failure_poisons_the_client(shared_service):
    tc = shared_service.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)

    @tinkex.numpy_loss
    def broken(data, logprobs_list):
        raise RuntimeError("loss exploded")

    fut = tc.forward_backward_custom([text_datum("abc def")], broken)
    queued = tc.optim_step(types.AdamParams())
    with pytest.raises(RuntimeError, match="loss exploded"):
        fut.result(timeout=60)
    with pytest.raises(tinkex.TinkerError, match="poisoned"):
        queued.result(timeout=60)
    with pytest.raises(tinkex.TinkerError, match="poisoned"):
        tc.forward([text_datum("abc")], "cross_entropy").result(timeout=60)


def test_concurrent_future_view(shared_service, training_client):
    futs = [training_client.forward([text_datum(t)], "cross_entropy") for t in TEXTS]
    done, _ = concurrent.futures.wait([f.future() for f in futs], timeout=60)
    assert len(done) == 2 and all(isinstance(f.result(), types.ForwardBackwardOutput) for f in done)
