defmodule Tinkex.Rest do
  @moduledoc false
  # The shared part of the generated REST and admin clients (lib/tinkex/rest_client.ex,
  # lib/tinkex/admin_client.ex, written by tools/gen_rest.py from src/core/rest/methods.json):
  # builds the JSON arguments object keyed by the table's parameter names and calls the
  # generic C ABI call (tinkex_rest_client_call / tinkex_admin_client_call). Defaults of
  # missing optional parameters are the core's (the table's).

  alias Tinkex.{Error, Future, JSON, Native, Requests, Runtime}

  @type result :: {:ok, Future.t()} | {:error, Error.t()}

  @doc false
  # A session-less holder of `kind` (:rest or :admin) from service-client options.
  def new(kind, opts) do
    {rt, opts} = Keyword.pop_lazy(opts, :runtime, &Runtime.default/0)
    config = JSON.encode!(Requests.service_config(opts))

    res =
      case kind do
        :rest -> Native.rest_client_new(rt.handle, config)
        :admin -> Native.admin_client_new(rt.handle, config)
      end

    case res do
      {:ok, h} -> {:ok, h}
      {:error, e} -> {:error, Error.from_nif(e)}
    end
  end

  @doc false
  # Calls `method` (an atom of the table) with the required `{name, value}` pairs and the
  # caller's keyword options (only names of `allowed`).
  def call(h, kind, method, {required, opts, allowed}, decode) do
    with :ok <- Tinkex.Util.check_opts(method, opts, allowed, :invalid_arg) do
      args = Map.new(required ++ Enum.map(opts, fn {k, v} -> {Atom.to_string(k), v} end), fn {k, v} -> {k, value(v)} end)
      name = Atom.to_string(method)

      case kind do
        :rest -> Native.rest_client_call(h, name, JSON.encode!(args))
        :admin -> Native.admin_client_call(h, name, JSON.encode!(args))
      end
      |> Future.submitted(method, decode)
    end
  end

  # Dates and datetimes travel as ISO 8601 / RFC 3339 strings (a naive datetime is UTC).
  defp value(%Date{} = d), do: Date.to_iso8601(d)
  defp value(%DateTime{} = d), do: DateTime.to_iso8601(d)
  defp value(%NaiveDateTime{} = d), do: NaiveDateTime.to_iso8601(d) <> "Z"
  defp value(v), do: v
end
