#!/usr/bin/env python3
"""Prints the lines of a test suite's log that say what failed, with a little context.

Used by tests/run_all.sh after a failed suite: CI logs are long and a viewer may show only
their head and tail, so the run ends with each failed suite's failures repeated. Recognises
the formats of the suites' runners: ExUnit (`  1) test ...` blocks), pytest (`FAILED`,
`E   ` lines), cargo test (`---- name stdout ----`, `panicked at`, `test ... FAILED`),
and the shell suites' own `FAIL`/`FAILED`/`not ok`/`error:` lines.

    tools/failure_digest.py LOG [--max-lines N]   (default 120)
"""

import re
import sys

# A line that starts a failure report, and how many lines after it belong to it. The
# runners' own failure reports first; the generic patterns only when none of those matched
# (suites print expected panics and "FAIL"-named cases while they pass).
PRIMARY = [
    (re.compile(r"^\s+\d+\) test "), 40),  # ExUnit (indented: ends at an unindented line)
    (re.compile(r"^---- .* stdout ----$"), 20),  # cargo test
    (re.compile(r"^(FAILED|ERROR) "), 0),  # pytest short summary
    (re.compile(r"^_{5,} .* _{5,}$"), 30),  # pytest failure header
    (re.compile(r"^test .* \.\.\. FAILED$"), 0),  # cargo test
    (re.compile(r"^error(\[E\d+\])?: "), 6),  # rustc / cargo
    (re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|definitely lost"), 6),
    (re.compile(r"^(FAIL|not ok)\b|: FAILED\b| FAILED \(|^failed: "), 3),  # the shell suites
]
SECONDARY = [
    (re.compile(r"panicked at "), 4),
    (re.compile(r"\b(FAIL|FAILED|not ok)\b"), 3),
]


EXUNIT = PRIMARY[0][0]


def digest(lines, max_lines, patterns):
    out, until, indented = [], -1, False
    for i, line in enumerate(lines):
        hit = next((n for rx, n in patterns if rx.search(line)), None)
        if hit is not None:
            until = max(until, i + hit)
            indented = bool(EXUNIT.search(line))
        elif indented and line.strip() and not line[0].isspace():
            until, indented = -1, False
        if i <= until:
            out.append(line.rstrip("\n")[:400])
            if len(out) >= max_lines:
                out.append(f"... (more in the log; first {max_lines} lines shown)")
                break
    return out


def main():
    args = sys.argv[1:]
    max_lines = 120
    if "--max-lines" in args:
        k = args.index("--max-lines")
        max_lines = int(args[k + 1])
        del args[k : k + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    with open(args[0], errors="replace") as f:
        lines = f.readlines()
    out = digest(lines, max_lines, PRIMARY) or digest(lines, max_lines, SECONDARY)
    if not out:
        # Nothing recognised: the log's tail is the best guess.
        out = ["(no failure line recognised; the log's last 40 lines)"] + [l.rstrip("\n") for l in lines[-40:]]
    print("\n".join(out))


if __name__ == "__main__":
    main()
