"""Build hook: records the libtinkex workspace this package was built from (so an installed
copy finds ``target/release/libtinkex.so`` there), and bundles the library into the wheel
when ``TINKEX_BUNDLE_LIBRARY=1``. Everything else is in pyproject.toml."""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _workspace():
    # Exactly <workspace>/bindings/python (this file's own location), never a walk up the
    # parents: a build from a copy of this directory elsewhere (e.g. a temporary directory)
    # must not record whatever tree happens to sit above it.
    d = HERE.parent.parent
    if HERE.parent.name == "bindings" and (d / "include" / "tinkex.h").is_file() and (d / "Cargo.toml").is_file():
        return d
    return None


class BuildPy(build_py):
    def run(self):
        super().run()
        pkg = Path(self.build_lib) / "tinkex"
        ws = _workspace()
        (pkg / "_build_info.py").write_text(
            "# Generated at build time by setup.py.\n" f"WORKSPACE = {str(ws) if ws else None!r}\n"
        )
        if os.environ.get("TINKEX_BUNDLE_LIBRARY") == "1":
            lib = os.environ.get("TINKEX_LIBRARY") or (str(ws / "target" / "release" / "libtinkex.so") if ws else "")
            if not lib or not Path(lib).is_file():
                raise SystemExit(f"TINKEX_BUNDLE_LIBRARY=1 but no library at {lib!r}")
            shutil.copy2(lib, pkg / Path(lib).name)


setup(cmdclass={"build_py": BuildPy})
