defmodule Tinkex.Test.Formatter do
  @moduledoc false
  # ExUnit's CLI formatter, plus the suite's scheduler summary printed just before ExUnit's
  # own summary (so the run still ends with ExUnit's summary line).
  use GenServer

  @impl true
  def init(opts), do: ExUnit.CLIFormatter.init(opts)

  @impl true
  def handle_cast({:suite_finished, _} = event, state) do
    Tinkex.Test.SchedMonitor.print_summary()
    ExUnit.CLIFormatter.handle_cast(event, state)
  end

  def handle_cast(event, state), do: ExUnit.CLIFormatter.handle_cast(event, state)
end
