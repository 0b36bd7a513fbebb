defmodule Tinkex.Types.ForwardBackwardOutput do
  @moduledoc """
  Result of `forward_backward` and `forward`: per-datum outputs (name => `TensorData`, e.g.
  `"logprobs"`, `"elementwise_loss"`) and `metrics` (e.g. `"loss:sum"`).
  """
  alias Tinkex.Types.TensorData
  defstruct loss_fn_output_type: nil, loss_fn_outputs: [], metrics: %{}

  @type t :: %__MODULE__{
          loss_fn_output_type: String.t() | nil,
          loss_fn_outputs: [%{String.t() => TensorData.t()}],
          metrics: %{String.t() => float}
        }

  @doc false
  def from_json(m) do
    %__MODULE__{
      loss_fn_output_type: m["loss_fn_output_type"],
      loss_fn_outputs:
        Enum.map(m["loss_fn_outputs"] || [], fn out ->
          Map.new(out, fn {k, v} -> {k, TensorData.from_json(v)} end)
        end),
      metrics: m["metrics"] || %{}
    }
  end

  @doc "The summed loss (`metrics[\"loss:sum\"]`), or `nil`."
  @spec loss(t) :: float | nil
  def loss(%__MODULE__{metrics: m}), do: m["loss:sum"]
end

defmodule Tinkex.Types.OptimStepResponse do
  @moduledoc "Result of `optim_step`."
  defstruct metrics: nil
  @type t :: %__MODULE__{metrics: %{String.t() => float} | nil}
  @doc false
  def from_json(m), do: %__MODULE__{metrics: m["metrics"]}
end

defmodule Tinkex.Types.SaveWeightsResponse do
  @moduledoc "Result of `save_state`: the `tinker://` path of the checkpoint."
  defstruct [:path]
  @type t :: %__MODULE__{path: String.t()}
  @doc false
  def from_json(m), do: %__MODULE__{path: m["path"]}
end

defmodule Tinkex.Types.SaveWeightsForSamplerResponse do
  @moduledoc "Result of `save_weights_for_sampler`: the `tinker://` path of the weights."
  defstruct [:path]
  @type t :: %__MODULE__{path: String.t()}
  @doc false
  def from_json(m), do: %__MODULE__{path: m["path"]}
end

defmodule Tinkex.Types.LoadWeightsResponse do
  @moduledoc """
  Result of `load_state` / `load_state_with_optimizer`: the server's answer (PROTOCOL.md
  6.8) — the `tinker://` path loaded, the model it was loaded onto, and the discriminator
  `type` (`"load_weights"`); each `nil` when the server leaves it out.
  """
  defstruct [:path, :model_id, :type]
  @type t :: %__MODULE__{path: String.t() | nil, model_id: String.t() | nil, type: String.t() | nil}
  @doc false
  def from_json(m), do: %__MODULE__{path: m["path"], model_id: m["model_id"], type: m["type"]}
end

defmodule Tinkex.Types.StopReason do
  @moduledoc "Why a sampled sequence stopped: `:length` or `:stop`."
  @type t :: :length | :stop
  @doc false
  def parse("length"), do: :length
  def parse("stop"), do: :stop
  def parse(other), do: other
end

defmodule Tinkex.Types.SampledSequence do
  @moduledoc "One sampled continuation."
  defstruct tokens: [], logprobs: nil, stop_reason: nil, sequence_id: nil, topk_logprobs: nil

  @type t :: %__MODULE__{
          tokens: [integer],
          logprobs: [float] | nil,
          stop_reason: Tinkex.Types.StopReason.t(),
          sequence_id: String.t() | nil,
          topk_logprobs: list | nil
        }

  @doc false
  def from_json(m) do
    %__MODULE__{
      tokens: m["tokens"],
      logprobs: m["logprobs"],
      stop_reason: Tinkex.Types.StopReason.parse(m["stop_reason"]),
      sequence_id: m["sequence_id"],
      topk_logprobs: m["topk_logprobs"]
    }
  end
end

