#!/usr/bin/env python3
"""Runs the fenced code blocks of a Markdown file (README.md by default), so that its quick
starts cannot rot. Used by tests/packaging/run.sh against a fresh clone and an emulator.

    tools/run_readme_blocks.py [--readme README.md] [--python PY] [--list]

Every fenced block runs, in file order, unless the line right before it (blank lines
aside) is the marker

    <!-- readme-test: skip (why it does not run here) -->

A skipped block must say why; a block in a language this script cannot run must be marked.
How each language runs, with the repository root (the Markdown file's folder) as the
working directory and the caller's environment (e.g. TINKER_BASE_URL, TINKER_API_KEY):

- ``sh``, ``bash``: ``bash -euo pipefail`` on the block's text;
- ``python``: the block as a script, run by ``--python`` (default: this interpreter);
- ``elixir``: the block as a script, run by ``mix run`` in bindings/elixir.

HOME is a new empty directory for every run of this script (a block may install into
``$HOME/.local`` and create venvs there without touching the real home); CARGO_HOME and
RUSTUP_HOME (and pyenv's PYENV_ROOT) keep their current values, so the toolchains and
cargo's cache are still found.
Each block's output is streamed; the script stops at the first failing block and exits
non-zero. The last line is "readme blocks: N ran, M skipped".
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\s*\((?P<why>.+)\)\s*-->$")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")
RUNNABLE = {"sh", "bash", "python", "elixir"}


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None  # the reason, when marked


def blocks(markdown: str) -> list[Block]:
    """The fenced blocks of `markdown`, each with the skip marker that precedes it (if any)."""
    out: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    last_text = ""  # the last non-blank line outside a block
    while i < len(lines):
        m = FENCE.match(lines[i].strip())
        if not m:
            if lines[i].strip():
                last_text = lines[i].strip()
            i += 1
            continue
        fence, start = m.group("fence"), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            raise SystemExit(f"line {start + 1}: unterminated code block")
        skip = SKIP.match(last_text)
        if last_text.startswith("<!-- readme-test") and not skip:
            # A marker that does not parse would otherwise let the block run.
            raise SystemExit(f"line {start}: malformed marker {last_text!r}: <!-- readme-test: skip (reason) -->")
        out.append(Block(start + 1, m.group("lang").lower(), "\n".join(body) + "\n", skip.group("why") if skip else None))
        last_text = ""
        i += 1
    return out


def command(block: Block, root: Path, python: str, scratch: Path) -> tuple[list[str], Path]:
    """The command that runs `block` and its working directory."""
    if block.lang in ("sh", "bash"):
        return ["bash", "-euo", "pipefail", "-c", block.text], root
    script = scratch / f"block_{block.line}.{'py' if block.lang == 'python' else 'exs'}"
    script.write_text(block.text)
    if block.lang == "python":
        return [python, str(script)], root
    return ["mix", "run", str(script)], root / "bindings" / "elixir"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", default=str(Path(__file__).resolve().parent.parent / "README.md"))
    ap.add_argument("--python", default=sys.executable, help="interpreter of the python blocks")
    ap.add_argument("--list", action="store_true", help="list the blocks and what would run")
    args = ap.parse_args()
    readme = Path(args.readme).resolve()
    root = readme.parent
    found = blocks(readme.read_text())
    unmarked = [b for b in found if b.skip is None and b.lang not in RUNNABLE]
    if unmarked:
        for b in unmarked:
            print(f"{readme.name}:{b.line}: a ```{b.lang or '(no language)'} block can not run: mark it "
                  "<!-- readme-test: skip (reason) -->", file=sys.stderr)
        return 2
    if args.list:
        for b in found:
            print(f"{readme.name}:{b.line} {b.lang or '-'}: " + (f"skip ({b.skip})" if b.skip else "run"))
        return 0

    ran = skipped = 0
    with tempfile.TemporaryDirectory(prefix="readme-blocks-") as tmp:
        home, scratch = Path(tmp) / "home", Path(tmp) / "scratch"
        home.mkdir()
        scratch.mkdir()
        env = dict(os.environ)
        real_home = Path(os.environ.get("HOME", str(Path.home())))
        for var, sub in (("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup"), ("PYENV_ROOT", ".pyenv")):
            if (real_home / sub).is_dir():
                env.setdefault(var, str(real_home / sub))
        env["HOME"] = str(home)
        for b in found:
            where = f"{readme.name}:{b.line} ({b.lang})"
            if b.skip:
                print(f"== {where}: skipped ({b.skip})", flush=True)
                skipped += 1
                continue
            cmd, cwd = command(b, root, args.python, scratch)
            print(f"== {where}: running in {cwd}", flush=True)
            rc = subprocess.run(cmd, cwd=cwd, env=env, check=False).returncode
            if rc != 0:
                print(f"== {where}: FAILED (exit {rc})", flush=True)
                print(f"readme blocks: {ran} ran, {skipped} skipped, 1 failed")
                return 1
            ran += 1
    print(f"readme blocks: {ran} ran, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
