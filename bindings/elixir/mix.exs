defmodule Mix.Tasks.Compile.TinkexNif do
  @moduledoc """
  Builds `priv/tinkex_nif.so` with `make` (see the Makefile) before the Elixir sources.

  The NIF is compiled with gcc against `include/tinkex.h` and linked to
  `target/release/libtinkex.so` (override with `TINKEX_LIB_DIR` / `TINKEX_INCLUDE_DIR`).
  make only rebuilds when the C source, the header, the Makefile or the build command
  changed. In the `:test` environment it builds with `TINKEX_NIF_TESTING=1` (the allocation
  fault-injection hook the tests use) and `TINKEX_NIF_TIMING=1` (per-call timing for the
  scheduler checks); other builds do no timing.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    dir = Path.dirname(__ENV__.file)

    case System.find_executable("make") do
      nil ->
        Mix.shell().error("tinkex: `make` is required to build the NIF (c_src/tinkex_nif.c)")
        {:error, []}

      make ->
        # The test build carries the allocation fault-injection hook (TINKEX_NIF_TESTING) and
        # times every NIF call (TINKEX_NIF_TIMING) for the suite's scheduler checks.
        testing = if Mix.env() == :test, do: ["TINKEX_NIF_TESTING=1", "TINKEX_NIF_TIMING=1"], else: []
        {out, status} = System.cmd(make, ["-s", "-C", dir | testing], stderr_to_stdout: true)
        if out != "", do: Mix.shell().info(String.trim_trailing(out))
        if status == 0, do: {:ok, []}, else: {:error, []}
    end
  end
end

defmodule Tinkex.MixProject do
  use Mix.Project

  def project do
    [
      app: :tinkex,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:tinkex_nif] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      test_coverage: [ignore_modules: []]
    ]
  end

  def application do
    [
      mod: {Tinkex.Application, []},
      extra_applications: [:logger] ++ if(Mix.env() == :test, do: [:inets], else: [])
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
