#!/usr/bin/env python3
"""The benchmark suite of libtinkex (issue 8). Run through ``bench/run.sh``, which builds
what this needs and then calls it; see docs/benchmarks.md for what is measured and how.

Every client runs as its own process against a fresh ``tinkex-emulator --zero-compute
--no-persist``; each prints one JSON object. CPU time and peak RSS come from the OS: the
client measures ``getrusage(RUSAGE_SELF)`` around its measured window, and this driver
reaps each child with ``wait4`` (whole-process user+sys and ``ru_maxrss``).

    python bench/driver.py [--smoke] [--out DIR] [--only w1,w3,...]

This file is the command line; the harness lives in ``bench/harness/`` (processes,
workloads, profilers, report).
"""

import argparse
import datetime
import os
import shutil
import sys

from harness import settings
from harness.settings import BENCH, EMU, LIB, OFFICIAL_PY, REPO, SIZES, TARGET, log, mono
from harness.workloads import w_fwdbwd, w_memory, w_recovery, w_sampling, w_telemetry
from harness.profilers import w_callgrind, w_massif, w_perf
from harness.report import loadavg, machine, report


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=os.path.join(REPO, "docs"))
    p.add_argument("--only", default="", help="comma-separated subset: w1,w3,w5,w6,w7,cg,perf,massif")
    p.add_argument("--command", default="bench/run.sh")
    a = p.parse_args()
    mode = "smoke" if a.smoke else "full"
    S = SIZES[mode]
    settings.LOG_DIR = os.path.join(os.path.dirname(TARGET), "logs" if mode == "full" else "logs-smoke")
    shutil.rmtree(settings.LOG_DIR, ignore_errors=True)
    os.makedirs(settings.LOG_DIR)
    for f in (BENCH, EMU, LIB):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: run bench/run.sh")
    only = set(x for x in a.only.split(",") if x)
    R = {"mode": mode, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
         "machine": machine(), "load_before": loadavg(), "sizes": S,
         "have_official": os.path.exists(OFFICIAL_PY) and os.environ.get("TINKEX_SKIP_OFFICIAL_SDK") != "1"}
    if not R["have_official"]:
        log("official SDK venv missing or skipped: its columns stay empty")
    t0 = mono()
    steps = [("w1", w_sampling), ("w3", w_fwdbwd), ("w5", w_memory), ("w7", w_telemetry),
             ("w6", w_recovery), ("cg", w_callgrind), ("perf", w_perf), ("massif", w_massif)]
    for key, fn in steps:
        if only and key not in only:
            continue
        t = mono()
        fn(S, R)
        log(f"{key} took {mono() - t:.0f} s")
    R["load_after"] = loadavg()
    G = report(R, S, a.out, a.command + (" --smoke" if a.smoke else ""), mono() - t0)
    log(f"wrote {os.path.join(a.out, 'benchmarks.md')} and benchmarks.png in {(mono() - t0) / 60:.1f} min")
    for name, ok, meas in G:
        log(f"{'MET    ' if ok else 'NOT MET'} {name}: {meas}")
    missing = check(R, only)
    if missing:
        log("no result for: " + ", ".join(missing))
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
    return miss


if __name__ == "__main__":
    main()
