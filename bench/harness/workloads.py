"""The measured workloads: W1 sampling, W3 forward_backward (with wire timings from the
proxy log), W5 memory, W6 recovery after an outage, W7 telemetry overhead."""

import json
import os
import signal
import time

from . import curves, settings
from .settings import BENCH, log, mono
from .processes import Child, Emulator, client_cmd, run_client


def w_sampling(S, R):
    """W1/W2/W4: closed-loop sampling, every client, reps interleaved round-robin."""
    clients = ["rust", "ffi", "raw", "python"] + (["official"] if R["have_official"] else [])
    runs = {c: [] for c in clients}
    for rep in range(S["reps"]):
        for c in clients:
            if c == "official" and rep >= S["reps_official"]:
                continue
            total = S["total_official"] if c == "official" else S["total"]
            log(f"W1 sampling rep {rep + 1}/{S['reps']}: {c} ({total} requests, {S['inflight']} in flight)")
            r = run_client(f"w1.{c}.{rep}", c, "sample", {
                "total": total, "inflight": S["inflight"], "warmup": S["warmup"]})
            if r:
                runs[c].append(r)
    R["sampling"] = runs


def requests_per_call(proxy_log, reps):
    """The proxy log's forward_backward requests of each rep's call: those that started
    after it and before the next call, in order of their first byte."""
    recs = []
    with open(proxy_log) as f:
        for line in f:
            r = json.loads(line)
            if "/forward_backward" in r["path"]:
                recs.append(r)
    calls = [r["t_call"] for r in reps] + [float("inf")]
    return [sorted((r for r in recs if calls[i] <= r["t_first"] < calls[i + 1]),
                   key=lambda r: r["t_first"]) for i in range(len(reps))]


def wire_times(proxy_log, reps):
    """For each rep's call, the forward_backward requests that started after it (and before
    the next call): first byte, last byte, requests, bytes."""
    out = []
    for rep, mine in zip(reps, requests_per_call(proxy_log, reps)):
        if not mine:
            out.append(None)
            continue
        out.append({
            "first_ms": (min(r["t_first"] for r in mine) - rep["t_call"]) * 1e3,
            "last_ms": (max(r["t_last"] for r in mine) - rep["t_call"]) * 1e3,
            "return_ms": (rep["t_return"] - rep["t_call"]) * 1e3,
            "done_ms": (rep["t_done"] - rep["t_call"]) * 1e3,
            "requests": len(mine),
            "bytes": sum(r["body_bytes"] for r in mine),
            "cpu_ms": rep["cpu_s"] * 1e3,
            "ok": rep["ok"],
            "timeline": [{"first_ms": (r["t_first"] - rep["t_call"]) * 1e3,
                          "last_ms": (r["t_last"] - rep["t_call"]) * 1e3,
                          "bytes": r["body_bytes"]} for r in sorted(mine, key=lambda r: r["t_first"])],
        })
    return out


def w_fwdbwd(S, R):
    """W3: forward_backward of datums×tokens, call → bytes on the wire, through the proxy."""
    clients = ["rust", "raw", "python"] + (["official"] if R["have_official"] else [])
    res = {}
    for c in clients:
        log(f"W3 forward_backward: {c} ({S['fb_reps']} × {S['fb_datums']}×{S['fb_tokens']} tokens)")
        emu = Emulator(f"w3.{c}")
        plog = os.path.join(settings.LOG_DIR, f"w3.{c}.proxy.jsonl")
        if os.path.exists(plog):
            os.remove(plog)
        proxy = Child(f"w3.{c}.proxy", [BENCH, "proxy", "--upstream", emu.url, "--log", plog])
        purl = proxy.line(30)
        try:
            cmd, env = client_cmd(c, "fwdbwd", {
                "base-url": purl, "datums": S["fb_datums"], "tokens": S["fb_tokens"],
                "reps": S["fb_reps"]})
            child = Child(f"w3.{c}", cmd, env)
            r = child.wait(600)
        finally:
            proxy.kill(signal.SIGTERM)
            proxy.reap()
            emu.stop()
        res[c] = wire_times(plog, r["reps"]) if r else []
        R.setdefault("fwdbwd_accept", {})[c] = curves.acceptance(plog, r["reps"]) if r else []
    log(f"W3 bare protobuf encode ({S['encode_reps']} reps)")
    c = Child("w3.encode", [BENCH, "encode", "--datums", str(S["fb_datums"]), "--tokens",
                            str(S["fb_tokens"]), "--reps", str(S["encode_reps"])])
    R["encode"] = c.wait(300)
    R["fwdbwd"] = res


