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

  defstruct [:handle, :sampling_session_id, :base_model, :service]

  @type t :: %__MODULE__{
          handle: reference,
          sampling_session_id: String.t(),
          base_model: String.t() | nil,
          service: Tinkex.ServiceClient.t() | nil
        }

  @doc false
  # `service`: the service client that created it (whose events on_queue_state_change/2
  # observes); nil for a client made by from_sampler_handle/2.
  def wrap({:sampling_client, h}, service \\ nil) do
    case Native.sampling_client_get_info(h) do
      {:ok, json} ->
        info = JSON.decode!(json)

        {:ok,
         %__MODULE__{
           handle: h,
           sampling_session_id: info["sampling_session_id"],
           base_model: info["base_model"],
           service: service
         }}

      {:error, e} ->
        {:error, Tinkex.Error.from_nif(e)}
    end
  end

  @doc """
  The official `SamplingClient.create`: `Tinkex.ServiceClient.create_sampling_client/2` of
  `service` (a future of `Tinkex.SamplingClient`). Give exactly one of `base_model:`,
  `model_path:` (a new sampling session) or `sampling_session_id:` (joins an existing
  sampling session of this service's session, PROTOCOL 12.1); options `:retry_config`,
  `:record_stability_info`.
  """
  @spec create(Tinkex.ServiceClient.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create(%Tinkex.ServiceClient{} = service, opts), do: Tinkex.ServiceClient.create_sampling_client(service, opts)

  @doc "The base model sampled (known at creation; no I/O)."
  @spec get_base_model(t) :: {:ok, String.t()}
  def get_base_model(%__MODULE__{base_model: m}), do: {:ok, m}

  @doc """
  Draws continuations of `prompt` (a `ModelInput` or token ids): a future of
  `SampleResponse`. Options: `:num_samples` (default 1), `:prompt_logprobs` (boolean),
  `:topk_prompt_logprobs`, `:topk_sample_logprobs`, `:prompt_logprobs_last_n`,
  `:target_prompt_logprobs` (a `TensorData`), `:prompt_alt_tokens_k` (integer). An unknown
  option is `{:error, %Tinkex.Error{kind: :invalid_json}}` before anything is sent.
  """
  @spec sample(t, ModelInput.t() | [integer], SamplingParams.t() | keyword, keyword) ::
          {:ok, Future.t()} | {:error, Error.t()}
  def sample(client, prompt, params \\ %SamplingParams{}, opts \\ [])
  def sample(sc, prompt, params, opts) when is_list(params), do: sample(sc, prompt, struct!(SamplingParams, params), opts)

  def sample(%__MODULE__{handle: h}, prompt, %SamplingParams{} = params, opts) do
    with :ok <- Tinkex.Requests.check(:sample, opts) do
      body = Tinkex.Requests.sample(prompt, params, opts)

      Native.sampling_client_sample(h, JSON.encode!(body))
      |> Future.submitted(:sample, Future.json(&SampleResponse.from_json/1))
    end
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

  @doc "The telemetry counters of `status/1` (`nil` when telemetry is off); no I/O."
  @spec get_telemetry(t) :: {:ok, map | nil} | {:error, Error.t()}
  def get_telemetry(sc), do: Tinkex.Util.telemetry(status(sc))

  @doc """
  The official `on_queue_state_change` hook, as a registration: calls `fun.(state, reason)`
  whenever the queue state of one of this sampling session's requests changes (PROTOCOL 15.2;
  `:active` again when it completes) — `state` is `:active`, `:paused_capacity`,
  `:paused_rate_limit` or `:unknown`, `reason` a string or `nil`. These are the `:queue_state` events of the service client that created this client
  whose `client_id` is its sampling session id.

  `fun` runs in a process of its own (a `Tinkex.EventHandler`, linked to the caller; never on
  a libtinkex thread nor in a NIF); an exception in it is logged and the observing goes on.
  Returns `{:ok, pid}`; `GenServer.stop(pid)` ends it. A client made by
  `from_sampler_handle/2` has no service client whose events could be observed:
  `{:error, %Tinkex.Error{kind: :wrong_state}}`.
  """
  @spec on_queue_state_change(t, (atom, String.t() | nil -> any)) :: {:ok, pid} | {:error, Error.t()}
  def on_queue_state_change(%__MODULE__{service: nil}, fun) when is_function(fun, 2),
    do: {:error, Error.new(:wrong_state, :wrong_state, "on_queue_state_change: this sampling client has no service client to observe (it was made by from_sampler_handle)")}

  def on_queue_state_change(%__MODULE__{service: svc, sampling_session_id: sid}, fun) when is_function(fun, 2) do
    Tinkex.EventHandler.start_link(svc, Tinkex.SamplingClient.QueueStateObserver, {sid, fun})
  end
end

defmodule Tinkex.SamplingClient.QueueStateObserver do
  @moduledoc false
  # The Tinkex.EventHandler module of SamplingClient.on_queue_state_change/2: calls the
  # function for the queue_state events of one sampling session.
  @behaviour Tinkex.EventHandler
  require Logger

  @states %{"active" => :active, "paused_capacity" => :paused_capacity, "paused_rate_limit" => :paused_rate_limit}

  @impl true
  def init({sid, fun}), do: {:ok, {sid, fun}}

  @impl true
  def handle_event(%Tinkex.Event{type: :queue_state, data: %{"client_id" => sid} = d}, {sid, fun} = state) do
    try do
      fun.(Map.get(@states, d["state"], :unknown), d["reason"])
    rescue
      e -> Logger.error("on_queue_state_change: the function raised: " <> Exception.message(e))
    catch
      kind, reason -> Logger.error("on_queue_state_change: the function did #{kind}: #{inspect(reason, limit: 20)}")
    end

    {:ok, state}
  end

  def handle_event(_event, state), do: {:ok, state}
end
