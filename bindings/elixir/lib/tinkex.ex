defmodule Tinkex do
  @moduledoc """
  Elixir binding of libtinkex, a client of the Tinker fine-tuning API whose behaviour
  (HTTP, retries, polling, sessions, heartbeats, telemetry) lives in a Rust core behind a
  C ABI. See `Tinkex.ServiceClient` to start, and README.md for a complete example.

  This module holds diagnostics: versions, live resource counts and NIF timings.
  """

  @doc """
  `%{library: "0.1.0", library_number: 1000, abi: {2, 0}, header_abi: {2, 0}}`: the loaded
  libtinkex, its ABI version (major, minor) and the one the NIF was built against. The NIF
  refuses to load a library of another major version, or of a smaller minor version.
  """
  @spec version() :: map
  def version do
    {lib, num, abi, header_abi} = Tinkex.Native.version()
    %{library: lib, library_number: num, abi: abi, header_abi: header_abi}
  end

  @doc """
  Live NIF resources and pending callback contexts, as `%{kind => live_count}`
  (`runtime`, `service_client`, `training_client`, `sampling_client`, `rest_client`,
  `future`, `subscription`, `datum_batch`, `result_binary`, `pending_callback`,
  `subscription_context`). Resources are freed by the garbage collector; force it with
  `:erlang.garbage_collect/1` on the processes holding them.
  """
  @spec resource_counts() :: %{atom => integer}
  def resource_counts do
    Map.new(Tinkex.Native.resource_counts(), fn {k, {live, _total}} -> {k, live} end)
  end

  @doc "Like `resource_counts/0` with `{live, total_created}` per kind."
  def resource_totals, do: Tinkex.Native.resource_counts()

  @doc """
  Whether the NIF was built with per-call timing (`make TINKEX_NIF_TIMING=1`; the test
  build). Without it `nif_stats/0` and `slow_nif_calls/0` return `[]` and no call is timed.
  """
  @spec nif_timing?() :: boolean
  def nif_timing?, do: Tinkex.Native.nif_stats() != {:error, :not_compiled}

  @doc """
  Per-NIF timings since the last `reset_nif_stats/0` (timing build only, see
  `nif_timing?/0`): a list of maps with `:name`, `:calls` (on a normal scheduler),
  `:max_wall_us`, `:max_cpu_us` (thread CPU time), `:avg_wall_us`, `:dirty_calls` (calls,
  or continuations of large inputs, run on a dirty scheduler), `:blocked_calls` /
  `:preempted_calls` (calls during which the scheduler thread switched out voluntarily —
  it slept, e.g. waiting for a lock — or was preempted by the OS), and `:max_blocked_us`
  (the longest time a call spent asleep: wall time minus CPU time minus the time the
  thread waited on the OS run queue, for calls that switched out voluntarily) and
  `:blocked_over_1ms_calls` (calls asleep for more than 1 ms), `:cpu_over_1ms_calls` (calls
  that used more than 1 ms of thread CPU time).
  """
  @spec nif_stats() :: [map]
  def nif_stats do
    case Tinkex.Native.nif_stats() do
      {:error, :not_compiled} ->
        []

      stats ->
        for {name, calls, max_wall, max_cpu, total, dirty, blocked, preempted, max_blocked, blocked_over, cpu_over} <- stats do
          %{
            name: name,
            calls: calls,
            max_wall_us: max_wall / 1000,
            max_cpu_us: max_cpu / 1000,
            avg_wall_us: if(calls > 0, do: total / calls / 1000, else: 0.0),
            dirty_calls: dirty,
            blocked_calls: blocked,
            preempted_calls: preempted,
            max_blocked_us: max_blocked / 1000,
            blocked_over_1ms_calls: blocked_over,
            cpu_over_1ms_calls: cpu_over
          }
        end
    end
  end

  @doc """
  The NIF calls on a normal scheduler that took more than 1 ms of wall-clock or CPU time
  since the last call (at most the last 512; timing build only), oldest first: maps with
  `:name`, `:pid` (the calling process), `:wall_us`, `:cpu_us`, `:blocked_us` (time asleep,
  as in `nif_stats/0`), `:runq_us` (time the OS kept the runnable thread off the CPU),
  `:blocked` and `:preempted` (whether the scheduler thread switched out voluntarily or was
  preempted during the call) and `:faults` (page faults the kernel served on the scheduler
  thread during the call; their handling counts as the thread's CPU time). Clears the record.
  """
  @spec slow_nif_calls() :: [map]
  def slow_nif_calls do
    case Tinkex.Native.nif_slow_calls() do
      {:error, :not_compiled} ->
        []

      calls ->
        for {name, pid, wall, cpu, blocked_ns, runq, blocked, preempted, faults} <- calls do
          %{
            name: name,
            pid: pid,
            wall_us: wall / 1000,
            cpu_us: cpu / 1000,
            blocked_us: blocked_ns / 1000,
            runq_us: runq / 1000,
            blocked: blocked,
            preempted: preempted,
            faults: faults
          }
        end
    end
  end

  @doc "Resets the NIF timings (a no-op without the timing build)."
  def reset_nif_stats do
    _ = Tinkex.Native.nif_stats_reset()
    :ok
  end
end
