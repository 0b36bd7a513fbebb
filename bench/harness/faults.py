"""The "faults" family (issue 13): the Python binding and the official SDK against an
emulator that answers slowly, fails and resets; and a poll endpoint that answers an error
at once for a while (poll spin, recovery).

* **F1 training under faults**: ``S['faults_steps']`` × (forward_backward + optim_step) on
  the emulator's tiny model, every API request delayed ``S['faults_latency_ms']``; the same
  loop with the latency only is the baseline. The rules (``faults_rules``) are installed by
  the client after its set-up and removed after the loop.
* **F2 poll spin**: one sample whose ``retrieve_future`` polls are answered 503 at once for
  ``S['spin_window_ms']``: polls in that window (emulator journal). Target ≤ 10.
* **F3 recovery**: the same with 408 and with 503 for ``S['recovery_window_ms']``: time from
  the window's end to the result. Target ≤ 2 s.
"""

import json
import os
import threading

from .settings import CLIENTS, log
from .processes import Child, Emulator, client_cmd
from .stats import cell, fmt, med

RETRIEVE = "/api/v1/retrieve_future"
FAULT_CLIENTS = ("python", "official")
# docs/benchmarks.md: the faults section lives between these markers, so that
# `driver.py faults` rewrites only it and a full run keeps a section it did not measure.
BEGIN = "<!-- faults:begin (bench/driver.py faults) -->"
END = "<!-- faults:end -->"
SPIN_TARGET = 10
RECOVERY_TARGET_S = 2.0


def faults_rules(latency_ms, p503=0.5, preset=0.05):
    """Rules giving every API request the same latency, `preset` of them a reset connection
    and `p503` of them a 503. The emulator applies the FIRST active rule whose path matches
    and whose probability draw succeeds (emulator/src/faults.rs, `FaultSet::take`), one draw
    per rule tried, so: reset with `preset`; else 503 with p503 / (1 - preset), which makes
    p503 overall; else the latency alone (probability 1)."""
    return [
        {"path": "/api/v1/", "reset": True, "probability": preset, "latency_ms": latency_ms},
        {"path": "/api/v1/", "status": 503, "probability": p503 / (1 - preset), "latency_ms": latency_ms},
        {"path": "/api/v1/", "latency_ms": latency_ms},
    ]


def run_faults_client(name, client, workload, args, timeout):
    """One client process against a fresh tiny-model emulator; returns its JSON result
    with the journal entries of its measured window (`journal`) and the process CPU."""
    emu = Emulator(name, zero_compute=False)
    try:
        a = dict(args)
        a["base-url"] = emu.url
        cmd, env = client_cmd(client, workload, a)
        env = dict(env or os.environ)
        env["TINKER_TELEMETRY"] = "0"
        c = Child(name, cmd, env)
        res = c.wait(timeout)
        entries = emu.control("GET", "journal")["journal"] if res else []
    finally:
        emu.stop()
    if res is None:
        return None
    res["journal"] = entries[res["journal_from"]:res["journal_to"]]
    res["proc_cpu_s"] = c.rusage.ru_utime + c.rusage.ru_stime
    return res


