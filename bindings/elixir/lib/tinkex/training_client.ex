defmodule Tinkex.TrainingClient do
  @moduledoc """
  A training client for one model. Operations run on the server in submission order (the
  order of the calls, across processes), so a loop may submit `forward_backward` and
  `optim_step` back to back and await later.

      {:ok, fb} = TrainingClient.forward_backward(training, data, :cross_entropy)
      {:ok, opt} = TrainingClient.optim_step(training, %AdamParams{learning_rate: 1.0e-3})
      {:ok, %ForwardBackwardOutput{} = out} = Tinkex.Future.await(fb)
      {:ok, _} = Tinkex.Future.await(opt)

  Every function returns `{:ok, %Tinkex.Future{}}` at once (or `{:error, %Tinkex.Error{}}`
  when the input is rejected before anything is sent).

  Training data goes into one libtinkex datum batch per call: datums whose model input is one
  token chunk as typed arrays (no JSON text; give token ids and loss inputs as binaries —
  native-endian int64 / float32 — to skip any per-element work in Elixir), other datums
  (images, several chunks) as JSON (`tinkex_datum_batch_push_json`).
  """

  alias Tinkex.{Constants, Error, Future, JSON, Native, Requests}
  alias Tinkex.Types.{
    AdamParams,
    Datum,
    DimuonParams,
    EncodedTextChunk,
    ForwardBackwardOutput,
    GetInfoResponse,
    LoadWeightsResponse,
    ModelInput,
    OptimStepResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    TensorData
  }

  defstruct [:handle, :info, :service]
  @type t :: %__MODULE__{handle: reference, info: GetInfoResponse.t(), service: Tinkex.ServiceClient.t() | nil}

  @doc false
  # `service`: the service client that created it (for create_sampling_client/3 and the
  # sampling clients it creates).
  def wrap({:training_client, h}, service \\ nil) do
    case Native.training_client_get_info(h) do
      {:ok, json} -> {:ok, %__MODULE__{handle: h, info: GetInfoResponse.from_json(JSON.decode!(json)), service: service}}
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  @doc "The model's information (fetched at creation; no I/O)."
  @spec get_info(t) :: {:ok, GetInfoResponse.t()}
  def get_info(%__MODULE__{info: info}), do: {:ok, info}

  @doc "The model id."
  @spec model_id(t) :: String.t()
  def model_id(%__MODULE__{info: info}), do: info.model_id

  @doc """
  Loss and gradients of `data` (a list of `Tinkex.Types.Datum`), accumulated for the next
  `optim_step/2`: a future of `ForwardBackwardOutput`. `loss_fn` is an atom or string
  (`:cross_entropy`, `:importance_sampling`, `:ppo`, ...); option `:loss_fn_config` (map).
  """
  @spec forward_backward(t, [Datum.t()], atom | String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def forward_backward(tc, data, loss_fn, opts \\ []), do: fb(tc, data, loss_fn, opts, false)

  @doc "Like `forward_backward/4` without accumulating gradients."
  @spec forward(t, [Datum.t()], atom | String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def forward(tc, data, loss_fn, opts \\ []), do: fb(tc, data, loss_fn, opts, true)

  defp fb(%__MODULE__{handle: h}, data, loss_fn, opts, forward_only) do
    op = if forward_only, do: :forward, else: :forward_backward
    decode = Future.json(&ForwardBackwardOutput.from_json/1)

    # Always one datum batch (the C ABI borrows it at submit; its resource frees it).
    with :ok <- Requests.check(:forward_backward, opts),
         {:ok, batch} <- build_batch(data) do
      loss = JSON.encode!(Requests.loss(loss_fn, opts))

      if forward_only,
        do: Native.training_client_forward_batch(h, batch, loss) |> Future.submitted(op, decode),
        else: Native.training_client_forward_backward_batch(h, batch, loss) |> Future.submitted(op, decode)
    end
  end

  @doc """
  Client-side custom loss (PROTOCOL 11.6; the official SDK's `forward_backward_custom`): a
  forward pass over `data` gives each datum's `logprobs`; `loss_fn` computes the loss and
  its gradient `dLoss/dlogprobs`; the backward applies it. A future of
  `ForwardBackwardOutput` whose `metrics["loss:sum"]` is the custom loss (the server's
  surrogate loss moves to `"surrogate_loss:sum"`) plus the metrics `loss_fn` returned.

  `loss_fn` is `fn logprobs -> ... end` or `fn data, logprobs -> ... end`, where `logprobs`
  is a list with one list of floats per datum (one per target token), and returns
  `{loss, grads, metrics}`: `loss` a number, `grads` one list of numbers (or a float32
  native binary, or a `TensorData`) per datum with the length of its logprobs, `metrics` a
  map of name => number (may be empty).

      TrainingClient.forward_backward_custom(tc, data, fn logprobs ->
        loss = -(logprobs |> List.flatten() |> Enum.sum())
        {loss, Enum.map(logprobs, fn l -> Enum.map(l, fn _ -> -1.0 end) end), %{}}
      end)

  The loss function runs in a process of its own (never on a libtinkex thread, and no NIF
  waits for it). The call returns once the forward is submitted: training calls submitted
  after it run after its backward. If `loss_fn` raises, throws, exits or returns something
  else, the pass is aborted: the future resolves to `{:error, %Tinkex.Error{kind: :user}}`
  naming the cause, and — as in the official SDK — the training client is poisoned (its
  later training calls fail naming that cause). The same happens when the submitting
  process exits before the loss ran.
  """
  @spec forward_backward_custom(t, [Datum.t()], function, keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def forward_backward_custom(tc, data, loss_fn, opts \\ [])

  def forward_backward_custom(%__MODULE__{handle: h}, data, loss_fn, opts)
      when is_function(loss_fn, 1) or is_function(loss_fn, 2) do
    with :ok <- Requests.check(:forward_backward_custom, opts),
         {:ok, batch} <- build_batch(data) do
      caller = self()
      ref = make_ref()
      {pid, mon} = spawn_monitor(fn -> custom_worker(caller, ref, h, batch, data, loss_fn) end)

      receive do
        {^ref, :submitted, fwd} ->
          Process.demonitor(mon, [:flush])

          {:ok,
           %Future{
             ref: ref,
             handle: {:custom, pid, fwd},
             owner: caller,
             decode: Future.json(&ForwardBackwardOutput.from_json/1),
             op: :forward_backward_custom
           }}

        {^ref, :rejected, e} ->
          Process.demonitor(mon, [:flush])
          {:error, Error.from_nif(e)}

        {:DOWN, ^mon, :process, _, reason} ->
          {:error, Error.new(:internal, :internal, "forward_backward_custom: the loss process exited: #{inspect(reason)}")}
      end
    end
  end

  # The loss process: submits phase 1 (so the forward's completion comes here), runs the
  # loss when it arrives, submits phase 2 and posts the final result to the caller under
  # the future's ref. Every outcome ends in exactly one {:tinkex, ref, result} message.
  defp custom_worker(caller, ref, h, batch, data, loss_fn) do
    caller_mon = Process.monitor(caller)

    case Native.training_client_forward_backward_custom(h, batch) do
      {:error, e} ->
        send(caller, {ref, :rejected, e})

      {:ok, fref, fwd, pass} ->
        send(caller, {ref, :submitted, fwd})
        result =
          try do
            custom_pass(caller_mon, fref, pass, data, loss_fn)
          rescue
            e -> custom_abort(pass, "forward_backward_custom: internal error: #{Exception.message(e)}")
          end

        send(caller, {:tinkex, ref, result})
    end
  end

  defp custom_pass(caller_mon, fref, pass, data, loss_fn) do
    receive do
      {:tinkex, ^fref, {:ok, json}} ->
        case run_loss(json, data, loss_fn) do
          {:ok, metrics, grads} -> custom_backward(caller_mon, pass, metrics, grads)
          {:error, reason} -> custom_abort(pass, reason)
        end

      {:tinkex, ^fref, {:error, _} = e} ->
        # A failed forward already poisoned the client (the core's rule).
        e

      {:DOWN, ^caller_mon, :process, _, _} ->
        custom_abort(pass, "forward_backward_custom: the submitting process exited before the loss ran")
    end
  end

  defp custom_abort(pass, reason) do
    _ = Native.custom_loss_abort(pass, reason)
    {:error, {Constants.statuses().user, :user, reason, 0, false, nil, nil}}
  end

  defp run_loss(json, data, loss_fn) do
    logprobs =
      for o <- JSON.decode!(json)["loss_fn_outputs"] || [] do
        o |> Map.fetch!("logprobs") |> TensorData.from_json() |> TensorData.to_list()
      end

    result = if is_function(loss_fn, 2), do: loss_fn.(data, logprobs), else: loss_fn.(logprobs)

    with {:ok, loss, grads, metrics} <- check_loss_result(result, logprobs),
         {:ok, metrics} <- metrics_json(metrics, loss),
         do: {:ok, metrics, grads}
  rescue
    e -> {:error, "forward_backward_custom: the loss function raised #{inspect(e.__struct__)}: #{Exception.message(e)}"}
  catch
    kind, reason -> {:error, "forward_backward_custom: the loss function did #{kind}: #{inspect(reason, limit: 20)}"}
  end

  defp check_loss_result({loss, grads, metrics}, logprobs)
       when is_number(loss) and is_list(grads) and is_map(metrics) do
    cond do
      length(grads) != length(logprobs) ->
        {:error, "forward_backward_custom: the loss function returned #{length(grads)} gradients for #{length(logprobs)} datums"}

      true ->
        grads
        |> Enum.zip(logprobs)
        |> Enum.with_index()
        |> Enum.reduce_while({:ok, []}, fn {{g, lp}, i}, {:ok, acc} ->
          case grad_binary(g) do
            {:ok, bin, n} when n == length(lp) -> {:cont, {:ok, [bin | acc]}}
            {:ok, _, n} -> {:halt, {:error, "forward_backward_custom: gradient #{i} has #{n} values for #{length(lp)} logprobs"}}
            :error -> {:halt, {:error, "forward_backward_custom: gradient #{i} is not a list of numbers, a float32 binary or a TensorData"}}
          end
        end)
        |> case do
          {:ok, bins} -> {:ok, loss, Enum.reverse(bins), metrics}
          err -> err
        end
    end
  end

  defp check_loss_result(other, _logprobs),
    do: {:error, "forward_backward_custom: the loss function must return {loss, grads, metrics}, got: #{inspect(other, limit: 10)}"}

  defp grad_binary(%TensorData{} = t), do: grad_binary(TensorData.to_list(t))
  defp grad_binary(b) when is_binary(b) and rem(byte_size(b), 4) == 0, do: {:ok, b, div(byte_size(b), 4)}

  defp grad_binary(l) when is_list(l) do
    if Enum.all?(l, &is_number/1), do: {:ok, TensorData.pack(Enum.map(l, &(&1 * 1.0)), :float32), length(l)}, else: :error
  end

  defp grad_binary(_), do: :error

  defp metrics_json(metrics, loss) do
    if Enum.all?(metrics, fn {k, v} -> (is_binary(k) or is_atom(k)) and is_number(v) end) do
      m = Map.new(metrics, fn {k, v} -> {to_string(k), v * 1.0} end)
      {:ok, JSON.encode!(Map.put(m, "loss:sum", loss * 1.0))}
    else
      {:error, "forward_backward_custom: metrics must map names to numbers, got: #{inspect(metrics, limit: 10)}"}
    end
  end

  defp custom_backward(caller_mon, pass, metrics, grads) do
    with :ok <- Native.custom_loss_set_metrics(pass, metrics),
         {:ok, gb} <- grads_batch(grads),
         {:ok, bref, _bwd} <- Native.custom_loss_backward(pass, gb) do
      Process.demonitor(caller_mon, [:flush])

      receive do
        {:tinkex, ^bref, result} -> result
      end
    else
      {:error, e} ->
        _ = Native.custom_loss_abort(pass, "forward_backward_custom: the backward could not be submitted")
        {:error, e}
    end
  end

  defp grads_batch(grads) do
    with {:ok, gb} <- Native.datum_batch_new() do
      Enum.reduce_while(grads, {:ok, gb}, fn g, acc ->
        with :ok <- Native.datum_batch_push(gb, <<>>, Constants.dtype(:int64)),
             :ok <- Native.datum_batch_set_loss_input(gb, "grads", g, Constants.dtype(:float32), nil) do
          {:cont, acc}
        else
          err -> {:halt, err}
        end
      end)
    end
  end

  defp build_batch(data) do
    case Native.datum_batch_new() do
      {:ok, batch} -> fill_batch(batch, data)
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  defp fill_batch(batch, data) do
    Enum.reduce_while(data, {:ok, batch}, fn d, acc ->
      case push(batch, d) do
        :ok -> {:cont, acc}
        {:error, e} -> {:halt, {:error, Error.from_nif(e)}}
      end
    end)
  end

  # A datum whose input is at most one token chunk crosses as typed arrays (no JSON text for
  # the numbers); any other datum (images, several chunks) as JSON.
  defp push(batch, %Datum{model_input: %ModelInput{chunks: chunks}} = d) when length(chunks) <= 1 do
    tokens =
      case chunks do
        [] -> <<>>
        [%EncodedTextChunk{tokens: t}] when is_binary(t) -> t
        [%EncodedTextChunk{tokens: t}] -> TensorData.pack(t, :int64)
        [_other] -> nil
      end

    if tokens do
      with :ok <- Native.datum_batch_push(batch, tokens, Constants.dtype(:int64)),
           do: set_inputs(batch, Datum.loss_inputs(d))
    else
      push_json(batch, d)
    end
  end

  defp push(batch, d), do: push_json(batch, d)

  defp push_json(batch, d), do: Native.datum_batch_push_json(batch, JSON.encode!(Requests.datum(d)))

  defp set_inputs(_batch, []), do: :ok

  defp set_inputs(batch, [{name, %TensorData{} = t} | rest]) do
    case Native.datum_batch_set_loss_input(batch, name, TensorData.to_binary(t), Constants.dtype(t.dtype), t.shape) do
      :ok -> set_inputs(batch, rest)
      err -> err
    end
  end

  @doc """
  Applies the accumulated gradients: a future of `OptimStepResponse`. Takes an
  `AdamParams` struct (Adam), a `DimuonParams` struct (Dimuon), or a keyword list of
  `AdamParams` fields (with `type: :dimuon`, of `DimuonParams` fields).
  """
  @spec optim_step(t, AdamParams.t() | DimuonParams.t() | keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def optim_step(tc, params \\ %AdamParams{})

  def optim_step(tc, params) when is_list(params) do
    case Keyword.pop(params, :type) do
      {t, rest} when t in [:dimuon, "dimuon"] -> optim_step(tc, struct!(DimuonParams, rest))
      {t, rest} when t in [nil, :adam, "adam"] -> optim_step(tc, struct!(AdamParams, rest))
      {t, _} -> {:error, Error.new(:invalid_arg, :invalid_arg, "optim_step: unknown optimizer type #{inspect(t)}")}
    end
  end

  def optim_step(%__MODULE__{handle: h}, %p_mod{} = p) when p_mod in [AdamParams, DimuonParams] do
    Native.training_client_optim_step(h, JSON.encode!(Requests.optim_step(p)))
    |> Future.submitted(:optim_step, Future.json(&OptimStepResponse.from_json/1))
  end

  @doc """
  Saves a training checkpoint (weights and optimizer state) named `name`: a future of
  `SaveWeightsResponse` with its `tinker://` path. Options: `:ttl_seconds`, `:overwrite`,
  `:user_metadata` (string map).
  """
  @spec save_state(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def save_state(%__MODULE__{handle: h}, name, opts \\ []) do
    with :ok <- Requests.check(:save_state, opts) do
      body = Requests.save_state(name, opts)

      Native.training_client_save_state(h, JSON.encode!(body))
      |> Future.submitted(:save_state, Future.json(&SaveWeightsResponse.from_json/1))
    end
  end

  @doc """
  Loads a training checkpoint (`tinker://.../weights/name`) into this model: a future of
  `LoadWeightsResponse`. `optimizer: true` also restores the optimizer state;
  `:weights_access_token` reads a checkpoint shared with a token.
  """
  @spec load_state(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def load_state(%__MODULE__{handle: h}, path, opts \\ []) do
    with :ok <- Requests.check(:load_state, opts) do
      body = Requests.load_state(path, opts)

      Native.training_client_load_state(h, JSON.encode!(body))
      |> Future.submitted(:load_state, Future.json(&LoadWeightsResponse.from_json/1))
    end
  end

  @doc "`load_state(tc, path, [optimizer: true] ++ opts)`. Option: `:weights_access_token`."
  @spec load_state_with_optimizer(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def load_state_with_optimizer(tc, path, opts \\ []), do: load_state(tc, path, Keyword.put(opts, :optimizer, true))

  @doc """
  Saves named sampler weights: a future of `SaveWeightsForSamplerResponse`. Options:
  `:ttl_seconds`, `:user_metadata` (string map).
  """
  @spec save_weights_for_sampler(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def save_weights_for_sampler(%__MODULE__{handle: h}, name, opts \\ []) do
    with :ok <- Requests.check(:save_weights_for_sampler, opts) do
      Native.training_client_save_weights_for_sampler(h, JSON.encode!(Requests.save_weights_for_sampler(name, opts)))
      |> Future.submitted(:save_weights_for_sampler, Future.json(&SaveWeightsForSamplerResponse.from_json/1))
    end
  end

  @doc """
  Saves the current weights for sampling and creates a sampling client bound to them: a
  future of `Tinkex.SamplingClient`. Options: `:kind` (`:snapshot`, the default, or
  `:inflight`), `:retry_config` (map of RetryConfig fields), `:record_stability_info`
  (boolean, default false).
  """
  @spec save_weights_and_get_sampling_client(t, keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def save_weights_and_get_sampling_client(%__MODULE__{handle: h, service: svc}, opts \\ []) do
    with :ok <- Requests.check(:save_weights_and_get_sampling_client, opts) do
      Native.training_client_save_weights_and_get_sampling_client(h, JSON.encode!(Requests.save_weights_and_get_sampling_client(opts)))
      |> Future.submitted(:save_weights_and_get_sampling_client, &Tinkex.SamplingClient.wrap(&1, svc))
    end
  end

  @doc """
  A sampling client of saved sampler weights (`tinker://.../sampler_weights/name`), created
  by this client's service client: `Tinkex.ServiceClient.create_sampling_client(svc,
  model_path: model_path)`, a future of `Tinkex.SamplingClient`. Options: `:retry_config`,
  `:record_stability_info`.
  """
  @spec create_sampling_client(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def create_sampling_client(tc, model_path, opts \\ [])

  def create_sampling_client(%__MODULE__{service: nil}, _model_path, _opts),
    do: {:error, Error.new(:wrong_state, :wrong_state, "create_sampling_client: this training client has no service client")}

  def create_sampling_client(%__MODULE__{service: svc}, model_path, opts) do
    with :ok <- Requests.check(:training_create_sampling_client, opts) do
      Tinkex.ServiceClient.create_sampling_client(svc, [model_path: model_path] ++ opts)
    end
  end

  @doc """
  Saves the weights in an external (e.g. HuggingFace) format: a future of
  `%{"path" => tinker_path, "size_bytes" => n}`. Options: `:ttl_seconds`,
  `:age_encryption_recipients` (list of strings). Download the files through
  `Tinkex.RestClient.get_external_weights_urls/2`.
  """
  @spec save_weights_external(t, String.t(), keyword) :: {:ok, Future.t()} | {:error, Error.t()}
  def save_weights_external(%__MODULE__{handle: h}, name, opts \\ []) do
    with :ok <- Requests.check(:save_weights_external, opts) do
      Native.training_client_save_weights_external(h, JSON.encode!(Requests.save_weights_external(name, opts)))
      |> Future.submitted(:save_weights_external, Future.json(& &1))
    end
  end

  @doc "The web console URL of this training run (PROTOCOL 20.2); no I/O."
  @spec get_console_url(t) :: {:ok, String.t()} | {:error, Error.t()}
  def get_console_url(%__MODULE__{handle: h}), do: Tinkex.Util.sync_json(Native.training_client_get_console_url(h))

  @doc "Introspection of this client (no I/O): the keys of `Tinkex.ServiceClient.status/1`."
  @spec status(t) :: {:ok, map} | {:error, Error.t()}
  def status(%__MODULE__{handle: h}), do: Tinkex.Util.sync_json(Native.training_client_status(h))

  @doc "The telemetry counters of `status/1` (`nil` when telemetry is off); no I/O."
  @spec get_telemetry(t) :: {:ok, map | nil} | {:error, Error.t()}
  def get_telemetry(tc), do: Tinkex.Util.telemetry(status(tc))
end
