defmodule Tinkex.SchemaTest do
  # Every JSON request body the binding builds (Tinkex.Requests, used by the clients) is
  # valid against the committed JSON Schema of the C ABI (docs/schema/<Type>.json, generated
  # from the core's types): the bodies for each operation the binding exercises, with their
  # options unset and set. The validator is test/support/json_schema.ex.
  use ExUnit.Case, async: true

  alias Tinkex.{JSON, Requests}
  alias Tinkex.Test.JSONSchema
  alias Tinkex.Types.{AdamParams, Datum, EncodedTextChunk, ImageChunk, ModelInput, SamplingParams, TensorData}

  @dir Path.expand("../../../docs/schema", __DIR__)

  # The body as the C ABI receives it: encoded by Tinkex.JSON, then read back as JSON.
  defp wire(body), do: body |> JSON.encode!() |> JSON.decode!()

  defp assert_valid(type, body) do
    schema = JSONSchema.load!(@dir, type)

    case JSONSchema.validate(wire(body), schema, dir: @dir) do
      :ok -> :ok
      {:error, errors} -> flunk("#{type}: #{inspect(wire(body))}\n  " <> Enum.map_join(errors, "\n  ", fn {p, m} -> "#{p}: #{m}" end))
    end
  end

  test "the schema directory is there" do
    assert File.dir?(@dir), "#{@dir} is missing"
  end

  test "service client configuration (ConfigInput)" do
    assert_valid("ConfigInput", Requests.service_config([]))
    assert_valid("ConfigInput", Requests.service_config(api_key: "tml-x", base_url: "http://127.0.0.1:1", telemetry: false))

    assert_valid(
      "ConfigInput",
      Requests.service_config(
        api_key: "tml-x",
        base_url: "http://127.0.0.1:1",
        tags: ["a", "b"],
        project_id: "p",
        display_name: "d",
        telemetry: true,
        allow_insecure_http: true,
        timeouts: [connect_ms: 1_000, request_ms: 150, retrieve_future_ms: 2_000, heartbeat_ms: 500],
        retry: [progress_timeout_ms: 400, base_delay_ms: 10, max_delay_ms: 100, jitter: 0.25, max_attempts: 1],
        heartbeat: [interval_ms: 1_000, warn_after_ms: 5_000],
        progress_event_interval_ms: 100
      )
    )
  end

  test "service client operations" do
    assert_valid("CreateLoraTrainingClientInput", Requests.create_lora_training_client("Qwen/Qwen3-8B", []))
    assert_valid("CreateLoraTrainingClientInput", Requests.create_lora_training_client("Qwen/Qwen3-8B", rank: 4))

    assert_valid(
      "CreateLoraTrainingClientInput",
      Requests.create_lora_training_client("Qwen/Qwen3-8B", rank: 16, seed: 3, train_unembed: false, train_mlp: true, train_attn: false)
    )

    assert_valid("CreateTrainingClientFromStateInput", Requests.create_training_client_from_state("tinker://r/weights/a", []))
    assert_valid("CreateTrainingClientFromStateInput", Requests.create_training_client_from_state("tinker://r/weights/a", optimizer: true))
    assert_valid("CreateSamplingClientInput", Requests.create_sampling_client(base_model: "Qwen/Qwen3-8B"))
    assert_valid("CreateSamplingClientInput", Requests.create_sampling_client(model_path: "tinker://r/sampler_weights/a"))

    for reason <- [:success, :errored, :interrupted] do
      assert_valid("CloseInput", Requests.close(reason, nil))
      assert_valid("CloseInput", Requests.close(reason, "why"))
    end
  end

  defp datums do
    tokens = [1, 2, 3, 4]
    bin = TensorData.pack(tokens, :int64)

    [
      # lists, dtype inferred
      Datum.new(tokens, %{"target_tokens" => [2, 3, 4, 5], "weights" => [1.0, 1.0, 0.5, 0.0]}),
      # binaries, {binary, dtype}, int32 / float64 (widened / rounded), shapes
      Datum.new(bin, %{
        target_tokens: {bin, :int64},
        weights: TensorData.from_binary(TensorData.pack([1.0, 1.0, 1.0, 1.0], :float64), :float64, [2, 2]),
        advantages: TensorData.new([0.5], :float32, []),
        mask: TensorData.from_binary(TensorData.pack([1, 1, 0, 0], :int32), :int32)
      }),
      # several chunks and an image
      %Datum{
        model_input: %ModelInput{
          chunks: [
            %EncodedTextChunk{tokens: [1, 2]},
            %ImageChunk{data: Base.encode64("png"), format: :png, expected_tokens: 4},
            %EncodedTextChunk{tokens: [3]}
          ]
        },
        loss_fn_inputs: %{"target_tokens" => Enum.to_list(1..7), "weights" => List.duplicate(1, 7)}
      },
      # no loss inputs
      Datum.new([7, 8], %{})
    ]
  end

  test "training client operations" do
    for d <- datums(), do: assert_valid("Datum", Requests.datum(d))

    assert_valid("LossInput", Requests.loss(:cross_entropy, []))
    assert_valid("LossInput", Requests.loss("importance_sampling", loss_fn_config: %{"clip_low" => 0.8, "clip_high" => 1.2}))
    assert_valid("LossInput", Requests.loss(:ppo, loss_fn_config: %{"clip" => 0.2}))

    assert_valid("OptimStepInput", Requests.optim_step(%AdamParams{}))

    assert_valid(
      "OptimStepInput",
      Requests.optim_step(%AdamParams{learning_rate: 1.0e-3, beta1: 0.8, beta2: 0.9, eps: 1.0e-8, weight_decay: 0.01, grad_clip_norm: 1.0})
    )

    assert_valid("SaveStateInput", Requests.save_state("ckpt", []))
    assert_valid("SaveStateInput", Requests.save_state("ckpt", ttl_seconds: 3_600, overwrite: true, user_metadata: %{"step" => "10"}))
    assert_valid("LoadStateInput", Requests.load_state("tinker://r/weights/ckpt", []))
    assert_valid("LoadStateInput", Requests.load_state("tinker://r/weights/ckpt", optimizer: true))
    assert_valid("SaveWeightsForSamplerInput", Requests.save_weights_for_sampler("s"))
  end

  test "sampling client operations" do
    assert_valid("SampleInput", Requests.sample([1, 2, 3], %SamplingParams{}, []))
    assert_valid("SampleInput", Requests.sample(ModelInput.from_ints([1, 2]), %SamplingParams{max_tokens: 5}, num_samples: 3))

    assert_valid(
      "SampleInput",
      Requests.sample(
        [1, 2],
        %SamplingParams{max_tokens: 5, seed: 1, stop: ["\n"], temperature: 0.7, top_k: 10, top_p: 0.9},
        num_samples: 2,
        prompt_logprobs: true,
        topk_prompt_logprobs: 3,
        topk_sample_logprobs: 2,
        prompt_logprobs_last_n: 1
      )
    )

    assert_valid("SampleInput", Requests.sample([1, 2], %SamplingParams{max_tokens: 1, stop: [13, 14]}, []))
    assert_valid("ComputeLogprobsInput", Requests.compute_logprobs([5, 6, 7]))
  end

  test "the validator rejects bodies the core rejects" do
    # A misspelled field in a closed model, a wrong type, a missing required field.
    bad = [
      {"CreateLoraTrainingClientInput", %{"base_model" => "m", "lora_config" => %{"rnak" => 8}}, "rnak"},
      {"SampleInput", Map.put(Requests.sample([1], %SamplingParams{max_tokens: 1}, []), "num_sample", 2), "num_sample"},
      {"SampleInput", put_in(Requests.sample([1], %SamplingParams{max_tokens: 1}, []), ["sampling_params", "temprature"], 1.0), "temprature"},
      {"Datum", %{"model_input" => %{"chunks" => [%{"type" => "encoded_text", "tokens" => ["x"]}]}, "loss_fn_inputs" => %{}}, "tokens"},
      {"LoadStateInput", %{"optimizer" => true}, "path"}
    ]

    for {type, body, word} <- bad do
      assert {:error, errors} = JSONSchema.validate(wire(body), JSONSchema.load!(@dir, type), dir: @dir), "#{type} accepted #{inspect(body)}"
      assert Enum.any?(errors, fn {p, m} -> "#{p} #{m}" =~ word end), "#{type}: #{inspect(errors)} does not name #{word}"
    end
  end
end
