"""Supervised fine-tuning loop written against the official Tinker SDK's API.

Runs unchanged with the official SDK and with tinkex: only the import differs, chosen by
``TINKEX_USE_OFFICIAL=1`` (``import tinker``) or not (``import tinkex as tinker``).

    TINKER_BASE_URL=http://127.0.0.1:PORT TINKER_API_KEY=tml-local python sl_loop.py

Prints the mean per-token loss of every step and exits non-zero unless it fell.
"""

import os
import sys
from typing import TYPE_CHECKING

import numpy as np

# A type checker (mypy --strict) checks the tinkex branch: the package ships py.typed.
if os.environ.get("TINKEX_USE_OFFICIAL") == "1" and not TYPE_CHECKING:
    import tinker
else:
    import tinkex as tinker

types = tinker.types

BASE_MODEL = os.environ.get("SL_BASE_MODEL", "Qwen/Qwen3-8B")
STEPS = int(os.environ.get("SL_STEPS", "12"))
LEARNING_RATE = 1e-3

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Tinker trains LoRA adapters with forward_backward and optim_step.",
    "A supervised loop: tokens in, next tokens as targets, weights on the answer.",
    "Losses should fall as the adapter memorises these lines.",
]


def make_datum(text: str) -> tinker.types.Datum:
    # Byte-level tokens: the emulator's tiny model maps ids below 256 to themselves.
    prompt = list(b"Q: ")
    answer = list(text.encode())
    tokens = prompt + answer
    weights = [0.0] * (len(prompt) - 1) + [1.0] * len(answer)
    # TensorData from numpy arrays (both SDKs also accept plain lists here at run time, but
    # their annotations say TensorData, which is what mypy --strict checks).
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(np.array(tokens[1:], dtype=np.int64)),
            "weights": types.TensorData.from_numpy(np.array(weights, dtype=np.float32)),
        },
    )


def main() -> int:
    service_client = tinker.ServiceClient(base_url=os.environ.get("TINKER_BASE_URL"))
    training_client = service_client.create_lora_training_client(base_model=BASE_MODEL, rank=16).result()
    print(f"{tinker.__name__}: training {training_client.get_info().model_id}")

    data = [make_datum(t) for t in CORPUS]
    total_weight = sum(sum(d.loss_fn_inputs["weights"].tolist()) for d in data)

    losses = []
    for step in range(STEPS):
        # Submit both before waiting: the requests are pipelined in order.
        fwd_bwd_future = training_client.forward_backward(data, "cross_entropy")
        optim_future = training_client.optim_step(types.AdamParams(learning_rate=LEARNING_RATE))
        fwd_bwd = fwd_bwd_future.result()
        optim_future.result()
        loss = fwd_bwd.metrics["loss:sum"] / total_weight
        losses.append(loss)
        print(f"step {step:2d}  loss {loss:.4f}")

    sampling_client = training_client.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints(list(b"Q: The quick"))
    sample = sampling_client.sample(prompt, num_samples=1, sampling_params=types.SamplingParams(max_tokens=12, temperature=0.0)).result()
    print("sample:", bytes(t % 256 for t in sample.sequences[0].tokens))

    head = sum(losses[:3]) / 3
    tail = sum(losses[-3:]) / 3
    print(f"RESULT sl {tinker.__name__} first={losses[0]:.4f} last={losses[-1]:.4f} falling={tail < head}")
    return 0 if tail < head else 1


if __name__ == "__main__":
    sys.exit(main())
