"""The benchmark harness behind ``bench/driver.py``, one module per responsibility:

* ``settings``: paths, sizes, client names, the run's log directory, log and clock;
* ``processes``: client and emulator child processes (reaped with ``wait4``);
* ``stats``: medians, spreads and number formatting;
* ``workloads``: W1 sampling, W3 forward_backward, W5 memory, W6 recovery, W7 telemetry;
* ``profilers``: callgrind, massif and perf runs;
* ``report``: docs/benchmarks.md and the chart.
"""
