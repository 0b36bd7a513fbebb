defmodule Tinkex.CustomLossTest do
  # Client-side custom loss (PROTOCOL 11.6): TrainingClient.forward_backward_custom/4.
  use Tinkex.Case, async: false

  @moduletag :emulator

  # Cross-entropy written as a custom loss: loss = -sum(logprobs), dLoss/dlogprobs = -1.
  defp ce(logprobs) do
    loss = -(logprobs |> List.flatten() |> Enum.sum())
    {loss, Enum.map(logprobs, fn l -> Enum.map(l, fn _ -> -1.0 end) end), %{"custom_metric" => 0.5}}
  end

  defp forward_loss(tc, data) do
    {:ok, f} = TrainingClient.forward(tc, data, :cross_entropy)
    {:ok, out} = Future.await(f, 60_000)
    ForwardBackwardOutput.loss(out)
  end

  defp step(tc, data, loss_fn, lr) do
    {:ok, fb} = TrainingClient.forward_backward_custom(tc, data, loss_fn)
    # Submitted right after phase 1: it runs after the backward.
    {:ok, opt} = TrainingClient.optim_step(tc, learning_rate: lr)
    result = Future.await(fb, 60_000)
    {:ok, _} = Future.await(opt, 60_000)
    result
  end

  test "the custom loss's value is reported and its gradient trains the model" do
    svc = service()
    tc = trainer(svc)
    data = batch()
    before = forward_loss(tc, data)
    test_pid = self()

    {:ok, out} =
      step(
        tc,
        data,
        fn d, logprobs ->
          send(test_pid, {:loss_ran, self(), length(d), Enum.map(logprobs, &length/1)})
          ce(logprobs)
        end,
        1.0e-2
      )

    assert_received {:loss_ran, loss_pid, 4, [24, 24, 24, 24]}
    refute loss_pid == self()
    # loss:sum is the custom loss (= the forward's cross-entropy, which is `before`); the
    # server's own loss moved to surrogate_loss:sum; the custom metric is merged in.
    assert_in_delta out.metrics["loss:sum"], before, 1.0e-3 * abs(before)
    assert Map.has_key?(out.metrics, "surrogate_loss:sum")
    assert out.metrics["custom_metric"] == 0.5
    # Descending the custom loss lowered the cross-entropy: the gradient's sign reached the
    # server as weights = -grads.
    after_descent = forward_loss(tc, data)
    assert after_descent < before, "#{after_descent} !< #{before}"

    # The opposite gradient (maximise the cross-entropy) raises it.
    {:ok, _} =
      step(
        tc,
        data,
        fn logprobs ->
          {l, g, m} = ce(logprobs)
          {-l, Enum.map(g, fn x -> Enum.map(x, &(-&1)) end), m}
        end,
        1.0e-2
      )

    assert forward_loss(tc, data) > after_descent
  end

  test "a raising loss function aborts the pass with a clear error; the client is poisoned" do
    svc = service()
    tc = trainer(svc)
    data = batch()
    {:ok, fb} = TrainingClient.forward_backward_custom(tc, data, fn _ -> raise ArgumentError, "boom in the loss" end)
    assert {:error, %Error{kind: :user, message: msg}} = Future.await(fb, 60_000)
    assert msg =~ "ArgumentError"
    assert msg =~ "boom in the loss"
    # As in the official SDK, later training calls fail naming the cause; nothing crashed.
    {:ok, f} = TrainingClient.forward_backward(tc, data, :cross_entropy)
    assert {:error, %Error{kind: :user, message: later}} = Future.await(f, 60_000)
    assert later =~ "boom in the loss"
    assert Process.alive?(self())
  end

  test "a wrong result shape, a throw or an exit abort the pass too" do
    svc = service()
    data = batch()

    for {fun, expect} <- [
          {fn _ -> :not_a_tuple end, "must return {loss, grads, metrics}"},
          {fn lp -> {1.0, tl(lp), %{}} end, "returned 3 gradients for 4 datums"},
          {fn lp -> {1.0, Enum.map(lp, fn _ -> [1.0] end), %{}} end, "gradient 0 has 1 values for 24 logprobs"},
          {fn lp -> {1.0, Enum.map(lp, & &1), %{"m" => "x"}} end, "metrics must map names to numbers"},
          {fn _ -> throw(:oops) end, "did throw: :oops"},
          {fn _ -> exit(:gone) end, "did exit: :gone"}
        ] do
      tc = trainer(svc)
      {:ok, fb} = TrainingClient.forward_backward_custom(tc, data, fun)
      assert {:error, %Error{kind: :user, message: msg}} = Future.await(fb, 60_000)
      assert msg =~ expect
    end
  end

  test "rejected input fails at once; a dead submitter aborts the pass" do
    svc = service()
    tc = trainer(svc)
    assert {:error, %Error{kind: :user}} = TrainingClient.forward_backward_custom(tc, [], &ce/1)

    # The submitter exits before the forward completes: the pass is aborted, not leaked,
    # and the client reports it. The emulator holds the forward for 5 s, so the exit comes
    # first however loaded the machine is (without the hold, a forward that completed
    # before the exit was noticed ran the loss: a correct pass, and a failed test).
    data = batch()
    parent = self()
    {200, _} = Emulator.post(emulator(), "delays", %{"Forward" => 5_000})

    try do
      {pid, mon} =
        spawn_monitor(fn ->
          {:ok, _fb} = TrainingClient.forward_backward_custom(tc, data, &ce/1)
          send(parent, :submitted)
        end)

      assert_receive :submitted, 10_000
      assert_receive {:DOWN, ^mon, :process, ^pid, :normal}, 10_000
      {:ok, f} = TrainingClient.forward_backward(tc, data, :cross_entropy)
      assert {:error, %Error{kind: :user, message: msg}} = Future.await(f, 60_000)
      assert msg =~ "submitting process exited"
    after
      Emulator.post(emulator(), "delays", %{"Forward" => nil})
    end

    eventually(fn -> gc_all() && Tinkex.resource_counts().custom_loss_pass == 0 end)
  end
end
