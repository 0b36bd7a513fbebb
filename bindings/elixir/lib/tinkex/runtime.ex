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

  @log_levels %{off: 0, error: 1, warn: 2, info: 3, debug: 4, trace: 5}

  @doc """
  Starts a runtime. Options: `:worker_threads` (default 0 = one per CPU), `:log_level`
  (`:off` default, `:error`, `:warn`, `:info`, `:debug`, `:trace`; written to stderr),
  `:thread_nice` (default 0; e.g. 5: libtinkex's threads — tokio workers and the dispatcher — run
  this much nicer than the BEAM, so on a busy machine they do not preempt the scheduler
  threads).
  """
  @spec new(keyword) :: {:ok, t} | {:error, Tinkex.Error.t()}
  def new(opts \\ []) do
    workers = Keyword.get(opts, :worker_threads, 0)
    level = Map.fetch!(@log_levels, Keyword.get(opts, :log_level, :off))
    nice = Keyword.get(opts, :thread_nice, 0)

    case Tinkex.Native.runtime_new(workers, level, nice) do
      {:ok, h} -> {:ok, %__MODULE__{handle: h}}
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
  up to `timeout_ms` to finish, then complete with `:shut_down`. Handles stay valid.
  """
  @spec shutdown(t, non_neg_integer) :: :ok | {:error, Tinkex.Error.t()}
  def shutdown(%__MODULE__{handle: h}, timeout_ms \\ 5_000) do
    case Tinkex.Native.runtime_shutdown(h, timeout_ms) do
      :ok -> :ok
      {:error, e} -> {:error, Tinkex.Error.from_nif(e)}
    end
  end
end
