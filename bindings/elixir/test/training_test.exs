defmodule Tinkex.TrainingTest do
  use Tinkex.Case, async: false

  @moduletag :emulator

  test "training loop: loss falls; save, load, sample; REST sees the run" do
    emu = emulator()
    svc = service()
    {:ok, f} = ServiceClient.get_server_capabilities(svc)
    {:ok, caps} = Future.await(f, 30_000)
    assert Enum.any?(caps.supported_models, &(&1.model_name == base_model()))

    tc = trainer(svc)
    assert {:ok, %{model_data: %{model_name: "Qwen/Qwen3-8B"}, lora_rank: 8}} = TrainingClient.get_info(tc)
    assert {:ok, _session} = ServiceClient.session_id(svc)

    data = batch()

    losses =
      for _ <- 1..20 do
        # Submitted back to back; the client keeps them in order.
        {:ok, fb} = TrainingClient.forward_backward(tc, data, :cross_entropy)
        {:ok, opt} = TrainingClient.optim_step(tc, %AdamParams{learning_rate: 1.0e-3})
        assert {:ok, %ForwardBackwardOutput{} = out} = Future.await(fb, 60_000)
        assert {:ok, _} = Future.await(opt, 60_000)
        mean_loss(out, 96)
      end

    assert List.last(losses) < 0.7 * hd(losses), inspect(losses)
    assert optimizer_steps(emu, tc) == 20

    # Save the state, then check that loading it restores the weights exactly.
    {:ok, f} = TrainingClient.save_state(tc, "after-20")
    {:ok, %{path: path}} = Future.await(f, 60_000)
    assert String.ends_with?(path, "/weights/after-20")
    loss_at_save = forward_loss(tc, data)

    for _ <- 1..3 do
      {:ok, fb} = TrainingClient.forward_backward(tc, data, :cross_entropy)
      {:ok, opt} = TrainingClient.optim_step(tc, learning_rate: 1.0e-2)
      {:ok, _} = Future.await(fb, 60_000)
      {:ok, _} = Future.await(opt, 60_000)
    end

    refute_in_delta forward_loss(tc, data), loss_at_save, 1.0e-6
    {:ok, f} = TrainingClient.load_state_with_optimizer(tc, path)
    # The server's LoadWeightsResponse (PROTOCOL.md 6.8).
    model_id = TrainingClient.model_id(tc)
    assert {:ok, %Tinkex.Types.LoadWeightsResponse{path: ^path, model_id: ^model_id, type: "load_weights"}} = Future.await(f, 60_000)
    assert_in_delta forward_loss(tc, data), loss_at_save, 1.0e-3

    # A new training client from the checkpoint has the same weights.
    {:ok, f} = ServiceClient.create_training_client_from_state(svc, path)
    {:ok, tc2} = Future.await(f, 60_000)
    assert TrainingClient.model_id(tc2) != TrainingClient.model_id(tc)
    assert_in_delta forward_loss(tc2, data), loss_at_save, 1.0e-3

    # Sampler weights, and sampling from them two ways.
    {:ok, f} = TrainingClient.save_weights_for_sampler(tc, "s23")
    {:ok, %{path: named}} = Future.await(f, 60_000)
    assert named =~ "/sampler_weights/s23"

    {:ok, f} = TrainingClient.save_weights_and_get_sampling_client(tc)
    {:ok, sampler} = Future.await(f, 60_000)
    {:ok, f} = SamplingClient.sample(sampler, ModelInput.from_ints([100_000, 100_001]), %SamplingParams{max_tokens: 6}, num_samples: 4)
    {:ok, %SampleResponse{sequences: seqs}} = Future.await(f, 60_000)
    assert length(seqs) == 4
    assert Enum.all?(seqs, &(length(&1.tokens) == 6 and &1.sequence_id != nil and &1.stop_reason == :length))

    {:ok, f} = ServiceClient.create_sampling_client(svc, model_path: named)
    {:ok, from_path} = Future.await(f, 60_000)
    assert from_path.base_model == base_model()
    {:ok, f} = SamplingClient.sample(from_path, [1, 2, 3], max_tokens: 3)
    assert {:ok, %SampleResponse{sequences: [%{tokens: [_, _, _]}]}} = Future.await(f, 60_000)

    # REST: the run and its checkpoints.
    {:ok, rest} = ServiceClient.create_rest_client(svc)
    {:ok, f} = RestClient.list_training_runs(rest, limit: 100)
    {:ok, runs} = Future.await(f, 30_000)
    run = Enum.find(runs.training_runs, &(&1.training_run_id == TrainingClient.model_id(tc)))
    assert run && run.base_model == base_model() and run.is_lora

    {:ok, f} = RestClient.get_training_run(rest, run.training_run_id)
    assert {:ok, %Tinkex.Types.TrainingRun{lora_rank: 8}} = Future.await(f, 30_000)

    {:ok, f} = RestClient.list_checkpoints(rest, run.training_run_id)
    {:ok, cps} = Future.await(f, 30_000)
    assert Enum.any?(cps.checkpoints, &(&1.tinker_path == path))

    {:ok, f} = RestClient.get_weights_info_by_tinker_path(rest, path)
    assert {:ok, %Tinkex.Types.WeightsInfoResponse{base_model: "Qwen/Qwen3-8B", is_lora: true}} = Future.await(f, 30_000)

    {:ok, f} = RestClient.delete_checkpoint_from_tinker_path(rest, named)
    assert {:ok, :ok} = Future.await(f, 30_000)
    {:ok, f} = RestClient.list_user_checkpoints(rest)
    {:ok, all} = Future.await(f, 30_000)
    refute Enum.any?(all.checkpoints, &(&1.tinker_path == named))
    assert Enum.any?(all.checkpoints, &(&1.tinker_path == path))

    {:ok, f} = ServiceClient.close(svc)
    assert {:ok, :ok} = Future.await(f, 30_000)
  end

  test "binaries, lists and JSON datums build the same request" do
    tc = trainer(service())
    tokens = for i <- 0..40, do: 1000 + rem(i * 37, 500)
    as_lists = [datum(tokens)]

    inp = tokens |> Enum.drop(-1) |> TensorData.pack(:int64)
    tgt = tokens |> tl() |> TensorData.pack(:int64)
    w = :binary.copy(<<1.0::float-native-32>>, 40)

    as_binaries = [
      Datum.new(inp, %{target_tokens: {tgt, :int64}, weights: TensorData.from_binary(w, :float32)})
    ]

    # int32 / float64 binaries are widened / rounded by libtinkex.
    as_other_dtypes = [
      Datum.new(inp, %{
        target_tokens: TensorData.from_binary(tokens |> tl() |> TensorData.pack(:int32), :int32),
        weights: TensorData.from_binary(List.duplicate(1.0, 40) |> TensorData.pack(:float64), :float64)
      })
    ]

    # Two token chunks cannot be typed arrays: this datum goes into the batch as JSON.
    {a, b} = tokens |> Enum.drop(-1) |> Enum.split(17)
    two_chunks = [
      %Datum{
        model_input: %ModelInput{chunks: [%Tinkex.Types.EncodedTextChunk{tokens: a}, %Tinkex.Types.EncodedTextChunk{tokens: b}]},
        loss_fn_inputs: %{target_tokens: tl(tokens), weights: List.duplicate(1, 40)}
      }
    ]

    losses = for d <- [as_lists, as_binaries, as_other_dtypes, two_chunks], do: forward_loss(tc, d)
    [first | _] = losses
    for l <- losses, do: assert_in_delta(l, first, 1.0e-4)

    # One request path: every call builds a datum batch (typed arrays, or JSON datums).
    stats = Map.new(Tinkex.nif_stats(), &{&1.name, &1})
    assert stats[:training_client_forward_batch].calls == 4
    assert stats[:datum_batch_push_json].calls == 1
    assert stats[:training_client_forward].calls == 0
  end

  test "invalid requests fail as user errors" do
    svc = service()
    tc = trainer(svc)
    {:ok, f} = TrainingClient.forward_backward(tc, [], :cross_entropy)
    assert {:error, %Error{kind: :user, message: msg}} = Future.await(f, 30_000)
    assert msg =~ "No data"

    {:ok, f} = ServiceClient.create_lora_training_client(svc, "no/such-model")
    assert {:error, %Error{kind: :user}} = Future.await(f, 30_000)

    # Rejected before anything is sent: a status, no future.
    assert {:error, %Error{kind: :invalid_arg}} = ServiceClient.create_sampling_client(svc, [])
    assert_raise ArgumentError, fn -> ServiceClient.new(nope: 1) end
    assert {:error, %Error{kind: kind}} = ServiceClient.new(api_key: "bad-key", base_url: emulator().url)
    assert kind in [:auth, :user]
  end

  defp forward_loss(tc, data) do
    {:ok, f} = TrainingClient.forward(tc, data, :cross_entropy)
    {:ok, out} = Future.await(f, 60_000)
    ForwardBackwardOutput.loss(out)
  end
end