def w_faults(S, R):
    clients = [c for c in FAULT_CLIENTS if c != "official" or R["have_official"]]
    runs = S["faults_runs"]
    lat = S["faults_latency_ms"]
    train = {c: {"baseline": [], "faults": []} for c in clients}
    for rep in range(runs):
        for kind in ("baseline", "faults"):
            rules = [{"path": "/api/v1/", "latency_ms": lat}] if kind == "baseline" else faults_rules(lat)
            # The clients of one rep run side by side (each against its own emulator; the
            # loop is bound by backoff sleeps, not CPU) and see the same fault draws: the
            # emulator's draws are a fixed sequence, advanced by a per-rep offset.
            log(f"F1 training {kind} rep {rep + 1}/{runs}: {', '.join(clients)} side by side "
                f"({S['faults_steps']} steps, {lat} ms latency)")
            out = {}
            def one(c):
                out[c] = run_faults_client(f"f1.{c}.{kind}.{rep}", c, "train", {
                    "steps": S["faults_steps"], "datums": S["faults_datums"], "tokens": S["faults_tokens"],
                    "faults": json.dumps(rules), "seed-draws": rep * 101 + 7}, timeout=1800)
            threads = [threading.Thread(target=one, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for c in clients:
                r = out.get(c)
                if r:
                    j = r.pop("journal")
                    r["requests"] = len(j)
                    r["answered_503"] = sum(1 for e in j if e["status"] == 503)
                    r["reset"] = sum(1 for e in j if e["status"] == 0)
                    train[c][kind].append(r)
                    log(f"F1 {kind} rep {rep + 1}: {c} {r['wall_s']:.1f} s, {r['requests']} requests, "
                        f"{r['answered_503']} × 503, {r['reset']} resets, {r['errors']} failed steps")
    polls = {c: {} for c in clients}
    cases = [("spin503", 503, S["spin_window_ms"]), ("rec408", 408, S["recovery_window_ms"]),
             ("rec503", 503, S["recovery_window_ms"])]
    for rep in range(runs):
        for c in clients:
            for key, status, window in cases:
                log(f"F2/F3 {key} rep {rep + 1}/{runs}: {c} (polls answered {status} for {window} ms)")
                r = run_faults_client(f"f2.{c}.{key}.{rep}", c, "pollfault", {
                    "status": status, "window-ms": window}, timeout=window / 1e3 + 180)
                if r:
                    j = r.pop("journal")
                    r["polls_faulted"] = sum(1 for e in j if e["path"] == RETRIEVE and e["status"] == status)
                    r["polls_total"] = sum(1 for e in j if e["path"] == RETRIEVE)
                    polls[c].setdefault(key, []).append(r)
    R["faults"] = {"train": train, "polls": polls, "latency_ms": lat, "steps": S["faults_steps"],
                   "datums": S["faults_datums"], "tokens": S["faults_tokens"], "runs": runs,
                   "spin_window_ms": S["spin_window_ms"], "recovery_window_ms": S["recovery_window_ms"],
                   "rules": faults_rules(lat)}


def missing(R):
    """(workload, client) pairs of the family without a result."""
    F = R.get("faults") or {}
    out = []
    for c, kinds in (F.get("train") or {}).items():
        for kind, rr in kinds.items():
            if not rr:
                out.append(f"faults/train/{kind}/{c}")
    for c, cases in (F.get("polls") or {}).items():
        for key in ("spin503", "rec408", "rec503"):
            if not cases.get(key):
                out.append(f"faults/{key}/{c}")
    return out


def goals(R):
    """(name, met, measured) of the family's targets, for the Python binding."""
    F = R.get("faults") or {}
    P = (F.get("polls") or {})
    G = []
    def poll_med(c, key, field):
        return med([r[field] for r in P.get(c, {}).get(key, [])])
    off = lambda key, field, unit="", d=None: (
        f" (official SDK: {fmt(poll_med('official', key, field), unit, d)})" if P.get("official") else "")
    spin = poll_med("python", "spin503", "polls_faulted")
    G.append((f"F2 poll spin, {CLIENTS['python']}: ≤ {SPIN_TARGET} polls of one pending future while polls "
              f"answer 503 at once for {F.get('spin_window_ms', 0) / 1e3:g} s",
              spin is not None and spin <= SPIN_TARGET,
              f"{fmt(spin, '', 0)} polls" + off("spin503", "polls_faulted", " polls", 0)))
    for key, st in (("rec408", 408), ("rec503", 503)):
        v = [r["recovery_s"] if r["ok"] else None for r in P.get("python", {}).get(key, [])]
        worst = max(v) if v and None not in v else None
        G.append((f"F3 recovery after polls answered {st} for {F.get('recovery_window_ms', 0) / 1e3:g} s, "
                  f"{CLIENTS['python']}: result ≤ {RECOVERY_TARGET_S:g} s after the window (every run)",
                  worst is not None and worst <= RECOVERY_TARGET_S,
                  f"worst {fmt(worst, ' s', 2)}" + off(key, "recovery_s", " s", 2)))
    return G


def section(R, machine_line, date, command):
    """The markdown of the family (between the markers)."""
    F = R.get("faults")
    if not F:
        return None
    L = [BEGIN, "## Faults: training and polling against a failing server (Python binding vs official SDK)\n"]
    w = L.append
    w(f"Generated by `{command}` on {date}; {machine_line}. Every client runs as its own process "
      f"against a fresh `tinkex-emulator --no-persist` (the tiny model, not zero-compute), "
      f"telemetry off; median [min–max] over {F['runs']} run(s) per client, clients interleaved.\n")
    w("| target | result | measured |")
    w("|---|---|---|")
    for name, ok, meas in goals(R):
        w(f"| {name} | {'**met**' if ok else '**not met**'} | {meas} |")
    w("")
    T = F["train"]
    rules = F["rules"]
    w(f"### F1: {F['steps']} training steps under faults\n")
    w(f"Each step submits forward_backward ({F['datums']} datums × {F['tokens']} tokens, "
      "`cross_entropy`) and optim_step (Adam), then awaits both. After set-up the client "
      f"installs the rules and times the loop; the clients of one run go side by side, each "
      "against its own emulator. The emulator draws its faults from one fixed-seed sequence, "
      "advanced by a different offset per run, so both clients of a run meet the same draws "
      "and runs differ. *baseline*: every API request delayed "
      f"{F['latency_ms']} ms. *faults*: the same latency, and 5 % of the requests get a reset "
      "connection (headers and part of a body, then a reset) and 50 % a 503, i.e. the rules, "
      "in order (the emulator applies the first rule whose path matches and whose "
      "probability draw succeeds):\n")
    w("```json\n" + json.dumps(rules) + "\n```\n")
    w("The observed shares (requests of the measured window in the emulator's journal) are in "
      "the table.\n")
    w("| client | baseline wall (s) | faults wall (s) | faults / baseline | requests | answered 503 | reset | failed steps | process CPU (s) |")
    w("|---|---|---|---|---|---|---|---|---|")
    mf = {}
    for c in T:
        b, f = T[c]["baseline"], T[c]["faults"]
        mb, mf[c] = med([r["wall_s"] for r in b]), med([r["wall_s"] for r in f])
        req = sum(r["requests"] for r in f)
        share = lambda n: f"{n} ({n / req * 100:.0f} %)" if req else "–"
        w(f"| {CLIENTS[c]} | {cell([r['wall_s'] for r in b], '', 2)} | {cell([r['wall_s'] for r in f], '', 2)} | "
          f"{fmt(mf[c] / mb if mb and mf[c] else None, '×', 1)} | {req} | {share(sum(r['answered_503'] for r in f))} | "
          f"{share(sum(r['reset'] for r in f))} | {sum(r['errors'] for r in f)} / {F['steps'] * len(f)} | "
          f"{cell([r['proc_cpu_s'] for r in f], '', 2)} |")
    if mf.get("python") and mf.get("official"):
        w(f"\nWall time under faults, official SDK / Python binding: "
          f"**{mf['official'] / mf['python']:.2f}×** (medians).")
    w("")
    P = F["polls"]
    w("### F2, F3: a poll endpoint answering an error at once\n")
    w("One sample (after a warm-up sample); just before it is submitted the client installs "
      f"`{{\"path\": \"{RETRIEVE}\", \"status\": S, \"duration_ms\": W}}`, so every poll "
      "of that window is answered S without delay. *polls in window*: its `retrieve_future` "
      "requests answered S (journal). *recovery*: result in hand − (clock before the install "
      "request + W), conservative by that request's round trip (*install RTT*).\n")
    w("| client | case | polls in window | all polls | recovery (s) | failed | install RTT (ms) |")
    w("|---|---|---|---|---|---|---|")
    labels = {"spin503": f"503 for {F['spin_window_ms'] / 1e3:g} s",
              "rec408": f"408 for {F['recovery_window_ms'] / 1e3:g} s",
              "rec503": f"503 for {F['recovery_window_ms'] / 1e3:g} s"}
    for c in P:
        for key in ("spin503", "rec408", "rec503"):
            rr = P[c].get(key, [])
            if not rr:
                continue
            w(f"| {CLIENTS[c]} | {labels[key]} | {cell([r['polls_faulted'] for r in rr], '', 0)} | "
              f"{cell([r['polls_total'] for r in rr], '', 0)} | {cell([r['recovery_s'] for r in rr if r['ok']], '', 2)} | "
              f"{sum(1 for r in rr if not r['ok'])} / {len(rr)} | {fmt(med([r['install_rtt_ms'] for r in rr]), '', 1)} |")
    w("")
    w(END)
    return "\n".join(L) + "\n"


def splice(path, text):
    """Replaces the faults section of `path` (or appends it) with `text`."""
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if BEGIN in old and END in old:
        a = old.index(BEGIN)
        b = old.index(END) + len(END)
        new = old[:a] + text.rstrip("\n") + old[b:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(new)


def existing_section(path):
    """The faults section already in `path`, or None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        old = f.read()
    if BEGIN in old and END in old:
        return old[old.index(BEGIN):old.index(END) + len(END)] + "\n"
    return None
