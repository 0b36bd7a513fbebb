"""Growth curves (issue 15): how each cost grows with the work.

* C1 `inflight`: samples/s and CPU per request vs requests in flight (closed loop), for the
  Rust API, the Python binding, the official SDK and the raw loop;
* C2 `rss`: RSS vs sample futures in flight, polled per future (`retrieve_future`) and by
  the batched poller (`retrieve_futures`, the server's `sample_use_retrieve_futures`), up
  to where the machine's file descriptors and loopback ports allow;
* C3 `batch`: forward_backward call → last byte on the wire vs batch size, through the W3
  wire-timing proxy, with the bare protobuf encode of each size for reference.

Each curve has a table, a chart (`docs/benchmarks-<curve>.png`) and a sentence computed from
the data (harness/growth.py). The workloads reuse the clients' `sample`, `rss` and `fwdbwd`
subcommands."""

import json
import os
import re
import resource
import signal
import subprocess

from . import growth, settings
from .settings import BENCH, CLIENTS, EMU, log
from .processes import Child, Emulator, client_cmd, run_client
from .stats import fmt, med

SHORT = {"rust": "Rust API", "python": "Python binding", "official": "official SDK",
         "raw": "raw loop", "ffi": "C ABI"}
COLORS = {"rust": "#1f77b4", "ffi": "#17becf", "python": "#2ca02c", "raw": "#7f7f7f",
          "official": "#d62728"}
BATCHED_FLAG = json.dumps({"sample_use_retrieve_futures": True})


# ---------------------------------------------------------------------------------------------
# The machine's and the server's limits
# ---------------------------------------------------------------------------------------------


