defmodule Mix.Tasks.Compile.TinkexNif do
  @moduledoc """
  Builds `priv/tinkex_nif.so` with `make` (see the Makefile) before the Elixir sources, so
  `mix compile` and `mix test` need no other command.

  The NIF is compiled with the C compiler against `tinkex.h` and linked to `libtinkex.so`,
  found in this order (the Makefile's comment has the details): `TINKEX_LIB_DIR` /
  `TINKEX_INCLUDE_DIR`; an installed prefix `TINKEX_PREFIX` (`tools/install.sh PREFIX`); the
  workspace this directory sits in (`target/release`, or `$CARGO_TARGET_DIR/release`, after
  `cargo build --release`); an installed copy pkg-config knows (`pkg-config tinkex`).
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

        if status == 0 do
          # Mix links priv/ into _build/<env>/lib/tinkex/ before the compilers run; on a fresh
          # clone priv/ did not exist yet, so link it now that make created it.
          Mix.Project.build_structure()
          {:ok, []}
        else
          {:error, []}
        end
    end
  end
end

defmodule Tinkex.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :tinkex,
      version: @version,
      elixir: "~> 1.14",
      description:
        "Elixir client of the Tinker fine-tuning API: a NIF over libtinkex, whose Rust core " <>
          "does the HTTP, retries, futures, sessions and telemetry. Needs libtinkex installed " <>
          "(TINKEX_PREFIX or pkg-config) or a libtinkex workspace.",
      package: package(),
      docs: [main: "readme", extras: ["README.md"], source_ref: "v#{@version}"],
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

  # Hex metadata (Hex is unreachable from the build machines: `mix hex.build` has never been
  # run on it). The package holds the NIF's C source and the Makefile; it builds against an
  # installed libtinkex (TINKEX_PREFIX or pkg-config), since the header and the library are
  # not part of it.
  defp package do
    [
      name: "tinkex",
      licenses: ["Apache-2.0"],
      files: ~w(lib c_src Makefile mix.exs README.md),
      links: %{"Tinker console" => "https://tinker.thinkingmachines.ai"},
      build_tools: ["mix", "make"]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
