#!/usr/bin/env python3
"""Checks docs/conformance.md: every `file::name` in the "implemented in" and "test" columns
resolves, and every test named is a test.

    python3 tools/check_conformance.py [docs/conformance.md]

A name resolves when the file exists (relative to the repository) and defines the last
segment: Rust `fn` / `struct` / `enum` / `const` / `static` / `type` / `trait`, Python
`def` / `class`, a C or C++ function; earlier segments (`Type::method`) must appear in the
file. A name in the test column must be a test: a Rust `fn` under `#[test]` /
`#[tokio::test(…)]` (in a `tests/` file or a `mod tests` of a source file; unit tests are
written `src/core/<file>.rs::<test_fn>`), a Python `def test_…`, or a C/C++ function. Cells
list full `path::name` entries separated by `; ` (no `::name` shorthand). Prints the counts of rows that
are MISSING, NO TEST and pending per branch; exits 1 when a name does not resolve.
"""

import collections
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = re.compile(r"((?:[\w.-]+/)*[\w.-]+\.(?:rs|py|c|cpp|h|exs))::((?:\w+::)*\w+)")
TEST_ATTR = re.compile(r"#\[(?:tokio::)?test\b")


def rows(path):
    """(line number, cells) of every table row after the header of the last table."""
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


def defines(src, rel, name):
    """Where `name` is defined in `src` (character offset), or -1."""
    if rel.endswith(".rs"):
        pat = rf"\b(?:fn|struct|enum|const|static|type|trait)\s+{name}\b"
    elif rel.endswith(".py"):
        pat = rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b"
    else:
        pat = rf"\b{name}\s*\("
    m = re.search(pat, src, re.M)
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
    at = defines(src, rel, name)
    if at < 0:
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
                err = check_name(m.group(1), m.group(2).split("::"), want_test)
                if err:
                    errors.append(f"{os.path.relpath(doc, REPO)}:{n} (§{sec}): {err}")
        for col, label in ((impl, "implemented in"), (test, "test")):
            # `::name` shorthand or a `Type::fn` without its file: every entry must be a full
            # `path::name`, entries separated by `; `.
            for entry in col.split("; "):
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
