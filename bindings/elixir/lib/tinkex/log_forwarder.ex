defmodule Tinkex.LogForwarder do
  @moduledoc """
  Hands libtinkex's own log lines to `Logger`.

  A runtime created with a `:log_level` (`Tinkex.Runtime.new/1`) registers a log sink with
  the C ABI (`tinkex_runtime_set_log_sink`): for every line, the NIF's callback — on
  libtinkex's dispatcher thread — sends `{:tinkex_log, level, target, message}` to this
  process and returns; it never waits for `Logger`. This process logs each line with
  `Logger` at the matching level (`:error`, `:warning`, `:info`, `:debug`; trace lines as
  `:debug`), with metadata `tinkex_target: target` (the Rust module, e.g.
  `tinkex.core.queue_state`). The lines are the core's own, already debounced (e.g. one
  queue-state line per change).

  Started by the `:tinkex` application (or on first use).
  """

  use GenServer
  require Logger

  @doc false
  def start_link(_arg \\ nil), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  def child_spec(arg), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [arg]}}

  @doc "The forwarder's pid (started, unlinked, when the application is not running)."
  @spec pid() :: pid
  def pid do
    case Process.whereis(__MODULE__) do
      nil ->
        case GenServer.start(__MODULE__, nil, name: __MODULE__) do
          {:ok, pid} -> pid
          {:error, {:already_started, pid}} -> pid
        end

      pid ->
        pid
    end
  end

  @impl true
  def init(nil), do: {:ok, levels()}

  defp levels do
    Map.new(Tinkex.Constants.log_levels(), fn {name, value} -> {value, logger_level(name)} end)
  end

  defp logger_level(:error), do: :error
  defp logger_level(:warn), do: :warning
  defp logger_level(:info), do: :info
  defp logger_level(_debug_or_trace), do: :debug

  @impl true
  def handle_info({:tinkex_log, level, target, message}, levels) do
    Logger.bare_log(Map.get(levels, level, :info), message, tinkex_target: target)
    {:noreply, levels}
  end

  def handle_info(_other, levels), do: {:noreply, levels}
end

defmodule Tinkex.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    Supervisor.start_link([Tinkex.LogForwarder], strategy: :one_for_one, name: Tinkex.Supervisor)
  end
end
