defmodule Tinkex.Types.Util do
  @moduledoc false
  # Helpers shared by the Tinkex.Types modules.

  # Drops nil values, so optional fields stay absent from request JSON.
  def compact(map) when is_map(map) do
    for {k, v} <- map, v != nil, into: %{}, do: {k, v}
  end

  def get(map, key, default \\ nil) do
    case Map.get(map, key) do
      nil -> default
      v -> v
    end
  end

  def map_list(nil, _fun), do: nil
  def map_list(list, fun) when is_list(list), do: Enum.map(list, fun)

  def map_or_nil(nil, _fun), do: nil
  def map_or_nil(v, fun), do: fun.(v)
end
