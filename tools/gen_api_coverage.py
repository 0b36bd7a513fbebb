#!/usr/bin/env python3
"""Generates docs/api-coverage.md: every public method of the official SDK's six client
classes (tinker 0.38, installed in target/official-sdk-venv) against each binding.

* Python: by introspection of the ``tinkex`` package (parameter names, order, kinds,
  defaults, future-or-value result, no NotImplementedError; ``tinkex/_parity.py``), in the
  test venv's interpreter (``target/python-venv``; needs libtinkex built).
* Elixir: a ``def <name>`` / ``defdelegate <name>`` of the class's module itself (its
  top-level ``defmodule`` block, nested modules excluded) in its file: ``ServiceClient`` ->
  ``Tinkex.ServiceClient`` in ``bindings/elixir/lib/tinkex/service_client.ex``, ...,
  ``APIFuture`` -> ``Tinkex.Future`` in ``future.ex`` (``ELIXIR_MODULES``).
* C++: ``<name>(`` inside the body of the class in ``bindings/cpp/tinkex.hpp``, not as a
  member access or a returned call (comments and string literals stripped; the bodies of its base classes included, e.g. the generated
  ``detail::RestMethods`` of ``RestClient``): ``ServiceClient`` -> ``class ServiceClient``,
  ..., ``APIFuture`` -> ``class Pending`` (``CPP_CLASSES``). A class's ``__init__`` is its
  ``new`` in Elixir and its static ``create`` in C++.

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

TOKENIZER_REASON = (
    "the official method returns a HuggingFace `transformers` tokenizer, which needs that Python "
    "package and the model hub; Elixir and C++ users load the base model's tokenizer with their "
    "language's tokenizer library"
)
#: Methods with no counterpart outside Python, and why.
PYTHON_ONLY = {
    ("APIFuture", "future"): "a concurrent.futures.Future view: Python's thread-pool futures",
    ("APIFuture", "coroutine"): "an asyncio coroutine: Python's asyncio",
    ("APIFuture", "result_async"): "asyncio await: Python's asyncio",
    ("ServiceClient", "holder"): "the official SDK's internal holder object",
    ("TrainingClient", "get_tokenizer"): TOKENIZER_REASON,
    ("SamplingClient", "get_tokenizer"): TOKENIZER_REASON,
}
#: Official constructors that take the SDK's internal holder (never called by users).
INTERNAL_INIT = {"TrainingClient", "SamplingClient"}
#: The Elixir module (file under bindings/elixir/lib/tinkex, module name) of each class.
ELIXIR_MODULES = {
    "ServiceClient": ("service_client.ex", "Tinkex.ServiceClient"),
    "TrainingClient": ("training_client.ex", "Tinkex.TrainingClient"),
    "SamplingClient": ("sampling_client.ex", "Tinkex.SamplingClient"),
    "RestClient": ("rest_client.ex", "Tinkex.RestClient"),
    "AdminClient": ("admin_client.ex", "Tinkex.AdminClient"),
    "APIFuture": ("future.ex", "Tinkex.Future"),
}
#: The C++ class of each class in bindings/cpp/tinkex.hpp.
CPP_CLASSES = {
    "ServiceClient": "ServiceClient",
    "TrainingClient": "TrainingClient",
    "SamplingClient": "SamplingClient",
    "RestClient": "RestClient",
    "AdminClient": "AdminClient",
    "APIFuture": "Pending",
}
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


def _elixir_names(cname: str) -> set:
    """The names defined (``def``/``defdelegate``) by the class's module: the lines of its
    top-level ``defmodule`` block at the block's own indentation (nested modules excluded)."""
    fname, module = ELIXIR_MODULES[cname]
    f = REPO / "bindings" / "elixir" / "lib" / "tinkex" / fname
    if not f.exists():
        return set()
    m = re.search(rf"^defmodule\s+{re.escape(module)}\s+do\n(.*?)^end\b", f.read_text(errors="replace"), re.M | re.S)
    if m is None:
        return set()
    return set(re.findall(r"^  (?:def|defdelegate)\s+([a-z_][a-zA-Z0-9_?!]*)", m.group(1), re.M))


