defmodule Tinkex.ServiceClient do
  @moduledoc """
  The entry point: owns the session (created with the first operation), its heartbeat and
  the progress watchdog, and creates training, sampling and REST clients.

      {:ok, service} = Tinkex.ServiceClient.new(base_url: "http://127.0.0.1:8080", api_key: "tml-...")
      {:ok, fut} = Tinkex.ServiceClient.create_lora_training_client(service, "Qwen/Qwen3-8B", rank: 16)
      {:ok, training} = Tinkex.Future.await(fut, 60_000)

  ## Configuration (`new/1`)

  Every option is optional; unset ones fall back to the `TINKER_*` environment variables
  (`TINKER_API_KEY`, `TINKER_BASE_URL`, ...), then to the official SDK's defaults.

  * `:api_key`, `:base_url`, `:tags`, `:project_id`, `:display_name`, `:telemetry`
    (boolean), `:allow_insecure_http` (boolean)
  * `:timeouts` — map or keyword: `connect_ms`, `request_ms`, `retrieve_future_ms`,
    `heartbeat_ms`, `dynamic_config_ms`, `telemetry_ms`
  * `:retry` — `progress_timeout_ms`, `base_delay_ms`, `max_delay_ms`, `jitter`,
    `max_attempts`, `max_retry_after_ms`, `billing_pause_step_ms`, `billing_max_pause_ms`,
    `min_poll_duration_ms`
  * `:heartbeat` — `interval_ms`, `warn_after_ms`
  * `:progress_event_interval_ms`
  * `:runtime` — a `Tinkex.Runtime` (default: `Tinkex.Runtime.default/0`)

  These are the keys of `tinkex_service_client_new`'s JSON configuration (include/tinkex.h).
  """

  alias Tinkex.{Error, Future, JSON, Native, Requests, Runtime}
  alias Tinkex.Types.GetServerCapabilitiesResponse

  defstruct [:handle, :runtime]
  @type t :: %__MODULE__{handle: reference, runtime: Runtime.t()}

  @doc "Creates a service client (no I/O). See the module doc for the options."
  @spec new(keyword) :: {:ok, t} | {:error, Error.t()}
  def new(opts \\ []) do
    {rt, opts} = Keyword.pop_lazy(opts, :runtime, &Runtime.default/0)

    case Native.service_client_new(rt.handle, JSON.encode!(Requests.service_config(opts))) do
      {:ok, h} -> {:ok, %__MODULE__{handle: h, runtime: rt}}
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  @doc "The session id once the session exists (after the first operation)."
  @spec session_id(t) :: {:ok, String.t()} | {:error, Error.t()}
  def session_id(%__MODULE__{handle: h}) do
    case Native.service_client_session_id(h) do
      {:ok, id} -> {:ok, id}
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  @doc "The models the server supports: a future of `GetServerCapabilitiesResponse`."
  @spec get_server_capabilities(t) :: {:ok, Future.t()} | {:error, Error.t()}
  def get_server_capabilities(%__MODULE__{handle: h}) do
    Native.service_client_get_server_capabilities(h)
    |> Future.submitted(:get_server_capabilities, Future.json(&GetServerCapabilitiesResponse.from_json/1))
  end

  @doc """
  Creates a LoRA training client: a future of `Tinkex.TrainingClient`. Options: `:rank`
  (default 32), `:seed`, `:train_unembed`, `:train_mlp`, `:train_attn`, or `:lora_config`
  (a `Tinkex.Types.LoraConfig`).
  """
  @spec create_lora_training_client(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_lora_training_client(%__MODULE__{handle: h}, base_model, opts \\ []) do
    body = Requests.create_lora_training_client(base_model, opts)

    Native.service_client_create_lora_training_client(h, JSON.encode!(body))
    |> Future.submitted(:create_lora_training_client, &Tinkex.TrainingClient.wrap/1)
  end

  @doc """
  Creates a training client from a training checkpoint (`tinker://.../weights/name`): a
  future of `Tinkex.TrainingClient`. `optimizer: true` also restores the optimizer state.
  """
  @spec create_training_client_from_state(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_training_client_from_state(%__MODULE__{handle: h}, path, opts \\ []) do
    body = Requests.create_training_client_from_state(path, opts)

    Native.service_client_create_training_client_from_state(h, JSON.encode!(body))
    |> Future.submitted(:create_training_client_from_state, &Tinkex.TrainingClient.wrap/1)
  end

  @doc "`create_training_client_from_state(svc, path, optimizer: true)`."
  def create_training_client_from_state_with_optimizer(svc, path),
    do: create_training_client_from_state(svc, path, optimizer: true)

  @doc """
  Creates a sampling client: a future of `Tinkex.SamplingClient`. Give exactly one of
  `base_model: "Qwen/Qwen3-8B"` or `model_path: "tinker://.../sampler_weights/name"`.
  """
  @spec create_sampling_client(t, keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_sampling_client(%__MODULE__{handle: h}, opts) do
    body = Requests.create_sampling_client(opts)

    Native.service_client_create_sampling_client(h, JSON.encode!(body))
    |> Future.submitted(:create_sampling_client, &Tinkex.SamplingClient.wrap/1)
  end

  @doc "Creates a REST client (training runs, checkpoints) sharing this client's transport."
  @spec create_rest_client(t) :: {:ok, Tinkex.RestClient.t()} | {:error, Error.t()}
  def create_rest_client(%__MODULE__{handle: h}) do
    case Native.service_client_create_rest_client(h) do
      {:ok, rc} -> {:ok, %Tinkex.RestClient{handle: rc}}
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  @doc """
  Finishes the session (idempotent): a future of `:ok`. `reason` is `:success` (default),
  `:errored` or `:interrupted`.
  """
  @spec close(t, :success | :errored | :interrupted, String.t() | nil) :: {:ok, Future.t()} | {:error, Error.t()}
  def close(%__MODULE__{handle: h}, reason \\ :success, detail \\ nil) do
    body = Requests.close(reason, detail)

    Native.service_client_close(h, JSON.encode!(body))
    |> Future.submitted(:close, fn _ -> {:ok, :ok} end)
  end

  @doc """
  Subscribes `pid` (default: the caller) to the events of this client and of every client
  it created. They arrive as `{:tinkex_event, sub.ref, %Tinkex.Event{}}`.
  """
  @spec subscribe(t, pid) :: {:ok, Tinkex.Subscription.t()} | {:error, Error.t()}
  def subscribe(%__MODULE__{handle: h}, pid \\ self()) do
    case Native.service_client_subscribe(h, pid) do
      {:ok, ref, sub} -> {:ok, %Tinkex.Subscription{ref: ref, handle: sub, pid: pid}}
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end
end
