# A tour of the REST client: training runs, checkpoints, publishing, TTLs, external
# weights and their signed download URLs (fetched with a plain HTTP GET, no credentials).
#
#   target/release/tinkex-emulator --port 0 --state-dir /tmp/emu &   # prints its URL
#   cd bindings/elixir
#   TINKER_BASE_URL=http://127.0.0.1:PORT TINKER_API_KEY=tml-local mix run examples/rest_tour.exs
#
# The test suite runs it against the emulator (test/rest_tour_test.exs). Every step
# pattern-matches its result, so any failure stops the tour with a MatchError.

alias Tinkex.{AdminClient, Future, RestClient, ServiceClient, TrainingClient}

await! = fn {:ok, fut} -> {:ok, v} = Future.await(fut, 60_000); v end

# The configuration, read here from TINKER_API_KEY / TINKER_BASE_URL (libtinkex would read
# them too, but the BEAM's System.put_env is not visible to native code).
config = for {k, v} <- [api_key: System.get_env("TINKER_API_KEY"), base_url: System.get_env("TINKER_BASE_URL")], v, do: {k, v}

# A model with three checkpoints: training state, sampler weights, external weights.
{:ok, service} = ServiceClient.new([telemetry: false] ++ config)
training = await!.(ServiceClient.create_lora_training_client(service, "Qwen/Qwen3-8B", rank: 8, user_metadata: %{"tour" => "rest"}))
run_id = TrainingClient.model_id(training)
%{path: state_path} = await!.(TrainingClient.save_state(training, "tour-state"))
%{path: sampler_path} = await!.(TrainingClient.save_weights_for_sampler(training, "tour-sampler", ttl_seconds: 7200))
%{"path" => external_path, "size_bytes" => external_size} = await!.(TrainingClient.save_weights_external(training, "tour-external"))
IO.puts("run #{run_id}: #{state_path}, #{sampler_path}, #{external_path} (#{external_size} bytes)")

# A session-less REST client: no session, no heartbeat; configured like a service client.
{:ok, rest} = RestClient.new(config)

# Training runs (newest first) and one run.
%{training_runs: runs} = await!.(RestClient.list_training_runs(rest, limit: 50))
true = Enum.any?(runs, &(&1.training_run_id == run_id))
%{base_model: base, lora_rank: 8} = await!.(RestClient.get_training_run(rest, run_id))
%{training_run_id: ^run_id} = await!.(RestClient.get_training_run_by_tinker_path(rest, state_path))
IO.puts("runs: #{length(runs)} listed; #{run_id} is a rank-8 LoRA of #{base}")

# Checkpoints of the run, and of the caller.
%{checkpoints: cps} = await!.(RestClient.list_checkpoints(rest, run_id))
IO.puts("checkpoints of the run: " <> Enum.map_join(cps, ", ", &"#{&1.checkpoint_id} (#{&1.checkpoint_type})"))
%{checkpoints: mine} = await!.(RestClient.list_user_checkpoints(rest, limit: 100))
true = Enum.any?(mine, &(&1.tinker_path == sampler_path))

# Publish and unpublish.
:ok = await!.(RestClient.publish_checkpoint_from_tinker_path(rest, sampler_path))
%{checkpoints: cps} = await!.(RestClient.list_checkpoints(rest, run_id))
%{public: true} = Enum.find(cps, &(&1.tinker_path == sampler_path))
:ok = await!.(RestClient.unpublish_checkpoint_from_tinker_path(rest, sampler_path))
%{checkpoints: cps} = await!.(RestClient.list_checkpoints(rest, run_id))
%{public: false} = Enum.find(cps, &(&1.tinker_path == sampler_path))
IO.puts("published and unpublished #{sampler_path}")

# TTL: set one, then clear it (nil).
:ok = await!.(RestClient.set_checkpoint_ttl_from_tinker_path(rest, state_path, 86_400))
%{checkpoints: cps} = await!.(RestClient.list_checkpoints(rest, run_id))
%{expires_at: expires} = Enum.find(cps, &(&1.tinker_path == state_path))
true = is_binary(expires)
:ok = await!.(RestClient.set_checkpoint_ttl_from_tinker_path(rest, state_path, nil))
%{checkpoints: cps} = await!.(RestClient.list_checkpoints(rest, run_id))
%{expires_at: nil} = Enum.find(cps, &(&1.tinker_path == state_path))
IO.puts("TTL of #{state_path}: set (expires #{expires}), then cleared")

# Weights info.
%{base_model: ^base, is_lora: true} = await!.(RestClient.get_weights_info_by_tinker_path(rest, state_path))

# External weights: signed URLs, downloaded with a plain GET and no credentials.
%{"urls" => urls, "expires" => url_expiry} = await!.(RestClient.get_external_weights_urls(rest, external_path))
true = map_size(urls) > 0
{:ok, _} = Application.ensure_all_started(:inets)

downloaded =
  for {file, url} <- Enum.sort(urls) do
    {:ok, {{_, 200, _}, _headers, body}} = :httpc.request(:get, {String.to_charlist(url), []}, [timeout: 30_000], body_format: :binary)
    IO.puts("  #{file}: #{byte_size(body)} bytes")
    byte_size(body)
  end

IO.puts("downloaded #{length(downloaded)} file(s), #{Enum.sum(downloaded)} bytes; URLs expire #{url_expiry}")

# Delete a checkpoint; it is gone from the listing.
:ok = await!.(RestClient.delete_checkpoint_from_tinker_path(rest, sampler_path))
%{checkpoints: cps} = await!.(RestClient.list_checkpoints(rest, run_id))
false = Enum.any?(cps, &(&1.tinker_path == sampler_path))
IO.puts("deleted #{sampler_path}")

# Admin: current checkpoint storage usage (a map with the server's fields).
{:ok, admin} = AdminClient.new(config)
usage = await!.(AdminClient.get_current_checkpoint_storage_usage(admin))
true = is_map(usage)

:ok = await!.(ServiceClient.close(service))
IO.puts("REST tour done")
