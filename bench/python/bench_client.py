"""Python side of the benchmark suite: the same workloads as ``tinkex-bench`` (bench/rust),
run with either libtinkex's Python binding (``--sdk tinkex``) or the official SDK
(``--sdk tinker``, tinker==0.38.0) through the very same code — the binding is a drop-in
(``import tinkex as tinker``). Prints one JSON object on the last line of stdout.

    python bench_client.py --sdk tinkex|tinker sample   --base-url URL --total N --inflight K
    python bench_client.py --sdk tinkex|tinker memory   --base-url URL --n N --hold-ms MS
    python bench_client.py --sdk tinkex|tinker rss      --base-url URL --n N --hold-ms MS
    python bench_client.py --sdk tinkex|tinker recovery --base-url URL --n N --hold-ms MS --outage-ms MS
    python bench_client.py --sdk tinkex|tinker fwdbwd   --base-url URL --datums D --tokens T --reps R
    python bench_client.py --sdk tinkex|tinker train    --base-url URL --steps S --datums D --tokens T --faults JSON
    python bench_client.py --sdk tinkex|tinker pollfault --base-url URL --status 503 --window-ms MS

Times are CLOCK_MONOTONIC (``time.monotonic``), comparable with the Rust side and the proxy.
CPU is ``getrusage(RUSAGE_SELF)`` (every thread of the process) around the measured window.
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import urllib.error
import urllib.request

BASE_MODEL = "Qwen/Qwen3-8B"
API_KEY = "tml-bench"
RETRIEVE = "/api/v1/retrieve_future"


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def rss_kb():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def percentile(sorted_xs, p):
    if not sorted_xs:
        return float("nan")
    import math

    rank = max(1, min(len(sorted_xs), math.ceil(p / 100.0 * len(sorted_xs))))
    return sorted_xs[rank - 1]


def latency_summary(lat):
    lat = sorted(lat)
    return {
        "lat_p50_ms": percentile(lat, 50) * 1e3,
        "lat_p99_ms": percentile(lat, 99) * 1e3,
        "lat_max_ms": (lat[-1] if lat else float("nan")) * 1e3,
        "lat_mean_ms": (sum(lat) / len(lat) if lat else float("nan")) * 1e3,
    }


# --- the emulator's control API (plain urllib, no SDK) -------------------------------------


def control(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base.rstrip("/") + "/_emulator/" + path,
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def requests_seen(base, path):
    return control(base, "GET", "requests")["requests"].get(path, 0)


async def wait_requests(base, path, target, timeout):
    """True once ``path`` saw ``target`` requests; False when the count stopped growing for
    2 s or ``timeout`` passed."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        seen = await loop.run_in_executor(None, requests_seen, base, path)
        if seen >= target:
            return True
        now = time.monotonic()
        if seen != last:
            last, since = seen, now
        if now > deadline or now - since > 2.0:
            return False
        await asyncio.sleep(0.05)


async def read_line():
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


# --- SDK plumbing ----------------------------------------------------------------------------


def load(sdk):
    if sdk == "tinkex":
        import tinkex as tinker
    else:
        import tinker
    return tinker


def resolve(x):
    """create_* return a future of the client (usable, deprecated, as the client in both
    SDKs): take the client itself."""
    r = getattr(x, "result", None)
    return r() if callable(r) else x


def service(tinker, base):
    return tinker.ServiceClient(base_url=base, api_key=API_KEY)


def sampler(tinker, svc):
    return resolve(svc.create_sampling_client(base_model=BASE_MODEL))


def sample_args(tinker, a):
    prompt = tinker.types.ModelInput.from_ints([1000 + i for i in range(a.prompt_tokens)])
    params = tinker.types.SamplingParams(max_tokens=a.max_tokens)
    return prompt, params


