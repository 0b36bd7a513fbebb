#!/usr/bin/env python3
"""The cross-binding parity suite (issue 16): every scenario through every driver.

For each scenario (``scenarios/NN_name.json``) and each driver (Rust, C, C++, Python,
Elixir) the runner starts a fresh ``tinkex-emulator`` on a free port, applies the scenario's
set-up (flags, faults, delays, queue state), runs the driver on the scenario's *line form*
(see ``docs/parity.md``), answers the driver's ``control`` requests (emulator control calls
between operations), then reads the emulator's request journal. It normalises the driver's
transcript (ids to placeholders in order of first appearance, floats to
``FLOAT_DIGITS`` significant digits, nulls and absent keys unified, timing-dependent counts
collapsed) and compares every language with Rust, printing the first differing line per
pair. Exit status 1 on any difference or failed run.

    python3 tests/parity/runner.py [--only SUBSTR] [--drivers rust,c,...] [--write-doc]
                                   [--keep DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release"
DRIVERS = ["rust", "c", "cpp", "python", "elixir"]
# Floats are compared to this many significant digits (the emulator's model is
# deterministic; the tolerance absorbs float32/float64 printing differences).
FLOAT_DIGITS = 5
# A driver (one scenario) must finish within this many seconds.
DRIVER_DEADLINE_S = float(os.environ.get("TINKEX_PARITY_DEADLINE_S", "90"))
API_KEY = "tml-parity-suite-key"
# Requests whose number depends on timing: dropped from the compared journal.
BACKGROUND_PATHS = (
    "/api/v1/session_heartbeat",
    "/api/v1/telemetry",
    "/api/v1/retrieve_future",
    "/api/v1/client/dynamic_config",
)


# ---------------------------------------------------------------------------------------
# Scenario → line form
# ---------------------------------------------------------------------------------------


def load_scenarios(only: Optional[str]) -> List[Tuple[str, Dict[str, Any]]]:
    out = []
    for p in sorted((HERE / "scenarios").glob("*.json")):
        if only and not any(o in p.stem for o in only.split(",")):
            continue
        out.append((p.stem, json.loads(p.read_text())))
    return out


def compact(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=True)


def line_form(sc: Dict[str, Any], base_url: str) -> str:
    """The scenario as the drivers read it: tab-separated lines, JSON only in the last
    column (so the C driver needs no JSON parser of its own)."""
    config = dict(sc.get("config", {}))
    config.update({"base_url": base_url, "api_key": API_KEY})
    lines = [f"config\t{compact(config)}"]
    if sc.get("events"):
        lines.append("events\t1")
    for i, op in enumerate(sc["ops"]):
        param = op.get("param", "")
        if not isinstance(param, str):
            param = compact(param)
        wait = "0" if op.get("wait") is False else "1"
        args = op.get("args", {})
        args_text = args if isinstance(args, str) and op.get("raw") else compact(args)
        fields = [str(i), op["op"], op.get("target", ""), op.get("save_as", ""), param, wait, args_text]
        for f in fields[:-1]:
            if "\t" in f or "\n" in f:
                raise ValueError(f"tab or newline in a field of op {i}")
        if "\n" in args_text:
            raise ValueError(f"newline in the args of op {i}")
        lines.append("op\t" + "\t".join(fields))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------


class Emulator:
    def __init__(self, work: Path, args: List[str]):
        self.state = work / "state"
        self.out = open(work / "emu.out", "w+")
        self.err = open(work / "emu.err", "w")
        self.proc = subprocess.Popen(
            [str(TARGET / "tinkex-emulator"), "--port", "0", "--state-dir", str(self.state), "--no-persist", *args],
            stdout=self.out,
            stderr=self.err,
        )
        deadline = time.monotonic() + 20
        self.url = ""
        while time.monotonic() < deadline:
            self.out.seek(0)
            first = self.out.readline()
            if first.endswith("\n") and first.startswith("http"):
                self.url = first.strip()
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)  # polling the emulator's first output line, bounded by the deadline
        if not self.url:
            self.stop()
            raise RuntimeError(f"emulator did not start: {(work / 'emu.err').read_text()[-2000:]}")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One control call. During an outage the emulator closes new connections: the call
        is repeated until it connects (bounded), so a call also waits for an outage's end."""
        data = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + 30
        while True:
            req = urllib.request.Request(self.url + path, data=data, method=method)
            if data is not None:
                req.add_header("content-type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=20) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw else None
            except (ConnectionError, urllib.error.URLError) as e:
                if isinstance(e, urllib.error.HTTPError) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # the emulator refuses connections (outage): try again, bounded

    def setup(self, emu: Dict[str, Any]) -> None:
        if emu.get("flags"):
            self.call("POST", "/_emulator/flags", emu["flags"])
        for rule in emu.get("faults", []):
            self.call("POST", "/_emulator/faults", rule)
        if emu.get("delays"):
            self.call("POST", "/_emulator/delays", emu["delays"])
        if "queue_state" in emu:
            self.call("POST", "/_emulator/queue_state", emu["queue_state"])
        for c in emu.get("calls", []):
            self.call(c.get("method", "POST"), c["path"], c.get("body"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        self.err.close()


# ---------------------------------------------------------------------------------------
# Drivers
# ---------------------------------------------------------------------------------------


def build_drivers(drivers: List[str], bin_dir: Path) -> Dict[str, List[str]]:
    """The command of each driver (its scenario file and base URL are appended)."""
    cmds: Dict[str, List[str]] = {}
    inc = str(REPO / "include")
    link = ["-L", str(TARGET), "-ltinkex", f"-Wl,-rpath,{TARGET}", "-lpthread"]
    if "rust" in drivers:
        exe = TARGET / "examples" / "parity_driver"
        if not exe.exists():
            raise RuntimeError(f"missing {exe}: run tests/parity/run.sh (it builds it)")
        cmds["rust"] = [str(exe)]
    if "c" in drivers:
        out = bin_dir / "driver_c"
        subprocess.run(
            ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-I", inc, str(HERE / "drivers" / "driver.c"), "-o", str(out), *link],
            check=True,
        )
        cmds["c"] = [str(out)]
    if "cpp" in drivers:
        out = bin_dir / "driver_cpp"  # noqa: the same flags as tests/cpp
        subprocess.run(
            ["c++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-O1", "-I", inc, "-I", str(REPO / "bindings" / "cpp"), str(HERE / "drivers" / "driver.cpp"), "-o", str(out), *link],
            check=True,
        )
        cmds["cpp"] = [str(out)]
    if "python" in drivers:
        py = REPO / "target" / "python-venv" / "bin" / "python"
        if not py.exists():
            raise RuntimeError(f"missing {py}: run bindings/python/run_tests.sh once")
        cmds["python"] = [str(py), str(HERE / "drivers" / "driver.py")]
    if "elixir" in drivers:
        subprocess.run(["mix", "compile"], cwd=REPO / "bindings" / "elixir", check=True, env=elixir_env(), stdout=subprocess.DEVNULL)
        cmds["elixir"] = ["mix", "run", "--no-compile", str(HERE / "drivers" / "driver.exs")]
    return cmds


def elixir_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"MIX_ENV": "test", "TINKEX_LIB_DIR": str(TARGET)})
    return env


def driver_env(name: str) -> Dict[str, str]:
    env = elixir_env() if name == "elixir" else dict(os.environ)
    if name == "python":
        env["PYTHONPATH"] = str(REPO / "bindings" / "python")
        env["TINKEX_LIBRARY"] = str(TARGET / "libtinkex.so")
    for k in ("TINKER_API_KEY", "TINKER_BASE_URL", "TINKER_PROJECT_ID", "TINKER_TELEMETRY"):
        env.pop(k, None)
    return env


def run_driver(name: str, cmd: List[str], sc: Dict[str, Any], work: Path) -> Dict[str, Any]:
    """Runs one driver on one scenario against a fresh emulator; returns its raw record."""
    emu = Emulator(work, sc.get("emulator", {}).get("args", []))
    try:
        emu.setup(sc.get("emulator", {}))
        scen = work / "scenario.tsv"
        scen.write_text(line_form(sc, emu.url))
        cwd = REPO / "bindings" / "elixir" if name == "elixir" else REPO
        proc = subprocess.Popen(
            [*cmd, str(scen), emu.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(work / "driver.err", "w"),
            cwd=cwd,
            env=driver_env(name),
            text=True,
            bufsize=1,
        )
        lines: List[Dict[str, Any]] = []
        deadline = time.monotonic() + DRIVER_DEADLINE_S
        failure = None
        assert proc.stdout is not None and proc.stdin is not None
        # A reader thread feeds a queue: waiting on the queue has a deadline, and no line can
        # sit unseen in a read buffer (select() on a buffered pipe would miss it).
        out: "queue.Queue[Optional[str]]" = queue.Queue()

        def reader() -> None:
            for text in proc.stdout:
                out.put(text)
            out.put(None)

        threading.Thread(target=reader, daemon=True).start()
        while True:
            left = deadline - time.monotonic()
            try:
                line = out.get(timeout=max(left, 0.001))
            except queue.Empty:
                failure = f"deadline of {DRIVER_DEADLINE_S:.0f} s passed"
                proc.kill()
                break
            if line is None:
                break
            if not line.startswith("@@ "):
                continue  # the language's own output (e.g. mix)
            rec = json.loads(line[3:])
            if "control" in rec:
                ctl = sc["ops"][rec["control"]]
                run_control(emu, ctl)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                continue
            lines.append(rec)
        code = proc.wait()
        if failure is None and code != 0:
            failure = f"exit status {code}"
        if failure is None and not (lines and lines[-1].get("done")):
            failure = "no final 'done' line"
        journal = emu.call("GET", "/_emulator/journal")["journal"]
        return {"lines": lines, "journal": journal, "failure": failure, "stderr": (work / "driver.err").read_text()[-3000:]}
    finally:
        emu.stop()


def run_control(emu: Emulator, op: Dict[str, Any]) -> None:
    """A `control` op: emulator calls between two operations, or a wait for a condition of
    the emulator (bounded; never a fixed sleep)."""
    args = op.get("args", {})
    for c in args.get("calls", []):
        emu.call(c.get("method", "POST"), c["path"], c.get("body"))
    until = args.get("wait_journal")
    if until:
        deadline = time.monotonic() + float(until.get("deadline_s", 20))
        while time.monotonic() < deadline:
            entries = emu.call("GET", "/_emulator/journal")["journal"]
            n = sum(
                1
                for e in entries
                if until["path"] in e["path"] and ("status" not in until or e["status"] == until["status"])
            )
            if n >= until.get("count", 1):
                return
            time.sleep(0.01)  # polling the emulator's journal for the condition, bounded
        raise RuntimeError(f"control: {until} not reached")


# ---------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------

ID_PATTERNS = [
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),  # UUIDs
    re.compile(r"\b(?:req|loss)-[0-9a-f]{8}-\d+\b"),  # emulator request / loss ids
    re.compile(r"http://127\.0\.0\.1:\d+"),  # the emulator's base URL
    re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?"),  # times
]
TIME_KEYS = {"created", "created_at", "last_request_time", "last_heartbeat", "expires_at", "time", "timestamp"}


class Normaliser:
    """Replaces ids by placeholders in order of first appearance (one numbering per
    transcript) and rounds floats."""

    def __init__(self) -> None:
        self.ids: Dict[str, str] = {}

    def ident(self, s: str) -> str:
        if s not in self.ids:
            self.ids[s] = f"<id{len(self.ids) + 1}>"
        return self.ids[s]

    def string(self, s: str) -> str:
        for i, pat in enumerate(ID_PATTERNS):
            if i == 2:
                s = pat.sub("<url>", s)
            elif i == 3:
                s = pat.sub("<time>", s)
            else:
                s = pat.sub(lambda m: self.ident(m.group(0)), s)
        return s

    def value(self, v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            out = {}
            for k in sorted(v):
                x = v[k]
                if x is None or x == {} and k not in ("metrics",):
                    continue  # null and absent are the same
                out[k] = "<time>" if k in TIME_KEYS and isinstance(x, (int, float, str)) else self.value(x, k)
            return out
        if isinstance(v, list):
            return [self.value(x, key) for x in v]
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                return str(v)
            if v == int(v) and abs(v) < 2**53:
                return int(v)
            return float(f"{v:.{FLOAT_DIGITS}g}")
        if isinstance(v, str):
            return self.string(v)
        return v


# The keys of a created client's info every binding can report.
DEFAULT_KEEP = {
    "create_lora": ["model_id", "is_lora", "lora_rank"],
    "from_state": ["model_id", "is_lora", "lora_rank"],
    "resume": ["model_id", "is_lora", "lora_rank"],
    "create_sampling": ["base_model"],
    "save_weights_and_get_sampling_client": ["base_model"],
}


def keep_keys(v: Any, keys: Optional[List[str]]) -> Any:
    if keys is None or not isinstance(v, dict):
        return v
    return {k: v[k] for k in keys if k in v}


def lacks_of(rec: Dict[str, Any]) -> List[str]:
    """What a driver declared its binding cannot express (e.g. `error.category`)."""
    out: List[str] = []
    for line in rec["lines"]:
        out.extend(line.get("lacks", []))
    return out


def normalise(sc: Dict[str, Any], rec: Dict[str, Any], lacks: Optional[List[str]] = None) -> List[str]:
    """The comparable transcript: one text line per operation, event and request. Fields in
    `lacks` (a binding cannot express them) are left out."""
    lacks = lacks or []
    n = Normaliser()
    out: List[str] = []
    ops = sc["ops"]
    events: List[Dict[str, Any]] = []
    for line in rec["lines"]:
        if "events" in line:
            events = line["events"]
            continue
        if "lacks" in line:
            continue
        if line.get("done"):
            continue
        i = line.get("i")
        op = ops[i] if isinstance(i, int) and 0 <= i < len(ops) else {}
        item: Dict[str, Any] = {"i": i, "op": line.get("op")}
        if "ok" in line:
            res = line["ok"]
            res = keep_keys(res, op.get("keep", DEFAULT_KEEP.get(op.get("op", ""))))
            if op.get("result") == "shape":
                res = shape_of(res)
            if isinstance(res, dict):
                res = {k: v for k, v in res.items() if k not in DROPPED_RESULT_KEYS}
            item["ok"] = n.value(res)
            if item["ok"] == {}:
                item["ok"] = None  # an empty result and none are the same
        elif "error" in line:
            err = norm_error(line["error"])
            if "error.category" in lacks:
                err.pop("category", None)
            item["error"] = n.value(err)
        else:
            item.update({k: n.value(v) for k, v in line.items() if k not in ("i", "op")})
        out.append(compact(item))
    out.extend(norm_events(sc, events, n))
    out.extend(norm_journal(sc, rec["journal"], n))
    return out


# Constant discriminators of result records (`"type": "save_weights"`): the C ABI's path
# results (`SavedPath`: save_state, save_weights_for_sampler) have none while Python's
# SDK-shaped types carry one, and they carry no information. (Every binding keeps the
# `type` of a sample and of a load_state result.)
DROPPED_RESULT_KEYS = {"type"}

CALLER_KINDS = {"null_arg", "invalid_arg", "invalid_utf8", "invalid_json", "invalid_input"}


def norm_error(e: Dict[str, Any]) -> Dict[str, Any]:
    """The common form of an error: kind (caller-error kinds as one `invalid_input`: each
    language rejects bad input in its own words before anything is sent), HTTP status and
    the server's category."""
    kind = e.get("kind")
    if kind in CALLER_KINDS:
        kind = "invalid_input"
    out = {"kind": kind}
    if e.get("http_status"):
        out["http_status"] = e["http_status"]
    if e.get("category"):
        out["category"] = e["category"]
    return out


def shape_of(v: Any) -> Any:
    """Types and lengths only (for results whose values are random, e.g. unseeded samples)."""
    if isinstance(v, dict):
        return {k: shape_of(x) for k, x in v.items()}
    if isinstance(v, list):
        return f"list[{len(v)}]"
    return type(v).__name__


EVENT_FIELDS = {
    "queue_state": ["request_type", "state", "reason"],
    "retry": ["operation"],
    "session_expired": [],
    "heartbeat_warning": [],
    "telemetry_overflow": [],
}


def norm_events(sc: Dict[str, Any], events: List[Dict[str, Any]], n: Normaliser) -> List[str]:
    kinds = sc.get("events") or []
    out: List[str] = []
    last = None
    for ev in events:
        t = ev.get("type")
        if t not in kinds:
            continue
        item = {"event": t, **{k: ev.get(k) for k in EVENT_FIELDS.get(t, []) if ev.get(k) is not None}}
        text = compact(n.value(item))
        if text == last:
            continue  # repeated events (retries during an outage) collapse: timing decides their number
        out.append(text)
        last = text
    return out


def norm_journal(sc: Dict[str, Any], journal: List[Dict[str, Any]], n: Normaliser) -> List[str]:
    cfg = sc.get("journal", {})
    if cfg is False:
        return []
    drop = tuple(cfg.get("drop", [])) + BACKGROUND_PATHS
    collapse = cfg.get("collapse", False)
    out: List[str] = []
    keys = Normaliser()  # idempotency keys numbered on their own
    prev_key = None
    for e in journal:
        if e["path"].startswith(drop) or any(d in e["path"] for d in drop):
            continue
        item: Dict[str, Any] = {"req": f"{e['method']} {e['path']}"}
        if e.get("seq_id") is not None:
            item["seq_id"] = e["seq_id"]
        if e.get("idempotency_key") and not collapse:
            item["key"] = keys.ident(e["idempotency_key"])
        attempt = int(e.get("retry_count") or 0)
        item["attempt"] = attempt
        item["status"] = e["status"]
        if collapse:
            # Attempts during an outage or a billing pause: their number (and, for requests
            # the client rebuilds on each attempt, their keys) depends on timing. Consecutive
            # attempts of one request collapse into its last (the one that got through).
            k = (item["req"], item.get("seq_id"))
            if k == prev_key and out:
                out.pop()
            prev_key = k
            item["attempt"] = "n"
        out.append("journal " + compact(n.value(item)))
    return out


# ---------------------------------------------------------------------------------------
# Comparison and report
# ---------------------------------------------------------------------------------------


def first_difference(a: List[str], b: List[str]) -> Optional[Tuple[int, str, str]]:
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "<end of transcript>"
        y = b[i] if i < len(b) else "<end of transcript>"
        if x != y:
            return i + 1, x, y
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run the scenarios whose file name contains this (comma-separated: any of these)")
    ap.add_argument("--drivers", default=",".join(DRIVERS))
    ap.add_argument("--write-doc", action="store_true", help="write the table into docs/parity.md")
    ap.add_argument("--keep", help="keep transcripts and logs in this directory")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("TINKEX_PARITY_JOBS", "3")))
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    drivers = [d for d in args.drivers.split(",") if d]
    for d in drivers:
        if d not in DRIVERS:
            ap.error(f"unknown driver {d}")
    scenarios = load_scenarios(args.only)
    if not scenarios:
        print("parity: no scenario", file=sys.stderr)
        return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tinkex-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    cmds = build_drivers(drivers, bin_dir)
    start = time.monotonic()

    def one(job: Tuple[str, Dict[str, Any], str]) -> Tuple[str, str, Dict[str, Any]]:
        name, sc, d = job
        w = work / name / d
        if w.exists():
            shutil.rmtree(w)
        w.mkdir(parents=True)
        try:
            rec = run_driver(d, cmds[d], sc, w)
        except Exception as e:  # noqa: BLE001 - reported as the run's failure
            rec = {"lines": [], "journal": [], "failure": f"runner: {e}", "stderr": ""}
        rec["transcript"] = [] if rec["failure"] else normalise(sc, rec, lacks_of(rec))
        (w / "transcript.txt").write_text("\n".join(rec["transcript"]) + "\n")
        (w / "raw.json").write_text(json.dumps({k: rec[k] for k in ("lines", "journal")}, indent=1))
        return name, d, rec

    jobs = [(name, sc, d) for name, sc in scenarios for d in drivers]
    results: Dict[Tuple[str, str], Dict[str, Any]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for name, d, rec in pool.map(one, jobs):
            results[(name, d)] = rec

    failed = 0
    table: List[Tuple[str, str, Dict[str, str]]] = []
    for name, sc in scenarios:
        row: Dict[str, str] = {}
        ref = results.get((name, "rust"))
        for d in drivers:
            rec = results[(name, d)]
            skip = (sc.get("skip") or {}).get(d)
            if skip:
                row[d] = f"skip ({skip})"
                continue
            if rec["failure"]:
                failed += 1
                row[d] = "FAILED"
                print(f"FAIL {name} [{d}]: {rec['failure']}")
                if rec["stderr"].strip():
                    print("  stderr: " + rec["stderr"].strip().replace("\n", "\n  stderr: ")[-1500:])
                continue
            if d == "rust" or ref is None or ref["failure"]:
                row[d] = "ok" if d == "rust" else "ok (no reference)"
                continue
            lacks = lacks_of(rec)
            ref_t = normalise(sc, ref, lacks) if lacks else ref["transcript"]
            # Mention a declared gap only where it hid something of this scenario.
            lacks = lacks if ref_t != ref["transcript"] else []
            diff = first_difference(ref_t, rec["transcript"])
            known = (sc.get("known") or {}).get(d)
            if diff:
                line, x, y = diff
                if known:
                    row[d] = f"known difference ({known})"
                    print(f"KNOWN {name}: rust vs {d} ({known}), first difference at line {line}:")
                else:
                    failed += 1
                    row[d] = "DIFFERS"
                    print(f"DIFF {name}: rust vs {d}, first difference at line {line}:")
                print(f"  rust: {x}")
                print(f"  {d}: {y}")
            elif known:
                failed += 1
                row[d] = "identical, but listed as a known difference"
                print(f"STALE {name}: rust and {d} agree now: remove the known difference ({known})")
            elif lacks:
                row[d] = f"identical (without {', '.join(lacks)})"
            else:
                row[d] = "identical"
        n_lines = len(ref["transcript"]) if ref and not ref["failure"] else 0
        table.append((name, sc.get("name", name), {**row, "_lines": str(n_lines)}))
        if args.verbose:
            print(f"{name}: " + ", ".join(f"{d} {row[d]}" for d in drivers))

    text = render_table(table, drivers)
    print(text)
    elapsed = time.monotonic() - start
    n_known = sum(1 for _, _, r in table for d in drivers if r.get(d, "").startswith("known difference"))
    summary = "all transcripts identical" if failed == 0 else f"{failed} differences or failures"
    if n_known:
        summary += f" apart from {n_known} known differences (findings in docs/parity.md)"
    print(f"parity: {len(scenarios)} scenarios x {len(drivers)} drivers in {elapsed:.0f} s: {summary}")
    if args.write_doc:
        write_doc(text, len(scenarios), drivers, summary)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def render_table(table: List[Tuple[str, str, Dict[str, str]]], drivers: List[str]) -> str:
    head = "| scenario | lines | " + " | ".join(drivers) + " |"
    sep = "|---|---|" + "---|" * len(drivers)
    rows = [f"| `{n}`: {title} | {r['_lines']} | " + " | ".join(r.get(d, "") for d in drivers) + " |" for n, title, r in table]
    return "\n".join([head, sep, *rows])


def write_doc(table: str, n: int, drivers: List[str], summary: str) -> None:
    doc = REPO / "docs" / "parity.md"
    text = doc.read_text()
    begin, end = "<!-- parity-table:begin -->", "<!-- parity-table:end -->"
    if begin not in text or end not in text:
        raise SystemExit("docs/parity.md has no parity-table markers")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = f"{begin}\nLast run: {stamp}, {n} scenarios x {len(drivers)} languages, {summary}.\n\n{table}\n{end}"
    text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    doc.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
