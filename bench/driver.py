#!/usr/bin/env python3
"""The benchmark suite of libtinkex (issue 8). Run through ``bench/run.sh``, which builds
what this needs and then calls it; see docs/benchmarks.md for what is measured and how.

Every client runs as its own process against a fresh ``tinkex-emulator --zero-compute
--no-persist``; each prints one JSON object. CPU time and peak RSS come from the OS: the
client measures ``getrusage(RUSAGE_SELF)`` around its measured window, and this driver
reaps each child with ``wait4`` (whole-process user+sys and ``ru_maxrss``).

    python bench/driver.py [--smoke] [--out DIR] [--only w1,w3,...] [--set KEY=VALUE ...]
    python bench/driver.py faults [--runs N] [--smoke] [--out DIR]

``faults`` runs only the faults family (bench/harness/faults.py: training under 503s and
resets, poll spin, recovery; Python binding vs official SDK; ~35 min with 3 runs) and
rewrites only its section of DIR/benchmarks.md. A full suite run leaves it out and keeps
the section already there; ``--smoke`` runs it at tiny sizes. It needs only
``tinkex-emulator`` and ``libtinkex.so`` (``TINKEX_BENCH_TARGET`` picks their directory) and
a Python with numpy (``target/bench-venv``, which ``bench/run.sh`` prepares).

This file is the command line; the harness lives in ``bench/harness/`` (processes,
workloads, profilers, report).
"""

import argparse
import datetime
import json
import os
import shutil
import sys

from harness import settings
from harness.settings import BENCH, EMU, LIB, OFFICIAL_PY, REPO, SIZES, TARGET, log, mono
from harness.workloads import w_fwdbwd, w_memory, w_recovery, w_sampling, w_telemetry
from harness.profilers import w_callgrind, w_massif, w_perf
from harness.report import loadavg, machine, machine_line, report
from harness import curves as C, faults as F, goals as GOALS


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", nargs="?", choices=["all", "faults"], default="all",
                   help="all (default): the whole suite; faults: only the faults family")
    p.add_argument("--runs", type=int, default=None, help="faults: runs per client and case")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=os.path.join(REPO, "docs"))
    p.add_argument("--only", default="", help="comma-separated subset: w1,w3,w5,w6,w7,faults,"
                   "cg,perf,massif, and the growth curves c1 (in flight), c2 (RSS), c3 (batch size) "
                   "or curves (all three)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a size of harness/settings.py (VALUE is JSON, e.g. "
                   "curve_inflight=[1,10,100])")
    p.add_argument("--command", default="bench/run.sh")
    p.add_argument("--rerender", metavar="RESULTS_JSON",
                   help="write the report again from a run's saved results (LOGDIR/results.json), "
                   "e.g. after editing bench/NOTES.md; runs nothing")
    a = p.parse_args()
    if a.rerender:
        return rerender(a)
    mode = "smoke" if a.smoke else "full"
    S = dict(SIZES[mode])
    if a.runs is not None:
        S["faults_runs"] = a.runs
    for kv in a.set:
        k, _, v = kv.partition("=")
        if k not in S:
            sys.exit(f"--set {k}: no such size (harness/settings.py)")
        S[k] = json.loads(v)
    settings.LOG_DIR = os.path.join(os.path.dirname(TARGET), ("logs" if mode == "full" else "logs-smoke")
                                    + ("-faults" if a.scenario == "faults" else ""))
    shutil.rmtree(settings.LOG_DIR, ignore_errors=True)
    os.makedirs(settings.LOG_DIR)
    for f in (EMU, LIB) if a.scenario == "faults" else (BENCH, EMU, LIB):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: run bench/run.sh")
    only = set(x for x in a.only.split(",") if x)
    if "curves" in only:
        only |= {"c1", "c2", "c3"}
    R = {"mode": mode, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
         "machine": machine(), "load_before": loadavg(), "sizes": S,
         "have_official": os.path.exists(OFFICIAL_PY) and os.environ.get("TINKEX_SKIP_OFFICIAL_SDK") != "1"}
    if not R["have_official"]:
        log("official SDK venv missing or skipped: its columns stay empty")
    t0 = mono()
    if a.scenario == "faults":
        return faults_only(R, S, a, t0)
    steps = [("w1", w_sampling), ("w3", w_fwdbwd), ("w5", w_memory), ("w7", w_telemetry),
             ("w6", w_recovery), ("faults", F.w_faults), ("c1", C.w_inflight), ("c2", C.w_rss),
             ("c3", C.w_batch), ("cg", w_callgrind), ("perf", w_perf), ("massif", w_massif)]
    for key, fn in steps:
        if only and key not in only:
            continue
        if key == "faults" and mode == "full" and not only:
            # ~35 min at full sizes: run on its own (`bench/run.sh faults --runs 3`); the
            # report keeps the section that run left (harness/faults.py).
            continue
        t = mono()
        fn(S, R)
        log(f"{key} took {mono() - t:.0f} s")
    R["load_after"] = loadavg()
    R["elapsed_s"] = mono() - t0
    G = report(R, S, a.out, a.command + (" --smoke" if a.smoke else ""), mono() - t0)
    log(f"wrote {os.path.join(a.out, 'benchmarks.md')} and benchmarks.png in {(mono() - t0) / 60:.1f} min")
    log(f"machine state: {GOALS.machine_state(R)}")
    for g in G:
        state = {True: "MET    ", False: "NOT MET", None: "NOT RUN"}[g["ok"]]
        log(f"{state} {g['name']}: {g['measured']}"
            + (f" (see {GOALS.plain(g)} in benchmarks.md)" if g["ok"] is False and g["refs"] else ""))
    missing = check(R, only)
    if missing:
        log("no result for: " + ", ".join(missing))
        sys.exit(1)


