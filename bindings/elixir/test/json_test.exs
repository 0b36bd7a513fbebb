defmodule Tinkex.JSONTest do
  use ExUnit.Case, async: true
  alias Tinkex.JSON

  test "round trips" do
    for v <- [nil, true, false, 0, -12, 1.5, -2.5e-7, "", "a\"b\\c\n\t\u0001é😀", [], [1, [2, [3]]], %{}, %{"a" => %{"b" => [nil]}}] do
      assert JSON.decode!(JSON.encode!(v)) == v
    end
  end

  test "decodes what serde_json writes" do
    assert JSON.decode!(~s({"a":1e-7,"b":-3E+2,"c":1.0,"d":[1,2.5],"e":"\\u00e9\\ud83d\\ude00\\/"})) ==
             %{"a" => 1.0e-7, "b" => -300.0, "c" => 1.0, "d" => [1, 2.5], "e" => "é😀/"}

    assert JSON.decode!(" [ 1 , { } ] ") == [1, %{}]
  end

  test "rejects invalid JSON with an offset" do
    assert {:error, {:invalid_json, 3}} = JSON.decode("[1,]")
    assert {:error, {:invalid_json, _}} = JSON.decode(~s({"a" 1}))
    assert {:error, {:invalid_json, _}} = JSON.decode("[1] x")
    assert {:error, {:invalid_json, _}} = JSON.decode(~s("abc))
  end

  test "decoded strings do not keep the input alive" do
    big = JSON.encode!(%{"k" => String.duplicate("x", 100), "pad" => String.duplicate("y", 100_000)})
    %{"k" => k} = JSON.decode!(big)
    assert :binary.referenced_byte_size(k) == 100
  end

  test "encodes atoms and atom keys; refuses structs" do
    assert JSON.encode!(%{a: :b}) == ~s({"a":"b"})
    assert_raise ArgumentError, fn -> JSON.encode!(%URI{}) end
  end
end