async def closed_loop(sc, prompt, params, total, inflight):
    todo = iter(range(total))
    lat = []
    errors = 0

    async def worker():
        nonlocal errors
        for _ in todo:
            t = time.monotonic()
            try:
                await sc.sample(prompt=prompt, num_samples=1, sampling_params=params)
            except Exception as e:  # counted, not fatal
                errors += 1
                if errors <= 3:
                    print(f"sample failed: {type(e).__name__}: {e}", file=sys.stderr)
            lat.append(time.monotonic() - t)

    await asyncio.gather(*[worker() for _ in range(min(inflight, total))])
    return lat, errors


async def start_all(sc, prompt, params, n):
    """n samples submitted at once; each task returns (ok, completion time)."""

    async def one():
        try:
            await sc.sample(prompt=prompt, num_samples=1, sampling_params=params)
            ok = True
        except Exception as e:
            ok = False
            print(f"sample failed: {type(e).__name__}: {e}", file=sys.stderr)
        return ok, time.monotonic()

    return [asyncio.ensure_future(one()) for _ in range(n)]


# --- workloads -------------------------------------------------------------------------------


def w_sample(tinker, a):
    svc = service(tinker, a.base_url)
    sc = sampler(tinker, svc)
    prompt, params = sample_args(tinker, a)

    async def main():
        if a.warmup:
            await closed_loop(sc, prompt, params, a.warmup, min(a.inflight, a.warmup))
        u0, s0 = cpu()
        t0 = time.monotonic()
        lat, errors = await closed_loop(sc, prompt, params, a.total, a.inflight)
        wall = time.monotonic() - t0
        u1, s1 = cpu()
        r, h = rss_kb()
        out = {
            "requests": a.total, "inflight": a.inflight, "errors": errors, "wall_s": wall,
            "rps": a.total / wall, "cpu_user_s": u1 - u0, "cpu_sys_s": s1 - s0,
            "cpu_per_req_us": (u1 - u0 + s1 - s0) / a.total * 1e6, "rss_kb": r, "hwm_kb": h,
        }
        out.update(latency_summary(lat))
        return out

    return asyncio.run(main())


def w_memory(tinker, a):
    svc = service(tinker, a.base_url)
    sc = sampler(tinker, svc)
    prompt, params = sample_args(tinker, a)

    async def main():
        await closed_loop(sc, prompt, params, 100, 100)
        before = requests_seen(a.base_url, RETRIEVE)
        control(a.base_url, "POST", "faults", {"path": RETRIEVE, "latency_ms": a.hold_ms, "count": a.n})
        rss0, _ = rss_kb()
        t0 = time.monotonic()
        tasks = await start_all(sc, prompt, params, a.n)
        submitted = time.monotonic() - t0
        held = await wait_requests(a.base_url, RETRIEVE, before + a.n, max(1.0, a.hold_ms / 1e3 - 2))
        held_s = time.monotonic() - t0
        rss1, _ = rss_kb()
        seen = requests_seen(a.base_url, RETRIEVE) - before
        out = {
            "n": a.n, "all_polls_held": held, "polls_seen": seen, "rss_before_kb": rss0,
            "rss_inflight_kb": rss1, "submit_s": submitted, "held_s": held_s,
        }
        if a.no_wait:
            out["hwm_kb"] = rss_kb()[1]
            return out
        results = await asyncio.gather(*tasks)
        rss2, hwm = rss_kb()
        out.update({"errors": sum(1 for ok, _ in results if not ok), "rss_after_kb": rss2,
                    "hwm_kb": hwm, "done_s": time.monotonic() - t0})
        return out

    return asyncio.run(main())


def fds():
    """Open file descriptors of this process, and how many of them are sockets."""
    n = socks = 0
    for fd in os.listdir("/proc/self/fd"):
        n += 1
        try:
            socks += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n, socks


