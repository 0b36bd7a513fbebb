# Cross-language sampler handle, an Elixir clone: reads the handle the Python origin wrote,
# builds a sampling client from it (Tinkex.SamplingClient.from_sampler_handle/2) and draws
# <n> samples, two at a time, then writes <work>/elixir.done.
#
#   mix run ../../tests/cross_language/clone.exs <base_url> <work_dir> <n>
alias Tinkex.{Future, SamplingClient}
alias Tinkex.Types.{ModelInput, SamplingParams}

[base_url, work, n] = System.argv()
n = String.to_integer(n)
handle = File.read!(Path.join(work, "handle"))

{:ok, sampler} =
  SamplingClient.from_sampler_handle(handle, base_url: base_url, api_key: "tml-cross-language", telemetry: false)

for i <- 1..div(n, 2) do
  futs =
    for j <- 0..1 do
      {:ok, f} =
        SamplingClient.sample(sampler, ModelInput.from_ints([7, 8, 100 + 2 * i + j]), %SamplingParams{
          max_tokens: 4,
          temperature: 0.7
        })

      f
    end

  for {:ok, r} <- Future.await_many(futs, 60_000), do: [_ | _] = r.sequences
end

File.write!(Path.join(work, "elixir.done"), "#{n}")
IO.puts("elixir clone: #{n} samples")
