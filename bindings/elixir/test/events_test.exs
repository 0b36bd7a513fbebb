defmodule Tinkex.EventsTest do
  use Tinkex.Case, async: false

  alias Tinkex.Event

  defmodule Forwarder do
    @behaviour Tinkex.EventHandler
    def init(pid), do: {:ok, {pid, 0}}
    def handle_event(ev, {pid, n}), do: send(pid, {:handled, ev, n}) && {:ok, {pid, n + 1}}
  end

  test "retries are reported as :retry events to subscribed pids" do
    emu = emulator()
    svc = service(emu, retry: [base_delay_ms: 10, max_delay_ms: 50])
    {:ok, sub} = ServiceClient.subscribe(svc)
    ref = sub.ref
    {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/get_server_capabilities", "status" => 503, "count" => 2})
    {:ok, f} = ServiceClient.get_server_capabilities(svc)
    assert {:ok, _} = Future.await(f, 10_000)

    for attempt <- [0, 1] do
      assert_receive {:tinkex_event, ^ref, %Event{type: :retry} = ev}, 5_000
      %Event{data: d} = Event.decode(ev)
      assert d["attempt"] == attempt
      assert d["operation"] =~ "get_server_capabilities"
      assert d["error"] =~ "503"
    end

    # Unsubscribing stops the events and releases the subscription (on the dispatcher).
    :ok = Tinkex.Subscription.unsubscribe(sub)
    {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/get_server_capabilities", "status" => 503, "count" => 1})
    {:ok, f} = ServiceClient.get_server_capabilities(svc)
    assert {:ok, _} = Future.await(f, 10_000)
    refute_receive {:tinkex_event, ^ref, _}, 200
    eventually(fn -> Tinkex.resource_counts().subscription_context == 0 end)
  end

  test "queue state, progress and summary events reach an EventHandler" do
    emu = emulator()
    svc = service(emu, progress_event_interval_ms: 50)
    tc = trainer(svc)
    {:ok, handler} = Tinkex.EventHandler.start_link(svc, Forwarder, self())
    {200, _} = Emulator.post(emu, "queue_state", %{"queue_state" => "paused_capacity", "reason" => "elixir test"})
    {200, _} = Emulator.post(emu, "delays", %{"OptimStep" => 1_500})

    try do
      {:ok, f} = TrainingClient.optim_step(tc, learning_rate: 1.0e-3)
      assert {:ok, _} = Future.await(f, 30_000)
    after
      Emulator.post(emu, "delays", %{"OptimStep" => nil})
      Emulator.post(emu, "queue_state", %{"queue_state" => nil})
    end

    assert_receive {:handled, %Event{type: :queue_state, data: %{"state" => "paused_capacity", "reason" => "elixir test"} = d}, _}, 5_000
    assert d["request_type"] == "OptimStep"
    assert_receive {:handled, %Event{type: :progress, data: %{"request_type" => "OptimStep", "polls" => _}}, _}, 5_000
    assert_receive {:handled, %Event{type: :summary, data: %{"in_flight" => _}}, _}, 5_000
    GenServer.stop(handler)
  end

  test "heartbeat trouble and session expiry are reported" do
    emu = Emulator.start(["--poll-hold-ms", "200"])

    try do
      svc = service(emu, heartbeat: [interval_ms: 50, warn_after_ms: 150], timeouts: [heartbeat_ms: 100, connect_ms: 100])
      {:ok, sub} = ServiceClient.subscribe(svc)
      ref = sub.ref
      _tc = trainer(svc)
      {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/session_heartbeat", "status" => 503, "duration_ms" => 600})
      assert_receive {:tinkex_event, ^ref, %Event{type: :heartbeat_warning} = ev}, 5_000
      assert %{"session_id" => sid, "failing_for_secs" => s} = Event.decode(ev).data
      assert is_binary(sid) and s >= 0.15

      {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/session_heartbeat", "status" => 410, "count" => 1})
      assert_receive {:tinkex_event, ^ref, %Event{type: :session_expired} = ev}, 5_000
      assert Event.decode(ev).data["session_id"] == sid
    after
      Emulator.stop(emu)
    end
  end
end
