defmodule Tinkex.HardeningTest do
  # Issue 11, item 11: the NIF checks every allocation (an `:out_of_memory` error, never a
  # crash or a leak), and passes loss-input shapes to the C ABI as given.
  use Tinkex.Case, async: false

  alias Tinkex.Native

  @f32 Tinkex.Constants.dtype(:float32)
  @i64 Tinkex.Constants.dtype(:int64)

  defp f32(list), do: TensorData.pack(list, :float32)

  defp fresh_batch do
    {:ok, b} = Native.datum_batch_new()
    :ok = Native.datum_batch_push(b, TensorData.pack([1, 2, 3], :int64), @i64)
    b
  end

  describe "loss-input shapes reach the C ABI as given" do
    test "nil is 1-D of any length; [] is a scalar (exactly one element)" do
      b = fresh_batch()
      assert :ok = Native.datum_batch_set_loss_input(b, "a", f32([1.0, 2.0, 3.0]), @f32, nil)
      assert :ok = Native.datum_batch_set_loss_input(b, "b", f32([1.0]), @f32, nil)
      assert :ok = Native.datum_batch_set_loss_input(b, "c", <<>>, @f32, nil)

      # [] is the C ABI's ndim 0: a scalar, whose one element is the empty product.
      assert :ok = Native.datum_batch_set_loss_input(b, "s", f32([7.0]), @f32, [])

      for data <- [f32([1.0, 2.0]), f32([1.0, 2.0, 3.0]), <<>>] do
        assert {:error, e} = Native.datum_batch_set_loss_input(b, "s", data, @f32, [])
        assert %Error{kind: :invalid_arg, status: :invalid_arg} = e = Error.from_nif(e)
        assert e.message =~ "shape []", e.message
      end
    end

    test "explicit dimensions are checked against the element count" do
      b = fresh_batch()
      six = f32(for i <- 1..6, do: i * 1.0)
      assert :ok = Native.datum_batch_set_loss_input(b, "m", six, @f32, [6])
      assert :ok = Native.datum_batch_set_loss_input(b, "m", six, @f32, [2, 3])
      assert :ok = Native.datum_batch_set_loss_input(b, "m", six, @f32, [1, 6, 1])
      assert :ok = Native.datum_batch_set_loss_input(b, "z", <<>>, @f32, [0, 4])

      for shape <- [[5], [2, 2], [-6], [3, -2]] do
        assert {:error, e} = Native.datum_batch_set_loss_input(b, "m", six, @f32, shape)
        assert %Error{kind: :invalid_arg} = Error.from_nif(e), inspect(shape)
      end

      # Not a list of integers, or too many dimensions: a bad argument.
      assert_raise ArgumentError, fn -> Native.datum_batch_set_loss_input(b, "m", six, @f32, [2.0, 3]) end
      assert_raise ArgumentError, fn -> Native.datum_batch_set_loss_input(b, "m", six, @f32, :scalar) end
      assert_raise ArgumentError, fn -> Native.datum_batch_set_loss_input(b, "m", six, @f32, List.duplicate(1, 9)) end
    end

    test "through TrainingClient, a scalar shape with several elements is rejected, a 1-D one is not" do
      tc = trainer(service())
      tokens = for i <- 0..8, do: 100_000 + i
      n = length(tokens) - 1

      d = fn shape ->
        Datum.new(Enum.take(tokens, n), %{
          "target_tokens" => TensorData.new(tl(tokens), :int64),
          "weights" => TensorData.new(List.duplicate(1.0, n), :float32, shape)
        })
      end

      assert {:error, %Error{kind: :invalid_arg} = e} = TrainingClient.forward(tc, [d.([])], :cross_entropy)
      assert e.message =~ "shape []"

      for shape <- [nil, [n]] do
        assert {:ok, f} = TrainingClient.forward(tc, [d.(shape)], :cross_entropy)
        assert {:ok, %ForwardBackwardOutput{}} = Future.await(f, 60_000)
      end
    end
  end

  describe "allocation failures (test build of the NIF: TINKEX_NIF_TESTING)" do
    setup do
      assert Native.testing_fail_alloc(0) == :ok,
             "the NIF was not built with TINKEX_NIF_TESTING=1 (run bindings/elixir/run_tests.sh)"

      on_exit(fn -> Native.testing_fail_alloc(0) end)
      :ok
    end

    defp injected do
      {_remaining, injected, _dropped, _dropped_logs} = Native.testing_fault_state()
      injected
    end

    defp dropped_events do
      {_remaining, _injected, dropped, _dropped_logs} = Native.testing_fault_state()
      dropped
    end

    # Runs `op` (which returns {:ok, _} | {:error, %Error{}} once the operation is complete)
    # with the n-th allocation made on behalf of this process failing, for n = 1, 2, ...
    # until a run in which no allocation failed. Every run with a failure must end in the
    # :out_of_memory error; the run without must succeed. Returns the number of failure
    # points walked.
    defp walk(name, op, max \\ 30) do
      Enum.reduce_while(1..max, 0, fn n, _ ->
        before = injected()
        :ok = Native.testing_fail_alloc(n)
        result = op.()
        :ok = Native.testing_fail_alloc(0)

        if injected() > before do
          assert {:error, %Error{kind: :out_of_memory, status: :internal, status_code: code} = e} = result,
                 "#{name}, allocation #{n} failed: #{inspect(result)}"

          assert code == Tinkex.Constants.status(:internal)
          assert e.message =~ "out of memory"
          {:cont, n}
        else
          assert {:ok, _} = result, "#{name}, no allocation failed (n = #{n}): #{inspect(result)}"
          {:halt, n - 1}
        end
      end)
    end

    defp await(submit) do
      case submit do
        {:ok, %Future{} = f} -> Future.await(f, 60_000)
        other -> other
      end
    end

    # Runs `fun`; tags its value with :large_result if a result binary resource (results of
    # 4 KiB or more) was made meanwhile.
    defp with_large_results(fun) do
      before = elem(Tinkex.resource_totals().result_binary, 1)
      v = fun.()
      if elem(Tinkex.resource_totals().result_binary, 1) > before, do: {v, :large_result}, else: {v, :small_results}
    end

    defp long_datum(len) do
      tokens = for i <- 0..len, do: 100_000 + rem(i * 104_729, 50_000)
      datum(tokens)
    end

    defp counts do
      gc_all()
      Map.delete(Tinkex.resource_counts(), :runtime)
    end

    # No kind has more live resources than before (earlier tests' garbage may go meanwhile).
    defp no_more_than?(now, before), do: Enum.all?(now, fn {k, v} -> v <= Map.get(before, k, 0) end)

    test "every allocation of every NIF path fails cleanly, and nothing leaks" do
      before = counts()
      emu = emulator()

      walked =
        Task.async(fn ->
          svc = service()
          tc = trainer(svc)
          {:ok, f} = ServiceClient.create_sampling_client(svc, base_model: base_model())
          {:ok, sampler} = Future.await(f, 60_000)
          {:ok, rest} = ServiceClient.create_rest_client(svc)
          # resume_training_run needs a training checkpoint of the run.
          {:ok, f} = TrainingClient.save_state(tc, "hardening")
          {:ok, _} = Future.await(f, 60_000)

          %{
            # the resource (the batch is thread-safe in libtinkex: no mutex of the NIF's)
            datum_batch_new: walk("datum_batch_new", fn -> Native.datum_batch_new() |> nif_result() end),
            service_client_new: walk("ServiceClient.new", fn -> ServiceClient.new(api_key: "tml-elixir-test", base_url: emu.url, telemetry: false) end),
            session_id: walk("session_id", fn -> ServiceClient.session_id(svc) end),
            create_rest_client: walk("create_rest_client", fn -> ServiceClient.create_rest_client(svc) end),
            # a JSON result (small: copied into a binary)
            get_server_capabilities: walk("get_server_capabilities", fn -> await(ServiceClient.get_server_capabilities(svc)) end),
            # a client result (a resource made on the dispatcher thread), then get_info
            create_lora_training_client:
              walk("create_lora_training_client", fn -> await(ServiceClient.create_lora_training_client(svc, base_model(), rank: 4)) end),
            create_sampling_client: walk("create_sampling_client", fn -> await(ServiceClient.create_sampling_client(svc, base_model: base_model())) end),
            sample: walk("sample", fn -> await(SamplingClient.sample(sampler, [1, 2, 3], max_tokens: 2)) end),
            # the batch resource, then the submit, then a large result
            # (>= 4 KiB: a resource binary over libtinkex's buffer)
            forward_backward_bulk:
              with_large_results(fn -> walk("forward_backward", fn -> await(TrainingClient.forward_backward(tc, [long_datum(600)], :cross_entropy)) end) end),
            optim_step: walk("optim_step", fn -> await(TrainingClient.optim_step(tc, learning_rate: 1.0e-4)) end),
            list_training_runs: walk("list_training_runs", fn -> await(RestClient.list_training_runs(rest)) end),
            get_training_run: walk("get_training_run", fn -> await(RestClient.get_training_run(rest, TrainingClient.model_id(tc))) end),
            rest_client_new: walk("RestClient.new", fn -> RestClient.new(api_key: "tml-elixir-test", base_url: emu.url) end),
            admin_client_new: walk("AdminClient.new", fn -> Tinkex.AdminClient.new(api_key: "tml-elixir-test", base_url: emu.url) end),
            status: walk("status", fn -> ServiceClient.status(svc) end),
            get_sampler_handle: walk("get_sampler_handle", fn -> SamplingClient.get_sampler_handle(sampler) end),
            resume_training_run:
              walk("resume_training_run", fn -> await(ServiceClient.resume_training_run(svc, TrainingClient.model_id(tc))) end)
          }
        end)
        |> Task.await(600_000)

      # Each path had each of its allocations fail in turn: a submit is the future's
      # resource, the callback context and its environment, then the result on the
      # dispatcher (a binary, or a client resource followed by get_info's binary); a
      # forward_backward adds its batch's resource; a synchronous call allocates its resource
      # or its result binary.
      assert walked == %{
               datum_batch_new: 1,
               service_client_new: 1,
               session_id: 1,
               create_rest_client: 1,
               get_server_capabilities: 4,
               create_lora_training_client: 5,
               create_sampling_client: 5,
               sample: 4,
               # the result (over 4 KiB) went through the resource-binary path
               forward_backward_bulk: {5, :large_result},
               optim_step: 4,
               list_training_runs: 4,
               get_training_run: 4,
               rest_client_new: 1,
               admin_client_new: 1,
               status: 1,
               get_sampler_handle: 1,
               resume_training_run: 5
             }

      # Nothing leaked: every resource and callback context of every failed run is gone.
      eventually(fn -> no_more_than?(counts(), before) end, 30_000)
      assert Process.alive?(self())
    end

    test "a runtime: its resource fails cleanly; without a thread it starts inline" do
      assert {:error, %Error{kind: :out_of_memory}} = with_fault(1, fn -> Tinkex.Runtime.new(worker_threads: 1) end)
      # The 2nd allocation is the niceness thread: on failure the runtime starts inline.
      before = injected()
      assert {:ok, rt} = with_fault(2, fn -> Tinkex.Runtime.new(worker_threads: 1, thread_nice: 1) end)
      assert injected() == before + 1
      # A log sink: its context.
      assert {:error, %Error{kind: :out_of_memory}} = with_fault(1, fn -> Tinkex.Runtime.set_log_level(rt, :warn) end)
      eventually(fn -> Tinkex.resource_counts().log_sink_context == 0 end)
      assert :ok = Tinkex.Runtime.set_log_level(rt, :off)
      assert :ok = Tinkex.Runtime.shutdown(rt, 10_000)
    end

    test "a subscription fails cleanly; an event that cannot be built is dropped, not a crash" do
      svc = service(emulator(), retry: [base_delay_ms: 10, max_delay_ms: 50])
      subscribe = fn ->
        case ServiceClient.subscribe(svc) do
          {:ok, s} -> {Tinkex.Subscription.unsubscribe(s), s}
          err -> err
        end
      end

      # the resource, the callback context, its environment
      assert walk("subscribe", subscribe) == 3
      eventually(fn -> Tinkex.resource_counts().subscription_context == 0 end)

      {:ok, sub} = ServiceClient.subscribe(svc)
      ref = sub.ref

      # The event's environment (1), then its JSON binary (2), fail in turn. The operation
      # is submitted from another process, so the only allocations made on behalf of this
      # one are those of the events it receives.
      for n <- [1, 2] do
        {200, _} = Emulator.post(emulator(), "faults", %{"path" => "/api/v1/get_server_capabilities", "status" => 503, "count" => 2})
        dropped = dropped_events()
        :ok = Native.testing_fail_alloc(n)

        task = Task.async(fn -> await(ServiceClient.get_server_capabilities(svc)) end)
        assert {:ok, _} = Task.await(task, 30_000)
        :ok = Native.testing_fail_alloc(0)

        # Two retries: the first one's event was dropped (events are delivered in order, so
        # the first retry event in the mailbox is the second retry's).
        assert_receive {:tinkex_event, ^ref, %Tinkex.Event{type: :retry} = ev}, 5_000
        assert Tinkex.Event.decode(ev).data["attempt"] == 1
        assert dropped_events() == dropped + 1
      end

      :ok = Tinkex.Subscription.unsubscribe(sub)
      eventually(fn -> Tinkex.resource_counts().subscription_context == 0 end)
    end

  end

  defp with_fault(n, fun) do
    :ok = Native.testing_fail_alloc(n)

    try do
      fun.()
    after
      :ok = Native.testing_fail_alloc(0)
    end
  end

  defp nif_result({:ok, _} = ok), do: ok
  defp nif_result({:error, e}), do: {:error, Error.from_nif(e)}
end
