defmodule Tinkex.ConstantsTest do
  # Tinkex.Constants (generated from include/tinkex.h by tools/gen_constants.py) against the
  # header itself, value by value, both ways: every constant of the binding has the header's
  # value, and every enumerator of the header's enums is in the binding.
  use ExUnit.Case, async: true

  alias Tinkex.Constants

  @header Path.expand("../../../include/tinkex.h", __DIR__)

  # {"TINKEX_STATUS_OK" => 0, ...}: the enumerators of every `enum tinkex_* { ... }` and the
  # integer #defines (TINKEX_ABI_VERSION_MAJOR, TINKEX_WAIT_FOREVER as UINT64_MAX, ...).
  defp header_constants do
    text = File.read!(@header)

    enums =
      for [_, body] <- Regex.scan(~r/enum\s+tinkex_\w+[^{;]*\{(.*?)\}/s, text),
          [_, name, value] <- Regex.scan(~r/^\s*(TINKEX_[A-Z0-9_]+)\s*=\s*(-?\d+)\s*,?/m, body),
          into: %{},
          do: {name, String.to_integer(value)}

    defines =
      for [_, name, value] <- Regex.scan(~r/^#define\s+(TINKEX_[A-Z0-9_]+)\s+(\S+)\s*$/m, text),
          v = define_value(value),
          v != nil,
          into: %{},
          do: {name, v}

    Map.merge(enums, defines)
  end

  defp define_value("UINT64_MAX"), do: 18_446_744_073_709_551_615
  defp define_value("UINT32_MAX"), do: 4_294_967_295

  defp define_value(v) do
    case Integer.parse(String.trim_trailing(v, "u")) do
      {n, ""} -> n
      _ -> nil
    end
  end

  # The binding's maps and the header prefix of their names.
  @families [
    {:statuses, "TINKEX_STATUS_"},
    {:event_kinds, "TINKEX_EVENT_KIND_"},
    {:dtypes, "TINKEX_DTYPE_"},
    {:log_levels, "TINKEX_LOG_LEVEL_"}
  ]

  test "the header parses into the expected families" do
    h = header_constants()
    for {_, prefix} <- @families, do: assert(Enum.any?(h, fn {k, _} -> String.starts_with?(k, prefix) end), prefix)
    assert h["TINKEX_STATUS_OK"] == 0
  end

  for {fun, prefix} <- @families do
    test "#{fun}: every value equals the header's, and every header enumerator is there" do
      h = header_constants()
      binding = apply(Constants, unquote(fun), [])
      assert map_size(binding) > 0

      for {name, value} <- binding do
        header_name = unquote(prefix) <> String.upcase(Atom.to_string(name))
        assert Map.fetch(h, header_name) == {:ok, value}, "#{inspect(name)} = #{value}, header #{header_name} = #{inspect(h[header_name])}"
      end

      in_header = for {k, _} <- h, String.starts_with?(k, unquote(prefix)), do: k
      in_binding = for {name, _} <- binding, do: unquote(prefix) <> String.upcase(Atom.to_string(name))
      assert Enum.sort(in_header) == Enum.sort(in_binding)
    end
  end

  test "the wait sentinel and the ABI version" do
    h = header_constants()
    assert Constants.wait_forever() == h["TINKEX_WAIT_FOREVER"]
    assert Constants.abi_version_major() == h["TINKEX_ABI_VERSION_MAJOR"]
    assert Constants.abi_version_minor() == h["TINKEX_ABI_VERSION_MINOR"]
    # And the loaded library serves this binding: same major, at least this minor.
    {major, minor} = Tinkex.version().abi
    assert major == h["TINKEX_ABI_VERSION_MAJOR"] and minor >= h["TINKEX_ABI_VERSION_MINOR"]
    assert Tinkex.version().header_abi == {h["TINKEX_ABI_VERSION_MAJOR"], h["TINKEX_ABI_VERSION_MINOR"]}
  end

  test "the library names every status value as the binding does (tinkex_status_name)" do
    for {name, value} <- Constants.statuses() do
      assert Tinkex.Native.status_name(value) == "TINKEX_STATUS_" <> String.upcase(Atom.to_string(name))
    end
  end
end
