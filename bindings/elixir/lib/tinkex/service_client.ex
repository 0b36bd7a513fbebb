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
  (a `Tinkex.Types.LoraConfig`); `:user_metadata` (string map); `:optimizer` (`:adamw`,
  `:dimuon` or a map, see `Tinkex.Types.OptimizerConfig`; default: the server's).
  """
  @spec create_lora_training_client(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_lora_training_client(%__MODULE__{handle: h} = svc, base_model, opts \\ []) do
    with :ok <- Requests.check(:create_lora_training_client, opts) do
      body = Requests.create_lora_training_client(base_model, opts)

      Native.service_client_create_lora_training_client(h, JSON.encode!(body))
      |> Future.submitted(:create_lora_training_client, &Tinkex.TrainingClient.wrap(&1, svc))
    end
  end

  @doc """
  Creates a training client from a training checkpoint (`tinker://.../weights/name`): a
  future of `Tinkex.TrainingClient`. `optimizer: true` also restores the optimizer state.
  Other options: `:base_model`, `:user_metadata`, `:weights_access_token`,
  `:optimizer_config` (see `Tinkex.Types.OptimizerConfig`).
  """
  @spec create_training_client_from_state(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_training_client_from_state(%__MODULE__{handle: h} = svc, path, opts \\ []) do
    with :ok <- Requests.check(:create_training_client_from_state, opts) do
      body = Requests.create_training_client_from_state(path, opts)

      Native.service_client_create_training_client_from_state(h, JSON.encode!(body))
      |> Future.submitted(:create_training_client_from_state, &Tinkex.TrainingClient.wrap(&1, svc))
    end
  end

  @doc """
  `create_training_client_from_state(svc, path, [optimizer: true] ++ opts)`: restores the
  optimizer state too. Options: `:base_model`, `:user_metadata`, `:weights_access_token`.
  """
  @spec create_training_client_from_state_with_optimizer(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_training_client_from_state_with_optimizer(svc, path, opts \\ []),
    do: create_training_client_from_state(svc, path, Keyword.put(opts, :optimizer, true))

  @doc """
  Creates a sampling client: a future of `Tinkex.SamplingClient`. Give exactly one of
  `base_model: "Qwen/Qwen3-8B"`, `model_path: "tinker://.../sampler_weights/name"` or
  `sampling_session_id: "..."` (an existing sampling session of this client's session,
  PROTOCOL 12.1). Other options: `:retry_config` (map of RetryConfig fields),
  `:record_stability_info` (boolean, default false).
  """
  @spec create_sampling_client(t, keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_sampling_client(%__MODULE__{handle: h} = svc, opts) do
    with :ok <- Requests.check(:create_sampling_client, opts) do
      body = Requests.create_sampling_client(opts)

      Native.service_client_create_sampling_client(h, JSON.encode!(body))
      |> Future.submitted(:create_sampling_client, &Tinkex.SamplingClient.wrap(&1, svc))
    end
  end

  @doc """
  Creates a REST client (training runs, checkpoints, ...) sharing this client's transport
  (no session is needed for it). For one without a service client: `Tinkex.RestClient.new/1`.
  """
  @spec create_rest_client(t) :: {:ok, Tinkex.RestClient.t()} | {:error, Error.t()}
  def create_rest_client(%__MODULE__{handle: h} = svc) do
    case Native.service_client_create_rest_client(h) do
      {:ok, rc} -> {:ok, %Tinkex.RestClient{handle: rc, service: svc}}
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  @doc """
  Copies a checkpoint into the configured project (`:project_id` of `new/1`) by reference
  (PROTOCOL 6.9): a future of the new `tinker://` path. Options: `:ttl_seconds`,
  `:weights_access_token`.
  """
  @spec copy_weights(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def copy_weights(%__MODULE__{handle: h}, path, opts \\ []) do
    with :ok <- Requests.check(:copy_weights, opts) do
      Native.service_client_copy_weights(h, JSON.encode!(Requests.copy_weights(path, opts)))
      |> Future.submitted(:copy_weights, Future.json(& &1))
    end
  end

  @doc """
  Registers a server-side custom loss (PROTOCOL 5.10, 11.6) given as its traced graph:
  `name`, `inputs` (a list of `{name, rank}` or `%{"name" => ..., "rank" => ...}`, `logprobs`
  included) and `graph` (the graph JSON, a map). A future of `%{"loss_id" => id}`; pass
  `loss_fn: "custom", loss_fn_config: %{"loss_id" => id}` to `forward_backward`. Fails with a
  user error when the server does not run custom losses (`custom_loss_server_side`).
  """
  @spec create_custom_loss(t, String.t(), list, map) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_custom_loss(%__MODULE__{handle: h}, name, inputs, graph) do
    Native.service_client_create_custom_loss(h, JSON.encode!(Requests.create_custom_loss(name, inputs, graph)))
    |> Future.submitted(:create_custom_loss, Future.json(& &1))
  end

  @doc """
  Resumes a training run from its latest training checkpoint (a new training client
  created with create-via-load): a future of `Tinkex.TrainingClient`. Option `:optimizer`
  (default true: restore the optimizer state too).
  """
  @spec resume_training_run(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def resume_training_run(%__MODULE__{handle: h} = svc, training_run_id, opts \\ []) do
    with :ok <- Requests.check(:resume_training_run, opts) do
      Native.service_client_resume_training_run(h, JSON.encode!(Requests.resume_training_run(training_run_id, opts)))
      |> Future.submitted(:resume_training_run, &Tinkex.TrainingClient.wrap(&1, svc))
    end
  end

  @doc "The web console URL of this client's session (PROTOCOL 20.2); no I/O."
  @spec get_console_url(t) :: {:ok, String.t()} | {:error, Error.t()}
  def get_console_url(%__MODULE__{handle: h}), do: Tinkex.Util.sync_json(Native.service_client_get_console_url(h))

  @doc """
  Introspection (no I/O): `%{"session_id", "queue_state", "queue_state_reason",
  "billing_paused_ms", "backoff_remaining_ms", "last_progress_ms_ago",
  "operations_waiting", "operations_in_flight", "telemetry"}` (string keys; `telemetry` is
  `nil` when telemetry is off).
  """
  @spec status(t) :: {:ok, map} | {:error, Error.t()}
  def status(%__MODULE__{handle: h}), do: Tinkex.Util.sync_json(Native.service_client_status(h))

  @doc """
  The telemetry counters of `status/1` (`nil` when telemetry is off or before the session
  started); read again at each call, no I/O.
  """
  @spec get_telemetry(t) :: {:ok, map | nil} | {:error, Error.t()}
  def get_telemetry(svc), do: Tinkex.Util.telemetry(status(svc))

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
