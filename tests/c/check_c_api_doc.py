#!/usr/bin/env python3
"""Checks that docs/c-api.md names every function declared in include/tinkex.h.

    python3 tests/c/check_c_api_doc.py [--header PATH] [--doc PATH]

Collects the `tinkex_*` functions the header declares (comments and preprocessor lines
stripped, so the `TINKEX_TESTING` section counts too; function-pointer typedefs such as
`tinkex_done_fn` are types, not functions) and looks for each name, as a whole word, in the
guide. Exits 1 listing the missing names, else prints one line with the count. No build
needed; python3 standard library only.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def declared_functions(header_text):
    """The names of the functions declared at file scope (in declaration order)."""
    text = re.sub(r"/\*.*?\*/", " ", header_text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^[ \t]*#.*(?:\\\n.*)*$", " ", text, flags=re.M)  # directives
    names = []
    depth = 0  # () nesting: a name followed by "(" at depth 0 is a declarator
    for m in re.finditer(r"[()]|\btinkex_[A-Za-z0-9_]*", text):
        tok = m.group(0)
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth = max(depth - 1, 0)
        elif depth == 0 and re.match(r"\s*\(", text[m.end():]):
            if tok not in names:
                names.append(tok)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--header", type=Path, default=ROOT / "include" / "tinkex.h")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "c-api.md")
    args = ap.parse_args()

    names = declared_functions(args.header.read_text(encoding="utf-8"))
    if not names:
        print(f"check_c_api_doc: no tinkex_* function found in {args.header}")
        return 1
    doc = args.doc.read_text(encoding="utf-8")
    missing = [
        n for n in names if not re.search(r"(?<![A-Za-z0-9_])" + n + r"(?![A-Za-z0-9_])", doc)
    ]
    if missing:
        for n in missing:
            print(f"  {n}")
        print(
            f"check_c_api_doc: {len(missing)} of {len(names)} functions of {args.header.name} "
            f"are not named in {args.doc.name} (add them to its \"Functions by handle\")"
        )
        return 1
    print(f"check_c_api_doc: {args.doc.name} names all {len(names)} functions of {args.header.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
