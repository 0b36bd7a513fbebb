# A complete example: LoRA training, checkpointing and sampling.
#
#   target/release/tinkex-emulator --port 0 --state-dir /tmp/emu &   # prints its URL
#   cd bindings/elixir
#   TINKER_BASE_URL=http://127.0.0.1:PORT TINKER_API_KEY=tml-local mix run examples/train_and_sample.exs

alias Tinkex.{Future, SamplingClient, ServiceClient, TrainingClient}
alias Tinkex.Types.{AdamParams, Datum, ForwardBackwardOutput, ModelInput, SamplingParams, TensorData}

# Configuration falls back to TINKER_API_KEY / TINKER_BASE_URL.
{:ok, service} = ServiceClient.new(telemetry: false)

# Progress, retries, queue state... arrive as messages; here a handler prints retries.
defmodule PrintRetries do
  @behaviour Tinkex.EventHandler
  def init(_), do: {:ok, nil}

  def handle_event(%Tinkex.Event{type: :retry, data: d}, s) do
    IO.puts("retry #{d["attempt"]} of #{d["operation"]} in #{d["delay_secs"]} s: #{d["error"]}")
    {:ok, s}
  end

  def handle_event(_event, s), do: {:ok, s}
end

{:ok, _handler} = Tinkex.EventHandler.start_link(service, PrintRetries, nil)

{:ok, fut} = ServiceClient.create_lora_training_client(service, "Qwen/Qwen3-8B", rank: 16)
{:ok, training} = Future.await(fut, 60_000)
IO.puts("model #{TrainingClient.model_id(training)}")

# Next-token prediction over a few token sequences. Token ids and loss inputs may be lists or
# native-endian binaries (<<id::signed-native-64, ...>>, <<w::float-native-32, ...>>).
data =
  for d <- 0..3 do
    seq = for i <- 0..24, do: 100_000 + rem(d * 7919 + i * 104_729, 50_000)
    n = length(seq) - 1

    Datum.new(Enum.take(seq, n), %{
      target_tokens: tl(seq),
      weights: TensorData.from_binary(:binary.copy(<<1.0::float-native-32>>, n), :float32)
    })
  end

for step <- 1..10 do
  # Both are submitted at once and run in order on the server.
  {:ok, fb} = TrainingClient.forward_backward(training, data, :cross_entropy)
  {:ok, opt} = TrainingClient.optim_step(training, %AdamParams{learning_rate: 1.0e-3})
  [{:ok, out}, {:ok, _}] = Future.await_many([fb, opt], 60_000)
  IO.puts("step #{step}: loss #{Float.round(ForwardBackwardOutput.loss(out) / 96, 4)}")
end

{:ok, fut} = TrainingClient.save_state(training, "example-final")
{:ok, %{path: path}} = Future.await(fut, 60_000)
IO.puts("saved #{path}")

{:ok, fut} = TrainingClient.save_weights_and_get_sampling_client(training)
{:ok, sampler} = Future.await(fut, 60_000)

# Concurrent sampling from many processes; each process receives its own completions.
results =
  1..8
  |> Task.async_stream(fn i ->
    {:ok, f} = SamplingClient.sample(sampler, ModelInput.from_ints([100_000 + i]), %SamplingParams{max_tokens: 8, temperature: 0.7})
    Future.await(f, 60_000)
  end)
  |> Enum.map(fn {:ok, {:ok, r}} -> hd(r.sequences).tokens end)

IO.inspect(results, label: "samples")

{:ok, fut} = ServiceClient.close(service)
:ok = Future.await!(fut, 30_000)
