defmodule Tinkex.LogSinkTest do
  # libtinkex's own log lines reach Logger: the C ABI's log sink (tinkex_runtime_set_log_sink)
  # -> the NIF's callback on the dispatcher thread, which only sends a message ->
  # Tinkex.LogForwarder -> Logger. The sink is process-wide, so every test removes it again
  # (runtime shutdown does).
  use Tinkex.Case, async: false

  alias Tinkex.Test.LogCapture

  @heartbeat_line "Session heartbeat failed"

  # A runtime with a log level, a service client on it against its own emulator whose
  # heartbeats fail, and a subscription: a heartbeat_warning event follows the core's
  # warning line (both on the dispatcher, in that order).
  defp with_failing_heartbeats(log_level, fun) do
    emu = Emulator.start(["--poll-hold-ms", "200"])
    {:ok, rt} = Tinkex.Runtime.new(worker_threads: 1, log_level: log_level)
    capture = LogCapture.attach()

    try do
      svc =
        service(emu,
          runtime: rt,
          heartbeat: [interval_ms: 50, warn_after_ms: 150],
          timeouts: [heartbeat_ms: 100, connect_ms: 100]
        )

      {:ok, sub} = ServiceClient.subscribe(svc)
      _tc = trainer(svc)
      {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/session_heartbeat", "status" => 503, "duration_ms" => 1_000})
      fun.(sub)
    after
      LogCapture.detach(capture)
      :ok = Tinkex.Runtime.shutdown(rt, 0)
      Emulator.stop(emu)
    end
  end

  # The forwarder has handled every message sent to it before this call.
  defp forwarder_synced, do: :sys.get_state(Tinkex.LogForwarder)

  test "the core's warning lines reach Logger with their level and target" do
    with_failing_heartbeats(:warn, fn %{ref: ref} ->
      assert_receive {:tinkex_event, ^ref, %Tinkex.Event{type: :heartbeat_warning}}, 10_000
      assert_receive {:logged, :warning, @heartbeat_line <> _ = line, meta}, 5_000
      assert line =~ "Last error"
      assert meta[:tinkex_target] =~ ~r/^tinkex[.:]/
    end)
  end

  test "lines above the level are not forwarded" do
    with_failing_heartbeats(:error, fn %{ref: ref} ->
      assert_receive {:tinkex_event, ^ref, %Tinkex.Event{type: :heartbeat_warning}}, 10_000
      # The warning line would have been sent before the event; the forwarder handled all.
      forwarder_synced()
      refute_received {:logged, _, @heartbeat_line <> _, _}
    end)
  end

  test "a stalled Logger does not hold up the dispatcher" do
    # The forwarder is suspended: the log lines queue in its mailbox, while completions and
    # events (delivered by the same dispatcher thread) still arrive.
    :ok = :sys.suspend(Tinkex.LogForwarder)

    try do
      with_failing_heartbeats(:debug, fn %{ref: ref} ->
        assert_receive {:tinkex_event, ^ref, %Tinkex.Event{type: :heartbeat_warning}}, 10_000
        {:message_queue_len, n} = Process.info(Process.whereis(Tinkex.LogForwarder), :message_queue_len)
        assert n > 0
        refute_received {:logged, _, @heartbeat_line <> _, _}
        :ok = :sys.resume(Tinkex.LogForwarder)
        assert_receive {:logged, :warning, @heartbeat_line <> _, _}, 5_000
      end)
    after
      # Idempotent enough: resuming a running process is an error we ignore.
      try do
        :sys.resume(Tinkex.LogForwarder)
      catch
        _, _ -> :ok
      end
    end
  end

  test "set_log_level/2 replaces and removes the sink; unknown levels are refused" do
    {:ok, rt} = Tinkex.Runtime.new(worker_threads: 1)

    try do
      assert :ok = Tinkex.Runtime.set_log_level(rt, :info)
      assert :ok = Tinkex.Runtime.set_log_level(rt, :off)
      assert_raise ArgumentError, fn -> Tinkex.Runtime.set_log_level(rt, :loud) end
      eventually(fn -> Tinkex.resource_counts().log_sink_context == 0 end)
    after
      Tinkex.Runtime.shutdown(rt, 0)
    end
  end
end
