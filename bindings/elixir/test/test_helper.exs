# The suite runs against one tinkex-emulator process (some tests start their own, e.g. the
# time-scaled reliability test) under a system monitor for long schedules (see
# test/support/case.ex). Tests are not async: the scheduler checks are per test.

Tinkex.Test.SchedMonitor.start()

emu = Tinkex.Test.Emulator.start(["--poll-hold-ms", "1000"])
:persistent_term.put({Tinkex.Case, :emulator}, emu)
IO.puts("tinkex-emulator #{emu.url}; libtinkex #{Tinkex.version().library} (ABI #{Tinkex.version().abi})")

unless Tinkex.Native.testing_available() do
  IO.puts("note: libtinkex was built without the `testing` feature; the panic tests will fail")
end

ExUnit.after_suite(fn _ -> Tinkex.Test.Emulator.stop(emu) end)

ExUnit.start(timeout: 600_000, formatters: [Tinkex.Test.Formatter])
