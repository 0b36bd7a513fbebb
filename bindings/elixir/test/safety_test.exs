defmodule Tinkex.SafetyTest do
  use Tinkex.Case, async: false

  # Live resources of the kinds a test creates (the default runtime lives for the suite).
  defp counts do
    gc_all()
    Map.delete(Tinkex.resource_counts(), :runtime)
  end

  defp zero?(c), do: Enum.all?(c, fn {_k, v} -> v == 0 end)

  # These two need the test-only exports of a libtinkex built with `--features testing`
  # (run_tests.sh builds it); test_helper.exs excludes them otherwise, saying so.
  @tag :libtinkex_testing
  test "a panic in an export body is an error, and the VM lives" do

    for _ <- 1..3 do
      assert {:error, e} = Tinkex.Native.testing_panic_in_export()
      assert %Error{kind: :panic, status: :panic, status_code: code} = e = Error.from_nif(e)
      assert code == Tinkex.Constants.status(:panic)
      assert e.message =~ "injected export panic"
    end

    assert Process.alive?(self())
  end

  @tag :libtinkex_testing
  test "a panic in the core task or in the result conversion completes the future with :panic" do
    rt = Tinkex.Runtime.default()

    for {where, text} <- [{0, "injected core panic"}, {1, "injected conversion panic"}] do
      {:ok, f} = Tinkex.Native.testing_panic_in_task(rt.handle, where) |> Future.submitted(:panic_test, Future.json(& &1))
      assert {:error, %Error{kind: :panic, message: msg}} = Future.await(f, 10_000)
      assert msg =~ text
    end

    # The runtime and the clients keep working.
    svc = service()
    {:ok, f} = ServiceClient.get_server_capabilities(svc)
    assert {:ok, _} = Future.await(f, 10_000)
  end

  test "a process killed with futures in flight leaks nothing" do
    eventually(fn -> zero?(counts()) end, 30_000)
    svc = service()
    {:ok, f} = ServiceClient.create_sampling_client(svc, base_model: base_model())
    {:ok, sampler} = Future.await(f, 30_000)
    tc = trainer(svc)
    {200, _} = Emulator.post(emulator(), "faults", %{"path" => "/api/v1/asample", "latency_ms" => 500, "count" => 20})
    parent = self()

    pid =
      spawn(fn ->
        # Its own clients and subscription, plus futures of shared clients.
        own = service()
        {:ok, sub} = ServiceClient.subscribe(own, self())
        {:ok, caps} = ServiceClient.get_server_capabilities(own)
        {:ok, created} = ServiceClient.create_lora_training_client(own, base_model(), rank: 4)
        samples = for i <- 1..20, do: elem(SamplingClient.sample(sampler, [i, i + 1], max_tokens: 2), 1)
        {:ok, fb} = TrainingClient.forward_backward(tc, batch(), :cross_entropy)
        {:ok, opt} = TrainingClient.optim_step(tc, learning_rate: 1.0e-3)
        send(parent, :submitted)

        receive do
          :never -> {own, sub, caps, created, samples, fb, opt}
        end
      end)

    assert_receive :submitted, 10_000
    mid = Tinkex.resource_counts()
    assert mid.pending_callback >= 20 and mid.future >= 20, inspect(mid)
    Process.exit(pid, :kill)
    refute Process.alive?(pid)

    # In-flight operations still complete (freeing never cancels); their messages go to a dead
    # process and are dropped with everything they carry (e.g. the new training client).
    eventually(fn -> Tinkex.resource_counts().pending_callback == 0 end, 30_000)

    # Our own clients are still alive; drop them, then everything is gone.
    _ = {svc, sampler, tc}
    svc = sampler = tc = nil
    _ = {svc, sampler, tc}
    eventually(fn -> zero?(counts()) end, 10_000)
    assert zero?(counts()), inspect(counts())
  end

  test "handles are freed in any order; children keep their parents alive" do
    eventually(fn -> zero?(counts()) end, 30_000)
    svc = service()
    tc = trainer(svc)
    {:ok, f} = TrainingClient.save_weights_and_get_sampling_client(tc)
    {:ok, sampler} = Future.await(f, 30_000)
    {:ok, rest} = ServiceClient.create_rest_client(svc)
    {:ok, sub} = ServiceClient.subscribe(svc)
    holder = %{svc: svc, tc: tc, sampler: sampler, rest: rest, sub: sub}
    c = counts()
    assert c.service_client == 1 and c.training_client == 1 and c.sampling_client == 1 and c.rest_client == 1 and c.subscription == 1
    # Unsubscribing releases the subscription once its term is gone.
    :ok = Tinkex.Subscription.unsubscribe(holder.sub)

    # Drop the parents first: the children still work. (The sampling and REST structs also
    # hold the service client's term, for on_queue_state_change / get_telemetry: drop it too,
    # so that only libtinkex's own references keep the parent alive.)
    holder = Map.drop(holder, [:svc, :tc])
    holder = %{holder | sampler: %{holder.sampler | service: nil}, rest: %{holder.rest | service: nil}}
    _ = {svc, tc}
    eventually(fn -> counts().service_client == 0 end)
    {:ok, f} = SamplingClient.sample(holder.sampler, [1, 2], max_tokens: 2)
    assert {:ok, _} = Future.await(f, 30_000)
    {:ok, f} = RestClient.list_training_runs(holder.rest)
    assert {:ok, _} = Future.await(f, 30_000)

    # Then the rest, in another order; futures dropped before they complete are fine too.
    {:ok, _} = SamplingClient.sample(holder.sampler, [3, 4], max_tokens: 2)
    holder = Map.drop(holder, [:sampler, :sub])
    eventually(fn -> counts().subscription == 0 end)
    _ = holder
    holder = nil
    _ = holder
    eventually(fn -> zero?(counts()) end, 10_000)
    assert zero?(counts()), inspect(counts())
  end

  test "a runtime shut down with work pending: pending work completes with :shut_down" do
    {:ok, rt} = Tinkex.Runtime.new(worker_threads: 1)
    {:ok, svc} = ServiceClient.new(api_key: "tml-x", base_url: emulator().url, telemetry: false, runtime: rt)
    {:ok, f} = ServiceClient.create_sampling_client(svc, base_model: base_model())
    {:ok, sampler} = Future.await(f, 30_000)
    id = Emulator.add_fault(emulator(), %{"path" => "/api/v1/asample", "latency_ms" => 2_000, "count" => 1})
    {:ok, pending} = SamplingClient.sample(sampler, [1], max_tokens: 1)
    # In flight: held at the emulator.
    Emulator.await_fault_hits(emulator(), id)
    # Dirty NIF: blocks a dirty I/O scheduler, not a normal one.
    assert :ok = Tinkex.Runtime.shutdown(rt, 0)
    assert {:error, %Error{kind: :shut_down}} = Future.await(pending, 10_000)
    assert {:error, %Error{kind: :shut_down}} = SamplingClient.sample(sampler, [1], max_tokens: 1)
    assert :ok = Tinkex.Runtime.shutdown(rt, 0)
  end
end
