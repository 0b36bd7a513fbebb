"""Profiler runs: callgrind instruction counts, massif heap profile, perf hot spots."""

import os
import re
import shutil
import subprocess

from . import settings
from .settings import log
from .processes import Child, Emulator, client_cmd


def callgrind_ir(name, client, total, inflight, url, extra=None):
    out = os.path.join(settings.LOG_DIR, f"{name}.callgrind")
    args = {"base-url": url, "total": total, "inflight": inflight, "warmup": inflight}
    args.update(extra or {})
    cmd, _ = client_cmd(client, "sample", args)
    c = Child(name, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd)
    c.wait(900)
    with open(c.err_path, errors="replace") as f:
        m = re.findall(r"I\s+refs:\s+([\d,]+)", f.read())
    return (int(m[-1].replace(",", "")) if m else None), out


def annotate(path):
    """Self instruction counts per function from callgrind_annotate."""
    try:
        txt = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True,
                             text=True, timeout=300).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fns = {}
    for line in txt.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*)$", line)
        if m and ":" in m.group(2):
            fn = m.group(2).split(":", 1)[1].strip()
            fn = re.sub(r"\s+\[.*\]$", "", fn)
            fns[fn] = fns.get(fn, 0) + int(m.group(1).replace(",", ""))
    return fns


def w_callgrind(S, R):
    """Deterministic instruction counts per sample operation (valgrind --tool=callgrind):
    (Ir(large) - Ir(small)) / (large - small) cancels set-up costs."""
    if not S["cg_large"] or not shutil.which("valgrind"):
        R["callgrind"] = None
        return
    variants = [("rust", "rust", {}), ("ffi", "ffi", {}), ("raw", "raw", {}),
                ("rust_telemetry", "rust", {"telemetry": "1"})]
    res = {}
    files = {}
    for key, client, extra in variants:
        irs = []
        for n in (S["cg_small"], S["cg_large"]):
            log(f"callgrind: {key}, {n} samples")
            emu = Emulator(f"cg.{key}.{n}")
            try:
                ir, f = callgrind_ir(f"cg.{key}.{n}", client, n, S["cg_inflight"], emu.url, extra)
            finally:
                emu.stop()
            irs.append(ir)
            files[(key, n)] = f
        if None not in irs:
            res[key] = (irs[1] - irs[0]) / (S["cg_large"] - S["cg_small"])
    # Per function, self instructions per operation the same way: (large run - small run) /
    # (large - small), so a fixed cost (start-up, loading the trust store) is not spread over
    # the operations of one run.
    large, small = S["cg_large"], S["cg_small"]

    def fns_per_op(key):
        big, little = files.get((key, large)), files.get((key, small))
        if not big or not little:
            return {}
        fa, fb = annotate(big), annotate(little)
        return {fn: (fa.get(fn, 0) - fb.get(fn, 0)) / (large - small) for fn in set(fa) | set(fb)}

    fns = {key: fns_per_op(key) for key in ("rust", "ffi", "raw")}

    def minus(a, b, n):
        x, y = fns[a], fns[b]
        if not x or not y:
            return []
        return sorted(((x.get(f, 0) - y.get(f, 0), f) for f in set(x) | set(y)), reverse=True)[:n]

    R["callgrind"] = {"per_op": res, "fns_per_op": True,
                      "ffi_minus_rust_top": minus("ffi", "rust", 12),
                      "rust_minus_raw_top": minus("rust", "raw", 15),
                      "rust_top": sorted(((v, f) for f, v in fns["rust"].items()), reverse=True)[:15],
                      "ops": large, "small_ops": small, "inflight": S["cg_inflight"]}


