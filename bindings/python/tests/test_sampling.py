"""Sampling: 500 concurrent sample_async calls from one event loop, logprobs, determinism."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from tinkex import types


def _os_threads() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def test_500_concurrent_sample_async_from_one_event_loop(shared_sampler):
    sc = shared_sampler
    peak = {"py": 0, "os": 0}

    async def main():
        prompts = [types.ModelInput.from_ints([1 + i % 200, 2, 3]) for i in range(500)]
        params = types.SamplingParams(max_tokens=4, temperature=1.0)
        started = time.monotonic()
        tasks = [asyncio.ensure_future(sc.sample_async(p, 1, params)) for p in prompts]

        async def watch():
            while not all(t.done() for t in tasks):
                peak["py"] = max(peak["py"], threading.active_count())
                peak["os"] = max(peak["os"], _os_threads())
                await asyncio.sleep(0.005)

        results, _ = await asyncio.gather(asyncio.gather(*tasks), watch())
        return results, time.monotonic() - started

    before_py, before_os = threading.active_count(), _os_threads()
    results, elapsed = asyncio.run(main())
    assert len(results) == 500
    assert all(isinstance(r, types.SampleResponse) and len(r.sequences[0].tokens) == 4 for r in results)
    # No thread per request: Python threads unchanged, OS threads bounded by the runtime's.
    assert peak["py"] <= before_py + 1
    assert peak["os"] <= before_os + 16, (before_os, peak)
    print(f"500 samples in {elapsed:.2f}s, threads py {before_py}->{peak['py']} os {before_os}->{peak['os']}")


def test_sample_futures_await_and_result(shared_sampler):
    sc = shared_sampler
    prompt = types.ModelInput.from_ints(list(b"hello"))
    params = types.SamplingParams(max_tokens=6, seed=42, temperature=1.0)
    a = sc.sample(prompt, num_samples=3, sampling_params=params).result(timeout=30)
    b = asyncio.run(sc.sample(prompt, 3, params).result_async())
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]
    assert all(s.stop_reason in ("length", "stop") and len(s.logprobs) == len(s.tokens) for s in a.sequences)
    assert a.sequences[0].sequence_id


def test_prompt_logprobs_and_compute_logprobs(shared_sampler):
    sc = shared_sampler
    prompt = types.ModelInput.from_ints(list(b"logprobs"))
    lps = sc.compute_logprobs(prompt).result(timeout=30)
    assert lps[0] is None and len(lps) == prompt.length and all(x < 0 for x in lps[1:])
    res = sc.sample(prompt, 1, types.SamplingParams(max_tokens=1), include_prompt_logprobs=True, topk_prompt_logprobs=2).result(timeout=30)
    assert res.prompt_logprobs[1:] == pytest.approx(lps[1:], rel=1e-5)
    assert res.topk_prompt_logprobs is not None and len(res.topk_prompt_logprobs[1]) == 2
    last = sc.compute_logprobs(prompt, prompt_logprobs_last_n=3).result(timeout=30)
    assert last[-3:] == pytest.approx(lps[-3:], rel=1e-5)


