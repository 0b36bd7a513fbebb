"""Checks the emulator's sample arrivals after the cross-language run: every clone and the
origin sampled from one sampling session, concurrently, and no seq_id was used twice.

    python check.py <base_url> <work_dir> <min_samples_per_clone>
"""

import json
import sys
import urllib.request

base_url, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
origin = json.load(open(f"{work}/origin.json"))
session = origin["sampling_session_id"]
with urllib.request.urlopen(f"{base_url}/_emulator/sampling_capacity") as r:
    arrivals = json.load(r)["arrivals"]
mine = [a for a in arrivals if a.get("sampling_session_id") == session and a.get("seq_id") is not None]
seqs = [a["seq_id"] for a in mine]
dupes = sorted({s for s in seqs if seqs.count(s) > 1})
assert not dupes, f"seq_ids sent twice in {session}: {dupes}"
blocks = {}
for s in seqs:
    blocks.setdefault(s // 1_000_000_000, []).append(s)
clones = {c: v for c, v in blocks.items() if c >= 1}
assert 0 in blocks and len(blocks[0]) >= origin["samples"], f"origin samples missing: {sorted(blocks)}"
assert len(clones) == 2, f"expected two clone blocks (Elixir and C), got clone ids {sorted(clones)}"
for c, v in clones.items():
    assert len(v) >= n, f"clone {c}: {len(v)} samples, expected {n}"
# Concurrency: each clone's first request arrived before the origin's last one.
order = {a["seq_id"]: i for i, a in enumerate(mine)}
last_origin = max(order[s] for s in blocks[0])
for c, v in clones.items():
    assert min(order[s] for s in v) < last_origin, f"clone {c} did not overlap the origin"
print(f"cross-language: {len(seqs)} samples in {session}: origin {len(blocks[0])}, "
      + ", ".join(f"clone {c}: {len(v)}" for c, v in sorted(clones.items())) + "; no seq_id collision")
