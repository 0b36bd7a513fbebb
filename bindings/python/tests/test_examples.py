"""Drop-in check: the same example scripts (written against the official SDK's API) run
with tinkex and with the official tinker 0.38 package, against the emulator, and both
produce falling losses."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import PKG_ROOT, official_python

EXAMPLES = PKG_ROOT / "examples"


def _run(python: str, script: str, base_url: str, official: bool) -> str:
    env = dict(os.environ)
    env.update(TINKER_BASE_URL=base_url, TINKER_API_KEY="tml-examples", TINKER_TELEMETRY="0")
    env.pop("PYTHONPATH", None)
    if official:
        env["TINKEX_USE_OFFICIAL"] = "1"
    else:
        env.pop("TINKEX_USE_OFFICIAL", None)
    r = subprocess.run([python, str(EXAMPLES / script)], capture_output=True, text=True, env=env, timeout=600, cwd=str(EXAMPLES))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    return r.stdout


def _result(stdout: str, kind: str, module: str) -> tuple[float, float]:
    m = re.search(rf"RESULT {kind} {module} first=(\S+) last=(\S+) falling=True", stdout)
    assert m, stdout
    return float(m.group(1)), float(m.group(2))


@pytest.mark.parametrize("script, kind", [("sl_loop.py", "sl"), ("rl_loop.py", "rl")])
@pytest.mark.parametrize("sdk", ["tinkex", "official"])
def test_example_runs_with_both_sdks(base_url, script, kind, sdk):
    if sdk == "official":
        py = official_python()
        if py is None:
            pytest.skip("no official SDK venv (target/official-sdk-venv); run_tests.sh creates it")
        stdout = _run(str(py), script, base_url, official=True)
        first, last = _result(stdout, kind, "tinker")
    else:
        stdout = _run(sys.executable, script, base_url, official=False)
        first, last = _result(stdout, kind, "tinkex")
    assert last < first
    print(f"{script} with {sdk}: loss {first:.4f} -> {last:.4f}")


@pytest.mark.parametrize("sdk", ["tinkex", "official"])
def test_rest_tour(base_url, sdk):
    """examples/rest_tour.py: runs, checkpoints, publish, TTL, external weights downloaded with
    plain GETs of the signed URLs; the same script under the official SDK too."""
    if sdk == "official":
        py = official_python()
        if py is None:
            pytest.skip("no official SDK venv (target/official-sdk-venv); run_tests.sh creates it")
        stdout = _run(str(py), "rest_tour.py", base_url, official=True)
    else:
        stdout = _run(sys.executable, "rest_tour.py", base_url, official=False)
    m = re.search(r"RESULT rest (\S+) files=(\d+) bytes=(\d+)", stdout)
    assert m, stdout
    assert int(m.group(2)) >= 1 and int(m.group(3)) > 0