def w_rss(tinker, a):
    """As ``tinkex-bench rss``: N samples submitted at once while each takes ``--hold-ms`` on
    the server (``/_emulator/delays {"Sample": MS}``), polled per future or by the batched
    poller (the server's ``sample_use_retrieve_futures``); the RSS is read once the server
    holds ``--expect`` of them (default N; fewer when the client bounds its concurrent calls)
    and, polled per future, has their first polls, or the counts stopped growing for
    ``--stall-ms``. Exits right after the reading."""
    svc = service(tinker, a.base_url)
    sc = sampler(tinker, svc)
    prompt, params = sample_args(tinker, a)
    batched_path = "/api/v1/retrieve_futures"

    async def main():
        await closed_loop(sc, prompt, params, 100, 100)
        loop = asyncio.get_running_loop()
        get = lambda path: loop.run_in_executor(None, control, a.base_url, "GET", path)
        seen = lambda path: loop.run_in_executor(None, requests_seen, a.base_url, path)
        batched = bool((await get("flags"))["client_config"].get("sample_use_retrieve_futures"))
        control(a.base_url, "POST", "delays", {"Sample": a.hold_ms})
        p0 = (await get("futures"))["pending"]
        polls0, batch0 = await seen(RETRIEVE), await seen(batched_path)
        rss0, _ = rss_kb()
        fd0, sock0 = fds()
        t0 = time.monotonic()
        tasks = await start_all(sc, prompt, params, a.n)
        submitted = time.monotonic() - t0
        deadline = t0 + a.hold_ms / 1e3 * 0.75
        expect = a.expect or a.n
        last, since = None, time.monotonic()
        while True:
            p = (await get("futures"))["pending"] - p0
            polls = expect if batched else await seen(RETRIEVE) - polls0
            if p >= expect and polls >= expect:
                all_held = True
                break
            now = time.monotonic()
            if (p, polls) != last:
                last, since = (p, polls), now
            if now > deadline or now - since > a.stall_ms / 1e3:
                all_held = False
                break
            await asyncio.sleep(0.05)
        held_s = time.monotonic() - t0
        rss1, hwm = rss_kb()
        fd1, sock1 = fds()
        del tasks
        return {
            "n": a.n, "batched": batched, "all_held": all_held,
            "server_pending": (await get("futures"))["pending"] - p0,
            "polls_seen": await seen(RETRIEVE) - polls0,
            "batched_polls_seen": await seen(batched_path) - batch0,
            "rss_before_kb": rss0, "rss_inflight_kb": rss1, "hwm_kb": hwm,
            "fds_before": fd0, "fds_inflight": fd1, "sockets_before": sock0,
            "sockets_inflight": sock1, "submit_s": submitted, "held_s": held_s,
        }

    return asyncio.run(main())


def w_recovery(tinker, a):
    """As ``tinkex-bench recovery``: alone, or ``--coordinated`` by the driver (READY /
    SUBMIT / SUBMITTED / OUTAGE <t0> <seconds> on stdin/stdout)."""
    svc = service(tinker, a.base_url)
    sc = sampler(tinker, svc)
    prompt, params = sample_args(tinker, a)

    async def main():
        await closed_loop(sc, prompt, params, 100, 100)
        out = {"n": a.n}
        if a.coordinated:
            print("READY", flush=True)
            assert await read_line() == "SUBMIT"
            tasks = await start_all(sc, prompt, params, a.n)
            await asyncio.sleep(0)  # let every task submit
            print("SUBMITTED", flush=True)
            _, t0, secs = (await read_line()).split()
            end = float(t0) + float(secs)
            out["all_polls_held"] = True
        else:
            before = requests_seen(a.base_url, RETRIEVE)
            control(a.base_url, "POST", "faults", {"path": RETRIEVE, "latency_ms": a.hold_ms, "count": a.n})
            tasks = await start_all(sc, prompt, params, a.n)
            out["all_polls_held"] = await wait_requests(
                a.base_url, RETRIEVE, before + a.n, max(1.0, a.hold_ms / 1e3 - 2))
            o0 = time.monotonic()
            control(a.base_url, "POST", "outage", {"duration_ms": a.outage_ms})
            out["outage_post_rtt_ms"] = (time.monotonic() - o0) * 1e3
            end = o0 + a.outage_ms / 1e3  # conservative: the server set the end after o0
        results = await asyncio.gather(*tasks)
        after = sorted(t - end for _, t in results)
        out.update({
            "errors": sum(1 for ok, _ in results if not ok),
            "completed_during_outage": sum(1 for d in after if d < 0),
            "recovery_first_s": after[0], "recovery_p50_s": percentile(after, 50),
            "recovery_max_s": after[-1],
        })
        return out

    return asyncio.run(main())


