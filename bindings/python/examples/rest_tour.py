"""A tour of the REST API, written against the official Tinker SDK's API: list training
runs, list checkpoints, publish one, set its TTL, export the weights with
``save_weights_external`` and download every file with a plain GET of its signed URL (no
credentials).

Runs unchanged with the official SDK and with tinkex: only the import differs, chosen by
``TINKEX_USE_OFFICIAL=1`` (``import tinker``) or not (``import tinkex as tinker``).

    TINKER_BASE_URL=http://127.0.0.1:PORT TINKER_API_KEY=tml-local python rest_tour.py

Prints what it sees and ``RESULT rest <module> files=<n> bytes=<n>``; exits non-zero on
any failure.
"""

import os
import sys
import tempfile
import urllib.request
from pathlib import Path

if os.environ.get("TINKEX_USE_OFFICIAL") == "1":
    import tinker
else:
    import tinkex as tinker

types = tinker.types

BASE_MODEL = os.environ.get("REST_BASE_MODEL", "Qwen/Qwen3-8B")


def train_a_little(service_client):
    """A run with one step and a checkpoint, so the tour has something to show."""
    tc = service_client.create_lora_training_client(base_model=BASE_MODEL, rank=4)
    tc = tc.result()
    tokens = list(b"REST tour: runs, checkpoints, publish, TTL, external weights.")
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )
    tc.forward_backward([datum], "cross_entropy").result()
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result()
    tc.save_weights_for_sampler("tour-sampler").result()
    return tc


def main() -> int:
    service_client = tinker.ServiceClient()
    tc = train_a_little(service_client)
    rest = service_client.create_rest_client()

    # 1. training runs
    runs = rest.list_training_runs(limit=10).result()
    print(f"{len(runs.training_runs)} training runs (of {runs.cursor.total_count}):")
    for run in runs.training_runs[:5]:
        print(f"  {run.training_run_id}  base={run.base_model}  lora_rank={run.lora_rank}")
    assert tc.model_id in [r.training_run_id for r in runs.training_runs] or runs.cursor.total_count > 10

    # 2. checkpoints of our run
    checkpoints = rest.list_checkpoints(tc.model_id).result().checkpoints
    for cp in checkpoints:
        print(f"  checkpoint {cp.tinker_path}  type={cp.checkpoint_type}  public={cp.public}")
    sampler = next(cp for cp in checkpoints if cp.checkpoint_type == "sampler")

    # 3. publish it (then unpublish), and 4. give it a TTL of a day (then clear it)
    rest.publish_checkpoint_from_tinker_path(sampler.tinker_path).result()
    published = next(cp for cp in rest.list_checkpoints(tc.model_id).result().checkpoints if cp.tinker_path == sampler.tinker_path)
    print(f"published: {published.public}")
    assert published.public
    rest.unpublish_checkpoint_from_tinker_path(sampler.tinker_path).result()
    rest.set_checkpoint_ttl_from_tinker_path(sampler.tinker_path, 86400).result()
    with_ttl = next(cp for cp in rest.list_checkpoints(tc.model_id).result().checkpoints if cp.tinker_path == sampler.tinker_path)
    print(f"expires at: {with_ttl.expires_at}")
    assert with_ttl.expires_at is not None
    rest.set_checkpoint_ttl_from_tinker_path(sampler.tinker_path, None).result()

    # 5. export the weights and download them with plain GETs of the signed URLs
    external = tc.save_weights_external("tour-export", ttl_seconds=7200).result()
    urls = rest.get_external_weights_urls(external.path).result()
    print(f"external weights {external.path}: {len(urls.urls)} file(s), URLs expire {urls.expires}")
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rel, url in sorted(urls.urls.items()):
            with urllib.request.urlopen(url, timeout=60) as resp:  # no credentials
                data = resp.read()
            dest = Path(tmp) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            total += len(data)
            print(f"  downloaded {rel}: {len(data)} bytes")
    assert urls.urls and total > 0

    service_client.close("success").result()
    print(f"RESULT rest {tinker.__name__} files={len(urls.urls)} bytes={total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