def _cpp_strip(text: str) -> str:
    """``text`` with comments and the contents of string and character literals blanked
    (so that braces and names in them do not count)."""
    pat = re.compile(r'//[^\n]*|/\*.*?\*/|R"(\w*)\(.*?\)\1"|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
    return pat.sub(lambda m: " " if m.group(0).startswith("/") else '""', text)


def _cpp_bodies(text: str) -> dict:
    """Class name -> the text of its body (between the braces of its definition)."""
    bodies = {}
    for m in re.finditer(r"\bclass\s+(?:\[\[\w+\]\]\s+)?(\w+)\s*(?::([^{;]*))?\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        bases = re.findall(r"(\w+)\s*(?:<[^{]*?>)?\s*(?:,|$)", m.group(2) or "")
        bodies[m.group(1)] = (text[m.end() : i - 1], bases)
    return bodies


def _cpp_class_text(bodies: dict, cls: str) -> str:
    """The body of ``cls`` plus those of its base classes (recursively)."""
    if cls not in bodies:
        return ""
    body, bases = bodies[cls]
    return body + "\n".join(_cpp_class_text(bodies, b) for b in bases if b != cls)


def _cpp_classes() -> dict:
    p = REPO / "bindings" / "cpp" / "tinkex.hpp"
    bodies = _cpp_bodies(_cpp_strip(p.read_text(errors="replace"))) if p.exists() else {}
    return {c: _cpp_class_text(bodies, k) for c, k in CPP_CLASSES.items()}


def _cpp_has(text: str, name: str) -> bool:
    """``name(`` as a declaration in a class body: not a member access (``.name(``,
    ``->name(``, ``::name(``) nor a returned call."""
    return re.search(rf"(?<![\w.>:])(?<!return ){re.escape(name)}\s*\(", text) is not None


def _cpp_has_create(text: str) -> bool:
    return re.search(r"\bstatic\s+Result<\w+>\s+create\s*\(", text) is not None


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def build(official_python: str, python: str) -> str:
    surface = _official(official_python)
    methods = surface["methods"]
    py = _python_problems(python, methods)
    cpp_classes = _cpp_classes()
    rows = []
    missing = {"Python": 0, "Elixir": 0, "C++": 0}
    total = 0
    for cname in CLASSES:
        ex_names = _elixir_names(cname)
        ex_file = "bindings/elixir/lib/tinkex/" + ELIXIR_MODULES[cname][0]
        ex_mod = ELIXIR_MODULES[cname][1]
        cpp = cpp_classes[cname]
        cpp_cls = CPP_CLASSES[cname]
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
                    e_ok = "new" in ex_names
                    c_ok = _cpp_has_create(cpp)
                    e_mark, c_mark = _mark(e_ok), _mark(c_ok)
                    if not e_ok:
                        reasons.append(f"Elixir: no {ex_mod}.new")
                    if not c_ok:
                        reasons.append(f"C++: no static {cpp_cls}::create")
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
                    reasons.append(f"Elixir: no `def {base}` in {ex_mod} ({ex_file})")
                if not c_ok:
                    reasons.append(f"C++: no `{base}(` in class {cpp_cls} of bindings/cpp/tinkex.hpp")
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
        "`NotImplementedError`); **Elixir** by a `def <name>` (or `defdelegate`) in the class's "
        "own module: `Tinkex.ServiceClient` (`bindings/elixir/lib/tinkex/service_client.ex`), "
        "`Tinkex.TrainingClient`, `Tinkex.SamplingClient`, `Tinkex.RestClient`, "
        "`Tinkex.AdminClient`, and `Tinkex.Future` for `APIFuture` (`result` is `await`), "
        "nested modules excluded; **C++** by `<name>(` inside the body of the class in "
        "`bindings/cpp/tinkex.hpp` (comments and strings stripped; base classes included, e.g. "
        "the generated `detail::RestMethods` of `RestClient`): `class ServiceClient`, "
        "`TrainingClient`, `SamplingClient`, `RestClient`, `AdminClient`, and `class Pending` "
        "for `APIFuture` (`result` is `get`). A class's `__init__` is `new` in Elixir and a "
        "static `create` in C++. An `<name>_async` twin counts when `<name>` is present (the "
        "one form returns a future). ✓ present, ✗ missing, n/a: no counterpart in that "
        "language (reason given).",
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
