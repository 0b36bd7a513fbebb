"""Cross-language sampler handle, the origin side (Python).

Creates a sampling client, writes its sampler handle to <work>/handle, then keeps sampling
until the Elixir and C clones have both finished (files <work>/elixir.done and <work>/c.done),
so the three clients sample from one sampling session at the same time. Writes the session id
and its own sample count to <work>/origin.json.

    python origin.py <base_url> <work_dir> <min_samples> <deadline_s>
"""

import json
import os
import sys
import time

import tinkex
from tinkex import types

base_url, work, min_samples, deadline_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
service = tinkex.ServiceClient(base_url=base_url, api_key="tml-cross-language")
sampler = service.create_sampling_client(base_model="Qwen/Qwen3-8B").result()
handle = sampler.get_sampler_handle()
tmp = os.path.join(work, "handle.tmp")
with open(tmp, "w") as f:
    f.write(handle)
os.replace(tmp, os.path.join(work, "handle"))

params = types.SamplingParams(max_tokens=4, temperature=0.7)
done = lambda: all(os.path.exists(os.path.join(work, n)) for n in ("elixir.done", "c.done"))
deadline = time.monotonic() + deadline_s
count = 0
while count < min_samples or not done():
    if time.monotonic() > deadline:
        sys.exit(f"origin: the clones did not finish within {deadline_s} s ({count} samples here)")
    # Two in flight at once, so the origin's requests interleave with the clones'.
    futs = [sampler.sample(types.ModelInput.from_ints([7, 8, 9 + i]), 1, params) for i in range(2)]
    for f in futs:
        assert f.result(timeout=60).sequences, "a sample without sequences"
    count += 2

import base64
session = json.loads(base64.urlsafe_b64decode(handle))["sampling_session_id"]
info = {"sampling_session_id": session, "samples": count}
with open(os.path.join(work, "origin.json"), "w") as f:
    json.dump(info, f)
service.close("success").result(timeout=30)
print(f"origin: {count} samples")
