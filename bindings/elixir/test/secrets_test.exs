defmodule Tinkex.SecretsTest do
  # The secrets test through the Elixir binding (issue 11). A child BEAM (the script below,
  # with this project's ebin on the code path) does a full training + sampling + REST run
  # against the suite's emulator with the library log at DEBUG (`TINKEX_LOG=debug`: the
  # default runtime's log_level), telemetry on, every event and every error printed
  # (`inspect` and `Exception.message`), plus errors from bad input: a base URL with
  # credentials, a wrongly-typed config value, a key with a control character. The parent
  # asserts the canary key is in no byte of the child's output and in no telemetry batch.
  use Tinkex.Case, async: false

  @moduletag timeout: 300_000
  @canary_key "tml-SECRET-CANARY-0123456789"

  @child_script ~S"""
  [url] = System.argv()
  key = System.get_env("SECRETS_KEY")
  alias Tinkex.{Future, RestClient, SamplingClient, ServiceClient, TrainingClient}
  alias Tinkex.Types.{AdamParams, ModelInput, SamplingParams}
  err = fn what, e -> IO.puts("ERROR #{what}: #{inspect(e)} | #{if is_exception(e), do: Exception.message(e), else: ""}") end
  for opts <- [
        [base_url: "http://user:#{key}@127.0.0.1:9/", api_key: key],
        [base_url: "http://localhost:#{key}@attacker.example/", api_key: key],
        [base_url: url, api_key: key <> "\a"],
        [base_url: url, api_key: key, timeouts: key],
        [base_url: url, api_key: key, telemetry: key]
      ] do
    try do
      case ServiceClient.new([telemetry: false] ++ opts) do
        {:ok, svc} -> IO.puts("CONFIG accepted: #{inspect(svc)}")
        {:error, e} -> err.("bad config", e)
      end
    rescue
      e -> err.("bad config raised", e)
    end
  end
  {:ok, svc} = ServiceClient.new(api_key: key, base_url: url, telemetry: true,
                                  retry: [base_delay_ms: 10, max_delay_ms: 100, min_poll_duration_ms: 50],
                                  progress_event_interval_ms: 50)
  {:ok, _sub} = ServiceClient.subscribe(svc, self())
  aw = fn {:ok, f} -> Future.await(f, 60_000); other -> other end
  {:ok, tc} = aw.(ServiceClient.create_lora_training_client(svc, "Qwen/Qwen3-8B", rank: 8))
  toks = [100_000, 100_001, 100_002, 100_003]
  data = [Tinkex.Types.Datum.new(Enum.drop(toks, -1), %{
            "target_tokens" => Tinkex.Types.TensorData.new(tl(toks), :int64),
            "weights" => Tinkex.Types.TensorData.new([1.0, 1.0, 1.0], :float32)})]
  for _ <- 1..3 do
    IO.puts("RESULT #{inspect(aw.(TrainingClient.forward_backward(tc, data, :cross_entropy)))}")
    IO.puts("RESULT #{inspect(aw.(TrainingClient.optim_step(tc, %AdamParams{learning_rate: 1.0e-3})))}")
  end
  {:ok, %{path: path}} = aw.(TrainingClient.save_state(tc, "secrets"))
  {:ok, sc} = aw.(TrainingClient.save_weights_and_get_sampling_client(tc))
  IO.puts("RESULT #{inspect(aw.(SamplingClient.sample(sc, ModelInput.from_ints([1, 2, 3]), %SamplingParams{max_tokens: 4}, num_samples: 2)))}")
  IO.puts("RESULT #{inspect(aw.(SamplingClient.compute_logprobs(sc, ModelInput.from_ints([1, 2, 3]))))}")
  {:ok, rest} = ServiceClient.create_rest_client(svc)
  IO.puts("RESULT #{inspect(aw.(RestClient.list_training_runs(rest)))}")
  IO.puts("RESULT #{inspect(aw.(RestClient.get_training_run(rest, TrainingClient.model_id(tc))))}")
  IO.puts("RESULT #{inspect(aw.(RestClient.list_checkpoints(rest, TrainingClient.model_id(tc))))}")
  IO.puts("RESULT #{inspect(aw.(RestClient.list_user_checkpoints(rest)))}")
  IO.puts("RESULT #{inspect(aw.(RestClient.get_weights_info_by_tinker_path(rest, path)))}")
  for {what, r} <- [
        {"no such run", aw.(RestClient.get_training_run(rest, "no-such-run"))},
        {"bad loss", aw.(TrainingClient.forward_backward(tc, data, :no_such_loss))},
        {"bad sampler", aw.(ServiceClient.create_sampling_client(svc, model_path: "tinker://nope/sampler_weights/x"))},
        {"bad delete", aw.(RestClient.delete_checkpoint_from_tinker_path(rest, "not-a-path"))},
        {"bad load", aw.(TrainingClient.load_state(tc, "tinker://nope/weights/nope"))}
      ] do
    case r do
      {:error, e} -> err.(what, e)
      other -> IO.puts("UNEXPECTED #{what}: #{inspect(other)}")
    end
  end
  IO.puts("RESULT close #{inspect(aw.(ServiceClient.close(svc)))}")
  flush = fn flush, n ->
    receive do
      {:tinkex_event, _ref, ev} -> IO.puts("EVENT #{inspect(ev)}"); flush.(flush, n + 1)
    after
      200 -> n
    end
  end
  IO.puts("EVENTS seen #{flush.(flush, 0)}")
  IO.puts("SECRETS-DONE")
  """

  test "the canary key appears in no log line, event, error or telemetry batch" do
    emu = emulator()
    {200, before} = Emulator.get(emu, "telemetry")
    n_before = length(before["batches"])
    # Some retries (their events and log lines carry server text) and slow operations; the
    # case template's setup resets faults and delays before the next test.
    {200, _} = Emulator.post(emu, "faults", %{"path" => "/api/v1/optim_step", "status" => 503, "count" => 2,
                                              "body" => %{"detail" => "overloaded, retry"}})
    {200, _} = Emulator.post(emu, "delays", %{"ForwardBackward" => 300})
    script = Path.join(System.tmp_dir!(), "tinkex-secrets-child-#{System.unique_integer([:positive])}.exs")
    File.write!(script, @child_script)

    {out, status} =
      try do
        System.cmd(System.find_executable("elixir"), ["-pa", Mix.Project.compile_path(), script, emu.url],
          env: [
            {"SECRETS_KEY", @canary_key},
            {"TINKEX_LOG", "debug"},
            {"TINKER_TELEMETRY", "1"},
            {"TINKER_API_KEY", nil}
          ],
          stderr_to_stdout: true
        )
      after
        File.rm(script)
      end

    {200, after_} = Emulator.get(emu, "telemetry")
    batches = Enum.drop(after_["batches"], n_before)
    lines = String.split(out, "\n")
    count = fn prefix -> Enum.count(lines, &String.starts_with?(&1, prefix)) end

    IO.puts(
      "secrets: child exit #{status}; #{byte_size(out)} bytes; #{count.("EVENT ")} events, " <>
        "#{count.("ERROR ")} errors, #{Enum.count(lines, &String.contains?(&1, "[tinkex "))} log lines; " <>
        "#{length(batches)} telemetry batches"
    )

    assert status == 0, String.slice(out, -3000, 3000)
    assert String.contains?(out, "SECRETS-DONE"), String.slice(out, -3000, 3000)
    assert count.("EVENT ") > 0
    assert count.("ERROR ") > 0
    assert batches != [], "the emulator received no telemetry batch"
    leaks = Enum.filter(lines, &String.contains?(&1, "SECRET-CANARY")) |> Enum.map(&String.slice(&1, 0, 300))
    assert leaks == [], "the canary is in the output:\n" <> Enum.join(leaks, "\n")
    refute String.contains?(inspect(batches, limit: :infinity), "SECRET-CANARY"), "the canary is in a telemetry batch"
  end
end
