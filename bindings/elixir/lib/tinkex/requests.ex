defmodule Tinkex.Requests do
  @moduledoc false
  # The JSON bodies the binding passes to the C ABI, one function per operation, as maps
  # (the clients encode them with Tinkex.JSON). Kept apart from the clients so that the test
  # suite validates every body against the committed JSON Schema (docs/schema/) without
  # running the operation.

  alias Tinkex.Types.{AdamParams, Datum, DimuonParams, LoraConfig, ModelInput, OptimizerConfig, SamplingParams, TensorData, Util}

  # The keyword options of each operation (the keys the body builders below read).
  @options %{
    create_lora_training_client: [:lora_config, :rank, :seed, :train_unembed, :train_mlp, :train_attn, :user_metadata, :optimizer],
    create_training_client_from_state: [:optimizer, :base_model, :user_metadata, :weights_access_token, :optimizer_config],
    create_sampling_client: [:base_model, :model_path, :sampling_session_id, :retry_config, :record_stability_info],
    training_create_sampling_client: [:retry_config, :record_stability_info],
    copy_weights: [:ttl_seconds, :weights_access_token],
    resume_training_run: [:optimizer],
    save_weights_external: [:ttl_seconds, :age_encryption_recipients],
    save_weights_and_get_sampling_client: [:kind, :retry_config, :record_stability_info],
    forward_backward: [:loss_fn_config],
    forward_backward_custom: [],
    save_state: [:ttl_seconds, :overwrite, :user_metadata],
    load_state: [:optimizer, :weights_access_token],
    save_weights_for_sampler: [:ttl_seconds, :user_metadata],
    sample: [:num_samples, :prompt_logprobs, :topk_prompt_logprobs, :topk_sample_logprobs, :prompt_logprobs_last_n, :target_prompt_logprobs, :prompt_alt_tokens_k]
  }

  @doc """
  `:ok` when every key of `opts` is an option of `op`; otherwise `{:error, %Tinkex.Error{}}`
  (kind and status `:invalid_json`, as the C ABI rejects an unknown field) before anything
  is sent.
  """
  def check(op, opts), do: Tinkex.Util.check_opts(op, opts, Map.fetch!(@options, op))

  @top_keys ~w(api_key base_url tags project_id display_name telemetry allow_insecure_http timeouts retry heartbeat progress_event_interval_ms)a

  @doc "The configuration of `tinkex_service_client_new` from `ServiceClient.new/1`'s options (without `:runtime`)."
  def service_config(opts) do
    Map.new(opts, fn {k, v} ->
      unless k in @top_keys, do: raise(ArgumentError, "unknown Tinkex.ServiceClient option #{inspect(k)}")
      {Atom.to_string(k), nested(v)}
    end)
  end

  defp nested(kw) when is_list(kw) and kw != [] and is_tuple(hd(kw)), do: Map.new(kw, fn {k, v} -> {to_string(k), v} end)
  defp nested(v), do: v

  def create_lora_training_client(base_model, opts) do
    lora =
      case Keyword.fetch(opts, :lora_config) do
        {:ok, %LoraConfig{} = c} -> c
        :error -> struct!(LoraConfig, Keyword.take(opts, [:rank, :seed, :train_unembed, :train_mlp, :train_attn]))
      end

    Util.compact(%{
      "base_model" => base_model,
      "lora_config" => LoraConfig.to_json(lora),
      "user_metadata" => opts[:user_metadata],
      "optimizer" => OptimizerConfig.to_json(opts[:optimizer])
    })
  end

  def create_training_client_from_state(path, opts) do
    Util.compact(%{
      "path" => path,
      "optimizer" => Keyword.get(opts, :optimizer, false),
      "base_model" => opts[:base_model],
      "user_metadata" => opts[:user_metadata],
      "weights_access_token" => opts[:weights_access_token],
      "optimizer_config" => OptimizerConfig.to_json(opts[:optimizer_config])
    })
  end

  def create_sampling_client(opts),
    do:
      opts
      |> Keyword.take([:base_model, :model_path, :sampling_session_id, :retry_config, :record_stability_info])
      |> Map.new(fn {k, v} -> {Atom.to_string(k), v} end)
      |> Util.compact()

  def copy_weights(path, opts),
    do: Util.compact(%{"path" => path, "ttl_seconds" => opts[:ttl_seconds], "weights_access_token" => opts[:weights_access_token]})

  def create_custom_loss(name, inputs, graph) do
    %{
      "name" => name,
      "inputs" =>
        Enum.map(inputs, fn
          {n, rank} -> %{"name" => to_string(n), "rank" => rank}
          %{} = m -> m
        end),
      "graph" => graph
    }
  end

  def resume_training_run(id, opts), do: Util.compact(%{"training_run_id" => id, "optimizer" => opts[:optimizer]})

  def save_weights_external(name, opts),
    do: Util.compact(%{"path" => name, "ttl_seconds" => opts[:ttl_seconds], "age_encryption_recipients" => opts[:age_encryption_recipients]})

  def save_weights_and_get_sampling_client(opts),
    do:
      Util.compact(%{
        "kind" => if(opts[:kind], do: to_string(opts[:kind])),
        "retry_config" => opts[:retry_config],
        "record_stability_info" => opts[:record_stability_info]
      })

  def close(reason, detail), do: Util.compact(%{"reason" => %{"type" => Atom.to_string(reason)}, "detail" => detail})

  @doc "The body of forward / forward_backward (the datums go into a datum batch)."
  def loss(loss_fn, opts),
    do: Util.compact(%{"loss_fn" => to_string(loss_fn), "loss_fn_config" => opts[:loss_fn_config]})

  @doc "One datum as JSON (`tinkex_datum_batch_push_json`)."
  def datum(%Datum{} = d), do: Datum.to_json(d)

  def optim_step(%AdamParams{} = p), do: AdamParams.to_json(p)
  def optim_step(%DimuonParams{} = p), do: DimuonParams.to_json(p)

  def save_state(name, opts) do
    Util.compact(%{
      "path" => name,
      "ttl_seconds" => opts[:ttl_seconds],
      "overwrite" => opts[:overwrite],
      "user_metadata" => opts[:user_metadata]
    })
  end

  def load_state(path, opts),
    do: Util.compact(%{"path" => path, "optimizer" => Keyword.get(opts, :optimizer, false), "weights_access_token" => opts[:weights_access_token]})

  def save_weights_for_sampler(name, opts \\ []),
    do: Util.compact(%{"path" => name, "ttl_seconds" => opts[:ttl_seconds], "user_metadata" => opts[:user_metadata]})

  def sample(prompt, %SamplingParams{} = params, opts) do
    Util.compact(%{
      "prompt" => ModelInput.to_json(prompt),
      "num_samples" => Keyword.get(opts, :num_samples, 1),
      "sampling_params" => SamplingParams.to_json(params),
      "prompt_logprobs" => opts[:prompt_logprobs],
      "topk_prompt_logprobs" => opts[:topk_prompt_logprobs],
      "topk_sample_logprobs" => opts[:topk_sample_logprobs],
      "prompt_logprobs_last_n" => opts[:prompt_logprobs_last_n],
      "target_prompt_logprobs" => target(opts[:target_prompt_logprobs]),
      "prompt_alt_tokens_k" => opts[:prompt_alt_tokens_k]
    })
  end

  def compute_logprobs(prompt), do: %{"prompt" => ModelInput.to_json(prompt)}

  defp target(nil), do: nil
  defp target(%TensorData{} = t), do: TensorData.to_json(t)
  defp target(m) when is_map(m), do: m
end
