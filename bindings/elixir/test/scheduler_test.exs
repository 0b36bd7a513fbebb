defmodule Tinkex.SchedulerTest do
  # The scheduler bound under the heaviest input: a 1M-token forward_backward. The checks of
  # Tinkex.Case (system monitor + per-NIF timing) run after every test; this module adds the
  # explicit numbers.
  use Tinkex.Case, async: false

  @datums 32
  @len 31_250

  defp token_binary(d, n) do
    for i <- 0..n, into: <<>>, do: <<100_000 + rem(d * 7919 + i * 104_729, 50_000)::signed-native-64>>
  end

  test "a 1M-token forward_backward never holds a normal scheduler" do
    tc = trainer(service())

    data =
      for d <- 1..@datums do
        toks = token_binary(d, @len)
        <<inp::binary-size(@len * 8), _::binary>> = toks
        <<_::binary-size(8), tgt::binary>> = toks

        Datum.new(inp, %{
          "target_tokens" => TensorData.from_binary(tgt, :int64),
          "weights" => TensorData.from_binary(:binary.copy(<<1.0::float-native-32>>, @len), :float32)
        })
      end

    assert Enum.sum(for d <- data, do: ModelInput.length(d.model_input)) == 1_000_000
    Tinkex.reset_nif_stats()
    t0 = System.monotonic_time(:millisecond)
    {:ok, f} = TrainingClient.forward_backward(tc, data, :cross_entropy)
    t1 = System.monotonic_time(:millisecond)
    {:ok, out} = Future.await(f, 600_000)
    t2 = System.monotonic_time(:millisecond)

    assert length(out.loss_fn_outputs) == @datums
    assert Enum.all?(out.loss_fn_outputs, &(TensorData.size(&1["logprobs"]) == @len))
    assert is_float(ForwardBackwardOutput.loss(out))

    stats = Map.new(Tinkex.nif_stats(), &{&1.name, &1})
    push = stats[:datum_batch_push]
    input = stats[:datum_batch_set_loss_input]
    submit = stats[:training_client_forward_backward_batch]
    assert push.calls == @datums and input.calls == 2 * @datums and submit.calls == 1
    assert push.dirty_calls == 0 and input.dirty_calls == 0

    for s <- [push, input, submit] do
      assert s.max_cpu_us < 1_000, inspect(s)
    end

    IO.puts(
      "\n  1M tokens: built and submitted in #{t1 - t0} ms (#{@datums} pushes, max #{push.max_cpu_us} us CPU; " <>
        "loss inputs max #{input.max_cpu_us} us; submit #{submit.max_cpu_us} us), result in #{t2 - t1} ms"
    )
  end

  test "inputs too large for one short call are copied on a dirty scheduler" do
    tc = trainer(service())

    # One 200k-token datum: its push is rescheduled on a dirty CPU scheduler. (The server then
    # rejects it: longer than the model's context.)
    toks = token_binary(1, 200_000)
    big = Datum.new(binary_part(toks, 0, 200_000 * 8), %{"target_tokens" => TensorData.from_binary(binary_part(toks, 8, 200_000 * 8), :int64)})
    {:ok, f} = TrainingClient.forward(tc, [big], :cross_entropy)
    assert {:error, %Error{kind: :user, message: msg}} = Future.await(f, 60_000)
    assert msg =~ "context length"

    # A JSON request over 256 KiB (two token chunks per datum cannot use the bulk path).
    data =
      for d <- 1..4 do
        t = for i <- 0..20_000, do: 1_000 + rem(d * 31 + i * 7, 5_000)
        {a, b} = t |> Enum.drop(-1) |> Enum.split(10_000)

        %Datum{
          model_input: %ModelInput{chunks: [%Tinkex.Types.EncodedTextChunk{tokens: a}, %Tinkex.Types.EncodedTextChunk{tokens: b}]},
          loss_fn_inputs: %{"target_tokens" => tl(t), "weights" => List.duplicate(1.0, 20_000)}
        }
      end

    {:ok, f} = TrainingClient.forward(tc, data, :cross_entropy)
    assert {:ok, %ForwardBackwardOutput{}} = Future.await(f, 60_000)

    stats = Map.new(Tinkex.nif_stats(), &{&1.name, &1})
    assert stats[:datum_batch_push].dirty_calls == 1
    assert stats[:training_client_forward].dirty_calls == 1
    assert stats[:datum_batch_push].max_cpu_us < 1_000
    assert stats[:training_client_forward].max_cpu_us < 1_000
  end

  test "negative control: a NIF that holds the scheduler is caught by both measurements" do
    check_scheduler!()
    :ok = Tinkex.Native.testing_spin(20_000)
    Process.sleep(100)
    v = scheduler_violations()
    assert {:nif_over_bound, %{name: :testing_spin}} = Enum.find(v, &match?({:nif_over_bound, %{name: :testing_spin}}, &1))
    assert Enum.any?(v, &match?({:slow_nif_call, %{name: :testing_spin, preempted: false}}, &1)) or
             Enum.any?(v, &match?({:slow_nif_call, %{name: :testing_spin}}, &1))
    # The system monitor saw this process run for over 5 ms, and it is attributed to the NIF.
    me = self()
    assert Enum.any?(v, &match?({:nif_over_bound, %{kind: :long_schedule, who: ^me}}, &1)), inspect(v)
  end
end
