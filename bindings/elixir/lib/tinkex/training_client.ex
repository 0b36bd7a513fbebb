defmodule Tinkex.TrainingClient do
  @moduledoc """
  A training client for one model. Operations run on the server in submission order (the
  order of the calls, across processes), so a loop may submit `forward_backward` and
  `optim_step` back to back and await later.

      {:ok, fb} = TrainingClient.forward_backward(training, data, :cross_entropy)
      {:ok, opt} = TrainingClient.optim_step(training, %AdamParams{learning_rate: 1.0e-3})
      {:ok, %ForwardBackwardOutput{} = out} = Tinkex.Future.await(fb)
      {:ok, _} = Tinkex.Future.await(opt)

  Every function returns `{:ok, %Tinkex.Future{}}` at once (or `{:error, %Tinkex.Error{}}`
  when the input is rejected before anything is sent).

  Training data goes into one libtinkex datum batch per call: datums whose model input is one
  token chunk as typed arrays (no JSON text; give token ids and loss inputs as binaries —
  native-endian int64 / float32 — to skip any per-element work in Elixir), other datums
  (images, several chunks) as JSON (`tinkex_datum_batch_push_json`).
  """

  alias Tinkex.{Constants, Error, Future, JSON, Native, Requests}
  alias Tinkex.Types.{
    AdamParams,
    Datum,
    EncodedTextChunk,
    ForwardBackwardOutput,
    GetInfoResponse,
    LoadWeightsResponse,
    ModelInput,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    TensorData
  }

  defstruct [:handle, :info]
  @type t :: %__MODULE__{handle: reference, info: GetInfoResponse.t()}

  @doc false
  def wrap({:training_client, h}) do
    case Native.training_client_get_info(h) do
      {:ok, json} -> {:ok, %__MODULE__{handle: h, info: GetInfoResponse.from_json(JSON.decode!(json))}}
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  @doc "The model's information (fetched at creation; no I/O)."
  @spec get_info(t) :: {:ok, GetInfoResponse.t()}
  def get_info(%__MODULE__{info: info}), do: {:ok, info}

  @doc "The model id."
  @spec model_id(t) :: String.t()
  def model_id(%__MODULE__{info: info}), do: info.model_id

  @doc """
  Loss and gradients of `data` (a list of `Tinkex.Types.Datum`), accumulated for the next
  `optim_step/2`: a future of `ForwardBackwardOutput`. `loss_fn` is an atom or string
  (`:cross_entropy`, `:importance_sampling`, `:ppo`, ...); option `:loss_fn_config` (map).
  """
  @spec forward_backward(t, [Datum.t()], atom | String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def forward_backward(tc, data, loss_fn, opts \\ []), do: fb(tc, data, loss_fn, opts, false)

  @doc "Like `forward_backward/4` without accumulating gradients."
  @spec forward(t, [Datum.t()], atom | String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def forward(tc, data, loss_fn, opts \\ []), do: fb(tc, data, loss_fn, opts, true)

  defp fb(%__MODULE__{handle: h}, data, loss_fn, opts, forward_only) do
    op = if forward_only, do: :forward, else: :forward_backward
    decode = Future.json(&ForwardBackwardOutput.from_json/1)

    # Always one datum batch (the C ABI borrows it at submit; its resource frees it).
    with {:ok, batch} <- build_batch(data) do
      loss = JSON.encode!(Requests.loss(loss_fn, opts))

      if forward_only,
        do: Native.training_client_forward_batch(h, batch, loss) |> Future.submitted(op, decode),
        else: Native.training_client_forward_backward_batch(h, batch, loss) |> Future.submitted(op, decode)
    end
  end

  defp build_batch(data) do
    case Native.datum_batch_new() do
      {:ok, batch} -> fill_batch(batch, data)
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  defp fill_batch(batch, data) do
    Enum.reduce_while(data, {:ok, batch}, fn d, acc ->
      case push(batch, d) do
        :ok -> {:cont, acc}
        {:error, e} -> {:halt, {:error, Error.from_nif(e)}}
      end
    end)
  end

  # A datum whose input is at most one token chunk crosses as typed arrays (no JSON text for
  # the numbers); any other datum (images, several chunks) as JSON.
  defp push(batch, %Datum{model_input: %ModelInput{chunks: chunks}} = d) when length(chunks) <= 1 do
    tokens =
      case chunks do
        [] -> <<>>
        [%EncodedTextChunk{tokens: t}] when is_binary(t) -> t
        [%EncodedTextChunk{tokens: t}] -> TensorData.pack(t, :int64)
        [_other] -> nil
      end

    if tokens do
      with :ok <- Native.datum_batch_push(batch, tokens, Constants.dtype(:int64)),
           do: set_inputs(batch, Datum.loss_inputs(d))
    else
      push_json(batch, d)
    end
  end

  defp push(batch, d), do: push_json(batch, d)

  defp push_json(batch, d), do: Native.datum_batch_push_json(batch, JSON.encode!(Requests.datum(d)))

  defp set_inputs(_batch, []), do: :ok

  defp set_inputs(batch, [{name, %TensorData{} = t} | rest]) do
    case Native.datum_batch_set_loss_input(batch, name, TensorData.to_binary(t), Constants.dtype(t.dtype), t.shape) do
      :ok -> set_inputs(batch, rest)
      err -> err
    end
  end

  @doc """
  Applies the accumulated gradients with Adam: a future of `OptimStepResponse`. Takes an
  `AdamParams` struct or a keyword list of its fields.
  """
  @spec optim_step(t, AdamParams.t() | keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def optim_step(tc, params \\ %AdamParams{})
  def optim_step(tc, params) when is_list(params), do: optim_step(tc, struct!(AdamParams, params))

  def optim_step(%__MODULE__{handle: h}, %AdamParams{} = p) do
    Native.training_client_optim_step(h, JSON.encode!(Requests.optim_step(p)))
    |> Future.submitted(:optim_step, Future.json(&OptimStepResponse.from_json/1))
  end

  @doc """
  Saves a training checkpoint (weights and optimizer state) named `name`: a future of
  `SaveWeightsResponse` with its `tinker://` path. Options: `:ttl_seconds`, `:overwrite`,
  `:user_metadata` (string map).
  """
  @spec save_state(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def save_state(%__MODULE__{handle: h}, name, opts \\ []) do
    body = Requests.save_state(name, opts)

    Native.training_client_save_state(h, JSON.encode!(body))
    |> Future.submitted(:save_state, Future.json(&SaveWeightsResponse.from_json/1))
  end

  @doc """
  Loads a training checkpoint (`tinker://.../weights/name`) into this model: a future of
  `LoadWeightsResponse`. `optimizer: true` also restores the optimizer state.
  """
  @spec load_state(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def load_state(%__MODULE__{handle: h}, path, opts \\ []) do
    body = Requests.load_state(path, opts)

    Native.training_client_load_state(h, JSON.encode!(body))
    |> Future.submitted(:load_state, Future.json(&LoadWeightsResponse.from_json/1))
  end

  @doc "`load_state(tc, path, optimizer: true)`."
  def load_state_with_optimizer(tc, path), do: load_state(tc, path, optimizer: true)

  @doc "Saves named sampler weights: a future of `SaveWeightsForSamplerResponse`."
  @spec save_weights_for_sampler(t, String.t()) :: {:ok, Future.t()} | {:error, Error.t()}
  def save_weights_for_sampler(%__MODULE__{handle: h}, name) do
    Native.training_client_save_weights_for_sampler(h, JSON.encode!(Requests.save_weights_for_sampler(name)))
    |> Future.submitted(:save_weights_for_sampler, Future.json(&SaveWeightsForSamplerResponse.from_json/1))
  end

  @doc """
  Saves the current weights for sampling and creates a sampling client bound to them: a
  future of `Tinkex.SamplingClient`.
  """
  @spec save_weights_and_get_sampling_client(t) :: {:ok, Future.t()} | {:error, Error.t()}
  def save_weights_and_get_sampling_client(%__MODULE__{handle: h}) do
    Native.training_client_save_weights_and_get_sampling_client(h)
    |> Future.submitted(:save_weights_and_get_sampling_client, &Tinkex.SamplingClient.wrap/1)
  end
end
