"""Authentication conformance through the Python binding (PROTOCOL.md 2.3-2.7): the
server-driven JWT mode end to end, the invalid_token replay, the background refresh, the
credential command and the credentials file taken from the environment.

A dedicated emulator runs in JWT mode (``--client-config '{"pjwt_auth_enabled": true}'``);
``/_emulator/auth`` tells which credential kind each request carried (never the secret)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import tinkex
from conftest import Emulator, _emulator_bin, text_datum

BASE_MODEL = "Qwen/Qwen3-8B"
KEY = "tml-pytest-auth"


@pytest.fixture(scope="module")
def jwt_emu(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("jwt-emulator-state")
    log = open(state.parent / "jwt-emulator.err", "wb")
    proc = subprocess.Popen(
        [str(_emulator_bin()), "--port", "0", "--state-dir", str(state), "--poll-hold-ms", "200",
         "--client-config", json.dumps({"pjwt_auth_enabled": True})],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        assert line.startswith("http"), line
        yield Emulator(proc, line, state)
    finally:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def emu(jwt_emu: Emulator):
    jwt_emu.control("DELETE", "auth")
    jwt_emu.control("DELETE", "journal")
    yield jwt_emu
    jwt_emu.control("DELETE", "faults")
    jwt_emu.post("auth", {"jwt_lifetime_ms": 3_600_000})
    jwt_emu.post("flags", {"client_config": {"credential_default_source": None}})


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No key or command in the environment, and a HOME without a credentials file."""
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def log_of(emu: Emulator) -> list[dict]:
    return emu.get("auth")["log"]


def wait_until(cond, deadline_s: float = 10.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_jwt_mode_end_to_end(emu: Emulator):
    with tinkex.ServiceClient(base_url=emu.base_url, api_key=KEY, telemetry=False) as svc:
        tc = svc.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
        tc.forward_backward([text_datum("tokens for the JWT test")], "cross_entropy").result(timeout=60)
        tc.optim_step(tinkex.types.AdamParams(learning_rate=1e-3)).result(timeout=60)
    log = log_of(emu)
    assert log[0]["path"] == "/api/v1/client/config" and log[0]["credential"] == "api_key"
    assert log[1]["path"] == "/api/v1/auth/token" and log[1]["credential"] == "api_key"
    assert [e["path"] for e in log].count("/api/v1/auth/token") == 1
    rest = log[2:]
    assert rest and all(e["credential"] == "jwt" and e["status"] == 200 for e in rest), rest
    assert any(e["path"].endswith("/finish") for e in rest)
    assert "tml-" not in json.dumps(log), "the log carries no credential"


def test_revoked_token_is_replayed_once(emu: Emulator):
    svc = tinkex.ServiceClient(base_url=emu.base_url, api_key=KEY, telemetry=False)
    svc.get_server_capabilities()
    emu.post("auth", {"revoke_all": True})
    svc.get_server_capabilities()
    caps = [e for e in log_of(emu) if e["path"] == "/api/v1/get_server_capabilities"]
    assert [e["status"] for e in caps] == [200, 401, 200], caps
    assert caps[1]["jti"] == caps[0]["jti"] and caps[2]["jti"] != caps[0]["jti"]
    assert [e["path"] for e in log_of(emu)].count("/api/v1/auth/token") == 2


def test_background_refresh_with_a_short_lifetime(emu: Emulator):
    emu.post("auth", {"jwt_lifetime_ms": 4000})
    svc = tinkex.ServiceClient(
        base_url=emu.base_url, api_key=KEY, telemetry=False,
        config={"auth": {"refresh_margin_ms": 500, "refresh_retry_ms": 200}},
    )
    svc.get_server_capabilities()
    started = time.monotonic()
    tokens = lambda: [e["path"] for e in log_of(emu)].count("/api/v1/auth/token")  # noqa: E731
    assert tokens() == 1
    assert wait_until(lambda: tokens() >= 2, 10.0), "no background refresh"
    assert 1.5 <= time.monotonic() - started <= 4.0


def test_credential_command_from_the_environment(emu: Emulator, clean_env: Path, monkeypatch):
    runs = clean_env / "runs"
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", f"echo run >> {runs}; echo tml-from-command")
    emu.post("flags", {"client_config": {"credential_default_source": "credential_cmd"}})
    svc = tinkex.ServiceClient(base_url=emu.base_url, telemetry=False)  # api_key=None
    svc.get_server_capabilities()
    svc.get_server_capabilities()
    # Run for client/config and for the one exchange; never for JWT-carrying requests.
    assert runs.read_text().count("run") == 2
    kinds = [(e["path"], e["credential"]) for e in log_of(emu)]
    assert kinds[:2] == [("/api/v1/client/config", "api_key"), ("/api/v1/auth/token", "api_key")]
    assert all(k == "jwt" for _, k in kinds[2:])


def test_a_failing_command_is_an_authentication_error(emu: Emulator, clean_env: Path, monkeypatch):
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", "echo SECRET-on-stderr >&2; exit 2")
    svc = tinkex.ServiceClient(base_url=emu.base_url, telemetry=False)
    with pytest.raises(tinkex.TinkerError) as ei:
        svc.get_server_capabilities()
    assert "TINKER_CREDENTIAL_CMD returned an empty credential" in str(ei.value)
    assert "SECRET" not in str(ei.value)
    assert log_of(emu) == [], "nothing was sent"


def test_missing_credentials_and_the_credentials_file(emu: Emulator, clean_env: Path):
    with pytest.raises(tinkex.AuthenticationError) as ei:
        tinkex.ServiceClient(base_url=emu.base_url)
    assert "The api_key client option must be set" in str(ei.value)
    store = clean_env / ".tinker"
    store.mkdir()
    (store / "credentials.json").write_text(json.dumps({
        "version": 1, "default": "k",
        "keys": {"k": {"type": "manual", "key": "tml-from-file", "name": "k"}},
    }))
    svc = tinkex.ServiceClient(base_url=emu.base_url, telemetry=False)
    svc.get_server_capabilities()
    assert log_of(emu)[0]["credential"] == "api_key"