def machine_limits():
    """File descriptors (this process's soft/hard limits, inherited by every child),
    loopback ephemeral ports, TIME_WAIT reuse."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lim = {"nofile_soft": soft, "nofile_hard": hard}
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        lim["ports"] = hi - lo + 1
        lim["port_range"] = f"{lo}–{hi}"
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/sys/net/ipv4/tcp_tw_reuse") as f:
            lim["tw_reuse"] = f.read().strip()
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            m = re.search(r"MemTotal:\s+(\d+)", f.read())
        lim["mem_total_mib"] = int(m.group(1)) // 1024 if m else None
    except OSError:
        pass
    return lim


def server_limits():
    """What the server imposes in these runs: the `client/config` flags the clients obey
    (from a fresh emulator), its sampling capacity per API key, and its defaults for the
    long-poll hold and the body size (from `tinkex-emulator --help`)."""
    out = {}
    emu = Emulator("curves.limits")
    try:
        out["client_config"] = emu.control("GET", "flags").get("client_config", {})
        out["capacity"] = emu.control("GET", "sampling_capacity").get("settings", {})
    except Exception as e:  # reported, not fatal
        out["error"] = str(e)
    finally:
        emu.stop()
    try:
        usage = subprocess.run([EMU, "--help"], capture_output=True, text=True, timeout=10)
        text = usage.stdout + usage.stderr
        m = re.search(r"--poll-hold-ms MS.*?\(default (\d+)\)", text)
        out["poll_hold_ms"] = int(m.group(1)) if m else None
        m = re.search(r"--max-body-bytes B.*?\(default ([^)]+)\)", text)
        out["max_body"] = m.group(1) if m else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _n(x):
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)


def limits_line(R):
    """One paragraph: the server's and the machine's limits in force."""
    sl, ml = R.get("server_limits") or {}, R.get("machine_limits") or {}
    cc = {k: _n(v) for k, v in (sl.get("client_config") or {}).items()}
    cap = (sl.get("capacity") or {}).get("per_key")
    parts = []
    if cc:
        parts.append(
            f"the emulator's `client/config` (defaults of the service): "
            f"`sample_max_concurrent_requests` {cc.get('sample_max_concurrent_requests', '–')} "
            f"(the SDKs' bound on concurrent sample calls; the raw loop has none), "
            f"`sample_use_retrieve_futures` {cc.get('sample_use_retrieve_futures', 'False').lower()} "
            "(C2's batched points turn it on), "
            f"`sample_dispatch_bytes_semaphore_size` {cc.get('sample_dispatch_bytes_semaphore_size', '–')} B, "
            f"`fwdbwd_max_chunk_len` {cc.get('fwdbwd_max_chunk_len', '–')}, "
            f"`fwdbwd_max_chunk_bytes_count` {cc.get('fwdbwd_max_chunk_bytes_count', '–')} B, "
            f"`fwdbwd_dispatch_bytes_semaphore_size` {cc.get('fwdbwd_dispatch_bytes_semaphore_size', '–')} B")
    parts.append(f"sampling capacity per API key: {'unlimited' if cap is None else f'{cap:,}'}")
    if sl.get("poll_hold_ms"):
        parts.append(f"long-poll hold {sl['poll_hold_ms'] / 1e3:g} s")
    if sl.get("max_body"):
        parts.append(f"largest request body {sl['max_body']}")
    m = (f"`ulimit -n` {_n(ml.get('nofile_soft', '?'))} (hard {_n(ml.get('nofile_hard', '?'))}) for the client "
         f"and for the emulator, {_n(ml.get('ports', '?'))} loopback ephemeral ports "
         f"({ml.get('port_range', '?')}) per server address, `tcp_tw_reuse` {ml.get('tw_reuse', '?')}")
    return "Server limits in force: " + "; ".join(parts) + ". Machine limits: " + m + "."


def limit_hit(name):
    """Which machine limit a run's stderr (client and emulator) names, if any."""
    found = []
    for suffix in ("", ".emulator"):
        p = os.path.join(settings.LOG_DIR, f"{name}{suffix}.stderr")
        try:
            with open(p, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        who = "emulator" if suffix else "client"
        if re.search(r"Too many open files|os error 24|EMFILE", text):
            found.append(f"file descriptors (`ulimit -n`) in the {who}")
        if re.search(r"Cannot assign requested address|os error 99|EADDRNOTAVAIL", text):
            found.append(f"ephemeral ports in the {who}")
    return ", ".join(found) or None


# ---------------------------------------------------------------------------------------------
# C1: throughput and CPU per request vs requests in flight
# ---------------------------------------------------------------------------------------------


def w_inflight(S, R):
    """Closed-loop sampling at each in-flight count; every client; each point a fresh
    emulator and client process. Total requests per point: the size's total, at least
    `curve_total_factor` × in flight; warm-up: at least the in-flight count (every
    connection opened before the window)."""
    R.setdefault("machine_limits", machine_limits())
    R.setdefault("server_limits", server_limits())
    clients = ["rust", "python", "raw"] + (["official"] if R["have_official"] else [])
    out = {c: [] for c in clients}
    for k in S["curve_inflight"]:
        for c in clients:
            base = S["curve_total_official"] if c == "official" else S["curve_total"]
            total = max(base, S["curve_total_factor"] * k)
            warm = max(S["curve_warmup"], min(k, total))
            name = f"c1.{c}.{k}"
            log(f"C1 in flight {k:,}: {c} ({total:,} requests, {warm:,} warm-up)")
            r = run_client(name, c, "sample", {"total": total, "inflight": k, "warmup": warm},
                           timeout=S["curve_timeout_s"])
            row = {"inflight": k, "total": total}
            if r:
                row.update({key: r.get(key) for key in (
                    "rps", "cpu_per_req_us", "lat_p50_ms", "lat_p99_ms", "errors", "proc_maxrss_kb")})
            else:
                row["limit"] = limit_hit(name) or "no result"
            out[c].append(row)
    R["curve_inflight"] = out


# ---------------------------------------------------------------------------------------------
# C2: RSS vs futures in flight
# ---------------------------------------------------------------------------------------------


def w_rss(S, R):
    """RSS with N sample futures pending on the server, polled per future and batched. A
    per-future point that needs more sockets than `ulimit -n` or loopback ports allow is not
    run (the reason is reported); a batched point is run, and a machine limit named in the
    processes' stderr is reported with it. Polled per future, the SDKs send at most
    `sample_max_concurrent_requests` calls at once (12.6; the rest wait in the client): a
    point is complete when that many are pending on the server with their first polls; the
    batched poller lifts the bound, so there all N must be pending."""
    ml = R.setdefault("machine_limits", machine_limits())
    sl = R.setdefault("server_limits", server_limits())
    smcr = (sl.get("client_config") or {}).get("sample_max_concurrent_requests")
    clients = ["rust", "python"] + (["official"] if R["have_official"] else [])
    out = {"per_future": {c: [] for c in clients}, "batched": {c: [] for c in clients}}
    for mode, sizes in (("per_future", S["rss_per_future"]), ("batched", S["rss_batched"])):
        for n in sizes:
            for c in clients:
                if c == "official" and n > S["rss_official_max"]:
                    continue
                bound = min(n, smcr) if mode == "per_future" and smcr else n
                row = {"n": n, "bound": bound}
                out[mode][c].append(row)
                if mode == "per_future":
                    # A pending poll holds one connection: a socket in the client and one in
                    # the emulator, each from one loopback port range towards one address.
                    need = bound + S["rss_fd_margin"]
                    if need > ml["nofile_soft"]:
                        row["limit"] = (f"not run: ~{need:,} sockets needed, `ulimit -n` is "
                                        f"{ml['nofile_soft']:,}")
                        continue
                    if bound > ml.get("ports", bound):
                        row["limit"] = (f"not run: {bound:,} connections to one address, "
                                        f"{ml['ports']:,} ephemeral ports")
                        continue
                hold = S["rss_hold_ms"] + int(n * S["rss_hold_ms_per_future"][c])
                name = f"c2.{mode}.{c}.{n}"
                log(f"C2 RSS {mode.replace('_', '-')}: {c}, {n:,} futures (server holds each {hold / 1e3:.0f} s)")
                r = run_client(name, c, "rss", {"n": n, "hold-ms": hold, "expect": bound,
                                                "stall-ms": S["rss_stall_ms"]},
                               timeout=hold / 1e3 + 120,
                               emu_args=["--client-config", BATCHED_FLAG] if mode == "batched" else ())
                if r:
                    row.update({k: r.get(k) for k in (
                        "rss_before_kb", "rss_inflight_kb", "hwm_kb", "all_held", "server_pending",
                        "polls_seen", "batched_polls_seen", "fds_inflight", "sockets_inflight",
                        "submit_s", "held_s", "batched", "proc_maxrss_kb")})
                    polls = n if mode == "batched" else r.get("polls_seen", 0)
                    row["complete"] = (r.get("server_pending", 0) >= bound and polls >= bound
                                       and r.get("batched") == (mode == "batched"))
                    if r.get("batched") != (mode == "batched"):
                        row["limit"] = "the server's flag did not take effect"
                    elif row["complete"] and bound < n:
                        row["limit"] = (f"{bound:,} calls at once (`sample_max_concurrent_requests`); "
                                        f"{n - bound:,} wait in the client")
                if not r or not row.get("complete"):
                    hit = limit_hit(name)
                    row["limit"] = hit or row.get("limit") or (
                        "no result" if not r else
                        f"{r.get('server_pending', 0):,} of {bound:,} pending on the server when "
                        "the counts stopped growing")
    R["curve_rss"] = out


def growth_kib(row):
    """RSS growth per future (KiB) of a complete C2 point, or None."""
    if row.get("rss_inflight_kb") is None or not row.get("complete"):
        return None
    return (row["rss_inflight_kb"] - row["rss_before_kb"]) / row["n"]


def rss_at(R, mode, client, n):
    """The C2 row of (mode, client) at n futures, if measured with every future held."""
    for row in ((R.get("curve_rss") or {}).get(mode) or {}).get(client, []):
        if row["n"] == n and row.get("rss_inflight_kb") is not None and row.get("complete"):
            return row
    return None


def where_limits_bind(R):
    """C2's generated sentence on the machine's limits: per polling mode, the sockets each
    pending call holds (the slope of sockets over calls at once between a client's smallest
    and largest complete point), where `ulimit -n` and the loopback ports would bind at that
    rate, the points not run or stopped by a limit, and — when sockets do not grow — the
    memory at the largest point."""
    ml = R.get("machine_limits") or {}
    smcr = ((R.get("server_limits") or {}).get("client_config") or {}).get("sample_max_concurrent_requests")
    c2 = R.get("curve_rss") or {}
    out = []
    for mode, label in (("per_future", "Polled per future"), ("batched", "With the batched poller")):
        rows = [(c, r) for c, rs in (c2.get(mode) or {}).items() for r in rs]
        done = [(c, r) for c, r in rows if r.get("complete") and r.get("sockets_inflight") is not None]
        if not done:
            continue
        rates = []
        for c in {c for c, _ in done}:
            pts = sorted((r["bound"], r["sockets_inflight"]) for cc, r in done if cc == c)
            if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
                rate = (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])
                rates.append((rate, pts[0][1] - rate * pts[0][0]))
        top_n = max(r["n"] for _, r in done)
        top_sock = max(r["sockets_inflight"] for _, r in done)
        rate, base = max(rates) if rates else (None, 0)
        if rate is not None and rate >= 0.5 and ml.get("nofile_soft"):
            fd_at = (ml["nofile_soft"] - base) / rate
            text = (f"{label}, each call on the wire holds {rate:.2f} sockets of the client (one "
                    f"connection per pending poll), so `ulimit -n` {ml['nofile_soft']:,} binds at "
                    f"about {fd_at:,.0f} calls at once")
            if ml.get("ports"):
                text += f" and the {ml['ports']:,} loopback ports at about {ml['ports'] / rate:,.0f}"
            if smcr:
                text += (f"; the SDKs' {smcr:,} calls at once (`sample_max_concurrent_requests`) "
                         + ("keep both out of reach" if smcr < min(fd_at, ml.get("ports", fd_at) / rate)
                            else "do not keep them out of reach")
                         + f" (most sockets seen: {top_sock:,})")
        else:
            mem = ml.get("mem_total_mib")
            at = ", ".join(
                f"{SHORT[c]} {r['rss_inflight_kb'] / 1024:,.0f} MiB"
                + (f" ({r['rss_inflight_kb'] / 1024 / mem * 100:.0f} % of the machine's {mem:,} MiB)" if mem else "")
                for c, r in done if r["n"] == top_n)
            text = (f"{label}, the client's sockets stay at {top_sock:,} or fewer up to {top_n:,} "
                    "futures, so neither file descriptors nor loopback ports bind; memory grows "
                    f"instead: at {top_n:,} futures, {at}")
        stopped = sorted({r["limit"] for _, r in rows if r.get("limit") and (
            r["limit"].startswith("not run") or "file descriptors" in r["limit"] or "ephemeral" in r["limit"])})
        if stopped:
            text += "; stopped by the machine: " + "; ".join(stopped)
        out.append(text + ".")
    return " ".join(out)


