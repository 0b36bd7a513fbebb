"""Conformance rules that only the Python binding implements (docs/conformance.md).

PROTOCOL.md 3.5: a ServiceClient used as a context manager finishes its session with
``success`` on a clean exit, ``errored`` when an ``Exception`` escapes and ``interrupted``
for any other ``BaseException`` (e.g. KeyboardInterrupt); ``detail`` is null.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import API_KEY, BASE_MODEL


def _finished(emu, session_id: str):
    sessions = emu.get("sessions")["sessions"]
    return next(s for s in sessions if s["session_id"] == session_id)["finished"]


class _Interrupt(KeyboardInterrupt):
    """A KeyboardInterrupt of this test only (not confused with a real Ctrl-C)."""


@pytest.mark.parametrize(
    "raised, reason",
    [(None, "success"), (ValueError, "errored"), (_Interrupt, "interrupted")],
)
def test_context_manager_maps_the_exit_to_the_finish_reason(emu, base_url, raised, reason):
    import tinkex

    expect = pytest.raises(raised) if raised else contextlib.nullcontext()
    with expect:
        with tinkex.ServiceClient(base_url=base_url, api_key=API_KEY, telemetry=False) as svc:
            svc.create_sampling_client(base_model=BASE_MODEL).result(timeout=60)
            session_id = svc.session_id
            assert session_id
            if raised:
                raise raised("leaving the block")
    assert _finished(emu, session_id) == {"type": reason, "detail": None}


# ---- 2.1 TINKER_LOG ----------------------------------------------------------------------

_LOG_PROBE = """
import logging, tinkex
print(logging.getLogger("tinkex").level, len(logging.getLogger().handlers))
"""


@pytest.mark.parametrize(
    "value, level, handlers",
    [("debug", logging.DEBUG, 1), ("info", logging.INFO, 1), (None, logging.NOTSET, 0), ("trace", logging.NOTSET, 0)],
)
def test_tinker_log_sets_the_package_logger_level(value, level, handlers):
    """2.1: TINKER_LOG=debug|info configures logging at import (a root handler and the level
    of the `tinkex` logger); unset or another value leaves logging alone."""
    import tinkex

    env = dict(os.environ)
    env.pop("TINKER_LOG", None)
    if value is not None:
        env["TINKER_LOG"] = value
    # The child imports the very package under test.
    pkg_parent = str(Path(tinkex.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run(
        [sys.executable, "-c", _LOG_PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert [int(out[0]), int(out[1])] == [level, handlers], out