def w_massif(S, R):
    """Heap by allocation site with N operations in flight (valgrind --tool=massif, Rust
    API, the W5 workload at a smaller N): bytes per in-flight operation."""
    n = S.get("massif_n", 0)
    if not n or not shutil.which("valgrind"):
        R["massif"] = None
        return
    log(f"massif: Rust API, {n} futures in flight")
    emu = Emulator("massif")
    out = os.path.join(settings.LOG_DIR, "massif.rust.out")
    try:
        cmd, _ = client_cmd("rust", "memory", {"base-url": emu.url, "n": n, "hold-ms": 30_000,
                                               "no-wait": True})
        c = Child("massif.rust", ["valgrind", "--tool=massif", "--depth=12", "--threshold=2",
                                  f"--massif-out-file={out}"] + cmd)
        r = c.wait(300)
    finally:
        emu.stop()
    try:
        txt = subprocess.run(["ms_print", "--threshold=2", out], capture_output=True, text=True,
                             timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        R["massif"] = None
        return
    parts = re.split(r"\n-{80}\n", txt)
    trees = [p for p in parts if "(heap allocation functions)" in p]
    if not trees:
        R["massif"] = None
        return
    rows, total = [], None
    lines = trees[-1].splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^([ |]*)->(\d+\.\d+)% \(([\d,]+)B\) (?:0x[0-9A-Fa-f]+: )?(.*)$", line)
        if not m or len(m.group(1)) != 0:
            continue
        what = re.sub(r" \(in /[^)]*\)", "", m.group(4)).strip()
        # Name an entry by its first frame that is not an allocator shim.
        j = i + 1
        while re.search(r"__rdl_alloc|__rust_alloc|finish_grow|do_reserve|grow_one|RawVec|alloc::alloc|reserve_rehash|^malloc|realloc", what) and j < len(lines):
            mm = re.match(r"^[ |]*->\d+\.\d+% \([\d,]+B\) (?:0x[0-9A-Fa-f]+: )?(.*)$", lines[j])
            if mm:
                what = re.sub(r" \(in /[^)]*\)", "", mm.group(1)).strip()
            j += 1
        rows.append((int(m.group(3).replace(",", "")), what[:110]))
    m = re.findall(r"\(([\d,]+)B\) \(heap allocation functions\)", trees[-1])
    total = int(m[0].replace(",", "")) if m else sum(b for b, _ in rows)
    R["massif"] = {"n": n, "total": total, "rows": rows[:10],
                   "rss_inflight_kb": (r or {}).get("rss_inflight_kb")}


def w_perf(S, R):
    """A flat cpu-clock profile (perf) of the Rust API client in the W1 workload."""
    if not S["perf"] or not shutil.which("perf"):
        R["perf"] = None
        return
    log("perf: Rust API client, W1 workload")
    emu = Emulator("perf")
    data = os.path.join(settings.LOG_DIR, "perf.rust.data")
    try:
        cmd, _ = client_cmd("rust", "sample", {"base-url": emu.url, "total": S["total"],
                                               "inflight": S["inflight"], "warmup": S["warmup"]})
        c = Child("perf.rust", ["perf", "record", "-q", "-F", "999", "-e", "cpu-clock", "-o", data, "--"] + cmd)
        c.wait(300)
    finally:
        emu.stop()
    try:
        txt = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol",
                              "--stdio", "--percent-limit", "0.01"], capture_output=True, text=True,
                             timeout=300).stdout
    except (OSError, subprocess.SubprocessError):
        txt = ""
    rows = []
    for line in txt.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*?)\s*$", line)
        if m:
            sym = re.sub(r"\s+-\s+-\s*$", "", m.group(3)).strip()
            rows.append((float(m.group(1)), m.group(2), sym[:110]))
    # Grouped: allocator, kernel, HTTP stack, tokio, libtinkex, serde.
    groups = {}
    for pct, dso, sym in rows:
        g = ("kernel" if "kernel" in dso else
             "malloc/free (glibc)" if dso.startswith("libc") and re.search(r"malloc|free|_int_|unlink_chunk|consolidate|cfree", sym) else
             "memcpy/memmove" if "mem" in sym and dso.startswith("libc") else
             "hyper/reqwest/http" if re.search(r"hyper|reqwest|http::|h2::", sym) else
             "tokio" if "tokio" in sym else
             "serde_json" if "serde" in sym else
             "tinkex" if "tinkex" in sym else "other")
        groups[g] = groups.get(g, 0) + pct
    R["perf"] = {"rows": rows[:20], "groups": sorted(((v, k) for k, v in groups.items()), reverse=True)}
