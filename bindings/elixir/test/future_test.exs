defmodule Tinkex.FutureTest do
  use Tinkex.Case, async: false

  setup_all do
    svc = service()
    {:ok, f} = ServiceClient.create_sampling_client(svc, base_model: base_model())
    {:ok, sampler} = Future.await(f, 60_000)
    %{svc: svc, sampler: sampler}
  end

  test "submit returns a future at once; the result arrives as a {:tinkex, ref, result} message", %{sampler: s} do
    {:ok, %Future{ref: ref} = f} = SamplingClient.sample(s, [1, 2], max_tokens: 2)
    assert_receive {:tinkex, ^ref, {:ok, json}}, 30_000
    assert is_binary(json)
    assert {:ok, %SampleResponse{}} = Future.resolve(f, {:ok, json})
    assert Future.done?(f)
  end

  test "cancel: the future completes with :cancelled; cancel is idempotent", %{sampler: s} do
    id = Emulator.add_fault(emulator(), %{"path" => "/api/v1/asample", "latency_ms" => 10_000, "count" => 1})
    {:ok, f} = SamplingClient.sample(s, [1, 2], max_tokens: 2)
    # The request is at the emulator, held there for 10 s.
    Emulator.await_fault_hits(emulator(), id)
    refute Future.done?(f)
    t0 = System.monotonic_time(:millisecond)
    assert :ok = Future.cancel(f)
    assert :ok = Future.cancel(f)
    assert {:error, %Error{kind: :cancelled, status: :cancelled}} = Future.await(f, 8_000)
    # Long before the hold ends (with room for a loaded machine).
    assert System.monotonic_time(:millisecond) - t0 < 5_000
    # After completion, cancel does nothing.
    {:ok, g} = SamplingClient.sample(s, [1, 2], max_tokens: 1)
    assert {:ok, _} = Future.await(g, 30_000)
    assert :ok = Future.cancel(g)
  end

  test "cancel a training operation", %{svc: svc} do
    tc = trainer(svc)
    {200, _} = Emulator.post(emulator(), "delays", %{"SaveWeights" => 3_000})

    try do
      sent = Emulator.requests(emulator(), "/api/v1/save_weights")
      {:ok, f} = TrainingClient.save_state(tc, "cancelled-save")
      # The request reached the emulator (which delays the operation by 3 s).
      Emulator.await_requests_over(emulator(), "/api/v1/save_weights", sent)
      refute Future.done?(f)
      :ok = Future.cancel(f)
      assert {:error, %Error{kind: :cancelled}} = Future.await(f, 2_000)
    after
      Emulator.post(emulator(), "delays", %{"SaveWeights" => nil})
    end
  end

  test "await timeout leaves the operation running; a later await gets the result", %{sampler: s} do
    {200, _} = Emulator.post(emulator(), "faults", %{"path" => "/api/v1/asample", "latency_ms" => 600, "count" => 1})
    {:ok, f} = SamplingClient.sample(s, [1, 2], max_tokens: 3)
    assert {:error, %Error{kind: :await_timeout, status: :pending}} = Future.await(f, 50)
    assert :pending = Future.poll(f)
    assert {:ok, %SampleResponse{sequences: [%{tokens: [_, _, _]}]}} = Future.await(f, 30_000)

    # await_many with one overall timeout.
    id = Emulator.add_fault(emulator(), %{"path" => "/api/v1/asample", "latency_ms" => 3_000, "count" => 1})
    {:ok, slow} = SamplingClient.sample(s, [1, 2], max_tokens: 1)
    # The slow one reaches the server first (the fault delays the first asample only).
    Emulator.await_fault_hits(emulator(), id)
    {:ok, quick} = SamplingClient.sample(s, [1, 2], max_tokens: 1)
    await_arrival(quick)
    refute Future.done?(slow)
    assert [{:error, %Error{kind: :await_timeout}}, {:ok, _}] = Future.await_many([slow, quick], 100)
    assert {:ok, _} = Future.await(slow, 30_000)
  end

  test "client timeouts: a request timeout and the progress timeout surface as errors" do
    emu = emulator()

    # Every attempt of get_server_capabilities outlives the 150 ms request timeout.
    {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/get_server_capabilities", "latency_ms" => 1_000, "count" => 3})
    svc = service(emu, timeouts: [request_ms: 150], retry: [max_attempts: 1, base_delay_ms: 10])
    {:ok, f} = ServiceClient.get_server_capabilities(svc)
    assert {:error, %Error{status: :timeout} = e} = Future.await(f, 10_000)
    assert e.kind in [:timeout, :transient]

    # An operation that makes no progress for the whole progress timeout fails.
    svc = service(emu, retry: [progress_timeout_ms: 400])
    tc = trainer(svc)
    {200, _} = Emulator.post(emu, "delays", %{"OptimStep" => 3_000})

    try do
      {:ok, f} = TrainingClient.optim_step(tc, learning_rate: 1.0e-3)
      assert {:error, %Error{kind: :no_progress, status: :no_progress}} = Future.await(f, 10_000)
    after
      Emulator.post(emu, "delays", %{"OptimStep" => nil})
    end
  end

  test "only the submitting process receives the result", %{sampler: s} do
    {:ok, f} = SamplingClient.sample(s, [1, 2], max_tokens: 1)
    parent = self()
    spawn_link(fn -> send(parent, {:other, Future.await(f, 1_000)}) end)
    assert_receive {:other, {:error, %Error{kind: :wrong_process}}}, 5_000
    assert {:ok, _} = Future.await(f, 30_000)
  end

  test "await! raises Tinkex.Error", %{svc: svc} do
    tc = trainer(svc)
    {:ok, f} = TrainingClient.forward(tc, [], :cross_entropy)
    assert_raise Error, ~r/\[user\]/, fn -> Future.await!(f, 30_000) end
  end
end
