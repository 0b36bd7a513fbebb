#!/usr/bin/env python3
"""Checks docs/conformance.md: every `file::name` in the "implemented in" and "test" columns
resolves, and every test named is a test.

    python3 tools/check_conformance.py [docs/conformance.md]

Every 5-column row of every table is checked (the main table, the bindings' tables, the
emulator's). A name resolves when the file exists (relative to the repository) and defines
the last segment:

* Rust: `fn` / `struct` / `enum` / `const` / `static` / `type` / `trait`;
* Python: `def` / `class`, or a module-level assignment (`__all__ = …`);
* C / C++ (`.c`, `.cpp`, `.h`, `.hpp`): a function or method, i.e. the name followed by `(`
  (comments and string literals ignored); in `Class::method` (or `namespace::fn`), when the
  file defines a class, struct or namespace of that name, the method must be inside one of
  its bodies or written `Class::method(` outside;
* Elixir (`.ex`, `.exs`): a plain name (not `Module.function`) defined by `def` / `defp` /
  `defmacro` / `defmacrop` / `defguard` / `defguardp` / `defdelegate`, or the last part of a
  `defmodule` name; an ExUnit test is written `path/x_test.exs::"test name"` and resolves
  when the file has `test "test name"` (or a `describe "test name"` block), the string
  matched exactly.

Earlier segments (`Type::method`) must appear in the file. A name in the test column must be
a test: a Rust `fn` under `#[test]` / `#[tokio::test(…)]` and not `#[ignore]`d (in a `tests/`
file or a `mod tests` of a source file; unit tests are written `src/core/<file>.rs::<test_fn>`),
a Python `def test_…`, a quoted ExUnit test, or a function of a `.c` / `.cpp` / `.h` file
(names in `.ex` and `.hpp` files are code, not tests). Cells list full `path::name` entries
separated by `; ` (a `; ` inside a quoted test name does not separate; no `::name`
shorthand). Prints the counts of rows that are MISSING, NO TEST and pending per branch; exits
1 when a name does not resolve.
"""

import collections
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `path::name`, `path::Type::name`, an Elixir name ending in `?` / `!`, or an ExUnit test
# `path.exs::"test name"`.
NAME = re.compile(
    r"((?:[\w.-]+/)*[\w.-]+\.(?:rs|py|c|cpp|h|hpp|ex|exs))::((?:\w+::)*(?:\w+[?!]?|\"[^\"]+\"))"
)
ELIXIR = (".ex", ".exs")
C_LIKE = (".c", ".cpp", ".h", ".hpp")
TEST_ATTR = re.compile(r"#\[(?:tokio::)?test\b")


