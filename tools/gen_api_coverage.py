#!/usr/bin/env python3
"""Generates docs/api-coverage.md: every public method of the official SDK's six client
classes (tinker 0.38, installed in target/official-sdk-venv) against each binding.

* Python: by introspection of the ``tinkex`` package (parameter names, order, kinds,
  defaults, future-or-value result, no NotImplementedError; ``tinkex/_parity.py``), in the
  test venv's interpreter (``target/python-venv``; needs libtinkex built).
* Elixir: ``def <name>`` / ``defdelegate <name>`` anywhere under ``bindings/elixir/lib``.
* C++: the method name followed by ``(`` in ``bindings/cpp/tinkex.hpp``.

An ``<name>_async`` twin counts as covered in Elixir and C++ when ``<name>`` is (their one
form already returns a future); Python-only plumbing (``APIFuture.future``/``coroutine``/
``result_async``, the ``holder`` property) is "n/a" there, with the reason.

    python3 tools/gen_api_coverage.py           # write docs/api-coverage.md
    python3 tools/gen_api_coverage.py --check   # exit 1 if the committed file is stale
    options: --official-python PATH --python PATH
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "api-coverage.md"
SURFACE = REPO / "bindings" / "python" / "tests" / "_official_surface.py"

CLASSES = ["ServiceClient", "TrainingClient", "SamplingClient", "RestClient", "AdminClient", "APIFuture"]

#: Methods with no counterpart outside Python, and why.
PYTHON_ONLY = {
    ("APIFuture", "future"): "a concurrent.futures.Future view: Python's thread-pool futures",
    ("APIFuture", "coroutine"): "an asyncio coroutine: Python's asyncio",
    ("APIFuture", "result_async"): "asyncio await: Python's asyncio",
    ("ServiceClient", "holder"): "the official SDK's internal holder object",
}
#: Official constructors that take the SDK's internal holder (never called by users).
INTERNAL_INIT = {"TrainingClient", "SamplingClient"}
#: Elixir/C++ names of APIFuture.result.
FUTURE_RESULT = {"elixir": ["await"], "cpp": ["get"]}

PY_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import tinkex
from tinkex import _parity
official = json.load(sys.stdin)
out = {f"{c}.{m}": ps for (c, m), ps in _parity.methods_problems(tinkex, official).items()}
print(json.dumps(out))
"""


