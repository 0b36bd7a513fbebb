"""Build hook of the tinkex package: puts libtinkex into the wheel (everything else is in
pyproject.toml; the choices are explained in README.md, "Packaging").

``build_py`` copies the shared library into the package (``tinkex/libtinkex.so``), where
``tinkex/_lib.py`` looks first. The library comes from, first match wins:

1. ``TINKEX_LIBRARY``: the path of an already built library, copied as it is (no cargo);
2. the libtinkex workspace this file sits in (exactly ``<workspace>/bindings/python``):
   ``cargo build --release --lib -p tinkex`` there (the shipping build, without the
   ``testing`` feature; ``CARGO_TARGET_DIR`` and the other cargo variables are honoured),
   copying the artifact cargo reports.

``TINKEX_BUNDLE_LIBRARY=0`` bundles nothing and records the workspace instead
(``tinkex/_build_info.py``): a development install that loads the workspace's
``target/release`` build at import (``run_tests.sh`` installs the package that way, so that
the test build of the library, with its test-only exports, is the one loaded).

A wheel with the library is tagged ``py3-none-<platform>`` (e.g. ``py3-none-linux_x86_64``):
the package is pure Python over ctypes, so it is tied to the platform of the library it
carries but to no Python version or ABI. Without the library it is ``py3-none-any``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 ships bdist_wheel (pyproject.toml requires it)
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - an older setuptools with the `wheel` package
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent


def _bundling() -> bool:
    return os.environ.get("TINKEX_BUNDLE_LIBRARY", "1") != "0"


def _workspace() -> Path | None:
    # Exactly <workspace>/bindings/python (this file's own location), never a walk up the
    # parents: a build from a copy of this directory elsewhere (e.g. a temporary directory)
    # must not use whatever tree happens to sit above it.
    d = HERE.parent.parent
    if HERE.parent.name == "bindings" and (d / "include" / "tinkex.h").is_file() and (d / "Cargo.toml").is_file():
        return d
    return None


def _cargo_build(ws: Path) -> Path:
    """Builds the shipping library in `ws` and returns the cdylib cargo reports."""
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [cargo, "build", "--release", "--lib", "-p", "tinkex", "--message-format=json-render-diagnostics"]
    print(f"tinkex: {' '.join(cmd[:6])} (in {ws})", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ws, stdout=subprocess.PIPE, text=True, check=False)
    except FileNotFoundError as e:
        raise SystemExit(
            "tinkex: cargo (the Rust toolchain) is needed to build libtinkex for the wheel "
            "(https://rustup.rs); or set TINKEX_LIBRARY to a built libtinkex"
        ) from e
    if proc.returncode != 0:
        raise SystemExit(f"tinkex: cargo build failed (exit {proc.returncode}); see its output above")
    found: list[str] = []
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        target = msg.get("target", {}) if isinstance(msg, dict) else {}
        if msg.get("reason") == "compiler-artifact" and target.get("name") == "tinkex" and "cdylib" in target.get("kind", []):
            found += [f for f in msg.get("filenames", []) if f.endswith((".so", ".dylib", ".dll"))]
    if len(found) != 1:
        raise SystemExit(f"tinkex: cargo reported {len(found)} shared libraries for tinkex: {found}")
    return Path(found[0])


def _library() -> Path:
    env = os.environ.get("TINKEX_LIBRARY")
    if env:
        lib = Path(env).expanduser().absolute()
        if not lib.is_file():
            raise SystemExit(f"tinkex: TINKEX_LIBRARY={env!r} is not a file")
        return lib
    ws = _workspace()
    if ws is None:
        raise SystemExit(
            "tinkex: cannot bundle libtinkex: this directory is not <workspace>/bindings/python of a "
            "libtinkex source tree. Build from the source tree, or set TINKEX_LIBRARY to a built "
            "libtinkex (or TINKEX_BUNDLE_LIBRARY=0 for a package without the library)"
        )
    return _cargo_build(ws)


class BuildPy(build_py):
    """Copies libtinkex into the package (or records the workspace, without bundling)."""

    def run(self) -> None:
        super().run()
        pkg = Path(self.build_lib) / "tinkex"
        bundle = _bundling()
        ws = None if bundle else _workspace()
        (pkg / "_build_info.py").write_text(
            "# Generated at build time by setup.py.\n" f"WORKSPACE = {str(ws) if ws else None!r}\n"
        )
        # The name _lib.py looks for (the file cargo writes has it already).
        name = {"darwin": "libtinkex.dylib", "win32": "tinkex.dll"}.get(sys.platform, "libtinkex.so")
        # A library left in build/ by an earlier bundling build must not ride along.
        (pkg / name).unlink(missing_ok=True)
        if bundle:
            lib = _library()
            shutil.copyfile(lib, pkg / name)
            os.chmod(pkg / name, 0o755)
            print(f"tinkex: bundled {lib} as tinkex/{name}", file=sys.stderr, flush=True)


class BdistWheel(bdist_wheel):
    """``py3-none-<platform>`` with the library, ``py3-none-any`` without it."""

    def get_tag(self) -> tuple[str, str, str]:
        plat = super().get_tag()[2]
        return ("py3", "none", plat if _bundling() else "any")


class PlatformDistribution(Distribution):
    """With the library bundled the package is platform-specific: its files go to the
    wheel's platlib (what auditwheel and installers expect of a binary), not purelib."""

    def has_ext_modules(self) -> bool:
        return _bundling()


setup(distclass=PlatformDistribution, cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel})
