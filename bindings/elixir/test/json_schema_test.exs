defmodule Tinkex.JSONSchemaTest do
  # The test suite's JSON Schema validator (test/support/json_schema.ex) on hand-written
  # schemas: it accepts what it should and rejects what it should, with a path.
  use ExUnit.Case, async: true

  alias Tinkex.Test.JSONSchema

  @schema Tinkex.JSON.decode!(~S"""
  {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Req",
    "type": "object",
    "properties": {
      "learning_rate": {"type": "number", "minimum": 0},
      "steps": {"type": "integer", "format": "uint32", "minimum": 0},
      "name": {"type": ["string", "null"]},
      "kind": {"enum": ["weights", "sampler_weights"]},
      "params": {"$ref": "#/$defs/Params"},
      "old": {"$ref": "#/definitions/Old"},
      "chunks": {"type": "array", "items": {"$ref": "#/$defs/Chunk"}},
      "meta": {"type": "object", "additionalProperties": {"type": "string"}},
      "opt": {"anyOf": [{"$ref": "#/$defs/Params"}, {"type": "null"}]},
      "nul": {"type": "string", "nullable": true}
    },
    "required": ["learning_rate"],
    "additionalProperties": false,
    "$defs": {
      "Params": {
        "type": "object",
        "properties": {"beta1": {"type": "number"}},
        "additionalProperties": false
      },
      "Chunk": {
        "oneOf": [
          {"type": "object", "properties": {"type": {"const": "encoded_text"}, "tokens": {"type": "array", "items": {"type": "integer"}}},
           "required": ["type", "tokens"], "additionalProperties": false},
          {"type": "object", "properties": {"type": {"const": "image"}, "data": {"type": "string"}},
           "required": ["type", "data"], "additionalProperties": false}
        ]
      }
    },
    "definitions": {"Old": {"type": "boolean"}}
  }
  """)

  defp ok(v), do: assert(JSONSchema.validate(v, @schema) == :ok)

  defp bad(v, pattern) do
    assert {:error, errors} = JSONSchema.validate(v, @schema)
    assert Enum.any?(errors, fn {p, m} -> "#{p}: #{m}" =~ pattern end), inspect(errors)
  end

  test "a valid body passes" do
    ok(%{"learning_rate" => 1.0e-3})

    ok(%{
      "learning_rate" => 0,
      "steps" => 3,
      "name" => nil,
      "kind" => "weights",
      "params" => %{"beta1" => 0.9},
      "old" => true,
      "chunks" => [%{"type" => "encoded_text", "tokens" => [1, 2]}, %{"type" => "image", "data" => "AA=="}],
      "meta" => %{"a" => "b"},
      "opt" => nil,
      "nul" => nil
    })
  end

  test "a misspelled field is rejected, naming it" do
    bad(%{"learning_rat" => 1.0e-3, "learning_rate" => 1.0}, ~s(unknown field "learning_rat"))
    bad(%{"learning_rate" => 1.0, "params" => %{"beta_1" => 0.9}}, ~s($.params: unknown field "beta_1"))
  end

  test "a missing required field, a wrong type, an out-of-range number, a value outside an enum" do
    bad(%{}, ~s(missing required field "learning_rate"))
    bad(%{"learning_rate" => "1e-3"}, "$.learning_rate: expected number")
    bad(%{"learning_rate" => 1.0, "steps" => 1.0}, "$.steps: expected integer")
    bad(%{"learning_rate" => -1.0}, "minimum")
    bad(%{"learning_rate" => 1.0, "kind" => "other"}, "is not one of")
    bad(%{"learning_rate" => 1.0, "name" => 3}, "expected string or null")
    bad(%{"learning_rate" => 1.0, "old" => "yes"}, "$.old: expected boolean")
    bad(%{"learning_rate" => 1.0, "meta" => %{"a" => 1}}, "$.meta.a: expected string")
    bad(%{"learning_rate" => 1.0, "nul" => 1}, "$.nul: expected string")
  end

  test "items, oneOf and anyOf" do
    bad(%{"learning_rate" => 1.0, "chunks" => [%{"type" => "encoded_text", "tokens" => [1, "x"]}]}, "matches none of oneOf")
    bad(%{"learning_rate" => 1.0, "chunks" => [%{"type" => "video", "data" => "x"}]}, "matches none of oneOf")
    bad(%{"learning_rate" => 1.0, "opt" => %{"beta2" => 1}}, "matches none of anyOf")
    bad(%{"learning_rate" => 1.0, "chunks" => %{}}, "$.chunks: expected array")
  end
end
