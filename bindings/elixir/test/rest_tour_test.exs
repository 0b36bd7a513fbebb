defmodule Tinkex.RestTourTest do
  # Runs examples/rest_tour.exs against the suite's emulator: the example is a test too.
  use Tinkex.Case, async: false

  @moduletag :emulator
  @example Path.expand("../examples/rest_tour.exs", __DIR__)

  test "examples/rest_tour.exs runs to the end against the emulator" do
    saved = for k <- ["TINKER_BASE_URL", "TINKER_API_KEY"], do: {k, System.get_env(k)}
    System.put_env("TINKER_BASE_URL", emulator().url)
    System.put_env("TINKER_API_KEY", "tml-rest-tour")

    try do
      out = ExUnit.CaptureIO.capture_io(fn -> Code.eval_file(@example) end)
      assert out =~ "published and unpublished"
      assert out =~ ~r/downloaded [1-9]\d* file\(s\), [1-9]\d* bytes/
      assert out =~ "REST tour done"
    after
      for {k, v} <- saved, do: if(v, do: System.put_env(k, v), else: System.delete_env(k))
    end
  end
end