def rows(path):
    """(line number, cells) of every 5-column row of every table (the main table, the
    bindings' and the emulator's), header rows excepted."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.startswith("|") or line.startswith("|---"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 5 and cells[0] != "§":
                out.append((n, cells))
    return out


_cache = {}


def text(rel):
    if rel not in _cache:
        p = os.path.join(REPO, rel)
        _cache[rel] = open(p, encoding="utf-8", errors="replace").read() if os.path.isfile(p) else None
    return _cache[rel]


def entries(col):
    """The `; `-separated entries of a cell; a `; ` inside a double-quoted ExUnit test name
    does not separate."""
    out, cur, quoted, i = [], [], False, 0
    while i < len(col):
        c = col[i]
        if c == '"':
            quoted = not quoted
        if not quoted and col.startswith("; ", i):
            out.append("".join(cur))
            cur = []
            i += 2
            continue
        cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def c_code(src):
    """`src` (C/C++) with comments and string / character literals blanked (same offsets)."""
    out, i, n = list(src), 0, len(src)

    def blank(a, b):
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c == "R" and src.startswith('"', i + 1) and not re.match(r"\w", src[i - 1 : i] or " "):
            m = re.compile(r'R"([^(\s]*)\(').match(src, i)
            if not m:
                i += 1
                continue
            j = src.find(")" + m.group(1) + '"', m.end())
            j = n if j < 0 else j + len(m.group(1)) + 2
            i += 1  # keep the `R`
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c and src[j] != "\n":
                j += 2 if src[j] == "\\" else 1
            j += 1
        else:
            i += 1
            continue
        blank(i, j)
        i = j
    return "".join(out)


def cpp_scopes(code, seg):
    """The bodies (start, end) of every `class` / `struct` / `namespace` named `seg` in
    `code` (C/C++ with comments and literals blanked)."""
    out = []
    rx = re.compile(rf"\b(?:class|struct|namespace)\s+(?:\[\[[^\]]*\]\]\s*)?{seg}\b[^;{{}}()]*\{{")
    for m in rx.finditer(code):
        depth, i = 0, m.end() - 1
        while i < len(code):
            if code[i] == "{":
                depth += 1
            elif code[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out.append((m.start(), i + 1))
    return out


def defines(src, rel, name, segments=()):
    """Where `name` is defined in `src` (character offset), or -1. `segments`: the names
    before it (`Class::method`); in C/C++ a method is looked for inside the bodies of the
    class, struct or namespace named just before it (or written `Class::method(` outside),
    when the file defines one of that name."""
    if name.startswith('"'):
        if not rel.endswith(".exs"):
            return -1
        pat = rf"^\s*(?:test|describe)\s*\(?\s*{re.escape(name)}(?=\s*[,)]|\s+do\b|\s*$)"
    elif rel.endswith(".rs"):
        pat = rf"\b(?:fn|struct|enum|const|static|type|trait)\s+{name}\b"
    elif rel.endswith(".py"):
        pat = rf"^(?:\s*(?:async\s+)?(?:def|class)\s+{name}\b|{name}\s*(?::[^=\n]*)?=(?!=))"
    elif rel.endswith(ELIXIR):
        n = re.escape(name)
        pat = (
            rf"^\s*(?:(?:def|defp|defmacro|defmacrop|defguard|defguardp|defdelegate)\s+{n}(?![\w?!])"
            rf"|defmodule\s+(?:[\w]+\.)*{n}\b)"
        )
    else:
        src = c_code(src)
        pat = rf"\b{name}\s*\("
        scopes = cpp_scopes(src, segments[-1]) if segments else []
        if scopes:
            rx = re.compile(pat)
            for a, b in scopes:
                m = rx.search(src, a, b)
                if m:
                    return m.start()
            m = re.search(rf"\b{segments[-1]}\s*::\s*{name}\s*\(", src)
            return m.start() if m else -1
    m = re.compile(pat, re.M).search(src)
    return m.start() if m else -1


def rust_test_attr(src, at):
    """Whether the `fn` at offset `at` carries `#[test]` / `#[tokio::test(...)]` ("ignored"
    when it also has `#[ignore]`), judged from the lines just above it (attributes, comments,
    blank lines), wherever the function is (a `tests/` file or a `mod tests` of a source
    file)."""
    head = src[:at]
    line_start = head.rfind("\n") + 1
    if TEST_ATTR.search(head[line_start:]):  # `#[test] fn name` on one line
        return True
    found = False
    for line in reversed(head[:line_start].split("\n")):
        s = line.strip()
        if s.startswith("#[ignore"):
            return "ignored"
        if TEST_ATTR.search(s):
            found = True
            continue
        if s == "" or s.startswith(("#[", "//", "///", ")]", "#![")) or (s.endswith(")]") and "=" in s):
            continue
        return found
    return found


def check_name(rel, segments, want_test):
    src = text(rel)
    if src is None:
        return f"{rel}: no such file"
    for s in segments[:-1]:
        if not re.search(rf"\b{s}\b", src):
            return f"{rel}: `{s}` does not appear"
    name = segments[-1]
    if name.startswith('"') and not rel.endswith(".exs"):
        return f"{rel}: a quoted name is an ExUnit test, only in a `.exs` file"
    at = defines(src, rel, name, segments[:-1])
    if at < 0:
        if name.startswith('"'):
            return f"{rel}: no `test {name}` (or `describe`) there"
        return f"{rel}: `{name}` is not defined there"
    if want_test:
        if rel.endswith(".rs"):
            attr = rust_test_attr(src, at)
            if not attr:
                return f"{rel}: `{name}` is not a #[test]"
            if attr == "ignored":
                return f"{rel}: `{name}` is #[ignore]d (it does not run, so it proves nothing)"
        elif rel.endswith(".py") and not name.startswith("test_"):
            return f"{rel}: `{name}` is not a pytest test"
        elif rel.endswith(".exs") and not name.startswith('"'):
            return f'{rel}: `{name}` is not an ExUnit test (write {rel}::"test name")'
        elif rel.endswith((".ex", ".hpp")):
            return f"{rel}: `{name}` is in a source file, not a test"
    return None


def main():
    doc = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "docs", "conformance.md")
    errors = []
    counts = collections.Counter()
    table = rows(doc)
    for n, (sec, rule, impl, test, vs) in table:
        if impl.startswith("MISSING"):
            counts["MISSING"] += 1
        for m in re.finditer(r"pending \((conf-[\w-]+)\)", impl):
            counts[f"pending ({m.group(1)})"] += 1
        if test.startswith("NO TEST"):
            counts["NO TEST"] += 1
        for col, want_test in ((impl, False), (test, True)):
            for m in NAME.finditer(col):
                name = m.group(2)
                q = name.find('"')  # a quoted ExUnit test name may itself contain `::`
                segments = name.split("::") if q < 0 else name[:q].split("::")[:-1] + [name[q:]]
                err = check_name(m.group(1), segments, want_test)
                if err:
                    errors.append(f"{os.path.relpath(doc, REPO)}:{n} (§{sec}): {err}")
        for col, label in ((impl, "implemented in"), (test, "test")):
            # `::name` shorthand or a `Type::fn` without its file: every entry must be a full
            # `path::name`, entries separated by `; `.
            for entry in entries(col):
                entry = re.sub(r"::\"[^\"]*\"", "::test", entry)
                entry = re.sub(r"\([^()]*\)|`[^`]*`", "", entry).strip()
                if entry.startswith("::") or re.search(r"(?:^|[\s,])::\w", entry):
                    errors.append(f"{os.path.relpath(doc, REPO)}:{n} (§{sec}): '{label}' uses `::name` shorthand: {entry}")
                elif label == "test" and NAME.search(entry) and len(NAME.findall(entry)) > 1:
                    errors.append(f"{os.path.relpath(doc, REPO)}:{n} (§{sec}): 'test' entries must be separated by `; `: {entry}")
        if not impl.startswith(("MISSING", "pending")) and not NAME.search(impl):
            errors.append(f"{os.path.relpath(doc, REPO)}:{n} (§{sec}): 'implemented in' names no file::name")
        if not test.startswith("NO TEST") and not NAME.search(test):
            errors.append(f"{os.path.relpath(doc, REPO)}:{n} (§{sec}): 'test' names no file::test")
    for e in errors:
        print(e)
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    print(f"{len(table)} rows; {summary}; {len(errors)} unresolved name(s)")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