def w_memory(S, R):
    """W5: RSS with N futures in flight (first polls held by a latency fault)."""
    clients = ["rust", "ffi", "raw", "python"] + (["official"] if R["have_official"] else [])
    runs = {c: [] for c in clients}
    for rep in range(S["mem_reps"]):
        for c in clients:
            if c == "official" and rep >= 1:
                continue
            log(f"W5 memory rep {rep + 1}/{S['mem_reps']}: {c} ({S['mem_n']} in flight)")
            r = run_client(f"w5.{c}.{rep}", c, "memory", {
                "n": S["mem_n"], "hold-ms": S["mem_hold_ms"], "no-wait": True})
            if r:
                runs[c].append(r)
    R["memory"] = runs


def w_recovery(S, R):
    """W6: the clients run concurrently against one emulator: each gets N operations
    pending (their first polls held), one outage for all, then time to the last completion."""
    clients = ["rust", "python", "raw"] + (["official"] if R["have_official"] else [])
    n, hold, outage = S["rec_n"], S["rec_hold_ms"], S["rec_outage_ms"]
    log(f"W6 recovery: {', '.join(clients)} concurrently, {n} pending each, {outage / 1e3:.0f} s outage")
    emu = Emulator("w6")
    kids = {}
    res = {}
    try:
        for c in clients:
            cmd, env = client_cmd(c, "recovery", {"base-url": emu.url, "n": n, "coordinated": True,
                                                  "outage-ms": outage, "hold-ms": hold})
            kids[c] = Child(f"w6.{c}", cmd, env, stdin=True)
        for c, k in kids.items():
            l = k.line(120)
            if l != "READY":
                raise RuntimeError(f"W6 {c}: expected READY, got {l!r}")
        path = "/api/v1/retrieve_future"
        before = emu.requests(path)
        target = before + n * len(kids)
        emu.control("POST", "faults", {"path": path, "latency_ms": hold, "count": n * len(kids)})
        t_sub = mono()
        for k in kids.values():
            k.send("SUBMIT")
        for c, k in kids.items():
            l = k.line(120)
            if l != "SUBMITTED":
                raise RuntimeError(f"W6 {c}: expected SUBMITTED, got {l!r}")
        # Every first poll held (or the count stopped growing), well before the hold ends.
        last, since = -1, mono()
        while True:
            seen = emu.requests(path)
            if seen >= target or mono() - t_sub > hold / 1e3 - 1.5 or (seen == last and mono() - since > 2):
                break
            if seen != last:
                last, since = seen, mono()
            time.sleep(0.05)
        held = seen - before
        t0 = mono()
        emu.control("POST", "outage", {"duration_ms": outage})
        rtt = (mono() - t0) * 1e3
        for k in kids.values():
            k.send(f"OUTAGE {t0:.6f} {outage / 1e3}")
        for c, k in kids.items():
            r = k.wait(outage / 1e3 + 120)
            if r:
                r["polls_held_at_outage"] = held
                r["polls_expected"] = n * len(kids)
                r["outage_post_rtt_ms"] = rtt
                res[c] = r
    finally:
        for k in kids.values():
            k.kill()
            k.reap()
        emu.stop()
    R["recovery"] = res


def w_telemetry(S, R):
    """W7: Rust API at a fixed rate, telemetry off/on alternating."""
    runs = {"off": [], "on": []}
    for i in range(S["tel_pairs"]):
        for mode in ("off", "on"):
            log(f"W7 telemetry {mode} ({i + 1}/{S['tel_pairs']}): {S['tel_total']} requests at {S['tel_rate']}/s")
            r = run_client(f"w7.{mode}.{i}", "rust", "sample", {
                "total": S["tel_total"], "rate": S["tel_rate"], "inflight": S["inflight"],
                "warmup": S["warmup"], "telemetry": "1" if mode == "on" else "0"})
            if r:
                runs[mode].append(r)
    R["telemetry"] = runs
