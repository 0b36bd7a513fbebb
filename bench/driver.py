#!/usr/bin/env python3
"""The benchmark suite of libtinkex (issue 8). Run through ``bench/run.sh``, which builds
what this needs and then calls it; see docs/benchmarks.md for what is measured and how.

Every client runs as its own process against a fresh ``tinkex-emulator --zero-compute
--no-persist``; each prints one JSON object. CPU time and peak RSS come from the OS: the
client measures ``getrusage(RUSAGE_SELF)`` around its measured window, and this driver
reaps each child with ``wait4`` (whole-process user+sys and ``ru_maxrss``).

    python bench/driver.py [--smoke] [--out DIR] [--only w1,w3,...]
"""

import argparse
import datetime
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TARGET = os.environ.get("TINKEX_BENCH_TARGET", os.path.join(REPO, "target", "bench", "release"))
BENCH = os.path.join(TARGET, "tinkex-bench")
EMU = os.path.join(TARGET, "tinkex-emulator")
LIB = os.path.join(TARGET, "libtinkex.so")
CLIENT_PY = os.path.join(HERE, "python", "bench_client.py")
BENCH_PY = os.environ.get("TINKEX_BENCH_PYTHON", sys.executable)
OFFICIAL_PY = os.environ.get(
    "TINKEX_OFFICIAL_SDK_PYTHON", os.path.join(REPO, "target", "official-sdk-venv", "bin", "python"))

# Sizes. "full" is the issue's workloads; "smoke" is tiny (the test-suite check that the
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
    ),
}

CLIENTS = {
    "rust": "libtinkex Rust API",
    "python": "libtinkex Python binding",
    "official": "official SDK tinker 0.38.0",
    "raw": "raw HTTP loop (reqwest)",
    "ffi": "libtinkex C ABI",
}

LOG_DIR = None


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mono():
    return time.monotonic()


# --- processes -------------------------------------------------------------------------------


class Child:
    """A child process whose stdout lines are queued and which is reaped with wait4."""

    def __init__(self, name, cmd, env=None, stdin=False):
        self.name = name
        self.err_path = os.path.join(LOG_DIR, f"{name}.stderr")
        self.errf = open(self.err_path, "ab")
        self.p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.errf,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=env, cwd=REPO, start_new_session=True)
        self.lines = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.rusage = None
        self.status = None

    def _read(self):
        for raw in self.p.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def send(self, text):
        self.p.stdin.write((text + "\n").encode())
        self.p.stdin.flush()

    def wait(self, timeout):
        """Waits for exit (killing the process group after `timeout` s); returns the last
        JSON line of stdout or None."""
        deadline = mono() + timeout
        out = []
        while True:
            left = deadline - mono()
            if left <= 0:
                log(f"{self.name}: timeout after {timeout:.0f} s, killing")
                self.kill()
                break
            l = self.line(min(left, 1.0))
            if l is None and not self.t.is_alive() and self.lines.empty():
                break
            if l is not None:
                out.append(l)
        self.reap()
        for l in reversed(out):
            if l.startswith("{"):
                try:
                    return json.loads(l)
                except ValueError:
                    pass
        log(f"{self.name}: no result (exit status {self.status}); see {self.err_path}")
        return None

    def reap(self):
        if self.rusage is None:
            _, status, ru = os.wait4(self.p.pid, 0)
            self.rusage = ru
            self.status = os.waitstatus_to_exitcode(status)
            self.p.returncode = self.status
            self.errf.close()
        return self.rusage

    def kill(self, sig=signal.SIGKILL):
        try:
            os.killpg(self.p.pid, sig)
        except ProcessLookupError:
            pass


class Emulator:
    """A fresh zero-compute emulator on a free port (its own state dir, nothing persisted)."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix="tinkex-bench-emu-")
        self.child = Child(f"{name}.emulator", [
            EMU, "--port", "0", "--state-dir", self.dir, "--zero-compute", "--no-persist"])
        self.url = self.child.line(30)
        if not self.url or not self.url.startswith("http"):
            raise RuntimeError(f"emulator did not start: {self.url!r}; see {self.child.err_path}")

    def control(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/_emulator/" + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def requests(self, path):
        return self.control("GET", "requests")["requests"].get(path, 0)

    def stop(self):
        self.child.kill(signal.SIGTERM)
        t = threading.Timer(5, lambda: self.child.kill(signal.SIGKILL))
        t.start()
        ru = self.child.reap()
        t.cancel()
        shutil.rmtree(self.dir, ignore_errors=True)
        return ru.ru_utime + ru.ru_stime


def client_cmd(client, workload, args):
    """The command line of one client process for a workload."""
    flags = []
    for k, v in args.items():
        if v is True:
            flags.append("--" + k)
        elif v is not False and v is not None:
            flags += ["--" + k, str(v)]
    if client in ("rust", "raw", "ffi"):
        return [BENCH, workload, "--client", client] + flags, None
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if client == "python":
        env["PYTHONPATH"] = os.path.join(REPO, "bindings", "python")
        env["TINKEX_LIBRARY"] = LIB
        return [BENCH_PY, CLIENT_PY, "--sdk", "tinkex", workload] + flags, env
    if client == "official":
        env.pop("PYTHONPATH", None)
        return [OFFICIAL_PY, CLIENT_PY, "--sdk", "tinker", workload] + flags, env
    raise ValueError(client)


def run_client(name, client, workload, args, timeout=600, emulator=True, url=None):
    """Runs one client process (against a fresh emulator unless `url` is given); returns its
    JSON result plus the OS's view: whole-process CPU, peak RSS, emulator CPU."""
    emu = Emulator(name) if emulator and url is None else None
    try:
        a = dict(args)
        a["base-url"] = url or emu.url
        cmd, env = client_cmd(client, workload, a)
        c = Child(name, cmd, env)
        res = c.wait(timeout)
        ru = c.rusage
    finally:
        server_cpu = emu.stop() if emu else None
    if res is None:
        return None
    res["proc_cpu_s"] = ru.ru_utime + ru.ru_stime
    res["proc_maxrss_kb"] = ru.ru_maxrss
    res["server_cpu_s"] = server_cpu
    res["exit"] = c.status
    return res


