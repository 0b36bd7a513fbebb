defmodule Tinkex.Test.LogCapture do
  @moduledoc false
  # An Erlang :logger handler that sends every log event to a process as
  # {:logged, level, message, metadata}, so a test can wait for a line with assert_receive.

  def attach(pid \\ self()) do
    id = :"tinkex_log_capture_#{System.unique_integer([:positive])}"
    :ok = :logger.add_handler(id, __MODULE__, %{config: %{pid: pid}, level: :all})
    id
  end

  def detach(id), do: :logger.remove_handler(id)

  # :logger handler callback.
  def log(%{level: level, msg: msg, meta: meta}, %{config: %{pid: pid}}) do
    send(pid, {:logged, level, text(msg), meta})
  end

  defp text({:string, s}), do: IO.chardata_to_string(s)
  defp text({:report, r}), do: inspect(r)
  defp text({fmt, args}), do: fmt |> :io_lib.format(args) |> IO.chardata_to_string()
end
