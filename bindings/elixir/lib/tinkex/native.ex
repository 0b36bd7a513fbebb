defmodule Tinkex.Native do
  @moduledoc false
  # The NIF (c_src/tinkex_nif.c): one function per C ABI call, plus introspection.
  #
  # Loaded from `priv/tinkex_nif.so` of the :tinkex application, or from the path in the
  # TINKEX_NIF_PATH environment variable (without the `.so` suffix). Every function here
  # returns within microseconds on a normal scheduler except runtime_new/2 and
  # runtime_shutdown/2, which are dirty I/O NIFs.

  @on_load :load_nif

  def load_nif do
    path =
      case System.get_env("TINKEX_NIF_PATH") do
        nil -> Path.join(priv_dir(), "tinkex_nif")
        p -> p
      end

    case :erlang.load_nif(String.to_charlist(path), 0) do
      :ok ->
        :ok

      {:error, {reason, text}} ->
        IO.warn("tinkex: cannot load the NIF #{path}.so (#{reason}): #{text}")
        :ok
    end
  end

  defp priv_dir do
    case :code.priv_dir(:tinkex) do
      {:error, _} -> Path.expand("../../priv", __DIR__)
      dir -> List.to_string(dir)
    end
  end

  defp nif, do: :erlang.nif_error(:tinkex_nif_not_loaded)

  def runtime_new(_workers, _log_level, _thread_nice), do: nif()
  def runtime_shutdown(_rt, _timeout_ms), do: nif()
  def runtime_set_log_sink(_rt, _pid_or_nil, _max_level), do: nif()
  def service_client_new(_rt, _config_json), do: nif()
  def service_client_session_id(_svc), do: nif()
  def service_client_get_server_capabilities(_svc), do: nif()
  def service_client_create_lora_training_client(_svc, _json), do: nif()
  def service_client_create_training_client_from_state(_svc, _json), do: nif()
  def service_client_create_sampling_client(_svc, _json), do: nif()
  def service_client_create_rest_client(_svc), do: nif()
  def service_client_close(_svc, _json), do: nif()
  def service_client_subscribe(_svc, _pid), do: nif()
  def subscription_free(_sub), do: nif()
  def training_client_get_info(_tc), do: nif()
  def training_client_forward_backward(_tc, _json), do: nif()
  def training_client_forward(_tc, _json), do: nif()
  def training_client_forward_backward_batch(_tc, _batch, _json), do: nif()
  def training_client_forward_batch(_tc, _batch, _json), do: nif()
  def training_client_optim_step(_tc, _json), do: nif()
  def training_client_save_state(_tc, _json), do: nif()
  def training_client_save_weights_for_sampler(_tc, _json), do: nif()
  def training_client_save_weights_and_get_sampling_client(_tc, _json), do: nif()
  def training_client_load_state(_tc, _json), do: nif()
  def training_client_forward_backward_custom(_tc, _batch), do: nif()
  def custom_loss_set_metrics(_pass, _json), do: nif()
  def custom_loss_backward(_pass, _grads_batch), do: nif()
  def custom_loss_abort(_pass, _reason), do: nif()
  def datum_batch_new(), do: nif()
  def datum_batch_push(_batch, _tokens, _dtype), do: nif()
  def datum_batch_push_json(_batch, _json), do: nif()
  def datum_batch_set_loss_input(_batch, _name, _data, _dtype, _shape), do: nif()
  def datum_batch_len(_batch), do: nif()
  def sampling_client_get_info(_sc), do: nif()
  def sampling_client_sample(_sc, _json), do: nif()
  def sampling_client_compute_logprobs(_sc, _json), do: nif()
  def rest_client_new(_rt, _config_json), do: nif()
  def rest_client_call(_rc, _method, _args_json), do: nif()
  def admin_client_new(_rt, _config_json), do: nif()
  def admin_client_call(_ac, _method, _args_json), do: nif()
  def service_client_copy_weights(_svc, _json), do: nif()
  def service_client_create_custom_loss(_svc, _json), do: nif()
  def service_client_resume_training_run(_svc, _json), do: nif()
  def service_client_get_console_url(_svc), do: nif()
  def service_client_status(_svc), do: nif()
  def training_client_get_console_url(_tc), do: nif()
  def training_client_status(_tc), do: nif()
  def training_client_save_weights_external(_tc, _json), do: nif()
  def sampling_client_get_sampler_handle(_sc), do: nif()
  def sampling_client_from_sampler_handle(_rt, _handle, _config_json), do: nif()
  def sampling_client_status(_sc), do: nif()
  def future_cancel(_fut), do: nif()
  def future_is_done(_fut), do: nif()
  def testing_available(), do: nif()
  def testing_panic_in_export(), do: nif()
  def testing_panic_in_task(_rt, _where), do: nif()
  def testing_spin(_us), do: nif()
  def testing_block(_us), do: nif()
  # The test build of the NIF only (TINKEX_NIF_TESTING): allocation fault injection.
  def testing_fail_alloc(_n), do: nif()
  def testing_fault_state(), do: nif()
  def version(), do: nif()
  def status_name(_status), do: nif()
  def resource_counts(), do: nif()
  # The timing build only (TINKEX_NIF_TIMING); {:error, :not_compiled} otherwise.
  def nif_stats(), do: nif()
  def nif_stats_reset(), do: nif()
  def nif_slow_calls(), do: nif()
end
