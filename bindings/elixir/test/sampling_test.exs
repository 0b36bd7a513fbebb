defmodule Tinkex.SamplingTest do
  use Tinkex.Case, async: false

  setup_all do
    svc = service()
    {:ok, f} = ServiceClient.create_sampling_client(svc, base_model: base_model())
    {:ok, sampler} = Future.await(f, 60_000)
    %{svc: svc, sampler: sampler}
  end

  test "1,000 concurrent samples from 100 processes", %{sampler: sampler} do
    parent = self()
    started = System.monotonic_time(:millisecond)

    pids =
      for p <- 1..100 do
        spawn_link(fn ->
          futures =
            for i <- 1..10 do
              prompt = [p * 10 + i, p, i]
              {:ok, f} = SamplingClient.sample(sampler, prompt, %SamplingParams{max_tokens: 2 + rem(i, 3), seed: i})
              f
            end

          results = Future.await_many(futures, 120_000)
          send(parent, {:done, self(), p, results})
        end)
      end

    results =
      for pid <- pids do
        receive do
          {:done, ^pid, p, results} -> {p, results}
        after
          180_000 -> flunk("a sampling process did not finish")
        end
      end

    elapsed = System.monotonic_time(:millisecond) - started

    for {_p, rs} <- results do
      assert length(rs) == 10
      # await_many keeps input order: sample i asked for 2 + rem(i, 3) tokens.
      for {{:ok, %SampleResponse{sequences: [seq]}}, i} <- Enum.zip(rs, 1..10) do
        assert length(seq.tokens) == 2 + rem(i, 3)
      end
    end

    assert Enum.sum(for {_, rs} <- results, do: length(rs)) == 1_000
    stats = Enum.find(Tinkex.nif_stats(), &(&1.name == :sampling_client_sample))
    assert stats.calls == 1_000
    IO.puts(
      "\n  1,000 samples from 100 processes in #{elapsed} ms; sample NIF: max #{stats.max_cpu_us} us CPU, " <>
        "max #{stats.max_blocked_us} us asleep (#{stats.preempted_calls} calls preempted by the OS)"
    )
  end

  test "await_many keeps input order whatever the completion order", %{sampler: sampler} do
    emu = emulator()
    # The first sample is slowed down on the server side; the later ones finish first.
    id = Emulator.add_fault(emu, %{"path" => "/api/v1/asample", "latency_ms" => 400, "count" => 1})
    {:ok, slow} = SamplingClient.sample(sampler, [1, 2], max_tokens: 5)
    # It reaches the server first: the fault delays the first asample only.
    Emulator.await_fault_hits(emu, id)
    fast = for n <- 1..4, do: elem(SamplingClient.sample(sampler, [3, 4], max_tokens: n), 1)
    [first | rest] = Future.await_many([slow | fast], 30_000)
    assert {:ok, %{sequences: [%{tokens: t}]}} = first
    assert length(t) == 5
    assert Enum.map(rest, fn {:ok, %{sequences: [%{tokens: t}]}} -> length(t) end) == [1, 2, 3, 4]
  end

  test "compute_logprobs and prompt logprobs", %{sampler: sampler} do
    {:ok, f} = SamplingClient.compute_logprobs(sampler, [5, 6, 7, 8])
    assert {:ok, [nil | rest]} = Future.await(f, 30_000)
    assert length(rest) == 3 and Enum.all?(rest, &is_float/1)

    {:ok, f} = SamplingClient.sample(sampler, ModelInput.from_ints([5, 6, 7, 8]), [max_tokens: 1], prompt_logprobs: true)
    assert {:ok, %SampleResponse{prompt_logprobs: [nil, _, _, _]}} = Future.await(f, 30_000)
  end
end
