"""RL-style loop written against the official Tinker SDK's API: sample completions, score
them, train with the ``importance_sampling`` loss, refresh the sampler, repeat.

Runs unchanged with the official SDK and with tinkex: only the import differs, chosen by
``TINKEX_USE_OFFICIAL=1`` (``import tinker``) or not (``import tinkex as tinker``).

    TINKER_BASE_URL=http://127.0.0.1:PORT TINKER_API_KEY=tml-local python rl_loop.py

The reward of a completion is the fraction of its tokens that are lowercase ASCII letters.
The reported loss is the policy's negative mean reward on fresh samples (plus the
importance-sampling surrogate of each update); the script exits non-zero unless it fell.
"""

import os
import sys

if os.environ.get("TINKEX_USE_OFFICIAL") == "1":
    import tinker
else:
    import tinkex as tinker

types = tinker.types

BASE_MODEL = os.environ.get("RL_BASE_MODEL", "Qwen/Qwen3-8B")
ITERATIONS = int(os.environ.get("RL_ITERATIONS", "12"))
GROUPS = 4  # prompts per iteration
GROUP_SIZE = 8  # samples per prompt
MAX_TOKENS = 12
LEARNING_RATE = 4e-3
PROMPTS = [b"Write: ", b"Say something: ", b"Answer: ", b"Letters: "]


def reward(tokens: list) -> float:
    return sum(1 for t in tokens if 97 <= t <= 122) / max(1, len(tokens))


def main() -> int:
    service_client = tinker.ServiceClient(base_url=os.environ.get("TINKER_BASE_URL"))
    training_client = service_client.create_lora_training_client(base_model=BASE_MODEL, rank=16, seed=0).result()
    print(f"{tinker.__name__}: training {training_client.get_info().model_id}")

    losses = []
    for it in range(ITERATIONS):
        sampling_client = training_client.save_weights_and_get_sampling_client().result()
        prompts = [types.ModelInput.from_ints(list(PROMPTS[g % len(PROMPTS)])) for g in range(GROUPS)]
        # Every group's request is in flight before the first result is read.
        futures = [
            sampling_client.sample(
                p,
                num_samples=GROUP_SIZE,
                # A seed per request makes runs reproducible; stop=[] samples MAX_TOKENS tokens.
                sampling_params=types.SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=1000 * it + g, stop=[]),
            )
            for g, p in enumerate(prompts)
        ]

        data = []
        rewards_all = []
        for prompt, fut in zip(prompts, futures):
            result = fut.result()
            rewards = [reward(seq.tokens) for seq in result.sequences]
            rewards_all.extend(rewards)
            baseline = sum(rewards) / len(rewards)
            prompt_tokens = prompt.to_ints()
            for seq, r in zip(result.sequences, rewards):
                advantage = r - baseline
                if advantage == 0.0:
                    continue
                completion = list(seq.tokens)
                tokens = prompt_tokens + completion
                n_prompt = len(prompt_tokens) - 1
                data.append(
                    types.Datum(
                        model_input=types.ModelInput.from_ints(tokens[:-1]),
                        loss_fn_inputs={
                            "target_tokens": tokens[1:],
                            "logprobs": [0.0] * n_prompt + list(seq.logprobs),
                            "advantages": [0.0] * n_prompt + [advantage] * len(completion),
                        },
                    )
                )

        mean_reward = sum(rewards_all) / len(rewards_all)
        loss = -mean_reward
        losses.append(loss)
        surrogate = float("nan")
        if data:
            fwd_bwd_future = training_client.forward_backward(data, "importance_sampling")
            optim_future = training_client.optim_step(types.AdamParams(learning_rate=LEARNING_RATE))
            surrogate = fwd_bwd_future.result().metrics["loss:sum"]
            optim_future.result()
        print(f"iter {it:2d}  loss {loss:+.4f}  (mean reward {mean_reward:.3f}, IS surrogate {surrogate:+.3f}, {len(data)} datums)")

    head = sum(losses[:3]) / 3
    tail = sum(losses[-3:]) / 3
    print(f"RESULT rl {tinker.__name__} first={losses[0]:.4f} last={losses[-1]:.4f} falling={tail < head}")
    return 0 if tail < head else 1


if __name__ == "__main__":
    sys.exit(main())