def rerender(a):
    """`driver.py --rerender LOGDIR/results.json`: the report of a finished run, written
    again (its numbers unchanged; the text of bench/NOTES.md and the report code current)."""
    with open(a.rerender) as f:
        R = json.load(f)
    settings.LOG_DIR = os.path.dirname(os.path.abspath(a.rerender))
    G = report(R, R["sizes"], a.out, a.command + (" --smoke" if R["mode"] == "smoke" else ""),
               R.get("elapsed_s", 0.0))
    log(f"rewrote {os.path.join(a.out, 'benchmarks.md')} from {a.rerender} (run of {R['date']})")
    for g in G:
        state = {True: "MET    ", False: "NOT MET", None: "NOT RUN"}[g["ok"]]
        log(f"{state} {g['name']}: {g['measured']}")


def faults_only(R, S, a, t0):
    """`driver.py faults`: the family alone; its section of OUT/benchmarks.md is replaced
    (or appended), the rest of the page is left as it is."""
    F.w_faults(S, R)
    R["load_after"] = loadavg()
    command = f"{a.command} faults --runs {S['faults_runs']}" + (" --smoke" if a.smoke else "")
    text = F.section(R, machine_line(R), R["date"], command)
    os.makedirs(a.out, exist_ok=True)
    out = os.path.join(a.out, "benchmarks.md")
    F.splice(out, text)
    with open(os.path.join(settings.LOG_DIR, "faults.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    log(f"wrote the faults section of {out} in {(mono() - t0) / 60:.1f} min")
    for name, ok, meas in F.goals(R):
        log(f"{'MET    ' if ok else 'NOT MET'} {name}: {meas}")
    miss = F.missing(R)
    if miss:
        log("no result for: " + ", ".join(miss))
        sys.exit(1)


def check(R, only):
    """Which (workload, client) pairs produced no result."""
    want = ["rust", "ffi", "raw", "python"] + (["official"] if R["have_official"] else [])
    miss = []
    def need(key, step, clients, get):
        if only and step not in only:
            return
        for c in clients:
            if not get(R.get(key) or {}, c):
                miss.append(f"{key}/{c}")
    need("sampling", "w1", want, lambda d, c: d.get(c))
    need("fwdbwd", "w3", [c for c in want if c != "ffi"], lambda d, c: [x for x in d.get(c, []) if x])
    need("memory", "w5", want, lambda d, c: d.get(c))
    need("recovery", "w6", [c for c in want if c != "ffi"], lambda d, c: d.get(c))
    need("telemetry", "w7", ["off", "on"], lambda d, c: d.get(c))
    if (not only or "w3" in only) and not R.get("encode"):
        miss.append("encode")
    if ("faults" in only) or (not only and R["mode"] == "smoke"):
        miss += F.missing(R)
    if not only or only & {"c1", "c2", "c3"}:
        miss += C.missing(R, only & {"c1", "c2", "c3"})
    return miss


if __name__ == "__main__":
    main()