def make_data(tinker, sdk, datums, tokens):
    """The same batch as tinkex-bench's make_data: ids, targets (int64), weights (float32)."""
    import numpy as np

    types = tinker.types
    out = []
    for d in range(datums):
        ids = (d * 7919 + np.arange(tokens + 1, dtype=np.int64) * 31) % 150_000
        # The official SDK's ModelInput.from_ints takes a list; the binding takes the array.
        model_input = types.ModelInput.from_ints(ids[:-1] if sdk == "tinkex" else ids[:-1].tolist())
        out.append(
            types.Datum(
                model_input=model_input,
                loss_fn_inputs={
                    "target_tokens": types.TensorData.from_numpy(ids[1:].copy()),
                    "weights": types.TensorData.from_numpy(np.ones(tokens, dtype=np.float32)),
                },
            )
        )
    return out


def w_fwdbwd(tinker, a):
    svc = service(tinker, a.base_url)
    tc = resolve(svc.create_lora_training_client(base_model=BASE_MODEL, rank=32))
    tc.forward_backward(make_data(tinker, a.sdk, 1, 16), "cross_entropy").result()  # warm-up
    reps = []
    for _ in range(a.reps):
        data = make_data(tinker, a.sdk, a.datums, a.tokens)
        u0, s0 = cpu()
        t_call = time.monotonic()
        f = tc.forward_backward(data, "cross_entropy")
        t_ret = time.monotonic()
        ok = True
        try:
            f.result()
        except Exception as e:
            ok = False
            print(f"forward_backward failed: {type(e).__name__}: {e}", file=sys.stderr)
        t_done = time.monotonic()
        u1, s1 = cpu()
        reps.append({"t_call": t_call, "t_return": t_ret, "t_done": t_done, "ok": ok,
                     "cpu_s": u1 - u0 + s1 - s0})
    return {"reps": reps, "datums": a.datums, "tokens": a.tokens}


def journal_len(base):
    return len(control(base, "GET", "journal")["journal"])


def w_train(tinker, a):
    """The faults family's training loop: ``--steps`` × (forward_backward + optim_step,
    both submitted, then both awaited) on ``--datums`` × ``--tokens``, after set-up. The
    fault rules of ``--faults`` (a JSON list) are installed just before the loop and removed
    right after it; the journal positions bracketing the loop let the driver count what the
    emulator answered."""
    svc = service(tinker, a.base_url)
    tc = resolve(svc.create_lora_training_client(base_model=BASE_MODEL, rank=8))
    data = make_data(tinker, a.sdk, a.datums, a.tokens)
    adam = tinker.types.AdamParams(learning_rate=1e-3)
    rules = json.loads(a.faults) if a.faults else []
    # The emulator's fault draws come from one fixed-seed sequence: advance it by
    # --seed-draws draws (a throw-away rule on a path nothing else uses) so that runs differ.
    if a.seed_draws:
        control(a.base_url, "POST", "faults", {"path": "/api/v1/__bench_seed", "status": 404,
                                               "probability": 0.5})
        for _ in range(a.seed_draws):
            try:
                urllib.request.urlopen(urllib.request.Request(
                    a.base_url.rstrip("/") + "/api/v1/__bench_seed", headers={"x-api-key": API_KEY}),
                    timeout=30).read()
            except urllib.error.HTTPError:
                pass
        control(a.base_url, "DELETE", "faults")
    j0 = journal_len(a.base_url)
    for rule in rules:
        control(a.base_url, "POST", "faults", rule)
    errors = []
    t0 = time.monotonic()
    for _ in range(a.steps):
        try:
            fb = tc.forward_backward(data, "cross_entropy")
            op = tc.optim_step(adam)
            fb.result()
            op.result()
        except Exception as e:  # counted, not fatal
            errors.append(f"{type(e).__name__}: {e}"[:300])
    wall = time.monotonic() - t0
    control(a.base_url, "DELETE", "faults")
    j1 = journal_len(a.base_url)
    for e in errors[:3]:
        print(f"step failed: {e}", file=sys.stderr)
    return {"steps": a.steps, "wall_s": wall, "errors": len(errors), "journal_from": j0,
            "journal_to": j1, "rules": rules}