def _official(python: str) -> dict:
    r = subprocess.run([python, str(SURFACE)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit(f"gen_api_coverage: the official SDK's surface could not be read with {python}:\n{r.stderr}")
    return json.loads(r.stdout)


def _python_problems(python: str, methods: dict) -> dict:
    pkg = REPO / "bindings" / "python"
    r = subprocess.run([python, "-c", PY_PROBE, str(pkg)], input=json.dumps(methods), capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit(f"gen_api_coverage: could not introspect tinkex with {python}:\n{r.stderr}")
    return json.loads(r.stdout)


def _elixir_names() -> set:
    names = set()
    for f in (REPO / "bindings" / "elixir" / "lib").rglob("*.ex"):
        names.update(re.findall(r"^\s*(?:def|defdelegate)\s+([a-z_][a-zA-Z0-9_?!]*)", f.read_text(errors="replace"), re.M))
    return names


def _elixir_modules() -> set:
    mods = set()
    for f in (REPO / "bindings" / "elixir" / "lib").rglob("*.ex"):
        mods.update(re.findall(r"defmodule\s+Tinkex\.(\w+)", f.read_text(errors="replace")))
    return mods


def _cpp_text() -> str:
    p = REPO / "bindings" / "cpp" / "tinkex.hpp"
    return p.read_text(errors="replace") if p.exists() else ""


def _cpp_has(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\s*\(", text) is not None


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def build(official_python: str, python: str) -> str:
    surface = _official(official_python)
    methods = surface["methods"]
    py = _python_problems(python, methods)
    ex_names = _elixir_names()
    ex_mods = _elixir_modules()
    cpp = _cpp_text()
    rows = []
    missing = {"Python": 0, "Elixir": 0, "C++": 0}
    total = 0
    for cname in CLASSES:
        for name in sorted(methods.get(cname, {})):
            total += 1
            reasons = []
            p_problems = py.get(f"{cname}.{name}", ["not checked"])
            p_ok = not p_problems
            if not p_ok:
                reasons.append("Python: " + "; ".join(p_problems))
            key = (cname, name)
            if key in PYTHON_ONLY:
                e_mark = c_mark = "n/a"
                reasons.append(f"Elixir, C++: {PYTHON_ONLY[key]}")
            elif name == "__init__":
                if cname in INTERNAL_INIT:
                    e_mark = c_mark = "n/a"
                    reasons.append("constructed by the service client (the official constructor takes the SDK's internal holder)")
                else:
                    e_ok = cname in ex_mods and "new" in ex_names
                    c_ok = _cpp_has(cpp, cname) or _cpp_has(cpp, "connect")
                    e_mark, c_mark = _mark(e_ok), _mark(c_ok)
                    if not e_ok:
                        reasons.append(f"Elixir: no Tinkex.{cname}.new")
                    if not c_ok:
                        reasons.append(f"C++: no {cname} constructor")
            else:
                base = name[: -len("_async")] if name.endswith("_async") else name
                if cname == "APIFuture" and base == "result":
                    e_ok = any(n in ex_names for n in FUTURE_RESULT["elixir"])
                    c_ok = any(_cpp_has(cpp, n) for n in FUTURE_RESULT["cpp"])
                else:
                    e_ok = name in ex_names or base in ex_names
                    c_ok = _cpp_has(cpp, name) or _cpp_has(cpp, base)
                e_mark, c_mark = _mark(e_ok), _mark(c_ok)
                if not e_ok:
                    reasons.append(f"Elixir: no `def {base}` under bindings/elixir/lib")
                if not c_ok:
                    reasons.append(f"C++: no `{base}(` in bindings/cpp/tinkex.hpp")
                if name != base and (e_ok or c_ok):
                    reasons.append("async twin: Elixir/C++ have one form, which returns a future")
            for lang, mark in (("Python", _mark(p_ok)), ("Elixir", e_mark), ("C++", c_mark)):
                if mark == "✗":
                    missing[lang] += 1
            rows.append(f"| {cname} | `{name}` | {_mark(p_ok)} | {e_mark} | {c_mark} | {'; '.join(reasons).replace('|', '/')} |")
    head = [
        "# API coverage: the official SDK against each binding",
        "",
        f"Generated by `tools/gen_api_coverage.py` from the official `tinker` {surface['version']} "
        "(its public methods of `ServiceClient`, `TrainingClient`, `SamplingClient`, `RestClient`, "
        "`AdminClient`, `APIFuture`). Do not edit; run `python3 tools/gen_api_coverage.py` "
        "(CI: `--check`).",
        "",
        "How each binding is checked: **Python** by introspection (official parameter names, "
        "order, kinds and defaults; a future or the value as the official method; no "
        "`NotImplementedError`); **Elixir** by a `def <name>` under `bindings/elixir/lib`; "
        "**C++** by `<name>(` in `bindings/cpp/tinkex.hpp`. ✓ present, ✗ missing, n/a: no "
        "counterpart in that language (reason given).",
        "",
        f"Summary: {total} official methods; missing — "
        + ", ".join(f"{lang}: {n}" for lang, n in missing.items())
        + ".",
        "",
        f"Also checked by `bindings/python/tests/test_api_parity.py`: all {len(surface['all'])} names of "
        f"`tinker.__all__` and all {len(surface['types'])} public names of `tinker.types` exist in "
        "`tinkex` / `tinkex.types`, with the models' fields and defaults.",
        "",
        "| Class | Method | Python | Elixir | C++ | Reason / note |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if docs/api-coverage.md is stale")
    ap.add_argument("--official-python", default=str(REPO / "target" / "official-sdk-venv" / "bin" / "python"))
    default_py = REPO / "target" / "python-venv" / "bin" / "python"
    ap.add_argument("--python", default=str(default_py) if default_py.exists() else sys.executable)
    args = ap.parse_args()
    if not Path(args.official_python).exists():
        sys.exit(f"gen_api_coverage: no official SDK interpreter at {args.official_python} (bindings/python/run_tests.sh creates it)")
    text = build(args.official_python, args.python)
    if args.check:
        cur = OUT.read_text() if OUT.exists() else ""
        if cur != text:
            print(f"{OUT.relative_to(REPO)} is stale: run python3 tools/gen_api_coverage.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(REPO)} is up to date")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