# ---------------------------------------------------------------------------------------------
# C3: forward_backward call → last byte vs batch size
# ---------------------------------------------------------------------------------------------


def acceptance(proxy_log, reps):
    """Per call (as `workloads.wire_times` groups requests), the server's acceptance of the
    earlier chunks: from the last byte of the chunks sent before the last one to the first
    byte of the last answer to them (the proxy's `t_resp`); 0 for a call of one request;
    None when an answer time is missing."""
    from .workloads import requests_per_call

    out = []
    for mine in requests_per_call(proxy_log, reps):
        if not mine:
            out.append(None)
        elif len(mine) == 1:
            out.append(0.0)
        elif any("t_resp" not in r for r in mine[:-1]):
            out.append(None)
        else:
            early = mine[:-1]
            out.append(max(0.0, max(r["t_resp"] for r in early) - max(r["t_last"] for r in early)) * 1e3)
    return out


def fwdbwd_point(name, client, datums, tokens, reps, timeout):
    """One client process of `reps` forward_backward calls of datums × tokens through the
    wire-timing proxy: per call, the wire times plus the acceptance of the earlier chunks."""
    from .workloads import wire_times

    emu = Emulator(name)
    plog = os.path.join(settings.LOG_DIR, f"{name}.proxy.jsonl")
    if os.path.exists(plog):
        os.remove(plog)
    proxy = Child(f"{name}.proxy", [BENCH, "proxy", "--upstream", emu.url, "--log", plog])
    purl = proxy.line(30)
    try:
        cmd, env = client_cmd(client, "fwdbwd", {"base-url": purl, "datums": datums,
                                                  "tokens": tokens, "reps": reps})
        child = Child(name, cmd, env)
        r = child.wait(timeout)
        maxrss = child.rusage.ru_maxrss if child.rusage else None
    finally:
        proxy.kill(signal.SIGTERM)
        proxy.reap()
        emu.stop()
    if not r:
        return None
    times = wire_times(plog, r["reps"])
    for t, a in zip(times, acceptance(plog, r["reps"])):
        if t:
            t["accept_ms"] = a
            t["maxrss_kb"] = maxrss
    return times