defmodule Tinkex.Types.PromptAltTokens do
  @moduledoc """
  The draws of a sample request's `prompt_alt_tokens_k` (PROTOCOL.md 7.1): `k` independent
  draws from the model's next-token distribution at every prompt position after the first,
  as two dense `[len(prompt) - 1, k]` tensors — `tokens` (int64 ids; row `i` holds
  alternatives to prompt token `i + 1`) and `logprobs` (float32, of those tokens).
  """
  alias Tinkex.Types.TensorData
  defstruct [:tokens, :logprobs]
  @type t :: %__MODULE__{tokens: TensorData.t(), logprobs: TensorData.t()}
  @doc false
  def from_json(nil), do: nil

  def from_json(m),
    do: %__MODULE__{tokens: TensorData.from_json(m["tokens"]), logprobs: TensorData.from_json(m["logprobs"])}
end

defmodule Tinkex.Types.SampleResponse do
  @moduledoc """
  Result of `Tinkex.SamplingClient.sample/4`. `target_prompt_logprobs`: the logprobs of the
  ids of the request's `:target_prompt_logprobs` (float32, the same shape, `0.0` in `-1`
  cells); `prompt_alt_tokens`: the draws of its `:prompt_alt_tokens_k`; both `nil` when not
  requested. `type` is the discriminator, `"sample"`.
  """
  alias Tinkex.Types.{PromptAltTokens, SampledSequence, TensorData}

  defstruct sequences: [],
            prompt_logprobs: nil,
            topk_prompt_logprobs: nil,
            prompt_cache_hit_tokens: 0,
            target_prompt_logprobs: nil,
            prompt_alt_tokens: nil,
            type: "sample"

  @type t :: %__MODULE__{
          sequences: [SampledSequence.t()],
          prompt_logprobs: [float | nil] | nil,
          topk_prompt_logprobs: list | nil,
          prompt_cache_hit_tokens: non_neg_integer,
          target_prompt_logprobs: TensorData.t() | nil,
          prompt_alt_tokens: PromptAltTokens.t() | nil,
          type: String.t()
        }

  @doc false
  def from_json(m) do
    %__MODULE__{
      sequences: Enum.map(m["sequences"] || [], &SampledSequence.from_json/1),
      prompt_logprobs: m["prompt_logprobs"],
      topk_prompt_logprobs: m["topk_prompt_logprobs"],
      prompt_cache_hit_tokens: m["prompt_cache_hit_tokens"] || 0,
      target_prompt_logprobs: m["target_prompt_logprobs"] && TensorData.from_json(m["target_prompt_logprobs"]),
      prompt_alt_tokens: PromptAltTokens.from_json(m["prompt_alt_tokens"]),
      type: m["type"] || "sample"
    }
  end
end

defmodule Tinkex.Types.ModelData do
  @moduledoc "Model metadata of `GetInfoResponse`."
  defstruct [:arch, :model_name, :tokenizer_id]
  @type t :: %__MODULE__{arch: String.t() | nil, model_name: String.t() | nil, tokenizer_id: String.t() | nil}
  @doc false
  def from_json(m), do: %__MODULE__{arch: m["arch"], model_name: m["model_name"], tokenizer_id: m["tokenizer_id"]}
end

defmodule Tinkex.Types.GetInfoResponse do
  @moduledoc "A training client's model information (fetched at creation)."
  defstruct [:model_id, :model_data, :model_name, :is_lora, :lora_rank, :optimizer_config]

  @type t :: %__MODULE__{
          model_id: String.t(),
          model_data: Tinkex.Types.ModelData.t(),
          model_name: String.t() | nil,
          is_lora: boolean | nil,
          lora_rank: pos_integer | nil,
          optimizer_config: map | nil
        }

  @doc false
  def from_json(m) do
    %__MODULE__{
      model_id: m["model_id"],
      model_data: Tinkex.Types.ModelData.from_json(m["model_data"] || %{}),
      model_name: m["model_name"],
      is_lora: m["is_lora"],
      lora_rank: m["lora_rank"],
      optimizer_config: m["optimizer_config"]
    }
  end
end

defmodule Tinkex.Types.SupportedModel do
  @moduledoc "A base model the server supports."
  defstruct [:model_name, :max_context_length, :trainable, :sampleable]
  @type t :: %__MODULE__{model_name: String.t() | nil, max_context_length: integer | nil, trainable: boolean | nil, sampleable: boolean | nil}
  @doc false
  def from_json(m) do
    %__MODULE__{
      model_name: m["model_name"],
      max_context_length: m["max_context_length"],
      trainable: m["trainable"],
      sampleable: m["sampleable"]
    }
  end
end

