"""The goals of docs/benchmarks.md: each met or not, with its ratio, and for a missed goal a
pointer to its profile and to the analysis of what would close it (links resolved against
the report's own headings once the page is assembled).

Issue 15's goals come first (W1, W3, W4, W5 and the side-by-side goal, with that issue's
thresholds); then the earlier goals it did not replace (W2 for the Rust API, W6, W7 and the
faults family)."""

import re

from . import curves, faults
from .settings import CLIENTS
from .stats import fmt, med


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def ref(heading, label):
    """A link to the section whose heading line (with its `#`s) starts with `heading`
    (resolved by `resolve`)."""
    return f"⟦{heading}|{label}⟧"


# Where a missed goal's profile and analysis are (heading prefixes of the report).
PERF = ref("## Profile: the Rust API client in W1", "perf profile")
CG_RUST = ref("## Profile: the Rust API client's instructions", "instructions by function")
CG_FFI = ref("## Profile: what the C ABI adds", "callgrind difference")
CG_RAW = ref("## Profile: what the Rust API adds over the raw loop", "difference from the raw loop")
MASSIF = ref("## W5: memory with", "W5 table and heap by allocation site (massif)")
TIMELINE = ref("## W3: forward_backward of", "request timeline")
C1 = ref("### C1: samples/s and CPU per request", "C1 curve")
C2 = ref("### C2: RSS vs sample futures", "C2 curve")
C3 = ref("### C3: forward_backward call", "C3 curve")
NOTE_W1 = ref("### W1: the Rust API against the raw loop", "what would close it")
NOTE_PY = ref("### W1/W2: the Python binding", "what would close it")
NOTE_W3 = ref("### W3: forward_backward, call → wire", "what would close it")
NOTE_W4 = ref("### W4: the C ABI per operation", "what would close it")
NOTE_W5 = ref("### W5: memory with", "what would close it")


def goal(name, ok, measured, *refs):
    """One goal: `ok` True (met), False (not met) or None (not measured in this run)."""
    return {"name": name, "ok": None if ok is None else bool(ok), "measured": measured,
            "refs": list(refs)}


VERDICT = {True: "**met**", False: "**not met**", None: "not measured"}


def w3_measure(R):
    """The W3 measure of the Rust API's call (1 M tokens at full size): median over calls of (call → last
    byte − acceptance of the earlier chunks), the median warm bare encode, and the medians
    of last byte and acceptance (ms)."""
    fb = [x for x in (R.get("fwdbwd") or {}).get("rust", []) if x]
    acc = (R.get("fwdbwd_accept") or {}).get("rust") or []
    enc = R.get("encode") or {}
    es = [x * 1e3 for x in enc.get("encode_s", [])]
    enc_ms = med(es[1:] or es)
    pairs = [(x["last_ms"], a) for x, a in zip(fb, acc) if a is not None]
    net = med([last - a for last, a in pairs])
    return net, enc_ms, med([p[0] for p in pairs]), med([p[1] for p in pairs])


