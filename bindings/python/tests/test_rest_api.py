"""Every REST and admin method of the method table (src/core/rest/methods.json), and its
``_async`` twin, against the emulator: session-less ``RestClient()`` / ``AdminClient()``,
typed results, date/datetime arguments, signed external-weights URLs fetched with a plain
GET and no credentials (PROTOCOL.md 3.3, 6.9, 7.2, 9, 2.8)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.request

import pytest

import tinkex
from conftest import API_KEY, BASE_MODEL, text_datum
from tinkex import types
from tinkex._rest_methods import METHODS


def _journal_paths(emu) -> list:
    return [(e["method"], e["path"]) for e in emu.get("journal")["journal"]]


@pytest.fixture(scope="module")
def world(emulator):
    """One service client with a trained model, a training and a sampler checkpoint."""
    svc = tinkex.ServiceClient(base_url=emulator.base_url, api_key=API_KEY, telemetry=False, project_id="proj-rest")
    tc = svc.create_lora_training_client(base_model=BASE_MODEL, rank=4, user_metadata={"suite": "rest"}).result(timeout=60)
    tc.forward_backward([text_datum("rest api")], "cross_entropy").result(timeout=60)
    state = tc.save_state("rest-state").result(timeout=60)
    sampler = tc.save_weights_for_sampler("rest-sampler", ttl_seconds=7200, user_metadata={"k": "v"}).result(timeout=60)
    yield {"svc": svc, "tc": tc, "state": state.path, "sampler": sampler.path, "run": tc.model_id}
    svc.close("success").result(timeout=30)


def test_the_wrappers_cover_the_table_and_every_async_twin():
    rest = [n for n, clients in METHODS if "rest" in clients]
    admin = [n for n, clients in METHODS if "admin" in clients]
    assert len(METHODS) == 24
    for n in rest:
        assert callable(getattr(tinkex.RestClient, n)) and callable(getattr(tinkex.RestClient, n + "_async"))
    for n in admin:
        assert callable(getattr(tinkex.AdminClient, n)) and callable(getattr(tinkex.AdminClient, n + "_async"))
    assert not hasattr(tinkex.AdminClient, "list_training_runs")


def test_rest_client_is_session_less(emu, world):
    before = sum(1 for m, p in _journal_paths(emu) if p.endswith("/create_session"))
    rc = tinkex.RestClient(base_url=emu.base_url, api_key=API_KEY)
    runs = rc.list_training_runs(limit=50).result(timeout=30)
    assert isinstance(runs, types.TrainingRunsResponse) and isinstance(runs.cursor, types.Cursor)
    assert world["run"] in [r.training_run_id for r in runs.training_runs]
    paths = _journal_paths(emu)
    assert sum(1 for m, p in paths if p.endswith("/create_session")) == before
    rc.close()


def test_runs_and_checkpoints(emu, world):
    rc = world["svc"].create_rest_client()
    run = rc.get_training_run(world["run"]).result(timeout=30)
    assert isinstance(run, types.TrainingRun) and run.base_model == BASE_MODEL
    assert isinstance(run.last_request_time, dt.datetime)
    assert rc.get_training_run_by_tinker_path(world["state"]).result(timeout=30).training_run_id == world["run"]
    cps = rc.list_checkpoints(world["run"]).result(timeout=30)
    assert {c.tinker_path for c in cps.checkpoints} >= {world["state"], world["sampler"]}
    assert all(isinstance(c.time, dt.datetime) for c in cps.checkpoints)
    mine = rc.list_user_checkpoints(limit=100).result(timeout=30)
    assert world["sampler"] in {c.tinker_path for c in mine.checkpoints}
    info = rc.get_weights_info_by_tinker_path(world["state"]).result(timeout=30)
    assert isinstance(info, types.WeightsInfoResponse) and info.base_model == BASE_MODEL and info.is_lora
    # async twins return the value itself
    assert asyncio.run(rc.get_training_run_async(world["run"])).training_run_id == world["run"]
    assert isinstance(asyncio.run(rc.list_checkpoints_async(world["run"])), types.CheckpointsListResponse)
    assert isinstance(asyncio.run(rc.list_training_runs_async()), types.TrainingRunsResponse)
    assert isinstance(asyncio.run(rc.list_user_checkpoints_async(limit=5)), types.CheckpointsListResponse)
    assert asyncio.run(rc.get_training_run_by_tinker_path_async(world["state"])).training_run_id == world["run"]
    assert asyncio.run(rc.get_weights_info_by_tinker_path_async(world["state"])).base_model == BASE_MODEL


def _checkpoint(rc, run: str, path: str) -> types.Checkpoint:
    return next(c for c in rc.list_checkpoints(run).result(timeout=30).checkpoints if c.tinker_path == path)


def test_publish_unpublish_ttl_and_delete(emu, world):
    rc = tinkex.RestClient(base_url=emu.base_url, api_key=API_KEY)
    path, run = world["sampler"], world["run"]
    assert rc.publish_checkpoint_from_tinker_path(path).result(timeout=30) is None
    assert _checkpoint(rc, run, path).public is True
    asyncio.run(rc.unpublish_checkpoint_from_tinker_path_async(path))
    assert _checkpoint(rc, run, path).public is False
    asyncio.run(rc.publish_checkpoint_from_tinker_path_async(path))
    rc.unpublish_checkpoint_from_tinker_path(path).result(timeout=30)
    rc.set_checkpoint_ttl_from_tinker_path(path, 86400).result(timeout=30)
    assert _checkpoint(rc, run, path).expires_at is not None
    asyncio.run(rc.set_checkpoint_ttl_from_tinker_path_async(path, None))
    assert _checkpoint(rc, run, path).expires_at is None
    # delete both ways (fresh checkpoints)
    tc = world["tc"]
    a = tc.save_state("rest-del-a").result(timeout=60).path
    b = tc.save_state("rest-del-b").result(timeout=60).path
    c = tc.save_state("rest-del-c").result(timeout=60).path
    d = tc.save_state("rest-del-d").result(timeout=60).path
    rc.delete_checkpoint_from_tinker_path(a).result(timeout=30)
    parsed = types.ParsedCheckpointTinkerPath.from_tinker_path(b)
    rc.delete_checkpoint(parsed.training_run_id, parsed.checkpoint_id).result(timeout=30)
    asyncio.run(rc.delete_checkpoint_from_tinker_path_async(c))
    pd = types.ParsedCheckpointTinkerPath.from_tinker_path(d)
    asyncio.run(rc.delete_checkpoint_async(pd.training_run_id, pd.checkpoint_id))
    left = {x.tinker_path for x in rc.list_checkpoints(run).result(timeout=30).checkpoints}
    assert not left & {a, b, c, d}


def test_external_weights_are_downloaded_with_a_plain_get(emu, world):
    ext = world["tc"].save_weights_external("rest-ext", ttl_seconds=7200).result(timeout=60)
    assert isinstance(ext, types.SaveWeightsExternalResponse) and "external" in ext.path
    rc = tinkex.RestClient(base_url=emu.base_url, api_key=API_KEY)
    urls = rc.get_external_weights_urls(ext.path).result(timeout=30)
    assert isinstance(urls, types.ExternalWeightsUrlsResponse) and urls.urls
    assert isinstance(urls.expires, dt.datetime)
    for rel, url in urls.urls.items():
        req = urllib.request.Request(url)  # no credentials
        assert "X-API-Key" not in req.headers and "Authorization" not in req.headers
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200 and resp.read() is not None, rel
    again = asyncio.run(rc.get_external_weights_urls_async(ext.path))
    assert set(again.urls) == set(urls.urls)


def test_sessions(emu, world):
    svc = world["svc"]
    rc = svc.create_rest_client()
    sid = svc.session_id
    assert sid
    listed = rc.list_sessions(limit=100).result(timeout=30)
    assert isinstance(listed, types.ListSessionsResponse) and sid in listed.sessions
    assert sid in asyncio.run(rc.list_sessions_async(limit=100)).sessions
    got = rc.get_session(sid).result(timeout=30)
    assert isinstance(got, types.GetSessionResponse) and world["run"] in got.training_run_ids
    assert asyncio.run(rc.get_session_async(sid, access_scope="owned")).training_run_ids == got.training_run_ids
    # a session without a project can be assigned one (and not moved out of it again)
    loose = tinkex.ServiceClient(base_url=emu.base_url, api_key=API_KEY, telemetry=False)
    loose.get_server_capabilities()
    loose.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
    assert rc.assign_session_project(loose.session_id, "proj-rest-2").result(timeout=30) is None
    asyncio.run(rc.assign_session_project_async(loose.session_id, "proj-rest-2"))
    with pytest.raises(tinkex.BadRequestError):
        rc.assign_session_project(sid, "proj-rest-3").result(timeout=30)
    loose.close("success").result(timeout=30)
    found = rc.search_sessions(types.SessionSearchRequest(session_id=sid)).result(timeout=30)
    assert isinstance(found, types.SessionSearchResponse) and [s.session_id for s in found.sessions] == [sid]
    assert isinstance(found.sessions[0].created_at, dt.datetime)
    found2 = asyncio.run(rc.search_sessions_async(types.SessionSearchRequest(owner=types.OwnSearchOwner(), limit=5)))
    assert isinstance(found2, types.SessionSearchResponse)
    url = rc.export_session_trace(sid).result(timeout=60)
    assert isinstance(url, str) and url.startswith("http")
    with urllib.request.urlopen(url, timeout=30) as resp:  # a signed URL: no credentials
        assert resp.status == 200
    assert asyncio.run(rc.export_session_trace_async(sid)).startswith("http")


def test_sampler_capabilities_whoami(emu, world):
    rc = tinkex.RestClient(base_url=emu.base_url, api_key=API_KEY)
    sc = world["svc"].create_sampling_client(model_path=world["sampler"]).result(timeout=60)
    got = rc.get_sampler(sc.sampling_session_id).result(timeout=30)
    assert isinstance(got, types.GetSamplerResponse) and got.base_model == BASE_MODEL and got.model_path == world["sampler"]
    assert asyncio.run(rc.get_sampler_async(sc.sampling_session_id)).sampler_id == got.sampler_id
    caps = rc.get_server_capabilities().result(timeout=30)
    assert isinstance(caps, types.GetServerCapabilitiesResponse) and caps.supported_models
    assert asyncio.run(rc.get_server_capabilities_async()).supported_models
    # whoami reads the JWT (2.8): with a plain API key it is a clear user error
    with pytest.raises(tinkex.InvalidArgumentError, match="JWT"):
        rc.whoami().result(timeout=30)


def test_whoami_with_jwt_auth(tmp_path):
    import os
    import signal
    import subprocess

    from conftest import _emulator_bin

    proc = subprocess.Popen(
        [str(_emulator_bin()), "--port", "0", "--state-dir", str(tmp_path), "--client-config", json.dumps({"pjwt_auth_enabled": True})],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http"), url
        rc = tinkex.RestClient(base_url=url, api_key=API_KEY)
        me = rc.whoami().result(timeout=30)
        assert isinstance(me, types.WhoamiResponse) and me.user_urn and me.org_urn
        assert asyncio.run(rc.whoami_async()).user_urn == me.user_urn
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_copy_weights_from_rest_and_service(emu, world):
    rc = tinkex.RestClient(base_url=emu.base_url, api_key=API_KEY)
    new = rc.copy_weights(world["sampler"], "proj-copy", ttl_seconds=7200).result(timeout=60)
    assert isinstance(new, str) and new.startswith("tinker://") and new != world["sampler"]
    new2 = asyncio.run(rc.copy_weights_async(world["sampler"], destination_project_id="proj-copy"))
    assert new2.startswith("tinker://")
    # ServiceClient.copy_weights copies into the client's project
    new3 = world["svc"].copy_weights(world["sampler"]).result(timeout=60)
    assert new3.startswith("tinker://")
    # without a project the service client's copy is a client-side user error
    svc2 = tinkex.ServiceClient(base_url=emu.base_url, api_key=API_KEY, telemetry=False)
    with pytest.raises(tinkex.TinkerError):
        svc2.copy_weights(world["sampler"]).result(timeout=30)


@pytest.mark.parametrize("client", ["rest", "admin"])
def test_admin_reports(emu, world, client):
    c = tinkex.RestClient(base_url=emu.base_url, api_key=API_KEY) if client == "rest" else tinkex.AdminClient(base_url=emu.base_url, api_key=API_KEY)
    today = dt.datetime.now(dt.timezone.utc).date()
    log = c.get_audit_log(event_type="checkpoints", day=today).result(timeout=60)
    assert isinstance(log, types.AuditLogResponse)
    assert all(isinstance(e, types.AuditLogEntry) and isinstance(e.timestamp, dt.datetime) for e in log.entries)
    assert isinstance(asyncio.run(c.get_audit_log_async()), types.AuditLogResponse)
    hour = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = hour - dt.timedelta(days=1)  # billing buckets are whole UTC hours
    end = hour + dt.timedelta(hours=2)
    usage = c.get_billing_usage(start, end).result(timeout=60)
    assert isinstance(usage, types.BillingUsageResponse)
    for ev in usage.data:
        assert isinstance(ev.bucket_start, dt.datetime)
    usage2 = asyncio.run(c.get_billing_usage_async(start.isoformat(), end.replace(tzinfo=None)))
    assert isinstance(usage2, types.BillingUsageResponse)
    storage = c.get_current_checkpoint_storage_usage().result(timeout=60)
    assert isinstance(storage, types.CurrentCheckpointStorageUsageResponse)
    assert sum(i.size_bytes for i in storage.data) > 0
    assert isinstance(asyncio.run(c.get_current_checkpoint_storage_usage_async(project_id="proj-rest")), types.CurrentCheckpointStorageUsageResponse)
    assert c.get_telemetry() is None


def test_bad_arguments_fail_before_any_request(emu):
    rc = tinkex.RestClient(base_url=emu.base_url, api_key=API_KEY)
    with pytest.raises(TypeError):
        rc.list_training_runs(limit="ten")
    with pytest.raises(TypeError):
        rc.get_training_run(42)
    with pytest.raises(tinkex.TinkerError):
        rc.get_training_run_by_tinker_path("not-a-tinker-path").result(timeout=30)
