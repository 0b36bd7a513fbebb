"""Fixtures: one tinkex-emulator per test session (port 0, temp state dir, stopped by PID),
helpers for its /_emulator control endpoints, and service clients pointed at it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PKG_ROOT = HERE.parent  # bindings/python
REPO = PKG_ROOT.parent.parent

API_KEY = "tml-pytest"


def pytest_report_header(config) -> str:
    import tinkex

    return f"tinkex {tinkex.__version__} from {Path(tinkex.__file__).parent}; library {tinkex.LIBRARY_PATH}"


def _emulator_bin() -> Path:
    env = os.environ.get("TINKEX_EMULATOR_BIN")
    p = Path(env) if env else REPO / "target" / "release" / "tinkex-emulator"
    if not p.is_file():
        pytest.exit(f"tinkex-emulator not found at {p}; run `cargo build --release -p tinkex-emulator`", 2)
    return p


class Emulator:
    def __init__(self, proc: subprocess.Popen, base_url: str, state_dir: Path):
        self.proc = proc
        self.pid = proc.pid
        self.base_url = base_url
        self.state_dir = state_dir

    def control(self, method: str, path: str, body: object | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base_url}/_emulator/{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def post(self, path: str, body: object) -> object:
        return self.control("POST", path, body)

    def get(self, path: str) -> object:
        return self.control("GET", path)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("emulator-state")
    log = open(state.parent / "emulator.err", "wb")
    proc = subprocess.Popen(
        [str(_emulator_bin()), "--port", "0", "--state-dir", str(state), "--poll-hold-ms", "200", "--seq-gap-timeout-ms", "2000"],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("http"):
            raise RuntimeError(f"emulator printed {line!r} instead of its URL")
        emu = Emulator(proc, line, state)
        yield emu
    finally:
        # Stop it by PID: SIGTERM, then SIGKILL.
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
def emu(emulator: Emulator):
    """The session emulator, with faults, delays and the forced queue state reset after the
    test. Use ``emu.set_delays({...})`` so the reset knows what to undo."""
    set_delays: set[str] = set()

    def set_delay(d: dict) -> None:
        set_delays.update(d)
        emulator.post("delays", d)

    emulator.set_delays = set_delay  # type: ignore[attr-defined]
    yield emulator
    emulator.control("DELETE", "faults")
    if set_delays:
        emulator.post("delays", {k: None for k in set_delays})
    emulator.post("queue_state", {"queue_state": None})


@pytest.fixture(scope="session")
def base_url(emulator: Emulator) -> str:
    return emulator.base_url


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_TELEMETRY", "0")


@pytest.fixture
def service_client(base_url: str):
    import tinkex

    return tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, telemetry=False)


@pytest.fixture(scope="session")
def shared_service(emulator: Emulator):
    import tinkex

    return tinkex.ServiceClient(base_url=emulator.base_url, api_key=API_KEY, telemetry=False)


@pytest.fixture(scope="session")
def shared_sampler(shared_service):
    return shared_service.create_sampling_client(base_model="Qwen/Qwen3-8B").result(timeout=60)


BASE_MODEL = "Qwen/Qwen3-8B"


def text_datum(text: str):
    from tinkex import types

    toks = list(text.encode())
    return types.Datum(
        model_input=types.ModelInput.from_ints(toks[:-1]),
        loss_fn_inputs={"target_tokens": toks[1:], "weights": [1.0] * (len(toks) - 1)},
    )


def wait_until(pred, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def official_python() -> Path | None:
    env = os.environ.get("TINKEX_OFFICIAL_SDK_PYTHON")
    if env:
        return Path(env)
    p = REPO / "target" / "official-sdk-venv" / "bin" / "python"
    return p if p.is_file() else None


sys.path.insert(0, str(HERE))