# --- statistics ------------------------------------------------------------------------------


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def fmt(x, unit="", digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else (2 if abs(x) >= 1 else 3))
    return f"{x:,.{digits}f}{unit}"


def cell(xs, unit="", digits=None):
    """median [min–max] (n)"""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = med(xs)
    if len(xs) == 1:
        return fmt(m, unit, digits)
    lo, hi = spread(xs)
    return f"{fmt(m, unit, digits)} [{fmt(lo, '', digits)}–{fmt(hi, '', digits)}]"


# --- workloads -------------------------------------------------------------------------------


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


def wire_times(proxy_log, reps):
    """For each rep's call, the forward_backward requests that started after it (and before
    the next call): first byte, last byte, requests, bytes."""
    recs = []
    with open(proxy_log) as f:
        for line in f:
            r = json.loads(line)
            if "/forward_backward" in r["path"]:
                recs.append(r)
    out = []
    calls = [r["t_call"] for r in reps] + [float("inf")]
    for i, rep in enumerate(reps):
        mine = [r for r in recs if calls[i] <= r["t_first"] < calls[i + 1]]
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
        plog = os.path.join(LOG_DIR, f"w3.{c}.proxy.jsonl")
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


def callgrind_ir(name, client, total, inflight, url, extra=None):
    out = os.path.join(LOG_DIR, f"{name}.callgrind")
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
    # Where the C ABI's extra instructions go: per-function self cost, large-run difference.
    diff = []
    a, b = files.get(("ffi", S["cg_large"])), files.get(("rust", S["cg_large"]))
    if a and b:
        fa, fb = annotate(a), annotate(b)
        for fn in set(fa) | set(fb):
            d = fa.get(fn, 0) - fb.get(fn, 0)
            diff.append((d, fn))
        diff.sort(reverse=True)
    top_rust = sorted(((v, k) for k, v in annotate(files[("rust", S["cg_large"])]).items()),
                      reverse=True)[:15] if ("rust", S["cg_large"]) in files else []
    R["callgrind"] = {"per_op": res, "ffi_minus_rust_top": diff[:12], "rust_top": top_rust,
                      "ops": S["cg_large"], "inflight": S["cg_inflight"]}


def w_massif(S, R):
    """Heap by allocation site with N operations in flight (valgrind --tool=massif, Rust
    API, the W5 workload at a smaller N): bytes per in-flight operation."""
    n = S.get("massif_n", 0)
    if not n or not shutil.which("valgrind"):
        R["massif"] = None
        return
    log(f"massif: Rust API, {n} futures in flight")
    emu = Emulator("massif")
    out = os.path.join(LOG_DIR, "massif.rust.out")
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
    data = os.path.join(LOG_DIR, "perf.rust.data")
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


# --- report ----------------------------------------------------------------------------------


