defmodule Tinkex.CoverageTest do
  # The official SDK methods of docs/api-coverage.md beyond the basic loop: get_telemetry of
  # every client, the *_with_optimizer calls, TrainingClient.create_sampling_client,
  # SamplingClient.create / get_base_model / on_queue_state_change.
  use Tinkex.Case, async: false

  alias Tinkex.AdminClient
  alias Tinkex.Test.LogCapture

  defp await!({:ok, f}), do: (fn {:ok, v} -> v end).(Future.await(f, 60_000))

  test "get_telemetry: the counters of each client's session, nil when telemetry is off" do
    svc = service(emulator(), telemetry: true)
    assert {:ok, nil} = ServiceClient.get_telemetry(svc), "no counters before the session"
    tc = trainer(svc)
    sc = await!(ServiceClient.create_sampling_client(svc, base_model: base_model()))
    {:ok, rest} = ServiceClient.create_rest_client(svc)

    for r <- [ServiceClient.get_telemetry(svc), TrainingClient.get_telemetry(tc), SamplingClient.get_telemetry(sc), RestClient.get_telemetry(rest)] do
      assert {:ok, tel} = r
      assert is_map(tel) and map_size(tel) > 0
    end

    # Session-less holders report none (the C ABI has no status of them).
    {:ok, sessionless} = RestClient.new(api_key: "tml-elixir-test", base_url: emulator().url)
    assert {:ok, nil} = RestClient.get_telemetry(sessionless)
    {:ok, admin} = AdminClient.new(api_key: "tml-elixir-test", base_url: emulator().url)
    assert {:ok, nil} = AdminClient.get_telemetry(admin)

    off = service()
    tc_off = trainer(off)
    {:ok, rest_off} = ServiceClient.create_rest_client(off)
    assert {:ok, nil} = ServiceClient.get_telemetry(off)
    assert {:ok, nil} = TrainingClient.get_telemetry(tc_off)
    assert {:ok, nil} = RestClient.get_telemetry(rest_off)
  end

  test "the *_with_optimizer calls restore the optimizer state; the others reset it" do
    emu = emulator()
    svc = service()
    tc = trainer(svc)
    assert {:ok, _} = await_ok(TrainingClient.optim_step(tc, learning_rate: 1.0e-3))
    %{path: path} = await!(TrainingClient.save_state(tc, "coverage"))
    assert {:ok, _} = await_ok(TrainingClient.optim_step(tc, learning_rate: 1.0e-3))
    assert optimizer_steps(emu, tc) == 2

    assert {:ok, _} = await_ok(TrainingClient.load_state_with_optimizer(tc, path))
    assert optimizer_steps(emu, tc) == 1
    assert {:ok, _} = await_ok(TrainingClient.load_state(tc, path))
    assert optimizer_steps(emu, tc) == 0

    restored = await!(ServiceClient.create_training_client_from_state_with_optimizer(svc, path, user_metadata: %{"k" => "v"}))
    assert optimizer_steps(emu, restored) == 1
    weights_only = await!(ServiceClient.create_training_client_from_state(svc, path))
    assert optimizer_steps(emu, weights_only) == 0
  end

  test "TrainingClient.create_sampling_client, SamplingClient.create (joining a session), get_base_model" do
    svc = service()
    tc = trainer(svc)
    %{path: model_path} = await!(TrainingClient.save_weights_for_sampler(tc, "coverage-s"))
    sc = await!(TrainingClient.create_sampling_client(tc, model_path))
    assert {:ok, "Qwen/Qwen3-8B"} = SamplingClient.get_base_model(sc)
    assert sc.service == svc

    joined = await!(SamplingClient.create(svc, sampling_session_id: sc.sampling_session_id))
    assert joined.sampling_session_id == sc.sampling_session_id
    assert %SampleResponse{sequences: [%{tokens: [_, _]}]} = await!(SamplingClient.sample(joined, [1, 2, 3], max_tokens: 2))

    fresh = await!(SamplingClient.create(svc, base_model: base_model()))
    assert fresh.sampling_session_id != sc.sampling_session_id
    assert {:ok, "Qwen/Qwen3-8B"} = SamplingClient.get_base_model(fresh)

    # A training client made without its service client cannot create one.
    assert {:error, %Error{kind: :wrong_state}} = TrainingClient.create_sampling_client(%{tc | service: nil}, model_path)
  end

  test "on_queue_state_change: only the sampler whose request it was is told" do
    emu = emulator()
    svc = service()
    mine = await!(SamplingClient.create(svc, base_model: base_model()))
    theirs = await!(SamplingClient.create(svc, base_model: base_model()))
    test = self()
    {:ok, p1} = SamplingClient.on_queue_state_change(mine, fn state, reason -> send(test, {:mine, state, reason}) end)
    {:ok, p2} = SamplingClient.on_queue_state_change(theirs, fn state, reason -> send(test, {:theirs, state, reason}) end)
    {:ok, raising} = SamplingClient.on_queue_state_change(mine, fn _, _ -> raise "observer bug" end)
    log = LogCapture.attach()

    ExUnit.CaptureLog.capture_log(fn ->
      try do
        # The next two polls (this sample's: nothing else is in flight) answer try_again
        # with a paused queue state.
        Emulator.add_fault(emu, %{
          "path" => "/api/v1/retrieve_future",
          "status" => 200,
          "count" => 2,
          "body" => %{"type" => "try_again", "request_id" => "x", "queue_state" => "paused_capacity", "queue_state_reason" => "busy"}
        })

        assert %SampleResponse{} = await!(SamplingClient.sample(mine, [1, 2, 3], max_tokens: 2))
        assert_receive {:mine, :paused_capacity, "busy"}, 10_000
        assert_receive {:logged, :error, "on_queue_state_change: the function raised: observer bug", _}, 10_000
      after
        LogCapture.detach(log)
      end
    end)

    # Every event reaches every subscriber in order: once the other observer has handled
    # what was sent to it so far, nothing for it can be in flight.
    _ = :sys.get_state(p2)
    refute_receive {:theirs, _, _}, 200
    assert Process.alive?(raising), "a raising function does not end the observer"
    for pid <- [p1, p2, raising], do: :ok = GenServer.stop(pid)

    # A clone made from a sampler handle has no service client to observe.
    {:ok, handle} = SamplingClient.get_sampler_handle(mine)
    {:ok, clone} = SamplingClient.from_sampler_handle(handle, api_key: "tml-elixir-test", base_url: emu.url, telemetry: false)
    assert {:error, %Error{kind: :wrong_state}} = SamplingClient.on_queue_state_change(clone, fn _, _ -> :ok end)
  end

  defp await_ok({:ok, f}), do: Future.await(f, 60_000)
end