def w_pollfault(tinker, a):
    """One sample whose every ``retrieve_future`` poll is answered ``--status`` at once for
    ``--window-ms`` (a fault rule with that duration, installed just before the submission):
    when the result arrives, measured from the end of the window. The window's end is taken
    as (clock just before the install request) + window, so the recovery time is
    conservative by the install request's round trip. The driver counts the polls answered
    with the fault status in the emulator's journal."""
    svc = service(tinker, a.base_url)
    sc = sampler(tinker, svc)
    prompt, params = sample_args(tinker, a)
    sc.sample(prompt=prompt, num_samples=1, sampling_params=params).result()  # warm-up
    j0 = journal_len(a.base_url)
    t_install = time.monotonic()
    control(a.base_url, "POST", "faults", {"path": RETRIEVE, "status": a.status,
                                           "duration_ms": a.window_ms})
    t_installed = time.monotonic()
    ok, err = True, None
    try:
        sc.sample(prompt=prompt, num_samples=1, sampling_params=params).result(
            timeout=a.window_ms / 1e3 + a.result_timeout)
    except Exception as e:
        ok, err = False, f"{type(e).__name__}: {e}"[:300]
        print(f"sample failed: {err}", file=sys.stderr)
    t_done = time.monotonic()
    window_end = t_install + a.window_ms / 1e3
    return {"status": a.status, "window_ms": a.window_ms, "ok": ok, "error": err,
            "install_rtt_ms": (t_installed - t_install) * 1e3,
            "recovery_s": t_done - window_end, "total_s": t_done - t_install,
            "journal_from": j0, "journal_to": journal_len(a.base_url)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sdk", choices=["tinkex", "tinker"], required=True)
    p.add_argument("workload", choices=["sample", "memory", "rss", "recovery", "fwdbwd", "train", "pollfault"])
    p.add_argument("--base-url", required=True)
    p.add_argument("--total", type=int, default=20_000)
    p.add_argument("--inflight", type=int, default=1_000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--hold-ms", type=int, default=15_000)
    p.add_argument("--outage-ms", type=int, default=30_000)
    p.add_argument("--datums", type=int, default=256)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="train: training steps")
    p.add_argument("--faults", default="", help="train: JSON list of emulator fault rules")
    p.add_argument("--seed-draws", type=int, default=0,
                   help="train: advance the emulator's fault draws this many times first")
    p.add_argument("--status", type=int, default=503, help="pollfault: status of the polls")
    p.add_argument("--window-ms", type=int, default=5_000, help="pollfault: fault window")
    p.add_argument("--result-timeout", type=float, default=120.0,
                   help="pollfault: give up this many seconds after the window")
    p.add_argument("--no-wait", action="store_true", help="memory: exit right after the reading")
    p.add_argument("--expect", type=int, default=0,
                   help="rss: futures pending on the server before the reading (default --n)")
    p.add_argument("--stall-ms", type=int, default=5_000,
                   help="rss: read anyway once the counts stopped growing this long")
    p.add_argument("--coordinated", action="store_true", help="recovery: driven by bench/driver.py")
    a = p.parse_args()
    tinker = load(a.sdk)
    out = {"sample": w_sample, "memory": w_memory, "rss": w_rss, "recovery": w_recovery, "fwdbwd": w_fwdbwd,
           "train": w_train, "pollfault": w_pollfault}[a.workload](tinker, a)
    out["sdk"] = a.sdk
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    # Skip interpreter teardown (SDK background threads, atexit drains): measured already.
    os._exit(0)


if __name__ == "__main__":
    main()