def compute(R, S):
    """Every goal of this run (dicts: name, ok, measured, refs)."""
    s = R.get("sampling", {})
    m = lambda c, k: med([r[k] for r in s.get(c, [])])
    rps = {c: m(c, "rps") for c in s}
    cpu = {c: m(c, "cpu_per_req_us") for c in s}
    G = []

    # ---- W1 (issue 15)
    r = ratio(rps.get("rust"), rps.get("raw"))
    G.append(goal(f"W1 {CLIENTS['rust']} ≥ 0.8× the raw loop's samples/s", r >= 0.8 if r is not None else None,
                  f"{fmt(r, '×', 2)} ({fmt(rps.get('rust'))} vs {fmt(rps.get('raw'))} /s)" if r else "–",
                  PERF, CG_RUST, CG_RAW, NOTE_W1))
    r = ratio(rps.get("python"), rps.get("rust"))
    G.append(goal(f"W1 {CLIENTS['python']} ≥ 0.8× the Rust API's samples/s", r >= 0.8 if r is not None else None,
                  f"{fmt(r, '×', 2)} ({fmt(rps.get('python'))} vs {fmt(rps.get('rust'))} /s)" if r else "–",
                  NOTE_PY))

    # ---- W3 (issue 15)
    net, enc_ms, last, acc = w3_measure(R)
    r = ratio(net, enc_ms)
    G.append(goal(f"W3 forward_backward of {S['fb_datums']}×{S['fb_tokens']:,} tokens, Rust API: call → the last chunk's last byte on "
                  "the wire ≤ 2× a bare protobuf encode of the same data + the server's acceptance of "
                  "the earlier chunks", r <= 2 if r is not None else None,
                  f"(last byte − acceptance) / encode = {fmt(r, '×', 2)} (last byte {fmt(last, ' ms')}, "
                  f"acceptance {fmt(acc, ' ms')}, encode {fmt(enc_ms, ' ms')})" if r is not None else "–",
                  TIMELINE, C3, NOTE_W3))

    # ---- W4
    d = cpu["ffi"] - cpu["rust"] if cpu.get("ffi") is not None and cpu.get("rust") is not None else None
    per = (R.get("callgrind") or {}).get("per_op", {})
    cg_us = None
    if per.get("ffi") and per.get("rust") and cpu.get("rust"):
        cg_us = (per["ffi"] - per["rust"]) * cpu["rust"] / per["rust"]
    G.append(goal("W4 C ABI adds ≤ 5 µs per operation (submit + completion callback) over the Rust API",
                  d <= 5 if d is not None else None,
                  f"{fmt(d, ' µs', 1)} CPU/op measured" + (f"; {fmt(cg_us, ' µs', 1)} by instruction count" if cg_us is not None else ""),
                  CG_FFI, NOTE_W4))

    # ---- W5 (issue 15): batched from the C2 curve, per-future from the W5 runs (else C2)
    n = S["mem_n"]
    row = curves.rss_at(R, "batched", "rust", n)
    v = row["rss_inflight_kb"] / 1024 if row else None
    G.append(goal(f"W5 batched poller, {n:,} futures in flight: RSS ≤ 50 MiB, Rust API",
                  v <= 50 if v is not None else None,
                  f"{fmt(v, ' MiB', 1)} ({fmt(ratio(v, 50), '×', 2)} of the limit)" if v is not None else "– (C2 not run at this size)",
                  C2, MASSIF, NOTE_W5))
    row = curves.rss_at(R, "batched", "python", n)
    v = curves.growth_kib(row) if row else None
    G.append(goal(f"W5 batched poller, {n:,} futures in flight: ≤ 4 KiB of growth per future, Python binding",
                  v <= 4 if v is not None else None,
                  f"{fmt(v, ' KiB', 2)} per future" if v is not None else "– (C2 not run at this size)",
                  C2, NOTE_W5))
    mem = R.get("memory", {})

    def per_future(c):
        rr = mem.get(c, [])
        if rr:
            b, i = med([r["rss_before_kb"] for r in rr]), med([r["rss_inflight_kb"] for r in rr])
            return (i - b) / n, "W5"
        row = curves.rss_at(R, "per_future", c, n)
        return (curves.growth_kib(row), "C2") if row else (None, None)

    off, src_off = per_future("official")
    for c in ("rust", "python"):
        v, src = per_future(c)
        r = ratio(v, off)
        G.append(goal(f"W5 per-future polling, {n:,} futures in flight: growth per future ≤ the official SDK's, {CLIENTS[c]}",
                      r <= 1 if r is not None else None,
                      f"{fmt(v, ' KiB', 1)} vs {fmt(off, ' KiB', 1)} per future = {fmt(r, '×', 2)} ({src})" if r is not None else "–",
                      MASSIF, C2, NOTE_W5))

    # ---- side by side (issue 15)
    r = ratio(rps.get("python"), rps.get("official"))
    G.append(goal("Side by side through the Python binding: ≥ 20× the official SDK's samples/s",
                  r >= 20 if r is not None else None,
                  f"{fmt(r, '×', 1)} ({fmt(rps.get('python'))} vs {fmt(rps.get('official'))} /s)" if r else "–",
                  C1, NOTE_PY))
    r = ratio(cpu.get("official"), cpu.get("python"))
    G.append(goal("Side by side through the Python binding: ≤ 1/20 of the official SDK's CPU per request",
                  r >= 20 if r is not None else None,
                  f"1/{fmt(r, '', 1)} ({fmt(cpu.get('python'), ' µs')} vs {fmt(cpu.get('official'), ' µs')})" if r else "–",
                  C1, NOTE_PY))

    # ---- earlier goals still in force
    r = ratio(cpu.get("official"), cpu.get("rust"))
    G.append(goal(f"W2 CPU per sample request, {CLIENTS['rust']} ≤ 1/10 of the official SDK's",
                  r >= 10 if r is not None else None, f"1/{fmt(r)}" if r else "–", PERF, NOTE_W1))
    rec = R.get("recovery", {})
    poll_s = (med([x["lat_p50_ms"] for x in R.get("telemetry", {}).get("off", [])]) or 0) / 1e3
    cap = 10.0 + poll_s
    for c in ("rust", "python"):
        v = rec.get(c, {}).get("recovery_max_s")
        G.append(goal(f"W6 {CLIENTS[c]}: all pending operations done ≤ 10 s backoff cap + one poll ({cap:.3f} s) after the outage",
                      (v <= cap and rec[c].get("errors", 1) == 0) if v is not None else None,
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
    di = (per["rust_telemetry"] / per["rust"] - 1) * 100 if per.get("rust_telemetry") and per.get("rust") else None
    within = lambda d, n: d is not None and abs(d) <= max(1.0, n or 0.0)
    G.append(goal("W7 telemetry on at 1,000 requests/s: CPU and latency within 1 % of off "
                  "(met when the instruction count per request differs ≤ 1 % and the OS-measured "
                  "differences are within max(1 %, the run-to-run spread of the off runs))",
                  (within(dc, nc) and within(dl, nl) and (di is None or abs(di) <= 1)) if dc is not None and dl is not None else None,
                  f"CPU {fmt(dc, ' %', 1)}, p50 latency {fmt(dl, ' %', 1)} (off runs' spread: CPU "
                  f"{fmt(nc, ' %', 1)}, latency {fmt(nl, ' %', 1)})"
                  + (f"; instructions/request {di:+.2f} %" if di is not None else "")))
    if R.get("faults"):
        G += [goal(name, ok, meas) for name, ok, meas in faults.goals(R)]
    return G


def machine_state(R):
    """One line: the run's machine state (CPU, VM, load average before/after, memory
    available, file descriptors)."""
    mi = R["machine"]
    avail = None
    for line in (mi.get("free") or "").splitlines():
        if line.startswith("Mem:"):
            cols = line.split()
            avail = cols[-1] if len(cols) >= 7 else None
    return (f"{mi.get('cpu')} ({'a VM' if mi.get('hypervisor') else 'bare metal'}, cpuinfo MHz "
            f"{mi.get('mhz', '?')}), load average before the run {R['load_before']}, after "
            f"{R.get('load_after', '?')}; memory available {avail or '?'} MiB; `ulimit -n` "
            f"{mi.get('nofile')}; {R['mode']} sizes")


def table(G, R):
    """The Goals section (lines)."""
    L = ["## Goals\n",
         f"Machine state of this run: {machine_state(R)}. A load average above ~0.5 before the run "
         "means other work competed: the ratios are then noisier (each compares clients of the "
         "same run). Issue 15's goals first, then the earlier goals still in force.\n",
         "| goal | result | measured | if missed: profile, what would close it |",
         "|---|---|---|---|"]
    for g in G:
        refs = ", ".join(g["refs"]) if g["ok"] is False else ""
        L.append(f"| {g['name']} | {VERDICT[g['ok']]} | {g['measured']} | {refs} |")
    L.append("")
    L.append("How the W3 goal is measured: *call → last byte* is from CLOCK_MONOTONIC just before "
             "the call to the proxy's read of the last body byte of the call's last request "
             "(chunk); *acceptance* is the server's part of that time, from the last byte of the "
             "chunks sent before the last one to the first byte of the last answer to them "
             "(the proxy logs each request's answer time; 0 for a call of one request); the bare "
             "encode is the median warm encode of the same batch as one protobuf message. Met "
             "when (call → last byte − acceptance) ≤ 2 × encode, medians over the calls.\n")
    return L


def slug(heading, seen):
    """GitHub's anchor of a heading (punctuation dropped, spaces to hyphens, numbered
    repeats)."""
    s = "".join(ch for ch in heading.strip().lower() if ch.isalnum() or ch in " -_").replace(" ", "-")
    k = seen.get(s, 0)
    seen[s] = k + 1
    return s if k == 0 else f"{s}-{k}"


def resolve(text):
    """Replaces every `ref()` token by a link to the first heading line starting with its prefix,
    or by "(label: not in this run)"."""
    seen = {}
    heads = [(line, slug(h, seen)) for line, h in re.findall(r"^(#+ (.*))$", text, re.M)]

    def one(m):
        prefix, label = m.group(1), m.group(2)
        for h, sl in heads:
            if h.startswith(prefix):
                return f"[{label}](#{sl})"
        return f"{label}: not in this run"

    return re.sub(r"⟦([^|⟧]*)\|([^⟧]*)⟧", one, text)


def plain(g):
    """A goal's references as plain text (for the driver's log)."""
    return ", ".join(re.sub(r"⟦[^|⟧]*\|([^⟧]*)⟧", r"\1", x) for x in g["refs"])
