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
  # get_telemetry/1 of a client from its status/1 answer: the "telemetry" entry (nil when
  # telemetry is off).
  def telemetry({:ok, status}), do: {:ok, status["telemetry"]}
  def telemetry({:error, _} = e), do: e
end
