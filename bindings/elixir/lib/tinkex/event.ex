defmodule Tinkex.Event do
  @moduledoc """
  An event of a service client or of a client it created, delivered to subscribers as

      {:tinkex_event, subscription_ref, %Tinkex.Event{}}

  * `type`: `:queue_state`, `:progress`, `:retry`, `:heartbeat_warning`,
    `:session_expired`, `:telemetry_overflow`, `:summary` or `:other`;
  * `request_id`: the request the event is about, or `nil`;
  * `json`: the event as JSON text (copied out of libtinkex on its dispatcher thread);
  * `data`: the decoded JSON (a map with string keys) once `decode/1` ran — events sent to
    pids arrive with `data: nil`; `Tinkex.EventHandler` decodes before calling you.

  Fields of `data` per type (see docs/reliability.md of the repository):
  `queue_state` — request_id, request_type, state, reason; `progress` — request_id,
  request_type, elapsed_secs, attempts, polls, queue_state, deadline_in_secs; `retry` —
  request_id, operation, attempt, delay_secs, error; `heartbeat_warning` — session_id,
  failing_for_secs, error; `session_expired` — session_id; `telemetry_overflow` — dropped;
  `summary` — waiting, in_flight, completed.
  """

  defstruct [:type, :request_id, :json, :data]

  @type type ::
          :queue_state
          | :progress
          | :retry
          | :heartbeat_warning
          | :session_expired
          | :telemetry_overflow
          | :summary
          | :other
  @type t :: %__MODULE__{type: type, request_id: String.t() | nil, json: binary, data: map | nil}

  @doc "Fills `data` from `json`."
  @spec decode(t) :: t
  def decode(%__MODULE__{data: nil, json: json} = ev) do
    case Tinkex.JSON.decode(json) do
      {:ok, data} -> %{ev | data: data}
      _ -> %{ev | data: %{}}
    end
  end

  def decode(%__MODULE__{} = ev), do: ev
end

defmodule Tinkex.Subscription do
  @moduledoc """
  An event subscription (`Tinkex.ServiceClient.subscribe/2`). Events arrive at `pid` as
  `{:tinkex_event, ref, %Tinkex.Event{}}`, in emission order, until `unsubscribe/1` or the
  death of `pid` (the NIF monitors it). The subscription keeps its service client alive
  (session, heartbeats) while it is active; dropping the struct does not end it.
  """
  defstruct [:ref, :handle, :pid]
  @type t :: %__MODULE__{ref: reference, handle: reference, pid: pid}

  @doc "Stops the events (those already queued may still arrive)."
  @spec unsubscribe(t) :: :ok
  def unsubscribe(%__MODULE__{handle: h}), do: Tinkex.Native.subscription_free(h)
end

defmodule Tinkex.EventHandler do
  @moduledoc """
  A behaviour for event consumers, and a process that runs one.

      defmodule MyHandler do
        @behaviour Tinkex.EventHandler
        def init(arg), do: {:ok, arg}
        def handle_event(%Tinkex.Event{type: :retry, data: d}, state) do
          IO.puts("retrying \#{d["operation"]} in \#{d["delay_secs"]} s")
          {:ok, state}
        end
        def handle_event(_event, state), do: {:ok, state}
      end

      {:ok, pid} = Tinkex.EventHandler.start_link(service, MyHandler, nil)

  The handler process subscribes itself to the service client's events, decodes each event
  (`Tinkex.Event.decode/1`) and calls `handle_event/2`. This is the `:telemetry`-style hook
  of the binding; it needs no Hex package. Use `Tinkex.ServiceClient.subscribe/2` directly
  to receive raw events in any process.
  """

  @callback init(arg :: term) :: {:ok, state :: term}
  @callback handle_event(Tinkex.Event.t(), state :: term) :: {:ok, state :: term}

  use GenServer

  @doc "Starts a handler process linked to the caller."
  @spec start_link(Tinkex.ServiceClient.t(), module, term, GenServer.options()) :: GenServer.on_start()
  def start_link(service, module, arg, opts \\ []) do
    GenServer.start_link(__MODULE__, {service, module, arg}, opts)
  end

  @impl GenServer
  def init({service, module, arg}) do
    {:ok, state} = module.init(arg)
    {:ok, sub} = Tinkex.ServiceClient.subscribe(service, self())
    {:ok, %{sub: sub, module: module, state: state}}
  end

  @impl GenServer
  def handle_info({:tinkex_event, ref, ev}, %{sub: %{ref: ref}} = s) do
    {:ok, state} = s.module.handle_event(Tinkex.Event.decode(ev), s.state)
    {:noreply, %{s | state: state}}
  end

  def handle_info(_other, s), do: {:noreply, s}

  @impl GenServer
  def terminate(_reason, %{sub: sub}), do: Tinkex.Subscription.unsubscribe(sub)
end
