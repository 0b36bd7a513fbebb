defmodule Tinkex.Util do
  @moduledoc false
  # Helpers shared by the clients.

  alias Tinkex.{Error, JSON}

  @doc false
  # The answer of a synchronous JSON getter NIF ({ok, Json} | {error, E}) as
  # {:ok, decoded} | {:error, %Tinkex.Error{}}.
  def sync_json({:ok, json}) do
    case JSON.decode(json) do
      {:ok, v} -> {:ok, v}
      {:error, {:invalid_json, at}} -> {:error, Error.new(:internal, :internal, "libtinkex returned invalid JSON (byte #{at})")}
    end
  end

  def sync_json({:error, e}), do: {:error, Error.from_nif(e)}

  @doc false
  # :ok when `opts` is a keyword list whose keys are all in `allowed`; otherwise
  # {:error, %Tinkex.Error{}} before anything is sent: `bad_kind` (kind and status) for an
  # unknown option, :invalid_arg for options that are not a keyword list.
  def check_opts(fun, opts, allowed, bad_kind \\ :invalid_json) do
    cond do
      not Keyword.keyword?(opts) ->
        {:error, Error.new(:invalid_arg, :invalid_arg, "#{fun}: options must be a keyword list, got #{inspect(opts, limit: 5)}")}

      (bad = Enum.find(Keyword.keys(opts), &(&1 not in allowed))) != nil ->
        {:error, Error.new(bad_kind, bad_kind, "#{fun}: unknown option #{inspect(bad)} (allowed: #{Enum.map_join(allowed, ", ", &inspect/1)})")}

      true ->
        :ok
    end
  end

  @doc false
  # get_telemetry/1 of a client from its status/1 answer: the "telemetry" entry (nil when
  # telemetry is off).
  def telemetry({:ok, status}), do: {:ok, status["telemetry"]}
  def telemetry({:error, _} = e), do: e
end
