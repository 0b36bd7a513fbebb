# The suite runs against one tinkex-emulator process (some tests start their own, e.g. the
# time-scaled reliability test) under a system monitor for long schedules (see
# test/support/case.ex). Tests are not async: the scheduler checks are per test.
#
# `mix test` works without run_tests.sh: its compile step (mix.exs) builds the NIF with make
# (the test build: TINKEX_NIF_TESTING=1 TINKEX_NIF_TIMING=1) against
# ../../target/release/libtinkex.so (or TINKEX_LIB_DIR), which `cargo build --release` makes.
# The emulator is ../../target/release/tinkex-emulator (or TINKEX_EMULATOR); when it is
# missing, it is built here with cargo.

repo = Path.expand("../../..", __DIR__)

nif_loaded? =
  try do
    match?({_, _, _, _}, Tinkex.Native.version())
  rescue
    _ -> false
  end

unless nif_loaded? do
  IO.puts(:stderr, """
  tinkex: the NIF (priv/tinkex_nif.so) did not load; see the warning above. It is built by
  `mix compile` (make) against #{repo}/target/release/libtinkex.so: run `cargo build --release`
  in #{repo} first (or set TINKEX_LIB_DIR / TINKEX_NIF_PATH).
  """)

  System.halt(2)
end

emulator_bin = Tinkex.Test.Emulator.binary()

unless File.exists?(emulator_bin) do
  cond do
    System.get_env("TINKEX_EMULATOR") ->
      raise "TINKEX_EMULATOR=#{emulator_bin} does not exist"

    System.find_executable("cargo") ->
      IO.puts("tinkex-emulator not found at #{emulator_bin}: cargo build --release -p tinkex-emulator")
      {_, 0} = System.cmd("cargo", ["build", "--release", "-p", "tinkex-emulator"], cd: repo, into: IO.stream(), stderr_to_stdout: true)

    true ->
      raise "tinkex-emulator not found at #{emulator_bin}: run `cargo build --release -p tinkex-emulator` in #{repo}"
  end
end

Tinkex.Test.SchedMonitor.start()

emu = Tinkex.Test.Emulator.start(["--poll-hold-ms", "1000"])
:persistent_term.put({Tinkex.Case, :emulator}, emu)
IO.puts("tinkex-emulator #{emu.url}; libtinkex #{Tinkex.version().library} (ABI #{Tinkex.version().abi |> Tuple.to_list() |> Enum.join(".")})")

exclude =
  if Tinkex.Native.testing_available() do
    []
  else
    IO.puts("""
    note: libtinkex was built without the `testing` feature (no tinkex_testing_* exports): the
          two panic tests (tag :libtinkex_testing) are skipped. run_tests.sh builds it with
          `cargo build --release --features tinkex/testing`.
    """)

    [:libtinkex_testing]
  end

unless Tinkex.nif_timing?() do
  IO.puts("note: the NIF was built without TINKEX_NIF_TIMING: the per-call scheduler checks are off")
end

ExUnit.after_suite(fn _ -> Tinkex.Test.Emulator.stop(emu) end)

ExUnit.start(timeout: 600_000, exclude: exclude, formatters: [Tinkex.Test.Formatter])
