defmodule Tinkex.ReliabilityTest do
  # The core's time-scaled reliability scenario (tests/chaos.rs), through the Elixir API:
  # durations are written in real-service units and scaled by @scale, for the client (the
  # service client's JSON config) and for the emulator (long-poll hold, seq-gap timeout).
  use Tinkex.Case, async: false

  alias Tinkex.Event

  @scale 0.01

  defp ms(secs), do: max(round(secs * 1000 * @scale), 1)

  defp scaled_service(emu) do
    service(emu,
      retry: [
        progress_timeout_ms: ms(7200),
        base_delay_ms: ms(0.5),
        max_delay_ms: ms(10),
        max_retry_after_ms: ms(60),
        billing_pause_step_ms: ms(5),
        billing_max_pause_ms: ms(3600),
        min_poll_duration_ms: ms(1)
      ],
      timeouts: [
        connect_ms: max(ms(5), 50),
        request_ms: ms(60),
        retrieve_future_ms: ms(45),
        heartbeat_ms: ms(10),
        dynamic_config_ms: ms(10),
        telemetry_ms: ms(5)
      ],
      heartbeat: [interval_ms: ms(10), warn_after_ms: ms(120)],
      progress_event_interval_ms: ms(10)
    )
  end

  defp train_steps(tc, steps) do
    pending =
      for _ <- 1..steps do
        {:ok, fb} = TrainingClient.forward_backward(tc, batch(), :cross_entropy)
        {:ok, opt} = TrainingClient.optim_step(tc, learning_rate: 1.0e-3)
        {fb, opt}
      end

    for {{fb, opt}, i} <- Enum.with_index(pending) do
      assert {:ok, _} = Future.await(fb, 120_000), "forward_backward #{i}"
      assert {:ok, _} = Future.await(opt, 120_000), "optim_step #{i}"
    end
  end

  for {label, outage_secs} <- [{"30 seconds", 30}, {"2 minutes", 120}] do
    test "an outage of #{label} (scaled to #{round(outage_secs * 1000 * @scale)} ms) during training and sampling" do
      emu = Emulator.start(["--poll-hold-ms", "#{ms(20)}", "--seq-gap-timeout-ms", "#{ms(600)}"])

      try do
        svc = scaled_service(emu)
        {:ok, sub} = ServiceClient.subscribe(svc)
        tc = trainer(svc)
        {:ok, f} = ServiceClient.create_sampling_client(svc, base_model: base_model())
        {:ok, sampler} = Future.await(f, 30_000)
        train_steps(tc, 2)

        outage_ms = ms(unquote(outage_secs))
        {200, _} = Emulator.post(emu, "outage", %{"duration_ms" => outage_ms})
        started = System.monotonic_time(:millisecond)
        samples = for i <- 1..10, do: elem(SamplingClient.sample(sampler, [i, i + 1], max_tokens: 3), 1)
        train_steps(tc, 5)

        for {:ok, r} <- [ok: Future.await_many(samples, 120_000)], s <- r do
          assert {:ok, %SampleResponse{sequences: [_]}} = s, "every sample completes"
        end

        assert System.monotonic_time(:millisecond) - started >= outage_ms, "the work waited out the outage"
        assert optimizer_steps(emu, tc) == 7, "steps on the server = steps of the client"

        # The retries were visible as events.
        retries = collect_retries(sub.ref, [])
        assert retries != []
        assert Enum.all?(retries, &is_binary(&1.data["operation"]))
      after
        Emulator.stop(emu)
      end
    end
  end

  defp collect_retries(ref, acc) do
    receive do
      {:tinkex_event, ^ref, %Event{type: :retry} = ev} -> collect_retries(ref, [Event.decode(ev) | acc])
      {:tinkex_event, ^ref, _} -> collect_retries(ref, acc)
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "a quarter of all requests fail with 503 for a 20-step loop: no step lost or applied twice" do
    emu = Emulator.start(["--poll-hold-ms", "#{ms(20)}", "--seq-gap-timeout-ms", "#{ms(600)}"])

    try do
      tc = trainer(scaled_service(emu))
      {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/", "status" => 503, "probability" => 0.25})
      {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/", "status" => 503, "probability" => 0.25, "after_handler" => true})
      train_steps(tc, 20)
      assert optimizer_steps(emu, tc) == 20
    after
      Emulator.stop(emu)
    end
  end
end
