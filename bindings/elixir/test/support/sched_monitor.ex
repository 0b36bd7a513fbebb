defmodule Tinkex.Test.SchedMonitor do
  @moduledoc false
  # Owns `:erlang.system_monitor(self(), [{:long_schedule, 5}, :busy_port])` for the whole
  # suite and records every report. Tests take the reports of their own time window.
  use GenServer

  @bound_ms 5

  def bound_ms, do: @bound_ms

  def start do
    {:ok, pid} = GenServer.start(__MODULE__, nil, name: __MODULE__)
    pid
  end

  def init(nil) do
    :erlang.system_monitor(self(), [{:long_schedule, @bound_ms}, :busy_port, :busy_dist_port])
    {:ok, %{events: [], classified: [], slow: 0, slow_blocked: 0, excused: [], total: 0, stat: sched_stat(), run_ns: 0, wait_ns: 0}}
  end

  # CPU time and OS run-queue wait (ns) of the BEAM's normal scheduler threads, from
  # /proc/self/task/*/schedstat: the wait is the time the OS kept them off the CPU while they
  # were runnable, which the system monitor's wall-clock long_schedule also counts.
  defp sched_stat do
    with {:ok, tasks} <- File.ls("/proc/self/task") do
      Enum.reduce(tasks, {0, 0}, fn t, {run, wait} = acc ->
        with {:ok, comm} <- File.read("/proc/self/task/#{t}/comm"),
             true <- String.match?(comm, ~r/^\d+_scheduler/),
             {:ok, st} <- File.read("/proc/self/task/#{t}/schedstat"),
             [r, w | _] <- String.split(st) do
          {run + String.to_integer(r), wait + String.to_integer(w)}
        else
          _ -> acc
        end
      end)
    else
      _ -> {0, 0}
    end
  end

  @doc "The reports since the last call (oldest first)."
  def take, do: GenServer.call(__MODULE__, :take)

  @doc """
  Waits until a report of `kind` about `who` has arrived (without taking it); `false` after
  `timeout_ms`. The system monitor's messages arrive asynchronously.
  """
  def await_report(who, kind, timeout_ms \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_await(who, kind, deadline)
  end

  defp do_await(who, kind, deadline) do
    cond do
      GenServer.call(__MODULE__, {:has, who, kind}) -> true
      System.monotonic_time(:millisecond) > deadline -> false
      true ->
        # The polling interval of a wait with a deadline.
        Process.sleep(10)
        do_await(who, kind, deadline)
    end
  end

  @doc "Records a test's classified long-schedule reports for the suite summary."
  def record(classified, slow, excused),
    do: GenServer.call(__MODULE__, {:record, classified, slow, excused})

  @doc "The suite summary: `%{reports: n, by_class: %{class => n}, slow_nif_calls: n, max_timeout_ms: n}`."
  def summary, do: GenServer.call(__MODULE__, :summary)

  def handle_call(:take, _from, s) do
    {run, wait} = stat = sched_stat()
    {run0, wait0} = s.stat
    {:reply, Enum.reverse(s.events), %{s | events: [], stat: stat, run_ns: s.run_ns + run - run0, wait_ns: s.wait_ns + wait - wait0}}
  end

  def handle_call({:has, who, kind}, _from, s),
    do: {:reply, Enum.any?(s.events, &(&1.who == who and &1.kind == kind)), s}

  def handle_call({:record, classified, slow, excused}, _from, s),
    do:
      {:reply, :ok,
       %{
         s
         | classified: classified ++ s.classified,
           slow: s.slow + length(slow),
           slow_blocked: s.slow_blocked + Enum.count(slow, & &1.blocked),
           excused: excused ++ s.excused
       }}

  def handle_call(:summary, _from, s) do
    by_class = Enum.frequencies_by(s.classified, &elem(&1, 0))
    max =
      s.classified
      |> Enum.reject(fn {class, _} -> class == :nif_over_bound end)
      |> Enum.map(fn {_, r} -> r.info[:timeout] || 0 end)
      |> Enum.max(fn -> 0 end)
    summary = %{
      reports: length(s.classified),
      by_class: by_class,
      slow_nif_calls: s.slow,
      slow_nif_calls_blocked: s.slow_blocked,
      excused: Enum.reverse(s.excused),
      max_timeout_ms: max,
      classified: Enum.reverse(s.classified),
      scheduler_run_ms: div(s.run_ns, 1_000_000),
      scheduler_runqueue_wait_ms: div(s.wait_ns, 1_000_000)
    }

    {:reply, summary, s}
  end

  @doc "Prints the suite's scheduler summary (see Tinkex.Case.check_scheduler!/0)."
  def print_summary do
    s = summary()
    classes = Map.delete(s.by_class, :nif_over_bound)
    control = Map.get(s.by_class, :nif_over_bound, 0)

    IO.puts("""

    Scheduler bound (every NIF call timed; system_monitor long_schedule > #{@bound_ms} ms and busy_port on):
      NIF calls (timing build): a call over 1 ms of CPU time, or a NIF asleep for over 1 ms in 1 % or more of its
        calls, fails its test (the negative controls testing_spin and testing_block aside). #{s.slow_nif_calls} call(s) took over 1 ms of wall time
        (#{s.slow_nif_calls_blocked} of them slept at some point). #{length(s.excused)} isolated call(s) over 1 ms of CPU (under #{div(Tinkex.Case.excusable_cpu_us(), 1000)} ms)
        excused (page faults or a VM's steal charged to the thread's CPU clock)#{excused_list(s.excused)}.
      system_monitor: #{s.reports - control} long_schedule report(s) not caused by a NIF #{inspect(classes)}, max #{s.max_timeout_ms} ms,
        plus #{control} caught from the negative control. Normal scheduler threads ran #{s.scheduler_run_ms} ms and
        waited #{s.scheduler_runqueue_wait_ms} ms on the OS run queue (other load on the machine).
    """)

    if System.get_env("TINKEX_SCHED_VERBOSE"), do: IO.inspect(s.classified, limit: :infinity)
  end

  defp excused_list([]), do: ""

  defp excused_list(calls),
    do: " (" <> Enum.map_join(calls, ", ", &"#{&1.name}: #{round(&1.cpu_us)} us CPU, #{&1.faults} faults, preempted #{&1.preempted}") <> ")"

  def handle_info({:monitor, who, kind, info}, s) do
    ev = %{who: who, kind: kind, info: info, at: System.monotonic_time(:millisecond), name: name(who)}
    {:noreply, %{s | events: [ev | s.events], total: s.total + 1}}
  end

  def handle_info(_, s), do: {:noreply, s}

  defp name(pid) when is_pid(pid) do
    case Process.info(pid, [:registered_name, :initial_call, :dictionary]) do
      nil -> :dead
      info -> {info[:registered_name], info[:initial_call], Keyword.get(info[:dictionary], :"$initial_call")}
    end
  end

  defp name(other), do: other
end
