"""The training, sampling and service methods issue 14 adds, against the emulator:
optimizer families (Dimuon), user metadata, TTLs, weights access tokens, ``base_model`` on
``create_training_client_from_state``, ``kind="inflight"``, ``record_stability_info``,
external weights, console URLs, status / telemetry, server-side custom losses
(``LossHandle``), sampler handles (clone, pickle), joining a sampling session,
``target_prompt_logprobs`` / ``prompt_alt_tokens_k``, ``resume_training_run`` and the lazy
imports of torch / transformers."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import numpy as np
import pytest

import tinkex
from conftest import API_KEY, BASE_MODEL, text_datum
from tinkex import types

STATUS_KEYS = {
    "session_id",
    "queue_state",
    "queue_state_reason",
    "billing_paused_ms",
    "backoff_remaining_ms",
    "last_progress_ms_ago",
    "operations_waiting",
    "operations_in_flight",
    "telemetry",
}


@pytest.fixture(scope="module")
def svc(emulator):
    s = tinkex.ServiceClient(base_url=emulator.base_url, api_key=API_KEY, telemetry=False, project_id="proj-extras")
    yield s
    s.close("success").result(timeout=30)


@pytest.fixture(scope="module")
def trained(svc):
    tc = svc.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
    tc.forward_backward([text_datum("extras")], "cross_entropy").result(timeout=60)
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=60)
    return tc


def _checkpoint(svc, run: str, path: str) -> types.Checkpoint:
    cps = svc.create_rest_client().list_checkpoints(run).result(timeout=30).checkpoints
    return next(c for c in cps if c.tinker_path == path)


def test_dimuon_optimizer_and_user_metadata(svc):
    tc = svc.create_lora_training_client(
        base_model=BASE_MODEL, rank=4, user_metadata={"owner": "extras"}, optimizer=types.DimuonOptimizerConfig()
    ).result(timeout=60)
    info = tc.get_info()
    assert getattr(info.optimizer_config, "type", None) == "dimuon" or info.optimizer_config == {"type": "dimuon", "version": 1}
    run = svc.create_rest_client().get_training_run(tc.model_id).result(timeout=30)
    assert run.user_metadata == {"owner": "extras"}
    tc.forward_backward([text_datum("dimuon")], "cross_entropy").result(timeout=60)
    out = tc.optim_step(types.DimuonParams(learning_rate=1e-3, grad_clip_norm=1.0)).result(timeout=60)
    assert isinstance(out, types.OptimStepResponse)
    with pytest.raises(ValueError):
        tc.optim_step(types.DimuonParams(learning_rate=math.nan))
    with pytest.raises(ValueError):
        tc.optim_step({"type": "dimuon", "learning_rate": math.inf})


def test_sampler_weights_ttl_and_metadata(svc, trained):
    r = trained.save_weights_for_sampler("extras-ttl", ttl_seconds=7200, user_metadata={"a": "b"}).result(timeout=60)
    cp = _checkpoint(svc, trained.model_id, r.path)
    assert cp.expires_at is not None and cp.user_metadata == {"a": "b"}
    with pytest.raises(TypeError):
        trained.save_weights_for_sampler("x", user_metadata={"a": 1})


def test_from_state_with_base_model_metadata_and_token(svc, trained):
    path = trained.save_state("extras-state").result(timeout=60).path
    tc = svc.create_training_client_from_state(path, base_model=BASE_MODEL, user_metadata={"from": "state"}).result(timeout=60)
    assert tc.get_info().model_data.model_name in (BASE_MODEL, None)
    tc2 = svc.create_training_client_from_state_with_optimizer(path, weights_access_token="tok-extras").result(timeout=60)
    assert tc2.model_id != tc.model_id
    loaded = tc2.load_state(path, weights_access_token="tok-extras").result(timeout=60)
    # The server's LoadWeightsResponse (PROTOCOL.md 6.8), not one made up from the request.
    assert (loaded.path, loaded.model_id, loaded.type) == (path, tc2.model_id, "load_weights")
    assert tc2.load_state_with_optimizer(path, weights_access_token="tok-extras").result(timeout=60).path == path


def test_save_weights_and_get_sampling_client_kinds(svc, trained):
    snap = trained.save_weights_and_get_sampling_client(record_stability_info=True).result(timeout=60)
    live = trained.save_weights_and_get_sampling_client(kind="inflight").result(timeout=60)
    prompt = types.ModelInput.from_ints(list(b"kinds"))
    for sc in (snap, live):
        res = sc.sample(prompt, 1, types.SamplingParams(max_tokens=3)).result(timeout=60)
        assert res.sequences and res.sequences[0].tokens
    with pytest.raises(ValueError):
        trained.save_weights_and_get_sampling_client(kind="later")


def test_save_weights_external(svc, trained):
    ext = trained.save_weights_external("extras-ext", ttl_seconds=7200).result(timeout=60)
    assert isinstance(ext, types.SaveWeightsExternalResponse) and "external" in ext.path
    assert _checkpoint(svc, trained.model_id, ext.path).checkpoint_type == "external"


def test_console_urls(svc, trained):
    url = svc.get_console_url()
    assert url.startswith("https://") and "/sessions/" in url and svc.session_id in url
    turl = trained.get_console_url()
    assert turl.startswith("https://") and trained.model_id in turl


def test_status_and_telemetry(svc, trained, base_url):
    st = svc.status()
    assert set(st) >= STATUS_KEYS and st["session_id"] == svc.session_id
    assert st["queue_state"] == "active" and st["operations_in_flight"] >= 0
    assert set(trained.status()) >= STATUS_KEYS
    assert svc.get_telemetry() is None and trained.get_telemetry() is None  # telemetry off
    on = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, telemetry=True)
    try:
        on.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)  # starts the session
        tel = on.get_telemetry()
        assert isinstance(tel, tinkex.Telemetry) and isinstance(tel.snapshot(), dict)
    finally:
        on.close("success").result(timeout=30)


def test_sampling_extras(svc, shared_sampler):
    prompt = types.ModelInput.from_ints([5, 6, 7, 8])
    target = types.TensorData(data=np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int64), dtype="int64", shape=[3, 2])
    res = shared_sampler.sample(prompt, 1, types.SamplingParams(max_tokens=2), target_prompt_logprobs=target, prompt_alt_tokens_k=2).result(timeout=60)
    assert res.target_prompt_logprobs is not None and res.target_prompt_logprobs.shape == [3, 2]
    assert res.prompt_alt_tokens is not None and res.prompt_alt_tokens.tokens.shape == [3, 2]
    with pytest.raises(ValueError):
        shared_sampler.sample(prompt, 1, types.SamplingParams(), prompt_alt_tokens_k=-1)
    with pytest.raises(ValueError):
        shared_sampler.sample(prompt, 1, types.SamplingParams(), target_prompt_logprobs=types.TensorData(data=[0.5], dtype="float32"))


def test_create_joins_an_existing_sampling_session(svc, shared_sampler, shared_service):
    joined = tinkex.SamplingClient.create(shared_service, sampling_session_id=shared_sampler.sampling_session_id).result(timeout=60)
    assert joined.sampling_session_id == shared_sampler.sampling_session_id
    assert joined.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2)).result(timeout=60).sequences
    with pytest.raises(ValueError):
        tinkex.SamplingClient.create(shared_service, base_model=BASE_MODEL, model_path="tinker://x/sampler_weights/y")
    rec = svc.create_sampling_client(base_model=BASE_MODEL, record_stability_info=True).result(timeout=60)
    assert rec.sample(types.ModelInput.from_ints([1]), 1, types.SamplingParams(max_tokens=1)).result(timeout=60).sequences


def test_sampler_handle_clone_and_pickle(shared_sampler, base_url, monkeypatch):
    handle = shared_sampler.get_sampler_handle()
    assert isinstance(handle, str) and API_KEY not in handle
    monkeypatch.setenv("TINKER_API_KEY", API_KEY)
    clone = tinkex.SamplingClient.from_sampler_handle(handle)
    assert clone.sampling_session_id == shared_sampler.sampling_session_id
    prompt = types.ModelInput.from_ints([9, 8, 7])
    futs = [c.sample(prompt, 1, types.SamplingParams(max_tokens=2)) for c in (clone, shared_sampler) for _ in range(4)]
    seq_ids = [f.result(timeout=60).sequences[0].sequence_id for f in futs]
    assert len(set(seq_ids)) == len(seq_ids)  # no seq_id reuse between original and clone
    again = pickle.loads(pickle.dumps(shared_sampler))
    assert isinstance(again, tinkex.SamplingClient) and again.sampling_session_id == shared_sampler.sampling_session_id
    assert again.sample(prompt, 1, types.SamplingParams(max_tokens=1)).result(timeout=60).sequences
    assert set(clone.status()) >= STATUS_KEYS


def test_sampler_handle_in_another_process(shared_sampler, base_url):
    handle = shared_sampler.get_sampler_handle()
    code = (
        "import sys, tinkex\n"
        "from tinkex import types\n"
        "sc = tinkex.SamplingClient.from_sampler_handle(sys.argv[1], api_key=sys.argv[2])\n"
        "r = sc.sample(types.ModelInput.from_ints([1, 2, 3]), 1, types.SamplingParams(max_tokens=2)).result(timeout=60)\n"
        "print('OK', len(r.sequences))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, handle, API_KEY], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK 1" in r.stdout, r.stderr


def test_resume_training_run(svc, trained):
    trained.save_state("extras-resume").result(timeout=60)
    resumed = svc.resume_training_run(trained.model_id).result(timeout=60)
    assert isinstance(resumed, tinkex.TrainingClient) and resumed.model_id != trained.model_id
    assert resumed.forward_backward([text_datum("resumed")], "cross_entropy").result(timeout=60).metrics
    with pytest.raises(tinkex.TinkerError):
        svc.resume_training_run("no-such-run").result(timeout=60)


def _neg_ll_graph() -> dict:
    # -(logprobs * weights).sum(), returning (loss, {"custom/neg_ll:sum": loss})
    return {
        "format": 1,
        "nodes": [
            {"op": "placeholder", "name": "logprobs", "target": "logprobs", "args": [], "kwargs": {}},
            {"op": "placeholder", "name": "weights", "target": "weights", "args": [], "kwargs": {}},
            {"op": "call_function", "name": "mul", "target": "operator.mul", "args": [{"ref": "logprobs"}, {"ref": "weights"}], "kwargs": {}},
            {"op": "call_method", "name": "sum_1", "target": "sum", "args": [{"ref": "mul"}], "kwargs": {}},
            {"op": "call_function", "name": "neg", "target": "operator.neg", "args": [{"ref": "sum_1"}], "kwargs": {}},
            {"op": "output", "name": "output", "target": "output", "args": [{"tuple": [{"ref": "neg"}, {"dict": {"custom/neg_ll:sum": {"ref": "neg"}}}]}], "kwargs": {}},
        ],
    }


def test_server_side_custom_loss(emu, base_url):
    emu.post("flags", {"client_config": {"custom_loss_server_side": True}})
    try:
        s = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, telemetry=False)
        tc = s.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
        handle = s._create_custom_loss("neg_ll", [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}], _neg_ll_graph()).result(timeout=60)
        assert isinstance(handle, tinkex.LossHandle) and handle.loss_id and handle.input_names == ("logprobs", "weights")
        out = tc.forward_backward_custom([text_datum("server loss")], handle).result(timeout=60)
        assert isinstance(out, types.ForwardBackwardOutput)
        s.close("success").result(timeout=30)
    finally:
        emu.post("flags", {"client_config": {"custom_loss_server_side": False}})
    off = tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, telemetry=False)
    with pytest.raises(tinkex.TinkerError):
        off._create_custom_loss("neg_ll", [{"name": "logprobs", "rank": 1}], _neg_ll_graph()).result(timeout=60)


def test_create_custom_loss_explains_what_to_install(svc, monkeypatch):
    def neg_ll(logprobs, weights):
        loss = -(logprobs * weights).sum()
        return loss, {"custom/neg_ll:sum": loss}

    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is installed: the tracing path runs instead (needs a server-side-loss server)")
    with pytest.raises(ImportError, match="pip install torch"):
        svc.create_custom_loss(neg_ll, {"logprobs": 1, "weights": 1})
    with pytest.raises(ValueError, match="input_ranks"):
        svc.create_custom_loss(neg_ll, {"logprobs": 1})


def test_get_tokenizer_explains_what_to_install(shared_sampler, trained):
    try:
        import transformers  # noqa: F401
    except ImportError:
        for c in (shared_sampler, trained):
            with pytest.raises(ImportError, match="pip install transformers"):
                c.get_tokenizer()
    else:
        pytest.skip("transformers is installed; loading a tokenizer needs the model hub")


def test_nothing_raises_not_implemented(svc, trained, shared_sampler):
    # The arguments that raised NotImplementedError before issue 14 are accepted now.
    svc.create_lora_training_client(base_model=BASE_MODEL, rank=4, user_metadata={"x": "y"}).result(timeout=60)
    shared_sampler.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=1), prompt_alt_tokens_k=1).result(timeout=60)


def test_session_user_metadata_and_header_overrides(emu, base_url):
    s = tinkex.ServiceClient(
        {"team": "extras"}, base_url=base_url, api_key=API_KEY, telemetry=False, default_headers_overrides={"X-Extras-Test": "1"}
    )
    try:
        s.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
        got = s.create_rest_client().get_session(s.session_id).result(timeout=30)
        assert got.user_metadata == {"team": "extras"}
    finally:
        s.close("success").result(timeout=30)
    with pytest.raises(TypeError):
        tinkex.ServiceClient({"team": 1}, base_url=base_url, api_key=API_KEY)
