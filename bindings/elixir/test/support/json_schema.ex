defmodule Tinkex.Test.JSONSchema do
  @moduledoc false
  # A small JSON Schema validator (there is no Hex here) for the subset that the committed
  # schemas (docs/schema/*.json, generated from the core's types) use:
  #
  #   type (a name or a list of names, "null" included), properties, required,
  #   additionalProperties (boolean or schema), items (schema), prefixItems, enum, const,
  #   $ref ("#/$defs/X", "#/definitions/X", "Other.json" or "Other.json#/$defs/X"),
  #   $defs / definitions, anyOf, oneOf, allOf, not, nullable (OpenAPI style), minimum,
  #   maximum, exclusiveMinimum, exclusiveMaximum, minItems, maxItems, minLength, maxLength;
  #   boolean schemas (true / false).
  #
  # Unknown keywords (title, description, format, default, examples, $schema, $id, ...) are
  # annotations and are ignored. "integer" accepts only integers (serde rejects 1.0 for an
  # integer field). Values are decoded JSON (Tinkex.JSON.decode!/1): maps with string keys.
  #
  # validate(value, schema, opts) -> :ok | {:error, [{path, message}]}
  # opts: dir: the directory of the schema files, for refs to other files.

  def validate(value, schema, opts \\ []) do
    ctx = %{root: schema, dir: opts[:dir]}

    case check(value, schema, "$", ctx) do
      [] -> :ok
      errors -> {:error, errors}
    end
  end

  @doc "Loads docs/schema/<name>.json (decoded)."
  def load!(dir, name), do: dir |> Path.join(name <> ".json") |> File.read!() |> Tinkex.JSON.decode!()

  defp check(_v, true, _path, _ctx), do: []
  defp check(_v, false, path, _ctx), do: [{path, "no value is allowed here"}]

  defp check(v, schema, path, ctx) when is_map(schema) do
    case schema do
      %{"$ref" => ref} ->
        {target, ctx2} = resolve(ref, ctx)
        check(v, target, path, ctx2) ++ check(v, Map.delete(schema, "$ref"), path, ctx)

      _ ->
        if v == nil and schema["nullable"] == true do
          []
        else
          Enum.flat_map(schema, fn {k, s} -> keyword(k, s, v, schema, path, ctx) end)
        end
    end
  end

  defp keyword("type", t, v, _schema, path, _ctx) do
    types = List.wrap(t)
    if Enum.any?(types, &type?(&1, v)), do: [], else: [{path, "expected #{Enum.join(types, " or ")}, got #{describe(v)}"}]
  end

  defp keyword("enum", values, v, _s, path, _ctx),
    do: if(Enum.any?(values, &same?(&1, v)), do: [], else: [{path, "#{inspect(v)} is not one of #{inspect(values)}"}])

  defp keyword("const", c, v, _s, path, _ctx), do: if(same?(c, v), do: [], else: [{path, "expected #{inspect(c)}"}])

  defp keyword("properties", props, v, _s, path, ctx) when is_map(v) do
    Enum.flat_map(props, fn {name, s} ->
      case Map.fetch(v, name) do
        {:ok, pv} -> check(pv, s, "#{path}.#{name}", ctx)
        :error -> []
      end
    end)
  end

  defp keyword("required", names, v, _s, path, _ctx) when is_map(v),
    do: for(n <- names, not Map.has_key?(v, n), do: {path, "missing required field #{inspect(n)}"})

  defp keyword("additionalProperties", ap, v, s, path, ctx) when is_map(v) do
    known = Map.keys(s["properties"] || %{})
    patterns = Map.keys(s["patternProperties"] || %{}) |> Enum.map(&Regex.compile!/1)
    extra = for {k, _} <- v, k not in known, not Enum.any?(patterns, &Regex.match?(&1, k)), do: k

    case ap do
      false -> for k <- extra, do: {path, "unknown field #{inspect(k)}"}
      true -> []
      sub -> Enum.flat_map(extra, fn k -> check(v[k], sub, "#{path}.#{k}", ctx) end)
    end
  end

  defp keyword("items", items, v, s, path, ctx) when is_list(v) and (is_map(items) or is_boolean(items)) do
    skip = length(s["prefixItems"] || [])

    v
    |> Enum.with_index()
    |> Enum.drop(skip)
    |> Enum.flat_map(fn {x, i} -> check(x, items, "#{path}[#{i}]", ctx) end)
  end

  defp keyword("prefixItems", items, v, _s, path, ctx) when is_list(v) do
    Enum.zip(v, items)
    |> Enum.with_index()
    |> Enum.flat_map(fn {{x, sch}, i} -> check(x, sch, "#{path}[#{i}]", ctx) end)
  end

  defp keyword("anyOf", alts, v, _s, path, ctx) do
    if Enum.any?(alts, &(check(v, &1, path, ctx) == [])),
      do: [],
      else: [{path, "matches none of anyOf: " <> alt_errors(alts, v, path, ctx)}]
  end

  defp keyword("oneOf", alts, v, _s, path, ctx) do
    case Enum.count(alts, &(check(v, &1, path, ctx) == [])) do
      1 -> []
      0 -> [{path, "matches none of oneOf: " <> alt_errors(alts, v, path, ctx)}]
      n -> [{path, "matches #{n} of oneOf (exactly one allowed)"}]
    end
  end

  defp keyword("allOf", alts, v, _s, path, ctx), do: Enum.flat_map(alts, &check(v, &1, path, ctx))

  defp keyword("not", sub, v, _s, path, ctx),
    do: if(check(v, sub, path, ctx) == [], do: [{path, "must not match #{inspect(sub)}"}], else: [])

  defp keyword("minimum", m, v, _s, path, _ctx) when is_number(v), do: if(v >= m, do: [], else: [{path, "#{v} < minimum #{m}"}])
  defp keyword("maximum", m, v, _s, path, _ctx) when is_number(v), do: if(v <= m, do: [], else: [{path, "#{v} > maximum #{m}"}])
  defp keyword("exclusiveMinimum", m, v, _s, path, _ctx) when is_number(v) and is_number(m),
    do: if(v > m, do: [], else: [{path, "#{v} <= exclusiveMinimum #{m}"}])
  defp keyword("exclusiveMaximum", m, v, _s, path, _ctx) when is_number(v) and is_number(m),
    do: if(v < m, do: [], else: [{path, "#{v} >= exclusiveMaximum #{m}"}])
  defp keyword("minItems", m, v, _s, path, _ctx) when is_list(v), do: if(length(v) >= m, do: [], else: [{path, "fewer than #{m} items"}])
  defp keyword("maxItems", m, v, _s, path, _ctx) when is_list(v), do: if(length(v) <= m, do: [], else: [{path, "more than #{m} items"}])
  defp keyword("minLength", m, v, _s, path, _ctx) when is_binary(v),
    do: if(String.length(v) >= m, do: [], else: [{path, "shorter than #{m}"}])
  defp keyword("maxLength", m, v, _s, path, _ctx) when is_binary(v),
    do: if(String.length(v) <= m, do: [], else: [{path, "longer than #{m}"}])

  # Annotations, and keywords that do not apply to this value's type.
  defp keyword(_k, _s, _v, _schema, _path, _ctx), do: []

  defp alt_errors(alts, v, path, ctx) do
    alts
    |> Enum.map(&check(v, &1, path, ctx))
    |> Enum.map_join(" | ", fn errs -> Enum.map_join(errs, "; ", fn {p, m} -> "#{p}: #{m}" end) end)
  end

  defp type?("null", v), do: v == nil
  defp type?("boolean", v), do: is_boolean(v)
  defp type?("integer", v), do: is_integer(v)
  defp type?("number", v), do: is_number(v)
  defp type?("string", v), do: is_binary(v)
  defp type?("array", v), do: is_list(v)
  defp type?("object", v), do: is_map(v)

  defp same?(a, b) when is_number(a) and is_number(b), do: a == b
  defp same?(a, b), do: a === b

  defp describe(nil), do: "null"
  defp describe(v) when is_boolean(v), do: "boolean #{v}"
  defp describe(v) when is_integer(v), do: "integer #{v}"
  defp describe(v) when is_float(v), do: "number #{v}"
  defp describe(v) when is_binary(v), do: "string #{inspect(v)}"
  defp describe(v) when is_list(v), do: "array"
  defp describe(v) when is_map(v), do: "object"

  # "#/a/b" within the current root; "File.json" or "File.json#/a/b" in another file of dir.
  defp resolve(ref, ctx) do
    {file, frag} =
      case String.split(ref, "#", parts: 2) do
        [file, frag] -> {file, frag}
        [file] -> {file, ""}
      end

    {root, ctx} =
      if file == "" do
        {ctx.root, ctx}
      else
        unless ctx.dir, do: raise(ArgumentError, "a $ref to #{file} needs the :dir option")
        r = ctx.dir |> Path.join(file) |> File.read!() |> Tinkex.JSON.decode!()
        {r, %{ctx | root: r}}
      end

    target =
      frag
      |> String.split("/", trim: true)
      |> Enum.reduce(root, fn seg, node ->
        seg = seg |> String.replace("~1", "/") |> String.replace("~0", "~") |> URI.decode()

        case node do
          %{^seg => next} -> next
          l when is_list(l) -> Enum.at(l, String.to_integer(seg))
          _ -> raise ArgumentError, "unresolvable $ref #{ref}"
        end
      end)

    {target, ctx}
  end
end
