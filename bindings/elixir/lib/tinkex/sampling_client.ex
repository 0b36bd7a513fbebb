defmodule Tinkex.SamplingClient do
  @moduledoc """
  A sampling client bound to one sampling session (a base model or saved sampler weights).

      {:ok, fut} = SamplingClient.sample(sampler, ModelInput.from_ints([1, 2, 3]),
                                         %SamplingParams{max_tokens: 16}, num_samples: 2)
      {:ok, %SampleResponse{sequences: seqs}} = Tinkex.Future.await(fut)

  Any number of processes may sample concurrently with one client; each receives its own
  completions.
  """

  alias Tinkex.{Error, Future, JSON, Native}
  alias Tinkex.Types.{ModelInput, SampleResponse, SamplingParams}

  defstruct [:handle, :sampling_session_id, :base_model]

  @type t :: %__MODULE__{handle: reference, sampling_session_id: String.t(), base_model: String.t() | nil}

  @doc false
  def wrap({:sampling_client, h}) do
    case Native.sampling_client_get_info(h) do
      {:ok, json} ->
        info = JSON.decode!(json)
        {:ok, %__MODULE__{handle: h, sampling_session_id: info["sampling_session_id"], base_model: info["base_model"]}}

      {:error, e} ->
        {:error, Tinkex.Error.from_nif(e)}
    end
  end

  @doc """
  Draws continuations of `prompt` (a `ModelInput` or token ids): a future of
  `SampleResponse`. Options: `:num_samples` (default 1), `:prompt_logprobs` (boolean),
  `:topk_prompt_logprobs`, `:topk_sample_logprobs`, `:prompt_logprobs_last_n`,
  `:target_prompt_logprobs` (a `TensorData`), `:prompt_alt_tokens_k` (integer).
  """
  @spec sample(t, ModelInput.t() | [integer], SamplingParams.t() | keyword, keyword) ::
          {:ok, Future.t()} | {:error, Error.t()}
  def sample(client, prompt, params \\ %SamplingParams{}, opts \\ [])
  def sample(sc, prompt, params, opts) when is_list(params), do: sample(sc, prompt, struct!(SamplingParams, params), opts)

  def sample(%__MODULE__{handle: h}, prompt, %SamplingParams{} = params, opts) do
    body = Tinkex.Requests.sample(prompt, params, opts)

    Native.sampling_client_sample(h, JSON.encode!(body))
    |> Future.submitted(:sample, Future.json(&SampleResponse.from_json/1))
  end

  @doc """
  Log-probabilities of every prompt token: a future of a list with one entry per token
  (`nil` at position 0).
  """
  @spec compute_logprobs(t, ModelInput.t() | [integer]) :: {:ok, Future.t()} | {:error, Error.t()}
  def compute_logprobs(%__MODULE__{handle: h}, prompt) do
    Native.sampling_client_compute_logprobs(h, JSON.encode!(Tinkex.Requests.compute_logprobs(prompt)))
    |> Future.submitted(:compute_logprobs, Future.json(& &1))
  end

  @doc """
  A handle string for this sampler (PROTOCOL 20.4): pass it to another process or machine
  and `from_sampler_handle/2` there. It carries no credentials. No I/O.
  """
  @spec get_sampler_handle(t) :: {:ok, String.t()} | {:error, Error.t()}
  def get_sampler_handle(%__MODULE__{handle: h}), do: Tinkex.Util.sync_json(Native.sampling_client_get_sampler_handle(h))

  @doc """
  A new client for the sampler of `handle` (from `get_sampler_handle/1`; PROTOCOL 3.4, 12.2),
  authenticating with this process's credentials. Options: those of
  `Tinkex.ServiceClient.new/1` (`:api_key`, `:base_url`, ..., `:runtime`). No I/O.
  """
  @spec from_sampler_handle(String.t(), keyword) :: {:ok, t} | {:error, Error.t()}
  def from_sampler_handle(handle, opts \\ []) when is_binary(handle) do
    {rt, opts} = Keyword.pop_lazy(opts, :runtime, &Tinkex.Runtime.default/0)

    case Native.sampling_client_from_sampler_handle(rt.handle, handle, JSON.encode!(Tinkex.Requests.service_config(opts))) do
      {:ok, h} -> wrap({:sampling_client, h})
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  @doc "Introspection of this client (no I/O): the keys of `Tinkex.ServiceClient.status/1`."
  @spec status(t) :: {:ok, map} | {:error, Error.t()}
  def status(%__MODULE__{handle: h}), do: Tinkex.Util.sync_json(Native.sampling_client_status(h))
end
