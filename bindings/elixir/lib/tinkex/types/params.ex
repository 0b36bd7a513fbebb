defmodule Tinkex.Types.AdamParams do
  @moduledoc "Adam optimizer parameters of `Tinkex.TrainingClient.optim_step/2`."
  defstruct learning_rate: 1.0e-4, beta1: 0.9, beta2: 0.95, eps: 1.0e-12, weight_decay: 0.0, grad_clip_norm: 0.0

  @type t :: %__MODULE__{
          learning_rate: float,
          beta1: float,
          beta2: float,
          eps: float,
          weight_decay: float,
          grad_clip_norm: float
        }

  @doc false
  def to_json(%__MODULE__{} = p), do: p |> Map.from_struct() |> Tinkex.Types.Util.compact()
end

defmodule Tinkex.Types.LoraConfig do
  @moduledoc "LoRA settings of `Tinkex.ServiceClient.create_lora_training_client/3`."
  defstruct rank: 32, seed: nil, train_unembed: true, train_mlp: true, train_attn: true

  @type t :: %__MODULE__{
          rank: pos_integer,
          seed: integer | nil,
          train_unembed: boolean,
          train_mlp: boolean,
          train_attn: boolean
        }

  @doc false
  def to_json(%__MODULE__{} = c), do: c |> Map.from_struct() |> Tinkex.Types.Util.compact()
end

defmodule Tinkex.Types.SamplingParams do
  @moduledoc """
  Sampling parameters of `Tinkex.SamplingClient.sample/4`. `stop` is a list of strings or of
  token ids; `top_k: -1` means no top-k cut.
  """
  defstruct max_tokens: nil, seed: nil, stop: nil, temperature: 1.0, top_k: -1, top_p: 1.0

  @type t :: %__MODULE__{
          max_tokens: pos_integer | nil,
          seed: integer | nil,
          stop: [String.t()] | [integer] | String.t() | nil,
          temperature: float,
          top_k: integer,
          top_p: float
        }

  @doc false
  def to_json(%__MODULE__{} = p), do: p |> Map.from_struct() |> Tinkex.Types.Util.compact()
end

defmodule Tinkex.Types.DimuonParams do
  @moduledoc """
  Dimuon optimizer step parameters (the official `DimuonParams`): `learning_rate`
  (required, >= 0), `grad_clip_norm` (default 0.0: no clipping), `beta1` (default 0.9).
  Pass to `Tinkex.TrainingClient.optim_step/2`; NaN and infinities are rejected by the core.
  """
  @enforce_keys [:learning_rate]
  defstruct learning_rate: nil, grad_clip_norm: 0.0, beta1: 0.9

  @type t :: %__MODULE__{learning_rate: number, grad_clip_norm: number, beta1: number}

  @doc false
  def to_json(%__MODULE__{} = p),
    do: p |> Map.from_struct() |> Tinkex.Types.Util.compact() |> Map.put(:type, "dimuon")
end

defmodule Tinkex.Types.OptimizerConfig do
  @moduledoc """
  The optimizer of a training client (`create_lora_training_client(..., optimizer: ...)`,
  `create_training_client_from_state(..., optimizer_config: ...)`): `:adamw`,
  `:dimuon` (version 1), or a map passed through as is (e.g. `%{type: "dimuon", version: 1}`).
  """

  @doc false
  def to_json(:adamw), do: %{"type" => "adamw"}
  def to_json(:dimuon), do: %{"type" => "dimuon", "version" => 1}
  def to_json(m) when is_map(m), do: m
  def to_json(nil), do: nil
end
