defmodule Tinkex.Runtime do
  @moduledoc """
  A libtinkex runtime: a tokio runtime (HTTP, retries, polling) and the dispatcher thread
  that delivers completions and events as messages.

  Most programs use the default runtime, created on first use by `default/0` and shared by
  every client. `new/1` and `shutdown/2` are dirty NIFs (they start or join threads); every
  other call of the binding is a short NIF on a normal scheduler.
  """

  defstruct [:handle]
  @type t :: %__MODULE__{handle: reference}

  alias Tinkex.Constants

  @doc """
  Starts a runtime. Options: `:worker_threads` (default 0 = one per CPU), `:log_level`
  (`:off` default, `:error`, `:warn`, `:info`, `:debug`, `:trace`: libtinkex's own log lines
  up to that level go to `Logger` through `Tinkex.LogForwarder`; the C ABI's log sink is
  process-wide, so one runtime with a log level is enough), `:stderr_log_level` (default
  `:off`: the library's own stderr output), `:thread_nice` (default 0; e.g. 5: libtinkex's
  threads — tokio workers and the dispatcher — run this much nicer than the BEAM, so on a busy
  machine they do not preempt the scheduler threads).
  """
  @spec new(keyword) :: {:ok, t} | {:error, Tinkex.Error.t()}
  def new(opts \\ []) do
    workers = Keyword.get(opts, :worker_threads, 0)
    level = log_level!(Keyword.get(opts, :log_level, :off))
    stderr = log_level!(Keyword.get(opts, :stderr_log_level, :off))
    nice = Keyword.get(opts, :thread_nice, 0)

    with {:ok, h} <- Tinkex.Native.runtime_new(workers, stderr, nice),
         :ok <- log_sink(h, level) do
      {:ok, %__MODULE__{handle: h}}
    else
      {:error, e} -> {:error, Tinkex.Error.from_nif(e)}
    end
  end

  defp log_level!(name) do
    case Map.fetch(Constants.log_levels(), name) do
      {:ok, v} -> v
      :error -> raise ArgumentError, "unknown log level #{inspect(name)} (one of #{inspect(Map.keys(Constants.log_levels()))})"
    end
  end

  defp log_sink(h, level) do
    if level == Constants.log_level(:off),
      do: :ok,
      else: Tinkex.Native.runtime_set_log_sink(h, Tinkex.LogForwarder.pid(), level)
  end

  @doc """
  Sends libtinkex's log lines up to `level` to `Logger` (see `new/1`); `:off` stops them.
  """
  @spec set_log_level(t, atom) :: :ok | {:error, Tinkex.Error.t()}
  def set_log_level(%__MODULE__{handle: h}, level) do
    v = log_level!(level)
    pid = if level == :off, do: nil, else: Tinkex.LogForwarder.pid()

    case Tinkex.Native.runtime_set_log_sink(h, pid, v) do
      :ok -> :ok
      {:error, e} -> {:error, Tinkex.Error.from_nif(e)}
    end
  end

  @doc """
  The shared default runtime (created once per VM; options from the `TINKEX_WORKER_THREADS`,
  `TINKEX_LOG` and `TINKEX_THREAD_NICE` environment variables).
  """
  @spec default() :: t
  def default do
    case :persistent_term.get({__MODULE__, :default}, nil) do
      nil ->
        :global.trans({{__MODULE__, :default}, self()}, fn ->
          case :persistent_term.get({__MODULE__, :default}, nil) do
            nil ->
              opts = [
                worker_threads: String.to_integer(System.get_env("TINKEX_WORKER_THREADS", "0")),
                log_level: String.to_existing_atom(System.get_env("TINKEX_LOG", "off")),
                thread_nice: String.to_integer(System.get_env("TINKEX_THREAD_NICE", "0"))
              ]

              {:ok, rt} = new(opts)
              :persistent_term.put({__MODULE__, :default}, rt)
              rt

            rt ->
              rt
          end
        end)

      rt ->
        rt
    end
  end

  @doc """
  Shuts the runtime down (dirty NIF): new operations fail with `:shut_down`, pending ones get
  up to `timeout_ms` to finish (0: none; `:infinity`: no limit), then complete with
  `:shut_down`. Handles stay valid.
  """
  @spec shutdown(t, non_neg_integer | :infinity) :: :ok | {:error, Tinkex.Error.t()}
  def shutdown(%__MODULE__{handle: h}, timeout_ms \\ 5_000) do
    ms = if timeout_ms == :infinity, do: Constants.wait_forever(), else: timeout_ms

    case Tinkex.Native.runtime_shutdown(h, ms) do
      :ok -> :ok
      {:error, e} -> {:error, Tinkex.Error.from_nif(e)}
    end
  end
end
