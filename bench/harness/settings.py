"""Paths of the built binaries and interpreters, workload sizes, client names, the log
directory of the current run, and the driver's log and clock."""

import os
import sys
import time


# bench/ (this file is bench/harness/settings.py).
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(HERE)
TARGET = os.environ.get("TINKEX_BENCH_TARGET", os.path.join(REPO, "target", "bench", "release"))
BENCH = os.path.join(TARGET, "tinkex-bench")
EMU = os.path.join(TARGET, "tinkex-emulator")
LIB = os.path.join(TARGET, "libtinkex.so")
CLIENT_PY = os.path.join(HERE, "python", "bench_client.py")
BENCH_PY = os.environ.get("TINKEX_BENCH_PYTHON", sys.executable)
OFFICIAL_PY = os.environ.get(
    "TINKEX_OFFICIAL_SDK_PYTHON", os.path.join(REPO, "target", "official-sdk-venv", "bin", "python"))

# Sizes. "full" is the workloads; "smoke" is tiny (the test-suite check that the
# harness still runs end to end; its numbers mean nothing).
SIZES = {
    "full": dict(
        reps=5, reps_official=3,
        total=20_000, total_official=3_000, inflight=1_000, warmup=200,
        fb_datums=256, fb_tokens=4096, fb_reps=5, encode_reps=10,
        mem_n=10_000, mem_hold_ms=15_000, mem_reps=2,
        rec_n=1_000, rec_hold_ms=8_000, rec_outage_ms=30_000,
        tel_rate=1_000, tel_total=10_000, tel_pairs=3,
        cg_small=500, cg_large=2_500, cg_inflight=50,
        perf=True, massif_n=2_000,
        faults_runs=3, faults_steps=20, faults_datums=4, faults_tokens=24, faults_latency_ms=50,
        spin_window_ms=5_000, recovery_window_ms=3_000,
        # Growth curves (harness/curves.py).
        curve_inflight=[1, 10, 100, 1_000, 10_000], curve_total=20_000, curve_total_official=3_000,
        curve_total_factor=2, curve_warmup=200, curve_timeout_s=900,
        rss_per_future=[100, 1_000, 10_000], rss_batched=[100, 1_000, 10_000, 100_000],
        rss_official_max=10_000, rss_hold_ms=30_000, rss_fd_margin=200, rss_stall_ms=5_000,
        rss_hold_ms_per_future={"rust": 0.6, "python": 1.0, "official": 6.0},
        batch_tokens=[10_000, 100_000, 1_000_000, 10_000_000], batch_datum_tokens=1_000,
        batch_reps=3, batch_reps_upto=1_000_000, batch_official_max=10_000_000,
    ),
    "smoke": dict(
        reps=1, reps_official=1,
        total=300, total_official=100, inflight=50, warmup=20,
        fb_datums=4, fb_tokens=256, fb_reps=1, encode_reps=2,
        mem_n=100, mem_hold_ms=4_000, mem_reps=1,
        rec_n=20, rec_hold_ms=3_000, rec_outage_ms=4_000,
        tel_rate=200, tel_total=200, tel_pairs=1,
        cg_small=0, cg_large=0, cg_inflight=10,
        perf=False, massif_n=0,
        faults_runs=1, faults_steps=1, faults_datums=2, faults_tokens=16, faults_latency_ms=20,
        spin_window_ms=1_000, recovery_window_ms=500,
        curve_inflight=[1, 10], curve_total=60, curve_total_official=30,
        curve_total_factor=2, curve_warmup=10, curve_timeout_s=120,
        rss_per_future=[20, 100], rss_batched=[20, 100],
        rss_official_max=100, rss_hold_ms=20_000, rss_fd_margin=200, rss_stall_ms=5_000,
        rss_hold_ms_per_future={"rust": 0.6, "python": 1.0, "official": 6.0},
        batch_tokens=[2_000, 20_000], batch_datum_tokens=1_000,
        batch_reps=1, batch_reps_upto=20_000, batch_official_max=20_000,
    ),
}

CLIENTS = {
    "rust": "libtinkex Rust API",
    "python": "libtinkex Python binding",
    "official": "official SDK tinker 0.38.0",
    "raw": "raw HTTP loop (reqwest)",
    "ffi": "libtinkex C ABI",
}

# The log directory of the current run (set by the driver before anything starts).
LOG_DIR = None


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mono():
    return time.monotonic()
