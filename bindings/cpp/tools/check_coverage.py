#!/usr/bin/env python3
"""Checks that tinkex.hpp wraps every function of the C ABI (include/tinkex.h).

A function counts as wrapped when tinkex.hpp calls it by name (comments stripped). The few
that it deliberately leaves to C are listed in NOT_WRAPPED with the reason; the check also
fails when one of those becomes wrapped or disappears, so the list stays true.
Run by tests/c/run.sh (step `cpp-abi-coverage`).
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

NOT_WRAPPED = {
    "tinkex_future_clone": "a Pending owns its std::future, which has one reader; share the "
    "result with std::shared_future (Pending::future().share()) instead",
    "tinkex_testing_log": "a test-only export (TINKEX_TESTING); the C++ tests call it directly",
    "tinkex_testing_panic_in_export": "a test-only export (TINKEX_TESTING)",
    "tinkex_testing_panic_in_task": "a test-only export (TINKEX_TESTING)",
}


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def main() -> int:
    header = strip_comments((ROOT / "include" / "tinkex.h").read_text())
    hpp = strip_comments((ROOT / "bindings" / "cpp" / "tinkex.hpp").read_text())
    exports = sorted(set(re.findall(r"\b(tinkex_[a-z0-9_]+)\s*\(", header)))
    used = set(re.findall(r"\b(tinkex_[a-z0-9_]+)\b", hpp))
    problems = []
    for name in exports:
        if name in NOT_WRAPPED:
            if name in used:
                problems.append(f"{name} is wrapped now: remove it from NOT_WRAPPED")
        elif name not in used:
            problems.append(f"{name} is not wrapped by tinkex.hpp")
    for name in NOT_WRAPPED:
        if name not in exports:
            problems.append(f"{name} is listed in NOT_WRAPPED but not exported")
    for p in problems:
        print(p, file=sys.stderr)
    wrapped = len(exports) - len(NOT_WRAPPED)
    print(f"tinkex.hpp wraps {wrapped} of {len(exports)} C functions; "
          f"{len(NOT_WRAPPED)} left to C by design")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
