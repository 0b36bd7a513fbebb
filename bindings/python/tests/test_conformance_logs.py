"""The service's messages reach the user's log through the binding (PROTOCOL.md 5.5, 1.6.4,
5.6): create_session's info/warning/error messages, `x-deprecation-note` headers, and the
heartbeat warning — one line per minute at most, with the elapsed time, while an event is
still emitted for every failed beat (libtinkex does better than the SDK's line per beat)."""

from __future__ import annotations

import logging
import time

import tinkex
from conftest import API_KEY, BASE_MODEL

FAST_RETRY = {"base_delay_ms": 10, "max_delay_ms": 50, "holder_base_delay_ms": 10, "holder_max_delay_ms": 50}


def _svc(base_url, **config):
    return tinkex.ServiceClient(
        base_url=base_url, api_key=API_KEY, telemetry=False, config={"retry": FAST_RETRY, **config}
    )


def _lines(caplog, level, needle):
    return [r for r in caplog.records if r.levelno == level and needle in r.getMessage()]


def _wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_create_session_messages_reach_the_log_at_their_levels(emu, base_url, caplog):
    caplog.set_level(logging.DEBUG)
    emu.post(
        "faults",
        {
            "path": "/api/v1/create_session",
            "status": 200,
            "count": 1,
            "after_handler": True,
            "body": {
                "type": "create_session",
                "session_id": "py-msgs-session",
                "info_message": "py-info-5.5",
                "warning_message": "py-warn-5.5",
                "error_message": "py-error-5.5",
            },
        },
    )
    svc = _svc(base_url)
    try:
        # The session is created by the first call needing it; create_model then fails (the
        # emulator does not know the injected session id), which does not matter here.
        try:
            svc.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
        except tinkex.TinkerError:
            pass
        assert len(_lines(caplog, logging.INFO, "py-info-5.5")) == 1
        assert len(_lines(caplog, logging.WARNING, "py-warn-5.5")) == 1
        assert len(_lines(caplog, logging.ERROR, "py-error-5.5")) == 1
    finally:
        svc.close("success")


def test_deprecation_notes_reach_the_log(emu, base_url, caplog):
    caplog.set_level(logging.DEBUG)
    svc = _svc(base_url)
    try:
        rest = svc.create_rest_client()
        emu.post(
            "faults",
            {
                "path": "/api/v1/training_runs",
                "count": 2,
                "after_handler": True,
                "status": 200,
                "body": {"training_runs": [], "cursor": {"offset": 0, "limit": 5, "total_count": 0}},
                "headers": {"x-deprecation-note": "py-dep-note"},
            },
        )
        rest.list_training_runs(limit=5).result(timeout=60)
        rest.list_training_runs(limit=5).result(timeout=60)
        warn = _lines(caplog, logging.WARNING, "Deprecation notice: py-dep-note")
        assert len(warn) == 1, [r.getMessage() for r in caplog.records]
    finally:
        svc.close("success")


def test_heartbeat_warning_is_logged_once_per_interval_but_every_failure_is_an_event(emu, base_url, caplog):
    caplog.set_level(logging.DEBUG)
    svc = _svc(
        base_url,
        heartbeat={"interval_ms": 20, "warn_after_ms": 60, "warn_log_interval_ms": 60000},
    )
    events = []
    svc.subscribe(events.append)
    try:
        svc.create_lora_training_client(base_model=BASE_MODEL, rank=4).result(timeout=60)
        emu.post("faults", {"path": "/api/v1/session_heartbeat", "status": 503, "duration_ms": 3000})

        def warning_events():
            return [e for e in events if e.type == "heartbeat_warning"]

        _wait_for(lambda: len(warning_events()) >= 5)
        lines = _lines(caplog, logging.WARNING, "Session heartbeat failed")
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "seconds" in lines[0].getMessage()
    finally:
        emu.control("DELETE", "faults")
        svc.close("success")
