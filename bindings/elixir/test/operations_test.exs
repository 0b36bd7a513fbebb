defmodule Tinkex.OperationsTest do
  # The training / sampling / service operations of issue 14 through the Elixir binding,
  # against the emulator: optimizer configs and Dimuon, TTL and user metadata, inflight
  # snapshots, external weights, copy_weights, resume_training_run, console URLs, sampler
  # handles, status() introspection, server-side custom loss registration.
  use Tinkex.Case, async: false

  @moduletag :emulator

  alias Tinkex.Types.DimuonParams

  defp await!({:ok, f}), do: (fn {:ok, v} -> v end).(Future.await(f, 60_000))

  test "status/1 of the three clients has the contract's keys" do
    svc = service()
    tc = trainer(svc)
    keys = ~w(session_id queue_state queue_state_reason billing_paused_ms backoff_remaining_ms last_progress_ms_ago operations_waiting operations_in_flight telemetry)

    assert {:ok, s} = ServiceClient.status(svc)
    assert Enum.sort(Map.keys(s)) == Enum.sort(keys)
    assert is_binary(s["session_id"]), inspect(s)
    # The contract says null when telemetry is off; the core reports its (idle) counters.
    assert is_nil(s["telemetry"]) or is_map(s["telemetry"]), inspect(s)
    assert {:ok, tel} = ServiceClient.get_telemetry(svc)
    assert tel == s["telemetry"]
    assert {:ok, t} = TrainingClient.status(tc)
    assert Enum.sort(Map.keys(t)) == Enum.sort(keys)
    {:ok, sc} = ServiceClient.create_sampling_client(svc, base_model: base_model()) |> then(&{:ok, await!(&1)})
    assert {:ok, st} = SamplingClient.status(sc)
    # Sampling adds its dispatch statistics.
    assert Enum.sort(Map.keys(st)) == Enum.sort(["dispatch" | keys])
  end

  test "console URLs name the session and the run" do
    svc = service()
    tc = trainer(svc)
    {:ok, session} = ServiceClient.session_id(svc)
    assert {:ok, url} = ServiceClient.get_console_url(svc)
    assert is_binary(url) and url =~ session
    assert {:ok, turl} = TrainingClient.get_console_url(tc)
    assert turl =~ TrainingClient.model_id(tc)
  end

  test "a sampler handle makes a working clone elsewhere" do
    svc = service()
    sc = await!(ServiceClient.create_sampling_client(svc, base_model: base_model(), record_stability_info: true))
    assert {:ok, handle} = SamplingClient.get_sampler_handle(sc)
    assert is_binary(handle)
    refute handle =~ "tml-elixir-test"
    assert {:ok, clone} = SamplingClient.from_sampler_handle(handle, api_key: "tml-elixir-test", base_url: emulator().url, telemetry: false)
    assert %SampleResponse{sequences: [%{tokens: [_, _, _]}]} = await!(SamplingClient.sample(clone, [1, 2, 3], max_tokens: 3))
    assert {:error, %Error{}} = SamplingClient.from_sampler_handle("not a handle", api_key: "tml-x", base_url: emulator().url)
  end

  test "Dimuon: an optimizer config at creation and DimuonParams steps" do
    svc = service()
    tc = await!(ServiceClient.create_lora_training_client(svc, base_model(), rank: 8, optimizer: :dimuon, user_metadata: %{"k" => "v"}))
    data = batch()
    {:ok, fb} = TrainingClient.forward_backward(tc, data, :cross_entropy)
    {:ok, opt} = TrainingClient.optim_step(tc, %DimuonParams{learning_rate: 1.0e-3})
    assert {:ok, _} = Future.await(fb, 60_000)
    assert {:ok, _} = Future.await(opt, 60_000)
    {:ok, opt} = TrainingClient.optim_step(tc, type: :dimuon, learning_rate: 1.0e-3, grad_clip_norm: 1.0)
    assert {:ok, _} = Future.await(opt, 60_000)
    assert optimizer_steps(emulator(), tc) == 2
    assert {:error, %Error{kind: :invalid_arg}} = TrainingClient.optim_step(tc, type: :sgd, learning_rate: 1.0)
  end

  test "TTL and user metadata on checkpoints; external weights; inflight snapshots" do
    svc = service()
    tc = trainer(svc)
    %{path: sp} = await!(TrainingClient.save_weights_for_sampler(tc, "meta", ttl_seconds: 7200, user_metadata: %{"a" => "b"}))
    {:ok, rest} = ServiceClient.create_rest_client(svc)
    %{checkpoints: cps} = await!(RestClient.list_checkpoints(rest, TrainingClient.model_id(tc)))
    cp = Enum.find(cps, &(&1.tinker_path == sp))
    assert cp.user_metadata == %{"a" => "b"} and is_binary(cp.expires_at)

    assert %{"path" => ext, "size_bytes" => n} = await!(TrainingClient.save_weights_external(tc, "ext", ttl_seconds: 7200))
    assert ext =~ "/external_weights/ext" and is_integer(n)

    for kind <- [:snapshot, :inflight] do
      sc = await!(TrainingClient.save_weights_and_get_sampling_client(tc, kind: kind))
      assert %SampleResponse{} = await!(SamplingClient.sample(sc, [1, 2], max_tokens: 2))
    end
  end

  test "from_state with base_model and metadata; resume_training_run; copy_weights" do
    svc = service(emulator(), project_id: "proj-elixir")
    tc = trainer(svc)
    %{path: path} = await!(TrainingClient.save_state(tc, "resume-me"))
    data = batch()
    loss = fn t -> ForwardBackwardOutput.loss(await!(TrainingClient.forward(t, data, :cross_entropy))) end
    at_save = loss.(tc)

    tc2 = await!(ServiceClient.create_training_client_from_state(svc, path, base_model: base_model(), user_metadata: %{"from" => "state"}))
    assert_in_delta loss.(tc2), at_save, 1.0e-3

    tc3 = await!(ServiceClient.resume_training_run(svc, TrainingClient.model_id(tc)))
    assert_in_delta loss.(tc3), at_save, 1.0e-3

    copied = await!(ServiceClient.copy_weights(svc, path, ttl_seconds: 3600))
    assert is_binary(copied) and String.starts_with?(copied, "tinker://")
    # Without a project id it is a client-side user error.
    assert {:error, %Error{kind: :user}} = Future.await(elem(ServiceClient.copy_weights(service(), path), 1), 10_000)
  end

  test "server-side custom loss registration needs the server flag: a clear user error" do
    svc = service()
    graph = %{"nodes" => [], "output" => nil}
    {:ok, f} = ServiceClient.create_custom_loss(svc, "neg_ll", [{"logprobs", 1}], graph)
    assert {:error, %Error{kind: kind, message: msg}} = Future.await(f, 30_000)
    assert kind in [:user, :invalid_arg]
    assert msg =~ "custom"
  end

  test "server-side custom loss: registered graph, then forward_backward with loss_fn custom" do
    emu = emulator()
    {200, _} = Emulator.post(emu, "flags", %{"client_config" => %{"custom_loss_server_side" => true}})
    on_exit(fn -> {200, _} = Emulator.post(emu, "flags", %{"client_config" => %{"custom_loss_server_side" => false}}) end)
    svc = service()
    tc = trainer(svc)
    ref = fn name -> %{"ref" => name} end

    graph = %{
      "format" => 1,
      "nodes" => [
        %{"op" => "placeholder", "name" => "logprobs", "target" => "logprobs", "args" => [], "kwargs" => %{}},
        %{"op" => "placeholder", "name" => "weights", "target" => "weights", "args" => [], "kwargs" => %{}},
        %{"op" => "call_function", "name" => "mul", "target" => "operator.mul", "args" => [ref.("logprobs"), ref.("weights")], "kwargs" => %{}},
        %{"op" => "call_method", "name" => "sum_1", "target" => "sum", "args" => [ref.("mul")], "kwargs" => %{}},
        %{"op" => "call_function", "name" => "neg", "target" => "operator.neg", "args" => [ref.("sum_1")], "kwargs" => %{}},
        %{"op" => "output", "name" => "output", "target" => "output", "args" => [%{"tuple" => [ref.("neg"), %{"dict" => %{"custom/neg_ll:sum" => ref.("neg")}}]}], "kwargs" => %{}}
      ]
    }

    assert %{"loss_id" => id} = await!(ServiceClient.create_custom_loss(svc, "neg_ll", [{"logprobs", 1}, {"weights", 1}], graph))
    data = batch()
    ce = ForwardBackwardOutput.loss(await!(TrainingClient.forward(tc, data, :cross_entropy)))
    out = await!(TrainingClient.forward_backward(tc, data, "custom", loss_fn_config: %{"loss_id" => id}))
    # -sum(weights * logprobs) is the cross-entropy.
    assert_in_delta ForwardBackwardOutput.loss(out), ce, 1.0e-3 * abs(ce)
  end

  test "sample accepts target_prompt_logprobs and prompt_alt_tokens_k" do
    svc = service()
    sc = await!(ServiceClient.create_sampling_client(svc, base_model: base_model()))
    # [len(prompt) - 1, K] token ids.
    target = TensorData.new([5, 6, 7, 8], :int64, [2, 2])

    assert {:ok, f} = SamplingClient.sample(sc, [1, 2, 3], [max_tokens: 1], target_prompt_logprobs: target, prompt_alt_tokens_k: 2)
    assert {:ok, %SampleResponse{} = r} = Future.await(f, 60_000)
    # The answer's tensors and the discriminator are kept, as in the other bindings.
    assert r.type == "sample"
    assert %TensorData{dtype: :float32, shape: [2, 2]} = r.target_prompt_logprobs
    assert length(TensorData.to_list(r.target_prompt_logprobs)) == 4
    assert %Tinkex.Types.PromptAltTokens{tokens: %TensorData{dtype: :int64, shape: [2, 2]}, logprobs: %TensorData{shape: [2, 2]}} = r.prompt_alt_tokens
    # Not requested: nil.
    assert {:ok, f} = SamplingClient.sample(sc, [1, 2, 3], max_tokens: 1)
    assert {:ok, %SampleResponse{target_prompt_logprobs: nil, prompt_alt_tokens: nil, type: "sample"}} = Future.await(f, 60_000)
  end

  test "a future the server failed carries its category; a local error has none" do
    svc = service()
    tc = trainer(svc)
    {:ok, f} = TrainingClient.forward_backward(tc, [datum([1, 2, 3])], "dro")
    assert {:error, %Tinkex.Error{kind: :user, category: "user"}} = Future.await(f, 60_000)
    {:ok, f} = TrainingClient.load_state(tc, "tinker://nope/weights/nope")
    assert {:error, %Tinkex.Error{category: "user"}} = Future.await(f, 60_000)
    assert {:error, %Tinkex.Error{kind: :invalid_json, category: nil}} = TrainingClient.save_state(tc, "x", bogus: 1)
  end

  test "an unknown keyword option is refused before anything is sent, as the C ABI refuses an unknown field" do
    svc = service()
    tc = trainer(svc)
    sc = await!(ServiceClient.create_sampling_client(svc, base_model: base_model()))
    paths = ~w(asample create_model create_sampling_session copy_weights load_weights save_weights save_weights_for_sampler save_weights_external forward forward_backward)
    sent = fn -> Map.new(paths, &{&1, Emulator.requests(emulator(), "/api/v1/" <> &1)}) end
    before = sent.()

    calls = [
      {"sample/4", fn -> SamplingClient.sample(sc, [1, 2, 3], [max_tokens: 1], bogus_field: 1) end},
      {"create_lora_training_client/3", fn -> ServiceClient.create_lora_training_client(svc, base_model(), bogus: 1) end},
      {"create_training_client_from_state/3", fn -> ServiceClient.create_training_client_from_state(svc, "tinker://r/weights/x", bogus: 1) end},
      {"create_sampling_client/2", fn -> ServiceClient.create_sampling_client(svc, base_model: base_model(), bogus: 1) end},
      {"copy_weights/3", fn -> ServiceClient.copy_weights(svc, "tinker://r/weights/x", bogus: 1) end},
      {"resume_training_run/3", fn -> ServiceClient.resume_training_run(svc, "run", bogus: 1) end},
      {"forward_backward/4", fn -> TrainingClient.forward_backward(tc, [], :cross_entropy, bogus: 1) end},
      {"forward/4", fn -> TrainingClient.forward(tc, [], :cross_entropy, bogus: 1) end},
      {"forward_backward_custom/4", fn -> TrainingClient.forward_backward_custom(tc, [], fn _ -> {0.0, [], %{}} end, bogus: 1) end},
      {"save_state/3", fn -> TrainingClient.save_state(tc, "x", bogus: 1) end},
      {"load_state/3", fn -> TrainingClient.load_state(tc, "tinker://r/weights/x", bogus: 1) end},
      {"load_state_with_optimizer/3", fn -> TrainingClient.load_state_with_optimizer(tc, "tinker://r/weights/x", bogus: 1) end},
      {"save_weights_for_sampler/3", fn -> TrainingClient.save_weights_for_sampler(tc, "x", bogus: 1) end},
      {"save_weights_and_get_sampling_client/2", fn -> TrainingClient.save_weights_and_get_sampling_client(tc, bogus: 1) end},
      {"create_sampling_client/3", fn -> TrainingClient.create_sampling_client(tc, "tinker://r/sampler_weights/x", bogus: 1) end},
      {"save_weights_external/3", fn -> TrainingClient.save_weights_external(tc, "x", bogus: 1) end}
    ]

    for {name, call} <- calls do
      assert {:error, %Tinkex.Error{kind: :invalid_json, status: :invalid_json, message: msg}} = call.(), name
      assert msg =~ "unknown option :bog", "#{name}: #{msg}"
    end

    # Options that are not a keyword list.
    assert {:error, %Tinkex.Error{kind: :invalid_arg}} = SamplingClient.sample(sc, [1, 2, 3], [max_tokens: 1], [:x])
    # Nothing was sent.
    assert sent.() == before
  end
end