def w_batch(S, R):
    """forward_backward of T tokens (datums of `batch_datum_tokens`), each size a fresh
    emulator, proxy and client; the bare encode of each size (`tinkex-bench encode`)."""
    R.setdefault("machine_limits", machine_limits())
    R.setdefault("server_limits", server_limits())
    clients = ["rust", "python"] + (["official"] if R["have_official"] else [])
    dt = S["batch_datum_tokens"]
    out = {c: [] for c in clients}
    enc = []
    for t in S["batch_tokens"]:
        datums, tokens = max(1, t // dt), min(t, dt)
        reps = S["batch_reps"] if t <= S["batch_reps_upto"] else 1
        for c in clients:
            row = {"tokens": datums * tokens, "datums": datums}
            out[c].append(row)
            if c == "official" and t > S["batch_official_max"]:
                row["limit"] = "not run (size)"
                continue
            log(f"C3 forward_backward {datums:,}×{tokens:,} tokens: {c} ({reps} calls)")
            xs = fwdbwd_point(f"c3.{c}.{t}", c, datums, tokens, reps, S["curve_timeout_s"])
            xs = [x for x in xs or [] if x and x.get("ok")]
            if not xs:
                row["limit"] = limit_hit(f"c3.{c}.{t}") or "no result"
                continue
            row.update({
                "last_ms": med([x["last_ms"] for x in xs]),
                "first_ms": med([x["first_ms"] for x in xs]),
                "return_ms": med([x["return_ms"] for x in xs]),
                "done_ms": med([x["done_ms"] for x in xs]),
                "accept_ms": med([x["accept_ms"] for x in xs]),
                "cpu_ms": med([x["cpu_ms"] for x in xs]),
                "requests": xs[0]["requests"], "bytes": xs[0]["bytes"], "calls": len(xs),
                "maxrss_kb": xs[0].get("maxrss_kb"),
            })
        log(f"C3 bare encode {datums:,}×{tokens:,}")
        e = Child(f"c3.encode.{t}", [BENCH, "encode", "--datums", str(datums), "--tokens",
                                     str(tokens), "--reps", str(max(2, reps + 1))]).wait(S["curve_timeout_s"])
        es = [x * 1e3 for x in (e or {}).get("encode_s", [])]
        enc.append({"tokens": datums * tokens, "encode_ms": med(es[1:] or es),
                    "chunked_ms": med([x * 1e3 for x in (e or {}).get("encode_chunked_s", [])][1:]),
                    "bytes": (e or {}).get("bytes"), "chunks": (e or {}).get("chunks")})
    R["curve_batch"] = {"clients": out, "encode": enc}


# ---------------------------------------------------------------------------------------------
# Report and charts
# ---------------------------------------------------------------------------------------------


def _series(rows, xkey, ykey):
    xs = [r[xkey] for r in rows if r.get(ykey) is not None]
    ys = [r[ykey] for r in rows if r.get(ykey) is not None]
    return xs, ys


def sentences(R):
    """The generated sentences of the curves: {curve: [sentence, ...]}."""
    out = {}
    c1 = R.get("curve_inflight") or {}
    if c1:
        order = [c for c in ("rust", "python", "official", "raw") if c in c1]
        out["inflight"] = [
            growth.sentence("Samples/s as requests in flight grow",
                            [(SHORT[c], *_series(c1[c], "inflight", "rps")) for c in order],
                            "in flight"),
            growth.sentence("CPU per request (flat = total CPU linear in requests)",
                            [(SHORT[c], *_series(c1[c], "inflight", "cpu_per_req_us")) for c in order],
                            "in flight"),
        ]
    c2 = R.get("curve_rss") or {}
    if c2:
        ser = []
        for mode, label in (("per_future", "per-future polling"), ("batched", "batched poller")):
            for c in ("rust", "python", "official"):
                rows = [dict(r, growth=(r["rss_inflight_kb"] - r["rss_before_kb"]) * 1024)
                        for r in (c2.get(mode) or {}).get(c, []) if growth_kib(r) is not None]
                if rows:
                    ser.append((f"{SHORT[c]} ({label})", *_series(rows, "n", "growth")))
        out["rss"] = [growth.sentence("RSS growth (in flight − before) as futures grow "
                                      "(linear = a constant cost per future)", ser, "futures")]
    c3 = R.get("curve_batch") or {}
    if c3:
        ser = [(SHORT[c], *_series(rows, "tokens", "last_ms")) for c, rows in c3["clients"].items()]
        ser.append(("the bare encode", *_series(c3.get("encode", []), "tokens", "encode_ms")))
        out["batch"] = [growth.sentence("Call → last byte on the wire as the batch grows",
                                        ser, "tokens")]
    return out


def section(R, S):
    """The "Growth curves" section of docs/benchmarks.md (lines), or [] when none ran."""
    if not any(R.get(k) for k in ("curve_inflight", "curve_rss", "curve_batch")):
        return []
    L = []
    w = L.append
    sent = sentences(R)
    w("## Growth curves\n")
    w("How each cost grows as the work grows (issue 15). Under each curve, the sentence is "
      "computed from its points: the log-log slope of each step between measured points "
      f"(1: the cost grows in proportion to the work; 0: it stays flat) is classed flat (|slope| ≤ "
      f"{growth.FLAT}), sublinear, linear (within {growth.LINEAR} of 1) or faster than linearly, "
      "and a change of class is where the curve bends. One run per point (a fresh emulator and "
      "client process each), so a single noisy point can show as a bend: compare with the "
      "neighbouring points.\n")
    w(limits_line(R) + "\n")

    c1 = R.get("curve_inflight") or {}
    if c1:
        order = [c for c in ("rust", "python", "official", "raw") if c in c1]
        w("### C1: samples/s and CPU per request vs requests in flight\n")
        w(f"Closed loop as in W1 (prompt 16 tokens, `max_tokens` 16), at each in-flight count: "
          f"{S['curve_total']:,} requests ({S['curve_total_official']:,} for the official SDK), "
          f"at least {S['curve_total_factor']}× the in-flight count, after a warm-up of at least "
          "the in-flight count (every connection is open before the window). CPU: "
          "getrusage around the window / requests.\n")
        for s in sent.get("inflight", []):
            w(s + "\n")
        w(f"![C1](benchmarks-inflight.png)\n")
        w("| in flight | " + " | ".join(f"{SHORT[c]} samples/s | CPU / request" for c in order) + " |")
        w("|---|" + "---|---|" * len(order))
        ks = sorted({r["inflight"] for c in order for r in c1[c]})
        for k in ks:
            cells = []
            for c in order:
                r = next((r for r in c1[c] if r["inflight"] == k), {})
                if r.get("rps") is None:
                    cells += [r.get("limit", "–"), ""]
                else:
                    err = f" ({r['errors']} errors)" if r.get("errors") else ""
                    cells += [fmt(r["rps"]) + err, fmt(r["cpu_per_req_us"], " µs")]
            w(f"| {k:,} | " + " | ".join(cells) + " |")
        w("")

    c2 = R.get("curve_rss") or {}
    if c2:
        w("### C2: RSS vs sample futures in flight\n")
        w("N samples submitted at once while the emulator takes "
          f"{S['rss_hold_ms'] / 1e3:g} s + N × "
          + ", ".join(f"{v:g} ms ({SHORT[c]})" for c, v in S["rss_hold_ms_per_future"].items())
          + " per sample "
          "(`/_emulator/delays {\"Sample\": ms}`), so every future stays pending however it is "
          "polled; *per-future polling* is the default (one long `retrieve_future` per pending "
          "call), *batched* runs against an emulator started with `--client-config "
          "'{\"sample_use_retrieve_futures\": true}'` (the clients read the flag from "
          "`client/config`; one `retrieve_futures` long poll per sampling session). VmRSS of "
          "the client is read once the emulator holds N more pending futures — polled per "
          "future, min(N, `sample_max_concurrent_requests`) with their first polls, as the SDKs "
          "send no more calls at once (12.6; the others wait in the client) — or when those "
          f"counts stopped growing for {S['rss_stall_ms'] / 1e3:g} s (a machine limit or a stalled "
          "client; the *limit* column says which). "
          "*Sockets* are the client's open sockets at the reading.\n")
        for s in sent.get("rss", []):
            w(s + "\n")
        bind = where_limits_bind(R)
        if bind:
            w(bind + "\n")
        w(f"![C2](benchmarks-rss.png)\n")
        w("| polling | client | futures | RSS before (MiB) | RSS in flight (MiB) | growth per future (KiB) | "
          "marginal per future vs previous point (KiB) | pending on the server | polls received meanwhile | sockets | all held after (s) | limit |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for mode, label in (("per_future", "per future"), ("batched", "batched")):
            for c in ("rust", "python", "official"):
                prev = None
                for r in (c2.get(mode) or {}).get(c, []):
                    g = growth_kib(r)
                    marg = None
                    if prev is not None and g is not None:
                        marg = ((r["rss_inflight_kb"] - r["rss_before_kb"]) - (prev["rss_inflight_kb"] - prev["rss_before_kb"])) / (r["n"] - prev["n"])
                    if g is not None:
                        prev = r
                    have = r.get("rss_inflight_kb") is not None
                    polls = r.get("batched_polls_seen") if mode == "batched" else r.get("polls_seen")
                    if have:
                        cells = [fmt(r["rss_before_kb"] / 1024, "", 1), fmt(r["rss_inflight_kb"] / 1024, "", 1),
                                 fmt(g, "", 2), fmt(marg, "", 2), f"{r.get('server_pending', 0):,}",
                                 "–" if polls is None else f"{polls:,}" + (" (batched)" if mode == "batched" else ""),
                                 str(r.get("sockets_inflight", "–")), fmt(r.get("held_s"), "", 2)]
                    else:
                        cells = ["–"] * 8
                    w(f"| {label} | {SHORT[c]} | {r['n']:,} | " + " | ".join(cells) + f" | {r.get('limit') or ''} |")
        w("")

    c3 = R.get("curve_batch") or {}
    if c3:
        w("### C3: forward_backward call → last byte on the wire vs batch size\n")
        w(f"Datums of {S['batch_datum_tokens']:,} tokens (as in W3: model input, int64 "
          "`target_tokens`, float32 `weights`), `cross_entropy`, through the W3 wire-timing "
          f"proxy; median over the calls of each point ({S['batch_reps']} "
          f"call{'s' if S['batch_reps'] > 1 else ''} up to {S['batch_reps_upto']:,} tokens, 1 above). "
          "*Acceptance* is the server's share (the first byte of the last answer to the chunks "
          "sent before the last one, minus those chunks' last byte); *(last − acceptance) / "
          "encode* is the W3 measure at each size. The bare encode is one message "
          "(`codec::forward_backward_request` + prost), warm.\n")
        for s in sent.get("batch", []):
            w(s + "\n")
        w(f"![C3](benchmarks-batch.png)\n")
        enc = {e["tokens"]: e for e in c3.get("encode", [])}
        w("| tokens | client | requests × MB | call returns (ms) | call → first byte (ms) | call → last byte (ms) | "
          "acceptance (ms) | bare encode (ms) | (last − acceptance) / encode | client CPU (ms) | peak RSS (MiB) |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for t in sorted(enc) or sorted({r["tokens"] for rows in c3["clients"].values() for r in rows}):
            for c, rows in c3["clients"].items():
                r = next((r for r in rows if r["tokens"] == t), None)
                if r is None:
                    continue
                e = enc.get(t, {})
                if r.get("last_ms") is None:
                    w(f"| {t:,} | {SHORT[c]} | {r.get('limit', '–')} | | | | | {fmt(e.get('encode_ms'))} | | | |")
                    continue
                ratio_ = ((r["last_ms"] - (r["accept_ms"] or 0)) / e["encode_ms"]
                          if e.get("encode_ms") and r.get("accept_ms") is not None else None)
                w(f"| {t:,} | {SHORT[c]} | {r['requests']} × {r['bytes'] / r['requests'] / 1e6:.2f} | "
                  f"{fmt(r['return_ms'])} | {fmt(r['first_ms'])} | {fmt(r['last_ms'])} | {fmt(r['accept_ms'])} | "
                  f"{fmt(e.get('encode_ms'))} | {fmt(ratio_, '×', 2)} | {fmt(r['cpu_ms'])} | "
                  f"{fmt(r['maxrss_kb'] / 1024 if r.get('maxrss_kb') else None, '', 0)} |")
        w("")
    return L


def note_values(R, S):
    """Numbers of the curves quoted by bench/NOTES.md."""
    v = {}
    n = S["mem_n"]
    for mode, tag in (("per_future", "pf"), ("batched", "batched")):
        for c in ("rust", "python", "official"):
            row = rss_at(R, mode, c, n)
            if row:
                v[f"c2_{c}_{tag}_kib"] = fmt(growth_kib(row), "", 1)
                v[f"c2_{c}_{tag}_mib"] = fmt(row["rss_inflight_kb"] / 1024, "", 0)
    done = [r for rows in ((R.get("curve_rss") or {}).get("batched") or {}).values() for r in rows
            if r.get("complete") and r.get("sockets_inflight") is not None]
    if done:
        v["c2_batched_sockets"] = f"{max(r['sockets_inflight'] for r in done):,}"
        v["c2_batched_top_n"] = f"{max(r['n'] for r in done):,}"
    return v


def charts(R, out_dir):
    """docs/benchmarks-inflight.png, -rss.png, -batch.png (those whose curve ran); the
    paths written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no curve charts")
        return []
    written = []

    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")

    def finish(ax, xlabel, ylabel, title):
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

    def save(fig, name):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig.tight_layout()
        p = os.path.join(out_dir, name)
        fig.savefig(p, dpi=100)
        plt.close(fig)
        written.append(p)

    c1 = R.get("curve_inflight") or {}
    if c1:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for c, rows in c1.items():
            for ax, key in ((axes[0], "rps"), (axes[1], "cpu_per_req_us")):
                xs, ys = _series(rows, "inflight", key)
                if xs:
                    ax.plot(xs, ys, "o-", color=COLORS[c], label=SHORT[c])
        for ax, title, yl in ((axes[0], "C1 samples/s vs requests in flight", "completed samples/s"),
                              (axes[1], "C1 client CPU per request vs requests in flight", "µs (user+sys)")):
            finish(ax, "requests in flight", yl, title)
        save(fig, "benchmarks-inflight.png")
    c2 = R.get("curve_rss") or {}
    if c2:
        fig, ax = plt.subplots(figsize=(8, 5))
        for mode, style in (("per_future", "o-"), ("batched", "s--")):
            for c, rows in (c2.get(mode) or {}).items():
                ok = [r for r in rows if r.get("rss_inflight_kb") is not None]
                if ok:
                    ax.plot([r["n"] for r in ok], [r["rss_inflight_kb"] / 1024 for r in ok], style,
                            color=COLORS[c], label=f"{SHORT[c]}, {mode.replace('_', '-')}")
        ax.axhline(50, color="black", ls=":", lw=1)
        ax.text(ax.get_xlim()[0] if ax.lines else 1, 50, " W5 goal, Rust API batched: 50 MiB", va="bottom", fontsize=8)
        finish(ax, "sample futures in flight", "client RSS (MiB)",
               "C2 RSS vs futures in flight (solid: per-future polling, dashed: batched poller)")
        save(fig, "benchmarks-rss.png")
    c3 = R.get("curve_batch") or {}
    if c3:
        fig, ax = plt.subplots(figsize=(8, 5))
        for c, rows in c3["clients"].items():
            xs, ys = _series(rows, "tokens", "last_ms")
            if xs:
                ax.plot(xs, ys, "o-", color=COLORS[c], label=f"{SHORT[c]}: call → last byte")
        xs, ys = _series(c3.get("encode", []), "tokens", "encode_ms")
        if xs:
            ax.plot(xs, ys, "k:", marker="x", label="bare protobuf encode")
        finish(ax, "forward_backward batch (tokens)", "ms",
               "C3 forward_backward: call → last byte on the wire vs batch size")
        save(fig, "benchmarks-batch.png")
    return written


def missing(R, only):
    """(curve, client) pairs with no measured point."""
    miss = []
    want = ["rust", "python"] + (["official"] if R["have_official"] else [])
    if not only or "c1" in only:
        for c in want + ["raw"]:
            if not any(r.get("rps") for r in (R.get("curve_inflight") or {}).get(c, [])):
                miss.append(f"curve_inflight/{c}")
    if not only or "c2" in only:
        for mode in ("per_future", "batched"):
            for c in want:
                if not any(r.get("rss_inflight_kb") for r in ((R.get("curve_rss") or {}).get(mode) or {}).get(c, [])):
                    miss.append(f"curve_rss/{mode}/{c}")
    if not only or "c3" in only:
        for c in want:
            if not any(r.get("last_ms") for r in ((R.get("curve_batch") or {}).get("clients") or {}).get(c, [])):
                miss.append(f"curve_batch/{c}")
    return miss
