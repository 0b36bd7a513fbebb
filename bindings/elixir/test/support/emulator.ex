defmodule Tinkex.Test.Emulator do
  @moduledoc false
  # Starts `tinkex-emulator --port 0 --state-dir DIR` as an OS process (an Erlang port), reads
  # the base URL from its first stdout line, and talks to its /_emulator control endpoints
  # with :httpc.

  defstruct [:port, :os_pid, :url, :state_dir]

  def binary do
    System.get_env("TINKEX_EMULATOR") ||
      Path.expand("../../../../target/release/tinkex-emulator", __DIR__)
  end

  def start(extra_args \\ []) do
    dir = Path.join(System.tmp_dir!(), "tinkex-elixir-emu-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    bin = binary()
    unless File.exists?(bin), do: raise("tinkex-emulator not found at #{bin} (set TINKEX_EMULATOR)")

    args = ["--port", "0", "--state-dir", dir, "--no-persist" | extra_args]

    # The emulator computes on the CPU; at the lowest priority it cannot preempt the BEAM's
    # scheduler threads on a small machine (the scheduler checks measure wall time). `nice`
    # execs the emulator, so the port's OS pid is the emulator's.
    {exe, args} =
      case System.find_executable("nice") do
        nil -> {bin, args}
        nice -> {nice, ["-n", "19", bin | args]}
      end

    port = Port.open({:spawn_executable, exe}, [:binary, :exit_status, {:line, 4096}, args: args])

    {:os_pid, os_pid} = Port.info(port, :os_pid)

    url =
      receive do
        {^port, {:data, {:eol, line}}} -> String.trim(line)
        {^port, {:exit_status, s}} -> raise "tinkex-emulator exited with status #{s}"
      after
        15_000 -> raise "tinkex-emulator did not print its URL"
      end

    %__MODULE__{port: port, os_pid: os_pid, url: url, state_dir: dir}
  end

  def stop(%__MODULE__{port: port, os_pid: os_pid, state_dir: dir}) do
    System.cmd("kill", [Integer.to_string(os_pid)])
    try do
      Port.close(port)
    rescue
      _ -> :ok
    end
    File.rm_rf(dir)
    :ok
  end

  def post(%__MODULE__{url: url}, path, body) do
    request(:post, url <> "/_emulator/" <> path, Tinkex.JSON.encode!(body))
  end

  def get(%__MODULE__{url: url}, path), do: request(:get, url <> "/_emulator/" <> path, nil)

  def delete(%__MODULE__{url: url}, path), do: request(:delete, url <> "/_emulator/" <> path, nil)

  @doc "Removes fault rules, operation delays and a forced queue state (left by a failed test)."
  def reset(emu) do
    {200, _} = delete(emu, "faults")
    {200, _} = post(emu, "delays", %{"OptimStep" => nil, "SaveWeights" => nil, "ForwardBackward" => nil})
    {200, _} = post(emu, "queue_state", %{"queue_state" => nil})
    :ok
  end

  def model(emu, model_id), do: get(emu, "models/" <> model_id)

  @doc "Installs a fault rule; returns its id."
  def add_fault(emu, rule) do
    {200, %{"id" => id}} = post(emu, "faults", rule)
    id
  end

  @doc "Requests the fault rule `id` applied to so far."
  def fault_hits(emu, id) do
    {200, %{"faults" => faults}} = get(emu, "faults")
    Enum.find_value(faults, 0, fn f -> f["id"] == id && f["hits"] end)
  end

  @doc """
  Waits until the fault rule `id` applied to `n` requests (they reached the emulator and are
  being held or failed by it); raises after `timeout_ms`.
  """
  def await_fault_hits(emu, id, n \\ 1, timeout_ms \\ 10_000) do
    await(fn -> fault_hits(emu, id) >= n end, timeout_ms, "fault #{id}: #{n} hit(s)")
  end

  @doc "Requests received on `path` (e.g. \"/api/v1/save_weights\") so far."
  def requests(emu, path) do
    {200, %{"requests" => r}} = get(emu, "requests")
    Map.get(r, path, 0)
  end

  @doc "Waits until `path` received more than `n` requests; raises after `timeout_ms`."
  def await_requests_over(emu, path, n, timeout_ms \\ 10_000) do
    await(fn -> requests(emu, path) > n end, timeout_ms, "more than #{n} request(s) on #{path}")
  end

  defp await(check, timeout_ms, what) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_await(check, deadline, what)
  end

  defp do_await(check, deadline, what) do
    cond do
      check.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        raise ExUnit.AssertionError, message: "emulator: no #{what} in time"

      true ->
        # The polling interval of a wait with a deadline.
        Process.sleep(10)
        do_await(check, deadline, what)
    end
  end

  defp request(method, url, body) do
    {:ok, _} = Application.ensure_all_started(:inets)
    url = String.to_charlist(url)

    req =
      case method do
        :post -> {url, [], ~c"application/json", body}
        _ -> {url, []}
      end

    {:ok, {{_, status, _}, _headers, resp}} = :httpc.request(method, req, [timeout: 10_000], body_format: :binary)
    decoded = if resp in ["", nil], do: nil, else: Tinkex.JSON.decode!(resp)
    {status, decoded}
  end
end