defmodule Tinkex.Types.GetServerCapabilitiesResponse do
  @moduledoc "Result of `Tinkex.ServiceClient.get_server_capabilities/1`."
  defstruct supported_models: []
  @type t :: %__MODULE__{supported_models: [Tinkex.Types.SupportedModel.t()]}
  @doc false
  def from_json(m),
    do: %__MODULE__{supported_models: Enum.map(m["supported_models"] || [], &Tinkex.Types.SupportedModel.from_json/1)}
end

defmodule Tinkex.Types.Cursor do
  @moduledoc "Pagination cursor of REST listings."
  defstruct [:offset, :limit, :total_count]
  @type t :: %__MODULE__{offset: integer, limit: integer, total_count: integer}
  @doc false
  def from_json(nil), do: nil
  def from_json(m), do: %__MODULE__{offset: m["offset"], limit: m["limit"], total_count: m["total_count"]}
end

defmodule Tinkex.Types.Checkpoint do
  @moduledoc "A saved checkpoint (training state or sampler weights)."
  defstruct [:checkpoint_id, :checkpoint_type, :time, :tinker_path, :size_bytes, :public, :user_metadata, :expires_at]
  @type t :: %__MODULE__{}
  @doc false
  def from_json(nil), do: nil

  def from_json(m) do
    %__MODULE__{
      checkpoint_id: m["checkpoint_id"],
      checkpoint_type: m["checkpoint_type"],
      time: m["time"],
      tinker_path: m["tinker_path"],
      size_bytes: m["size_bytes"],
      public: m["public"] || false,
      user_metadata: m["user_metadata"],
      expires_at: m["expires_at"]
    }
  end
end

defmodule Tinkex.Types.TrainingRun do
  @moduledoc "A training run (one model of a session)."
  alias Tinkex.Types.Checkpoint

  defstruct [:training_run_id, :base_model, :model_owner, :is_lora, :corrupted, :lora_rank, :last_request_time, :last_checkpoint, :last_sampler_checkpoint, :user_metadata]
  @type t :: %__MODULE__{}
  @doc false
  def from_json(m) do
    %__MODULE__{
      training_run_id: m["training_run_id"],
      base_model: m["base_model"],
      model_owner: m["model_owner"],
      is_lora: m["is_lora"],
      corrupted: m["corrupted"] || false,
      lora_rank: m["lora_rank"],
      last_request_time: m["last_request_time"],
      last_checkpoint: Checkpoint.from_json(m["last_checkpoint"]),
      last_sampler_checkpoint: Checkpoint.from_json(m["last_sampler_checkpoint"]),
      user_metadata: m["user_metadata"]
    }
  end
end

defmodule Tinkex.Types.TrainingRunsResponse do
  @moduledoc "A page of training runs."
  defstruct training_runs: [], cursor: nil
  @type t :: %__MODULE__{training_runs: [Tinkex.Types.TrainingRun.t()], cursor: Tinkex.Types.Cursor.t() | nil}
  @doc false
  def from_json(m) do
    %__MODULE__{
      training_runs: Enum.map(m["training_runs"] || [], &Tinkex.Types.TrainingRun.from_json/1),
      cursor: Tinkex.Types.Cursor.from_json(m["cursor"])
    }
  end
end

defmodule Tinkex.Types.CheckpointsListResponse do
  @moduledoc "A page of checkpoints."
  defstruct checkpoints: [], cursor: nil
  @type t :: %__MODULE__{checkpoints: [Tinkex.Types.Checkpoint.t()], cursor: Tinkex.Types.Cursor.t() | nil}
  @doc false
  def from_json(m) do
    %__MODULE__{
      checkpoints: Enum.map(m["checkpoints"] || [], &Tinkex.Types.Checkpoint.from_json/1),
      cursor: Tinkex.Types.Cursor.from_json(m["cursor"])
    }
  end
end

defmodule Tinkex.Types.WeightsInfoResponse do
  @moduledoc "Base model and LoRA settings of a checkpoint."
  defstruct [:base_model, :is_lora, :lora_rank, :train_unembed, :train_mlp, :train_attn, :optimizer_config]
  @type t :: %__MODULE__{}
  @doc false
  def from_json(m) do
    %__MODULE__{
      base_model: m["base_model"],
      is_lora: m["is_lora"],
      lora_rank: m["lora_rank"],
      train_unembed: m["train_unembed"],
      train_mlp: m["train_mlp"],
      train_attn: m["train_attn"],
      optimizer_config: m["optimizer_config"]
    }
  end
end
