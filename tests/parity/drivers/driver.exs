# The Elixir driver of the parity suite (tests/parity, docs/parity.md): runs one scenario's
# line form through the Elixir binding's public API (Tinkex.ServiceClient, TrainingClient,
# SamplingClient, RestClient, Future, Types) and prints the transcript lines ("@@ " + JSON).
# Op arguments (the C ABI's JSON) become the binding's arguments, options and structs here;
# `{:error, %Tinkex.Error{}}` tuples (and exceptions raised for bad input) are mapped to the
# common form.
#
#   cd bindings/elixir && MIX_ENV=test mix run driver.exs SCENARIO.tsv BASE_URL

defmodule Parity.Driver do
  alias Tinkex.{Future, JSON, RestClient, SamplingClient, ServiceClient, TrainingClient}
  alias Tinkex.Types.{AdamParams, Datum, DimuonParams, ModelInput, SamplingParams, TensorData}

  @op_wait 120_000

  def emit(map) do
    with %{"i" => i, "ok" => v} <- map, do: Process.put({:result, i}, Process.get({:result, i}, v))
    IO.puts("@@ " <> JSON.encode!(map))
  end

  # `args` with every "$ref:<i>:<key>" string replaced by that member of op i's result.
  def substitute(args) do
    Regex.replace(~r/"\$ref:(\d+):(\w+)"/, args, fn _, i, key ->
      JSON.encode!(Map.fetch!(Process.get({:result, String.to_integer(i)}), key))
    end)
  end

  # A result value as JSON data: structs become maps, atoms strings.
  def plain(%DateTime{} = d), do: DateTime.to_iso8601(d)
  def plain(%TensorData{} = t), do: %{"data" => TensorData.to_list(t), "dtype" => to_string(t.dtype), "shape" => t.shape}
  def plain(%_{} = s), do: s |> Map.from_struct() |> plain()
  def plain(m) when is_map(m), do: Map.new(m, fn {k, v} -> {to_string(k), plain(v)} end)
  def plain(l) when is_list(l), do: Enum.map(l, &plain/1)
  def plain(a) when is_atom(a) and a not in [nil, true, false], do: Atom.to_string(a)
  def plain(v), do: v

  def error_json(%Tinkex.Error{} = e) do
    %{"kind" => to_string(e.kind), "http_status" => e.http_status, "category" => e.category}
  end

  def opts(map) when is_map(map), do: Enum.map(map, fn {k, v} -> {String.to_atom(k), v} end)

  def tensor(%{"data" => d, "dtype" => t} = m), do: %TensorData{data: d, dtype: String.to_atom(t), shape: m["shape"]}

  def datum(%{"model_input" => mi} = d) do
    inputs = Map.new(Map.get(d, "loss_fn_inputs", %{}), fn {k, v} -> {k, tensor(v)} end)
    Datum.new(ModelInput.from_json(mi), inputs)
  end

  # The Elixir call of op `name`: {:ok, future} | {:error, %Tinkex.Error{}} (| a value).
  def submit(st, name, target, param, a) do
    obj = Map.get(st.objects, target)
    svc = st.svc

    case name do
      "capabilities" ->
        ServiceClient.get_server_capabilities(svc)

      "create_lora" ->
        {base, a} = Map.pop(a, "base_model")
        {lora, a} = Map.pop(a, "lora_config", %{})
        ServiceClient.create_lora_training_client(svc, base, opts(lora || %{}) ++ opts(a))

      "from_state" ->
        {path, a} = Map.pop(a, "path")
        ServiceClient.create_training_client_from_state(svc, path, opts(a))

      "resume" ->
        {id, a} = Map.pop(a, "training_run_id")
        ServiceClient.resume_training_run(svc, id, opts(a))

      "create_sampling" ->
        ServiceClient.create_sampling_client(svc, opts(a))

      "copy_weights" ->
        {path, a} = Map.pop(a, "path")
        ServiceClient.copy_weights(svc, path, opts(a))

      "close" ->
        reason = a |> Map.get("reason", %{}) |> Map.get("type", "success") |> String.to_atom()
        ServiceClient.close(svc, reason, a["detail"])

      "rest" ->
        rest(st, param, a)

      fb when fb in ["forward_backward", "forward"] ->
        {data, a} = Map.pop(a, "data")
        {loss, a} = Map.pop(a, "loss_fn")
        fun = if fb == "forward", do: &TrainingClient.forward/4, else: &TrainingClient.forward_backward/4
        fun.(obj, Enum.map(data, &datum/1), loss, opts(a))

      "forward_backward_custom" ->
        {data, a} = Map.pop(a, "data")
        TrainingClient.forward_backward_custom(obj, Enum.map(data, &datum/1), &suite_loss/1, opts(a))

      "optim_step" ->
        case Map.pop(a, "type") do
          {"dimuon", a} -> TrainingClient.optim_step(obj, struct!(DimuonParams, opts(a)))
          {_, a} -> TrainingClient.optim_step(obj, struct!(AdamParams, opts(a)))
        end

      "save_state" ->
        {path, a} = Map.pop(a, "path")
        TrainingClient.save_state(obj, path, opts(a))

      "save_weights_for_sampler" ->
        {path, a} = Map.pop(a, "path")
        TrainingClient.save_weights_for_sampler(obj, path, opts(a))

      "save_weights_external" ->
        {path, a} = Map.pop(a, "path")
        TrainingClient.save_weights_external(obj, path, opts(a))

      "load_state" ->
        {path, a} = Map.pop(a, "path")
        TrainingClient.load_state(obj, path, opts(a))

      "save_weights_and_get_sampling_client" ->
        TrainingClient.save_weights_and_get_sampling_client(obj, opts(a))

      "sample" ->
        {prompt, a} = Map.pop(a, "prompt")
        {params, a} = Map.pop(a, "sampling_params", %{})
        a = if a["target_prompt_logprobs"], do: Map.update!(a, "target_prompt_logprobs", &tensor/1), else: a
        SamplingClient.sample(obj, ModelInput.from_json(prompt), struct!(SamplingParams, opts(params)), opts(a))

      "compute_logprobs" ->
        {prompt, a} = Map.pop(a, "prompt")
        if a != %{}, do: raise(ArgumentError, "compute_logprobs takes no options: #{inspect(Map.keys(a))}")
        SamplingClient.compute_logprobs(obj, ModelInput.from_json(prompt))
    end
  end

  # The suite's custom loss (every driver has the same): loss = -(sum of all target logprobs),
  # gradient -1 everywhere; metric n_logprobs.
  def suite_loss(logprobs) do
    flat = List.flatten(logprobs)
    grads = Enum.map(logprobs, fn l -> Enum.map(l, fn _ -> -1.0 end) end)
    {-Enum.sum(Enum.map(flat, &(&1 * 1.0))), grads, %{"n_logprobs" => length(flat) * 1.0}}
  end

  # A REST method by name: required params (methods.json order) positionally, the rest as options.
  def rest(st, method, a) do
    spec = Enum.find(st.methods, &(&1["name"] == method)) || raise "unknown REST method #{method}"
    required = for p <- spec["params"], not Map.has_key?(p, "default"), do: p["name"]
    fun = String.to_atom(method)
    positional = Enum.map(required, &Map.get(a, &1))
    extra = opts(Map.drop(a, required))

    if function_exported?(RestClient, fun, length(required) + 2),
      do: apply(RestClient, fun, [st.rest | positional] ++ [extra]),
      else: apply(RestClient, fun, [st.rest | positional])
  end

  def result(st, %TrainingClient{} = tc, save_as) do
    {:ok, info} = TrainingClient.get_info(tc)
    {plain(info), put(st, save_as, tc)}
  end

  def result(st, %SamplingClient{} = sc, save_as) do
    {:ok, base} = SamplingClient.get_base_model(sc)
    {%{"base_model" => base, "sampling_session_id" => sc.sampling_session_id}, put(st, save_as, sc)}
  end

  def result(st, :ok, _), do: {nil, st}
  def result(st, v, _), do: {plain(v), st}

  defp put(st, "", _), do: st
  defp put(st, name, obj), do: %{st | objects: Map.put(st.objects, name, obj)}

  def finish(st, i, op, outcome, save_as) do
    case outcome do
      {:ok, v} ->
        {json, st} = result(st, v, save_as)
        emit(%{"i" => i, "op" => op, "ok" => json})
        st

      {:error, %Tinkex.Error{} = e} ->
        emit(%{"i" => i, "op" => op, "error" => error_json(e)})
        st
    end
  end

  def run(st, [i, name, target, save_as, param, wait, args]) do
    i = String.to_integer(i)
    args = JSON.decode!(substitute(args))

    case name do
      "control" ->
        emit(%{"control" => i})
        if IO.gets("") in [:eof, nil], do: raise("stdin closed during control")
        st

      "wait_event" ->
        # Waits (bounded: 10 s) until an event of type `param` was received.
        {found, st} = wait_event(st, param, System.monotonic_time(:millisecond) + 10_000)
        emit(%{"i" => i, "op" => "wait_event", "ok" => found})
        st

      "await" ->
        timeout = if param == "", do: @op_wait, else: String.to_integer(param)
        finish(st, i, "await", Future.await(Map.fetch!(st.futures, target), timeout), save_as)

      "cancel" ->
        Future.cancel(Map.fetch!(st.futures, target))
        emit(%{"i" => i, "op" => "cancel", "ok" => nil})
        st

      _ ->
        submitted =
          try do
            submit(st, name, target, param, args)
          rescue
            e in [ArgumentError, KeyError, FunctionClauseError] ->
              {:error, %Tinkex.Error{kind: :invalid_input, message: Exception.message(e)}}
          end

        case submitted do
          {:ok, %Future{} = f} when wait == "0" ->
            emit(%{"i" => i, "op" => name, "submitted" => true})
            %{st | futures: Map.put(st.futures, save_as, f)}

          {:ok, %Future{} = f} ->
            finish(st, i, name, Future.await(f, @op_wait), save_as)

          other ->
            finish(st, i, name, other, save_as)
        end
    end
  end

  def wait_event(st, type, deadline) do
    if Enum.any?(st.received, &(&1["type"] == type)) do
      {true, st}
    else
      left = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {:tinkex_event, _ref, ev} -> wait_event(%{st | received: st.received ++ [JSON.decode!(ev.json)]}, type, deadline)
      after
        left -> {false, st}
      end
    end
  end

  def drain_events(acc) do
    receive do
      {:tinkex_event, _ref, ev} -> drain_events([JSON.decode!(ev.json) | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  def main([path, _base_url]) do
    methods = File.read!(Path.join(__DIR__, "../../../src/core/rest/methods.json")) |> JSON.decode!() |> Map.fetch!("methods")
    st = %{svc: nil, rest: nil, objects: %{}, futures: %{}, methods: methods, events: false, received: []}

    st =
      path
      |> File.read!()
      |> String.split("\n", trim: true)
      |> Enum.reduce(st, fn line, st ->
        case String.split(line, "\t", parts: 8) do
          ["config", json] ->
            {:ok, svc} = ServiceClient.new(opts(JSON.decode!(json)))
            {:ok, rest} = ServiceClient.create_rest_client(svc)
            %{st | svc: svc, rest: rest}

          ["events", _] ->
            {:ok, _sub} = ServiceClient.subscribe(st.svc)
            %{st | events: true}

          ["op" | fields] ->
            run(st, fields)
        end
      end)

    emit(%{"events" => if(st.events, do: st.received ++ drain_events([]), else: [])})
    emit(%{"done" => true})
  end
end

Parity.Driver.main(System.argv())