def machine():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            cpu = f.read()
        models = re.findall(r"model name\s*:\s*(.*)", cpu)
        info["cpu"] = f"{models[0] if models else platform.processor()} × {len(re.findall(r'^processor', cpu, re.M))}"
        mhz = re.findall(r"cpu MHz\s*:\s*([\d.]+)", cpu)
        if mhz:
            info["mhz"] = mhz[0]
        flags = re.findall(r"flags\s*:\s*(.*)", cpu)
        info["hypervisor"] = "hypervisor" in flags[0] if flags else None
    except OSError:
        info["cpu"] = platform.processor()
    info["free"] = subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.strip()
    info["kernel"] = platform.release()
    info["python"] = platform.python_version()
    for tool, args in (("rustc", ["--version"]),):
        try:
            info[tool] = subprocess.run([tool] + args, capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    info["nofile"] = subprocess.run(["bash", "-c", "ulimit -n"], capture_output=True, text=True).stdout.strip()
    return info


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def verdict(ok):
    return "**met**" if ok else "**not met**"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def report(R, S, out_dir, command, elapsed):
    os.makedirs(out_dir, exist_ok=True)
    s = R.get("sampling", {})
    m = lambda c, k: med([r[k] for r in s.get(c, [])])
    L = []
    w = L.append
    w("# Benchmarks: libtinkex against the official Python SDK and a raw HTTP loop\n")
    w(f"Generated by `{command}` on {R['date']} in {elapsed / 60:.1f} minutes "
      f"({'smoke sizes: the numbers mean nothing' if R['mode'] == 'smoke' else 'full sizes'}). "
      "Do not edit by hand: rerun the command. How it works: [Method](#method).\n")
    w(f"![chart](benchmarks.png)\n")
    mi = R["machine"]
    w("## Machine\n")
    w(f"* CPU: {mi.get('cpu')} (cpuinfo MHz {mi.get('mhz', '?')}; "
      f"{'a VM' if mi.get('hypervisor') else 'bare metal'}), kernel {mi.get('kernel')}, "
      f"`ulimit -n` {mi.get('nofile')}")
    w(f"* {mi.get('rustc', '')}, Python {mi.get('python')}")
    w(f"* load average before the run: {R['load_before']}; after: {R['load_after']} "
      "(a quiet 2-core machine shows < 0.5 before; a higher value means other work was "
      "competing and every number below is pessimistic and noisier)")
    w("* `free -m`:\n\n```\n" + mi.get("free", "") + "\n```\n")
    w("Client, emulator (and for W3 the proxy) share the same 2 cores; the emulator runs "
      "`--zero-compute --no-persist` (canned results), so its work per request is HTTP and "
      "bookkeeping only. Telemetry is off for every client (`TINKER_TELEMETRY=0`, "
      "`Config::telemetry(false)`) except in W7.\n")

    # ---------------- goals
    G = []
    have_off = bool(s.get("official"))
    rps = {c: m(c, "rps") for c in s}
    cpu = {c: m(c, "cpu_per_req_us") for c in s}
    for c in ("rust", "python"):
        r = ratio(rps.get(c), rps.get("official"))
        G.append((f"W1 {CLIENTS[c]} ≥ 10× the official SDK's requests/s",
                  r is not None and r >= 10, f"{fmt(r, '×')}" if r else "–"))
    for c in ("rust", "python"):
        r = ratio(rps.get(c), rps.get("raw"))
        G.append((f"W1 {CLIENTS[c]} ≥ 0.8× the raw loop's requests/s",
                  r is not None and r >= 0.8, f"{fmt(r, '×', 2)}" if r else "–"))
    for c in ("rust", "python"):
        r = ratio(cpu.get("official"), cpu.get(c))
        G.append((f"W2 CPU per sample request, {CLIENTS[c]} ≤ 1/10 of the official SDK's",
                  r is not None and r >= 10, f"1/{fmt(r)}" if r else "–"))
    fb = R.get("fwdbwd", {})
    wire = {c: med([x["last_ms"] for x in fb.get(c, []) if x]) for c in fb}
    enc = R.get("encode") or {}
    enc_ms = med([x * 1e3 for x in enc.get("encode_s", [])[1:] or enc.get("encode_s", [])])
    for c in ("rust", "python"):
        r = ratio(wire.get("official"), wire.get(c))
        G.append((f"W3 call → last request byte on the wire, {CLIENTS[c]} ≤ 1/20 of the official SDK's",
                  r is not None and r >= 20, f"1/{fmt(r, '', 2)}" if r else "–"))
    r = ratio(wire.get("rust"), enc_ms)
    G.append(("W3 Rust API call → wire within 2× of a bare protobuf encode of the same data",
              r is not None and r <= 2, f"{fmt(r, '×', 1)}" if r else "–"))
    d = None
    if cpu.get("ffi") is not None and cpu.get("rust") is not None:
        d = cpu["ffi"] - cpu["rust"]
    cg = R.get("callgrind") or {}
    per = cg.get("per_op", {})
    cg_us = None
    if per.get("ffi") and per.get("rust") and cpu.get("rust"):
        cg_us = (per["ffi"] - per["rust"]) * cpu["rust"] / per["rust"]
    G.append(("W4 C ABI adds ≤ 5 µs per operation (submit + completion callback) over the Rust API",
              d is not None and d <= 5,
              f"{fmt(d, ' µs', 1)} CPU/op measured" + (f"; {fmt(cg_us, ' µs', 1)} by instruction count" if cg_us is not None else "")))
    mem = R.get("memory", {})
    rss = {c: med([r["rss_inflight_kb"] for r in mem.get(c, [])]) for c in mem}
    r = rss.get("rust")
    G.append((f"W5 RSS with {S['mem_n']:,} futures in flight ≤ 50 MiB, Rust API",
              r is not None and r <= 50 * 1024, f"{fmt(r / 1024, ' MiB', 1)}" if r else "–"))
    rec = R.get("recovery", {})
    poll_s = (med([x["lat_p50_ms"] for x in R.get("telemetry", {}).get("off", [])]) or 0) / 1e3
    cap = 10.0 + poll_s
    for c in ("rust", "python"):
        v = rec.get(c, {}).get("recovery_max_s")
        G.append((f"W6 {CLIENTS[c]}: all pending operations done ≤ 10 s backoff cap + one poll ({cap:.3f} s) after the outage",
                  v is not None and v <= cap and rec[c].get("errors", 1) == 0,
                  f"{fmt(v, ' s', 2)}" + (f" (official SDK: {fmt(rec['official']['recovery_max_s'], ' s', 2)})" if rec.get('official') else "")))
    tel = R.get("telemetry", {})
    def tdiff(k):
        on, off = med([x[k] for x in tel.get("on", [])]), med([x[k] for x in tel.get("off", [])])
        return ratio(on - off, off) * 100 if on is not None and off else None
    def noise(k):
        xs = [x[k] for x in tel.get("off", [])]
        return (max(xs) - min(xs)) / med(xs) * 100 if len(xs) > 1 and med(xs) else None
    dc, dl = tdiff("cpu_per_req_us"), tdiff("lat_p50_ms")
    nc, nl = noise("cpu_per_req_us"), noise("lat_p50_ms")
    di = None
    if per.get("rust_telemetry") and per.get("rust"):
        di = (per["rust_telemetry"] / per["rust"] - 1) * 100
    within = lambda d, n: d is not None and abs(d) <= max(1.0, n or 0.0)
    G.append(("W7 telemetry on at 1,000 requests/s: CPU and latency within 1 % of off "
              "(met when the instruction count per request differs ≤ 1 % and the OS-measured "
              "differences are within max(1 %, the run-to-run spread of the off runs))",
              within(dc, nc) and within(dl, nl) and (di is None or abs(di) <= 1),
              f"CPU {fmt(dc, ' %', 1)}, p50 latency {fmt(dl, ' %', 1)} (off runs' spread: CPU "
              f"{fmt(nc, ' %', 1)}, latency {fmt(nl, ' %', 1)})"
              + (f"; instructions/request {di:+.2f} %" if di is not None else "")))
    w("## Goals\n")
    w("| goal | result | measured |")
    w("|---|---|---|")
    for name, ok, meas in G:
        w(f"| {name} | {verdict(ok)} | {meas} |")
    w("")
    R["goals"] = [(n, bool(o), mm) for n, o, mm in G]

    # ---------------- W1/W2/W4
    w("## W1, W2, W4: sampling throughput and CPU per request\n")
    w(f"{S['inflight']:,} requests in flight (closed loop: each completion starts the next), "
      f"{S['total']:,} requests per run ({S['total_official']:,} for the official SDK, whose "
      f"rate would make {S['total']:,} take minutes per run; in-flight count unchanged), after "
      f"{S['warmup']} warm-up requests. Prompt 16 tokens, `max_tokens` 16, one sample. "
      "Median [min–max] over runs; runs of the clients interleave. *Window CPU* is "
      "getrusage(RUSAGE_SELF) user+sys around the measured requests divided by their number; "
      "*process CPU* and *peak RSS* are the OS's wait4 figures for the whole process "
      "(start-up, imports and set-up included).\n")
    w("| client | runs | requests/s | window CPU / request | user / sys (s) | p50 / p99 latency (ms) | process CPU (s) | peak RSS (MiB) | emulator CPU / request | errors |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for c in ("rust", "ffi", "python", "raw", "official"):
        rr = s.get(c, [])
        if not rr:
            continue
        w(f"| {CLIENTS[c]} | {len(rr)} | {cell([r['rps'] for r in rr])} | "
          f"{cell([r['cpu_per_req_us'] for r in rr], ' µs')} | "
          f"{fmt(med([r['cpu_user_s'] for r in rr]), '', 2)} / {fmt(med([r['cpu_sys_s'] for r in rr]), '', 2)} | "
          f"{fmt(med([r['lat_p50_ms'] for r in rr]))} / {fmt(med([r['lat_p99_ms'] for r in rr]))} | "
          f"{cell([r['proc_cpu_s'] for r in rr], '', 2)} | {fmt(med([r['proc_maxrss_kb'] / 1024 for r in rr]), '', 1)} | "
          f"{fmt(med([r['server_cpu_s'] / (r['requests'] + S['warmup']) * 1e6 for r in rr if r.get('server_cpu_s')]), ' µs')} | "
          f"{sum(r['errors'] for r in rr)} |")
    w("")
    if per:
        w("Deterministic instruction counts per sample operation (valgrind `--tool=callgrind`, "
          f"{cg['inflight']} in flight; (Ir({cg['ops']:,} ops) − Ir({S['cg_small']:,} ops)) / "
          f"{cg['ops'] - S['cg_small']:,}, which cancels set-up; the whole client process, all threads):\n")
        w("| client | instructions / operation |")
        w("|---|---|")
        names = {"rust": CLIENTS["rust"], "ffi": CLIENTS["ffi"], "raw": CLIENTS["raw"],
                 "rust_telemetry": CLIENTS["rust"] + ", telemetry on"}
        for k, v in per.items():
            w(f"| {names[k]} | {v:,.0f} |")
        w("")

    # ---------------- W3
    w("## W3: forward_backward of 1 M tokens, call → bytes on the wire\n")
    w(f"{S['fb_datums']} datums × {S['fb_tokens']:,} tokens (model input, int64 `target_tokens`, "
      "float32 `weights`), `cross_entropy`. The client talks to the emulator through "
      "`tinkex-bench proxy`, a TCP proxy that reads each connection as fast as the kernel "
      "delivers and logs, per HTTP request, the CLOCK_MONOTONIC time of the `read` that returned "
      "its first byte and of the one that returned its last body byte; the client records "
      "CLOCK_MONOTONIC just before the call. **call → first / last byte** are those differences "
      "over every forward_backward request (chunk) of the call; *call returns* is when the call "
      "gave back its future (the raw loop has none: there, when the server acknowledged the "
      "submission); *call → result* is when the result was in hand (zero-compute "
      f"server). The data is built before the call (not timed). Median [min–max] over "
      f"{S['fb_reps']} calls, each on new data.\n")
    w("| client | call returns (ms) | call → first byte (ms) | call → last byte (ms) | requests × body bytes | client CPU per call (ms) | call → result (ms) |")
    w("|---|---|---|---|---|---|---|")
    for c in ("rust", "python", "raw", "official"):
        xs = [x for x in fb.get(c, []) if x]
        if not xs:
            continue
        w(f"| {CLIENTS[c]} | {cell([x['return_ms'] for x in xs])} | {cell([x['first_ms'] for x in xs])} | "
          f"{cell([x['last_ms'] for x in xs])} | {xs[0]['requests']} × {xs[0]['bytes'] / xs[0]['requests'] / 1e6:.2f} MB | "
          f"{cell([x['cpu_ms'] for x in xs])} | {cell([x['done_ms'] for x in xs])} |")
    if enc:
        es = [x * 1e3 for x in enc.get("encode_s", [])]
        cs = [x * 1e3 for x in enc.get("encode_chunked_s", [])]
        w(f"| bare protobuf encode (`codec::forward_backward_request` + prost), one message | | | "
          f"{cell(es[1:] or es)} (first, cold: {fmt(es[0] if es else None)}) | 1 × {enc.get('bytes', 0) / 1e6:.2f} MB | | |")
        w(f"| the same, as {enc.get('chunks')} chunks (the client's chunking) | | | {cell(cs[1:] or cs)} | | | |")
    w("")
    tl = [x for x in fb.get("rust", []) if x]
    if tl:
        x = tl[len(tl) // 2]
        w("One call of the Rust API, request by request (ms after the call: first byte → last byte, body size):\n")
        w("```")
        for t in x["timeline"]:
            w(f"{t['first_ms']:8.1f} → {t['last_ms']:8.1f}   {t['bytes'] / 1e6:6.2f} MB")
        w("```\n")

    # ---------------- W5
    w(f"## W5: memory with {S['mem_n']:,} futures in flight\n")
    w(f"{S['mem_n']:,} samples submitted at once; every first `retrieve_future` is held "
      f"{S['mem_hold_ms'] / 1e3:.0f} s by an emulator latency fault, so all stay pending; RSS "
      "(VmRSS of the client process) is read once the emulator has received every first poll "
      "(or the count stopped growing). Median over runs.\n")
    w("| client | RSS before (MiB) | RSS in flight (MiB) | per future (KiB) | polls held | submit time (s) |")
    w("|---|---|---|---|---|---|")
    for c in ("rust", "ffi", "python", "raw", "official"):
        rr = mem.get(c, [])
        if not rr:
            continue
        b, i = med([r["rss_before_kb"] for r in rr]), med([r["rss_inflight_kb"] for r in rr])
        w(f"| {CLIENTS[c]} | {fmt(b / 1024, '', 1)} | {cell([r['rss_inflight_kb'] / 1024 for r in rr], '', 1)} | "
          f"{fmt((i - b) / S['mem_n'], '', 1)} | {med([r['polls_seen'] for r in rr]):,.0f} / {S['mem_n']:,} | "
          f"{fmt(med([r['submit_s'] for r in rr]), '', 2)} |")
    w("")

    ms = R.get("massif")
    if ms and ms.get("rows"):
        w(f"Heap by allocation site with {ms['n']:,} operations in flight (valgrind "
          f"`--tool=massif`, Rust API, the same workload; last snapshot, "
          f"{ms['total'] / ms['n'] / 1024:.1f} KiB of heap per operation; allocations named by "
          "their first frame above the allocator):\n")
        w("| bytes per operation | allocated by |")
        w("|---|---|")
        for b, what in ms["rows"]:
            w(f"| {b / ms['n']:,.0f} | `{what}` |")
        w("")

    # ---------------- W6
    w("## W6: recovery after a 30 s outage\n" if S["rec_outage_ms"] == 30_000 else
      f"## W6: recovery after a {S['rec_outage_ms'] / 1e3:g} s outage\n")
    w(f"The clients run concurrently against one emulator; each has {S['rec_n']:,} samples "
      f"pending whose first polls the emulator holds ({S['rec_hold_ms'] / 1e3:g} s latency "
      f"fault), then `POST /_emulator/outage {{\"duration_ms\": {S['rec_outage_ms']}}}`: held "
      "polls are broken when their hold ends (inside the outage) and every new connection is "
      "closed until it ends. Measured from the end of the outage (driver's CLOCK_MONOTONIC "
      "just before the POST + duration: conservative by the POST's round trip) to each "
      "operation's completion. The raw loop retries every 100 ms without backoff (a floor, "
      "not a client to copy).\n")
    w("| client | first done (s) | median (s) | last done (s) | errors | done during the outage |")
    w("|---|---|---|---|---|---|")
    for c in ("rust", "python", "raw", "official"):
        r = rec.get(c)
        if not r:
            continue
        w(f"| {CLIENTS[c]} | {fmt(r['recovery_first_s'], '', 2)} | {fmt(r['recovery_p50_s'], '', 2)} | "
          f"{fmt(r['recovery_max_s'], '', 2)} | {r['errors']} | {r['completed_during_outage']} |")
    if rec:
        any_r = next(iter(rec.values()))
        w(f"\nPolls held when the outage began: {any_r.get('polls_held_at_outage')} of "
          f"{any_r.get('polls_expected')}.\n")

    # ---------------- W7
    w(f"## W7: telemetry on vs off at {S['tel_rate']:,} requests/s (Rust API)\n")
    w(f"Open loop: {S['tel_total']:,} samples started at {S['tel_rate']:,}/s regardless of "
      f"completions; off/on alternate, {S['tel_pairs']} runs each.\n")
    w("| telemetry | runs | window CPU / request | p50 latency (ms) | p99 latency (ms) | achieved rate (/s) |")
    w("|---|---|---|---|---|---|")
    for mode in ("off", "on"):
        rr = tel.get(mode, [])
        if rr:
            w(f"| {mode} | {len(rr)} | {cell([r['cpu_per_req_us'] for r in rr], ' µs')} | "
              f"{cell([r['lat_p50_ms'] for r in rr], '', 2)} | {cell([r['lat_p99_ms'] for r in rr], '', 2)} | "
              f"{fmt(med([r['rps'] for r in rr]))} |")
    if per.get("rust_telemetry") and per.get("rust"):
        w(f"\nInstruction count per operation (callgrind, closed loop): telemetry off "
          f"{per['rust']:,.0f}, on {per['rust_telemetry']:,.0f} "
          f"({(per['rust_telemetry'] / per['rust'] - 1) * 100:+.2f} %).")
    w("")

    # ---------------- profiles
    pf = R.get("perf")
    if pf:
        w("## Profile: the Rust API client in W1 (perf, cpu-clock, flat)\n")
        w("Self time grouped by where it lands:\n")
        w("| share of client CPU | group |")
        w("|---|---|")
        for v, k in pf["groups"]:
            w(f"| {v:.1f} % | {k} |")
        w("\nTop symbols:\n")
        w("```")
        for pct, dso, sym in pf["rows"]:
            w(f"{pct:5.2f}%  {dso:18.18s} {sym}")
        w("```\n")
    if cg.get("ffi_minus_rust_top"):
        w("## Profile: what the C ABI adds (callgrind, self instructions, C ABI run − Rust API run, "
          f"{cg['ops']:,} operations)\n")
        w("```")
        for dv, fn in cg["ffi_minus_rust_top"]:
            w(f"{dv / cg['ops']:10,.0f} /op  {fn[:120]}")
        w("```\n")
    if cg.get("rust_top"):
        w("## Profile: the Rust API client's instructions by function (callgrind, self, "
          f"{cg['ops']:,} operations, top 15)\n")
        w("```")
        for v, fn in cg["rust_top"]:
            w(f"{v / cg['ops']:10,.0f} /op  {fn[:120]}")
        w("```\n")

    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        with open(notes) as f:
            w(f.read().format_map(_Blank(note_values(R, S))))
    w(METHOD)
    text = "\n".join(L) + "\n"
    with open(os.path.join(out_dir, "benchmarks.md"), "w") as f:
        f.write(text)
    with open(os.path.join(LOG_DIR, "results.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    chart(R, S, os.path.join(out_dir, "benchmarks.png"))
    return G


class _Blank(dict):
    def __missing__(self, key):
        return "–"


def note_values(R, S):
    """Numbers quoted by bench/NOTES.md, from this run."""
    v = {}
    s = R.get("sampling", {})
    m = lambda c, k: med([r[k] for r in s.get(c, [])])
    def put(k, x, unit="", digits=None):
        if x is not None:
            v[k] = fmt(x, unit, digits)
    put("w1_rust_raw", ratio(m("rust", "rps"), m("raw", "rps")), "×", 2)
    put("w1_py_raw", ratio(m("python", "rps"), m("raw", "rps")), "×", 2)
    put("w1_py_official", ratio(m("python", "rps"), m("official", "rps")), "×", 1)
    put("cpu_rust", m("rust", "cpu_per_req_us"), " µs")
    put("cpu_raw", m("raw", "cpu_per_req_us"), " µs")
    put("cpu_ffi", m("ffi", "cpu_per_req_us"), " µs")
    put("cpu_py", m("python", "cpu_per_req_us"), " µs")
    put("cpu_official", m("official", "cpu_per_req_us"), " µs")
    cg = (R.get("callgrind") or {}).get("per_op", {})
    for k in ("rust", "raw", "ffi", "rust_telemetry"):
        if cg.get(k):
            v["cg_" + k] = f"{cg[k]:,.0f}"
    if cg.get("rust") and cg.get("raw"):
        v["cg_rust_raw"] = f"{cg['rust'] / cg['raw']:.2f}×"
        v["cg_rust_minus_raw"] = f"{cg['rust'] - cg['raw']:,.0f}"
    if cg.get("ffi") and cg.get("rust"):
        v["cg_ffi_delta"] = f"{cg['ffi'] - cg['rust']:,.0f}"
        if m("rust", "cpu_per_req_us"):
            v["ns_per_instr"] = f"{m('rust', 'cpu_per_req_us') * 1e3 / cg['rust']:.2f}"
            v["cg_ffi_us"] = f"{(cg['ffi'] - cg['rust']) * m('rust', 'cpu_per_req_us') / cg['rust']:.1f} µs"
    pf = R.get("perf") or {}
    for pct, g in pf.get("groups", []):
        v["perf_" + re.sub(r"\W+", "_", g.split(" ")[0].lower())] = f"{pct:.0f} %"
    fb = R.get("fwdbwd", {})
    for c in fb:
        xs = [x for x in fb[c] if x]
        put(f"w3_{c}_first", med([x["first_ms"] for x in xs]), " ms")
        put(f"w3_{c}_last", med([x["last_ms"] for x in xs]), " ms")
        put(f"w3_{c}_return", med([x["return_ms"] for x in xs]), " ms")
        put(f"w3_{c}_done", med([x["done_ms"] for x in xs]), " ms")
    enc = R.get("encode") or {}
    es = [x * 1e3 for x in enc.get("encode_s", [])]
    put("w3_encode", med(es[1:] or es), " ms")
    put("w3_encode_cold", es[0] if es else None, " ms")
    put("w3_raw_official", ratio(med([x["last_ms"] for x in fb.get("raw", []) if x]),
                                 med([x["last_ms"] for x in fb.get("official", []) if x])), "×", 2)
    mem = R.get("memory", {})
    for c in mem:
        b = med([r["rss_before_kb"] for r in mem[c]])
        i = med([r["rss_inflight_kb"] for r in mem[c]])
        if b is not None and i is not None:
            v[f"w5_{c}_kib"] = fmt((i - b) / S["mem_n"], "", 1)
            v[f"w5_{c}_mib"] = fmt(i / 1024, "", 0)
    ms = R.get("massif") or {}
    if ms.get("n"):
        v["massif_kib"] = f"{ms['total'] / ms['n'] / 1024:.1f}"
        v["massif_n"] = f"{ms['n']:,}"
    rec = R.get("recovery", {})
    for c in rec:
        put(f"w6_{c}", rec[c].get("recovery_max_s"), " s", 2)
    v["mem_n"] = f"{S['mem_n']:,}"
    return v


METHOD = """## Method

* **One command**: `bench/run.sh` builds `tinkex-emulator`, `libtinkex.so` and
  `tinkex-bench` (release, `CARGO_TARGET_DIR=target/bench`), creates `target/bench-venv`
  (numpy, matplotlib) and, if missing, `target/official-sdk-venv` (`tinker==0.38.0`), then
  runs `bench/driver.py`, which writes this page and `docs/benchmarks.png`. Raw results and
  every process's stderr: `target/bench/logs/`. `bench/run.sh --smoke` runs the same code
  with tiny sizes into a temporary directory (the test-suite check).
* **Clients**: the Rust API (`tinkex::core`, tokio multi-thread runtime, one worker per
  CPU); the C ABI (the exported `tinkex_*` functions called from Rust exactly as a C host
  calls them: request JSON in, `on_done` callback on the library's dispatcher thread, result
  JSON taken with `tinkex_future_take_result`, next request submitted from the callback; it
  links the same code statically, so only the PLT indirection of a shared library is
  missing); the Python binding (`bindings/python` on `libtinkex.so`, asyncio); the official
  SDK `tinker==0.38.0` (same Python script: the binding is a drop-in); the raw loop
  (`bench/rust/src/raw.rs`: reqwest with its defaults, the bodies serialized from the same
  wire types, submit then long-poll `retrieve_future` until a protobuf or final JSON answer,
  no retry policy, no decoding of the result).
* **Server**: a fresh `tinkex-emulator --zero-compute --no-persist` per client run (W6: one
  for all), default long-poll hold (20 s). Pending operations for W5/W6 come from an emulator
  fault rule `{"path": "/api/v1/retrieve_future", "latency_ms": H, "count": N}` that holds
  exactly the first N polls.
* **Clocks and counters**: CLOCK_MONOTONIC in every process (`clock_gettime`,
  `time.monotonic`), so times taken by the client, the proxy and the driver compare
  directly; CPU from getrusage/wait4; RSS from `/proc/self/status` and wait4's `ru_maxrss`.
* **Noise**: client, server and proxy share 2 cores; results are medians with [min–max] over
  runs. A load average above ~0.5 before the run means other work was competing.
"""


def chart(R, S, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return
    colors = {"rust": "#1f77b4", "ffi": "#17becf", "python": "#2ca02c", "raw": "#7f7f7f", "official": "#d62728"}
    short = {"rust": "Rust API", "ffi": "C ABI", "python": "Python\nbinding", "raw": "raw\nloop", "official": "official\nSDK"}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))

    def bars(ax, data, title, ylabel, log=False, ref=None):
        keys = [k for k in ("rust", "ffi", "python", "raw", "official") if data.get(k)]
        vals = [med(data[k]) for k in keys]
        lo = [med(data[k]) - min(data[k]) for k in keys]
        hi = [max(data[k]) - med(data[k]) for k in keys]
        ax.bar([short[k] for k in keys], vals, yerr=[lo, hi], capsize=4,
               color=[colors[k] for k in keys])
        for i, v in enumerate(vals):
            label = f"{v:,.0f}" if v >= 100 else (f"{v:.1f}" if v >= 10 else f"{v:.3g}")
            ax.text(i, v, label, ha="center", va="bottom", fontsize=8)
        if not log and vals:
            ax.set_ylim(top=max(vals + ([ref[0]] if ref else [])) * 1.15)
        if ref is not None:
            ax.axhline(ref[0], color="black", ls="--", lw=1)
            ax.text(len(keys) - 0.5, ref[0], ref[1], ha="right", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")

    s = R.get("sampling", {})
    bars(axes[0][0], {c: [r["rps"] for r in rr] for c, rr in s.items()},
         f"W1 sampling, {S['inflight']:,} in flight", "completed requests/s", log=True)
    bars(axes[0][1], {c: [r["cpu_per_req_us"] for r in rr] for c, rr in s.items()},
         "W2 client CPU per sample request", "µs (user+sys)", log=True)
    fb = R.get("fwdbwd", {})
    enc = R.get("encode") or {}
    es = [x * 1e3 for x in enc.get("encode_s", [])]
    bars(axes[0][2], {c: [x["last_ms"] for x in xs if x] for c, xs in fb.items()},
         f"W3 forward_backward {S['fb_datums']}×{S['fb_tokens']}: call → last byte on the wire",
         "ms", ref=(med(es[1:] or es), "bare protobuf encode") if es else None)
    mem = R.get("memory", {})
    bars(axes[1][0], {c: [r["rss_inflight_kb"] / 1024 for r in rr] for c, rr in mem.items()},
         f"W5 RSS with {S['mem_n']:,} futures in flight", "MiB", ref=(50, "goal (Rust API) 50 MiB"))
    rec = R.get("recovery", {})
    bars(axes[1][1], {c: [r["recovery_max_s"]] for c, r in rec.items()},
         f"W6 last completion after a {S['rec_outage_ms'] / 1e3:g} s outage", "s",
         ref=(10, "backoff cap 10 s"))
    tel = R.get("telemetry", {})
    ax = axes[1][2]
    for i, (mode, col) in enumerate((("off", "#1f77b4"), ("on", "#ff7f0e"))):
        rr = tel.get(mode, [])
        if rr:
            v = [r["cpu_per_req_us"] for r in rr]
            l = [r["lat_p50_ms"] for r in rr]
            ax.bar([i], [med(v)], yerr=[[med(v) - min(v)], [max(v) - med(v)]], capsize=4, color=col)
            ax.text(i, med(v), f" {med(v):.1f} µs\np50 {med(l):.2f} ms", ha="center", va="bottom", fontsize=8)
    ax.set_xticks([0, 1], ["telemetry off", "telemetry on"])
    ax.margins(y=0.2)
    ax.set_title(f"W7 Rust API at {S['tel_rate']:,} req/s: CPU per request", fontsize=10)
    ax.set_ylabel("µs (user+sys)")
    fig.suptitle(f"libtinkex benchmarks ({R['date']}, {R['machine'].get('cpu', '')}); "
                 "bars: median, whiskers: min–max", fontsize=11)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    global LOG_DIR
    p = argparse.ArgumentParser()
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=os.path.join(REPO, "docs"))
    p.add_argument("--only", default="", help="comma-separated subset: w1,w3,w5,w6,w7,cg,perf,massif")
    p.add_argument("--command", default="bench/run.sh")
    a = p.parse_args()
    mode = "smoke" if a.smoke else "full"
    S = SIZES[mode]
    LOG_DIR = os.path.join(os.path.dirname(TARGET), "logs" if mode == "full" else "logs-smoke")
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    os.makedirs(LOG_DIR)
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
