defmodule Tinkex.RestGeneratedTest do
  # The REST and admin clients are generated from the one method table
  # (src/core/rest/methods.json) by tools/gen_rest.py: the committed output is up to date,
  # and every method of the table has its function with the table's arity.
  use ExUnit.Case, async: true

  @tools Path.expand("../tools/gen_rest.py", __DIR__)
  @table Path.expand("../../../src/core/rest/methods.json", __DIR__)

  test "the generated clients are up to date" do
    python = System.find_executable("python3") || flunk("python3 is needed to check the generated REST clients")
    {out, code} = System.cmd(python, [@tools, "--check"], stderr_to_stdout: true)
    assert code == 0, out
  end

  test "every method of the table, with its positional parameters" do
    methods = Tinkex.JSON.decode!(File.read!(@table))["methods"]
    Code.ensure_loaded!(Tinkex.RestClient)
    Code.ensure_loaded!(Tinkex.AdminClient)
    assert length(methods) >= 24

    for m <- methods, {client, mod} <- [{"rest", Tinkex.RestClient}, {"admin", Tinkex.AdminClient}] do
      required = Enum.count(m["params"], &(not Map.has_key?(&1, "default")))
      optional? = Enum.any?(m["params"], &Map.has_key?(&1, "default"))
      name = String.to_atom(m["name"])
      arities = [1 + required] ++ if(optional?, do: [2 + required], else: [])

      if client in m["clients"] do
        for a <- arities, do: assert(function_exported?(mod, name, a), "#{inspect(mod)}.#{name}/#{a}")
      else
        refute function_exported?(mod, name, 1 + required), "#{inspect(mod)}.#{name} is not an #{client} method"
      end
    end
  end

  test "an unknown option is refused before anything is sent" do
    {:ok, rest} = Tinkex.RestClient.new(api_key: "tml-x", base_url: "http://127.0.0.1:9")
    assert {:error, %Tinkex.Error{kind: :invalid_arg, message: msg}} = Tinkex.RestClient.list_training_runs(rest, no_such: 1)
    assert msg =~ ":no_such"
  end
end
