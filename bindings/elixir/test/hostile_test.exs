defmodule Tinkex.HostileTest do
  # The hostile-server suite through the Elixir binding (issue 11).
  #
  # Each case starts `hostile-server` (tests/hostile/server: it forwards the preamble to the
  # suite's emulator and gives the hostile answer to the operation under test) and runs the
  # operation in a SEPARATE BEAM (`elixir` with this project's ebin on the code path, the
  # child script below), so an abort inside the NIF shows as a dead child BEAM rather than a
  # dead test run. The parent asserts: the child BEAM survived (exit status 0 and a result
  # line); a typed %Tinkex.Error{} (or success for harmless modes) within the time bound;
  # the child's peak RSS growth (clear_refs + VmHWM of the BEAM) below the bound; a bounded
  # error message without the key or a signed URL's query; and no key or Cloudflare secret
  # in any byte the other origin received.
  use Tinkex.Case, async: false

  @moduletag :hostile
  @moduletag timeout: 900_000

  # ---- The bounds (the same as tests/hostile/common.rs; adjust together). ----
  # ASSUMED client default for an unannounced response body (`max_response_bytes`): 64 MiB.
  @max_response_bytes 64 * 1024 * 1024
  @rss_growth_bound 3 * @max_response_bytes + 64 * 1024 * 1024
  # Address-space limit of the child BEAM in KiB (`ulimit -v`): a lying length aborts fast
  # instead of eating the machine (the BEAM reserves more address space than a C program).
  @child_address_space_kb 8 * 1024 * 1024
  @max_error_text 5 * 1024
  @canary_key "tml-SECRET-CANARY-0123456789"
  @canary_cf "cf-SECRET-CANARY-0123456789"
  @signed_query "X-Amz-Signature=sig-CANARY-QUERY-9876"
  @progress_timeout_ms 3_000
  @request_timeout_ms 2_000
  @time_bound_ms @progress_timeout_ms + @request_timeout_ms + 3_000
  @child_deadline_ms 40_000
  @typed_kinds ~w(user fatal transient no_progress auth expired)

  @targets %{
    "get_server_capabilities" => "/api/v1/get_server_capabilities",
    "create_session" => "/api/v1/create_session",
    "create_model_result" => "result:/api/v1/create_model",
    "forward_backward_result" => "result:/api/v1/forward_backward",
    "optim_step_result" => "result:/api/v1/optim_step",
    "save_state_result" => "result:/api/v1/save_weights",
    "create_sampling_client" => "/api/v1/create_sampling_session",
    "sample_result" => "result:/api/v1/asample",
    "compute_logprobs_result" => "result:/api/v1/asample",
    "list_training_runs" => "/api/v1/training_runs",
    "list_user_checkpoints" => "/api/v1/checkpoints"
  }

  @json_modes ~w(malformed_json wrong_content_type truncated huge_announced endless_chunked
                 big_detail slow_drip header_bomb huge_header redirect_same_301 redirect_same_302
                 redirect_same_303 redirect_same_307 redirect_same_308 redirect_other_301
                 redirect_other_302 redirect_other_303 redirect_other_307 redirect_other_308
                 redirect_loop deep_json invalid_utf8_json invalid_utf8_header gzip_bomb zstd_bomb)

  @mode_cases Enum.map(@json_modes, &{&1, "create_session"}) ++
                [
                  {"truncated", "forward_backward_result"},
                  {"lying_num_datums", "forward_backward_result"},
                  {"lying_offsets", "forward_backward_result"},
                  {"lying_topk", "sample_result"},
                  {"lying_topk", "compute_logprobs_result"},
                  {"endless_chunked", "sample_result"},
                  {"gzip_bomb", "forward_backward_result"}
                ]
  @op_cases for op <- Map.keys(@targets), mode <- ~w(endless_chunked redirect_other_307), do: {mode, op}

  @child_script ~S"""
  [op, url] = System.argv()
  key = System.get_env("HOSTILE_KEY")
  alias Tinkex.{Future, RestClient, SamplingClient, ServiceClient, TrainingClient}
  alias Tinkex.Types.{AdamParams, ModelInput, SamplingParams}
  req = String.to_integer(System.get_env("HOSTILE_REQUEST_MS"))
  {:ok, svc} =
    ServiceClient.new(
      api_key: key, base_url: url, telemetry: false,
      timeouts: [connect_ms: 500, request_ms: req, retrieve_future_ms: req, heartbeat_ms: req,
                 dynamic_config_ms: req, telemetry_ms: req],
      retry: [progress_timeout_ms: String.to_integer(System.get_env("HOSTILE_PROGRESS_MS")),
              base_delay_ms: 10, max_delay_ms: 100, min_poll_duration_ms: 50]
    )
  wait = 35_000
  model = "Qwen/Qwen3-8B"
  aw = fn {:ok, f} -> Future.await(f, wait); {:error, e} -> {:error, e} end
  ok! = fn {:ok, v} -> v; {:error, e} -> throw({:failed, e}) end
  datum = fn ->
    toks = [100_000, 100_001, 100_002, 100_003]
    Tinkex.Types.Datum.new(Enum.drop(toks, -1), %{
      "target_tokens" => Tinkex.Types.TensorData.new(tl(toks), :int64),
      "weights" => Tinkex.Types.TensorData.new([1.0, 1.0, 1.0], :float32)
    })
  end
  training = fn -> ok!.(aw.(ServiceClient.create_lora_training_client(svc, model, rank: 8))) end
  sampler = fn -> ok!.(aw.(ServiceClient.create_sampling_client(svc, base_model: model))) end
  prompt = ModelInput.from_ints([100, 101, 102])
  run = fn ->
    case op do
      "get_server_capabilities" -> ok!.(aw.(ServiceClient.get_server_capabilities(svc)))
      o when o in ["create_session", "create_model_result"] -> training.()
      "forward_backward_result" -> ok!.(aw.(TrainingClient.forward_backward(training.(), [datum.()], :cross_entropy)))
      "optim_step_result" ->
        tc = training.()
        ok!.(aw.(TrainingClient.forward_backward(tc, [datum.()], :cross_entropy)))
        ok!.(aw.(TrainingClient.optim_step(tc, %AdamParams{learning_rate: 1.0e-3})))
      "save_state_result" -> ok!.(aw.(TrainingClient.save_state(training.(), "hostile")))
      "create_sampling_client" -> sampler.()
      "sample_result" -> ok!.(aw.(SamplingClient.sample(sampler.(), prompt, %SamplingParams{max_tokens: 4}, num_samples: 2)))
      "compute_logprobs_result" -> ok!.(aw.(SamplingClient.compute_logprobs(sampler.(), prompt)))
      "list_training_runs" -> ok!.(aw.(RestClient.list_training_runs(ok!.(ServiceClient.create_rest_client(svc)))))
      "list_user_checkpoints" -> ok!.(aw.(RestClient.list_user_checkpoints(ok!.(ServiceClient.create_rest_client(svc)))))
    end
  end
  kb = fn field ->
    File.read!("/proc/self/status") |> String.split("\n")
    |> Enum.find_value(0, fn l -> if String.starts_with?(l, field), do: l |> String.split() |> Enum.at(1) |> String.to_integer() end)
  end
  reset = File.write("/proc/self/clear_refs", "5") == :ok
  before = kb.("VmRSS:")
  t0 = System.monotonic_time(:millisecond)
  out =
    try do
      run.()
      %{"ok" => true}
    catch
      {:failed, %Tinkex.Error{} = e} ->
        text = "#{e.message}\n#{Exception.message(e)}\n#{inspect(e)}"
        %{"ok" => false, "typed" => true, "kind" => to_string(e.kind), "http_status" => e.http_status,
          "text_len" => byte_size(e.message || ""),
          "text_has_key" => String.contains?(text, key) or String.contains?(text, System.get_env("CLOUDFLARE_ACCESS_CLIENT_SECRET")),
          "text_has_signed_query" => String.contains?(text, System.fetch_env!("HOSTILE_SIGNED_QUERY")),
          "message_head" => String.slice(e.message || "", 0, 160) |> String.replace(key, "<KEY>")}
      kind, reason ->
        %{"ok" => false, "typed" => false, "kind" => "#{inspect(kind)}", "text_len" => 0,
          "text_has_key" => false, "text_has_signed_query" => false,
          "message_head" => String.slice(inspect(reason), 0, 160)}
    end
  hwm = kb.("VmHWM:")
  out = Map.merge(out, %{"elapsed_ms" => System.monotonic_time(:millisecond) - t0,
                         "rss_growth_kb" => if(reset, do: hwm - before, else: hwm)})
  IO.puts("HOSTILE-RESULT " <> Tinkex.JSON.encode!(out))
  """

  setup_all do
    script = Path.join(System.tmp_dir!(), "tinkex-hostile-child-#{System.unique_integer([:positive])}.exs")
    File.write!(script, @child_script)
    on_exit(fn -> File.rm(script) end)
    %{script: script, server: hostile_bin()}
  end

  defp hostile_bin do
    case System.get_env("TINKEX_HOSTILE_SERVER_BIN") do
      nil ->
        repo = Path.expand("../../..", __DIR__)
        target = System.get_env("CARGO_TARGET_DIR") || Path.join(repo, "target")
        manifest = Path.join(repo, "tests/hostile/server/Cargo.toml")
        {_, 0} = System.cmd("cargo", ["build", "--release", "--quiet", "--manifest-path", manifest, "--target-dir", target])
        Path.join(target, "release/hostile-server")

      bin ->
        bin
    end
  end

  defp start_server(bin, mode, target, record) do
    args = ["--mode", mode, "--target", target, "--upstream", emulator().url, "--record-other", record,
            "--cap-bytes", Integer.to_string(512 * 1024 * 1024)]
    port = Port.open({:spawn_executable, bin}, [:binary, :exit_status, {:line, 4096}, args: args])
    {:os_pid, os_pid} = Port.info(port, :os_pid)

    line =
      receive do
        {^port, {:data, {:eol, line}}} -> line
      after
        10_000 -> raise "hostile-server did not print its URL"
      end

    %{"URL" => url} = line |> String.split() |> Map.new(&(String.split(&1, "=", parts: 2) |> List.to_tuple()))
    {port, os_pid, url}
  end

  # Stops the server; returns how many hostile answers it served (its `HIT` lines).
  defp stop_server({port, os_pid, _url}) do
    hits = count_hits(port, 0)
    System.cmd("kill", [Integer.to_string(os_pid)])
    hits = count_hits(port, hits)

    try do
      Port.close(port)
    rescue
      _ -> :ok
    end

    hits
  end

  defp count_hits(port, n) do
    receive do
      {^port, {:data, {:eol, "HIT " <> _}}} -> count_hits(port, n + 1)
      {^port, {:data, _}} -> count_hits(port, n)
    after
      0 -> n
    end
  end

  defp run_child(script, op, url) do
    elixir = System.find_executable("elixir")
    ebin = Mix.Project.compile_path()

    env = [
      {~c"HOSTILE_KEY", ~c"#{@canary_key}"},
      {~c"CLOUDFLARE_ACCESS_CLIENT_SECRET", ~c"#{@canary_cf}"},
      {~c"HOSTILE_SIGNED_QUERY", ~c"#{@signed_query}"},
      {~c"CLOUDFLARE_ACCESS_CLIENT_ID", ~c"cf-client-id"},
      {~c"HOSTILE_REQUEST_MS", ~c"#{@request_timeout_ms}"},
      {~c"HOSTILE_PROGRESS_MS", ~c"#{@progress_timeout_ms}"},
      {~c"TINKER_API_KEY", false},
      {~c"TINKER_TELEMETRY", ~c"0"}
    ]

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-c", "ulimit -v #{@child_address_space_kb} && exec \"$0\" \"$@\"", elixir, "-pa", ebin, script, op, url],
        env: env
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    collect(port, os_pid, "", System.monotonic_time(:millisecond) + @child_deadline_ms)
  end

  defp collect(port, os_pid, acc, deadline) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, d}} -> collect(port, os_pid, acc <> d, deadline)
      {^port, {:exit_status, s}} -> {s, acc}
    after
      left ->
        System.cmd("kill", ["-9", Integer.to_string(os_pid)])
        {:hung, acc}
    end
  end

  defp success_allowed?(mode), do: String.starts_with?(mode, "redirect_same_") or mode == "invalid_utf8_header"

  defp run_case(ctx, mode, op) do
    record = Path.join(System.tmp_dir!(), "tinkex-hostile-other-#{System.unique_integer([:positive])}")
    server = start_server(ctx.server, mode, Map.fetch!(@targets, op), record)
    {status, output} = run_child(ctx.script, op, elem(server, 2))
    hits = stop_server(server)

    other = File.read(record) |> then(fn {:ok, b} -> b; _ -> "" end)
    File.rm(record)
    problems = if hits == 0, do: ["the hostile answer never landed (test setup?)"], else: []
    problems = if String.contains?(other, @canary_key), do: ["the other origin received the API key" | problems], else: problems
    problems = if String.contains?(other, @canary_cf), do: ["the other origin received the Cloudflare secret" | problems], else: problems

    result =
      output
      |> String.split("\n")
      |> Enum.find_value(fn l -> if String.starts_with?(l, "HOSTILE-RESULT "), do: Tinkex.JSON.decode!(String.replace_prefix(l, "HOSTILE-RESULT ", "")) end)

    cond do
      status != 0 ->
        ["the child BEAM died: exit #{inspect(status)} (output: #{String.slice(output, -1500, 1500)})" | problems]

      result == nil ->
        ["no result line (output: #{String.slice(output, -1500, 1500)})" | problems]

      true ->
        IO.puts("#{String.pad_trailing(mode, 22)} #{String.pad_trailing(op, 26)} -> #{inspect(result)}")
        check(mode, result) ++ problems
    end
  end

  defp check(mode, r) do
    p = []
    p = if r["elapsed_ms"] > @time_bound_ms, do: ["took #{r["elapsed_ms"]} ms > #{@time_bound_ms} ms" | p], else: p
    p = if r["rss_growth_kb"] * 1024 > @rss_growth_bound,
          do: ["peak RSS grew by #{div(r["rss_growth_kb"], 1024)} MiB > #{div(@rss_growth_bound, 1024 * 1024)} MiB" | p],
          else: p

    if r["ok"] do
      if success_allowed?(mode), do: p, else: ["succeeded on a hostile answer" | p]
    else
      p = if r["typed"] and r["kind"] in @typed_kinds, do: p, else: ["not a typed failure: #{r["kind"]} #{r["message_head"]}" | p]
      p = if String.starts_with?(mode, "lying_") and r["kind"] != "fatal", do: ["a lying protobuf must be fatal, got #{r["kind"]}" | p], else: p
      p = if mode == "redirect_loop" and r["kind"] in ["transient", "no_progress"],
            do: ["a redirect loop is a permanent failure (issue item 5), got #{r["kind"]}" | p], else: p
      p = if r["text_len"] > @max_error_text, do: ["error message is #{r["text_len"]} bytes > #{@max_error_text}" | p], else: p
      p = if r["text_has_key"], do: ["the error text contains the API key" | p], else: p
      if r["text_has_signed_query"], do: ["the error text contains a signed URL's query" | p], else: p
    end
  end

  for {mode, op} <- @mode_cases do
    test "mode #{mode} on #{op}", ctx do
      problems = run_case(ctx, unquote(mode), unquote(op))
      assert problems == [], Enum.join(problems, "; ")
    end
  end

  for {mode, op} <- @op_cases, {mode, op} not in @mode_cases do
    test "operation #{op} with #{mode}", ctx do
      problems = run_case(ctx, unquote(mode), unquote(op))
      assert problems == [], Enum.join(problems, "; ")
    end
  end
end
