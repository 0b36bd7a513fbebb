"""Library discovery never loads a library from a path derived from the working directory
(issue 11, item 10).

Each case imports a *copy* of the tinkex package in a fresh interpreter (``PYTHONPATH``), from a
place where neither a bundled library nor a recorded build workspace exists, so that the
only library around is the one the case plants (or, for the positive cases, puts where the
package is entitled to find it). The child reports which library it loaded, the error if
the import failed, and every ``libtinkex`` mapping in ``/proc/self/maps``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tinkex

REAL_LIB = Path(tinkex.LIBRARY_PATH)
PKG_SRC = Path(tinkex.__file__).resolve().parent

PROBE = r"""
import importlib.util, json, os, sys
out = {"origin": importlib.util.find_spec("tinkex").origin}
try:
    import tinkex
    out["loaded"] = tinkex.LIBRARY_PATH
except ImportError as e:
    out["error"] = f"{type(e).__name__}: {e}"
if os.path.exists("/proc/self/maps"):
    with open("/proc/self/maps") as f:
        out["maps"] = sorted({l.split()[-1] for l in f if "libtinkex" in l})
print(json.dumps(out))
"""

# A library whose constructor leaves a marker: proof that its code ran, whatever happens after.
PLANTED_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char *p = getenv("TINKEX_PLANTED_MARKER");
    if (p) { FILE *f = fopen(p, "w"); if (f) { fputs("planted library ran\n", f); fclose(f); } }
}
"""


def copy_package(dest_parent: Path, build_info: str | None = None) -> Path:
    """Copies the package's Python files, subpackages included (no bundled library, no
    _build_info) under dest_parent/tinkex; writes _build_info.py when build_info is given."""
    dest = dest_parent / "tinkex"
    dest.mkdir(parents=True)
    for f in PKG_SRC.rglob("*"):
        rel = f.relative_to(PKG_SRC)
        if "__pycache__" in rel.parts or not f.is_file():
            continue
        if f.suffix in (".py", ".typed") and f.name != "_build_info.py":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / rel)
    if build_info is not None:
        (dest / "_build_info.py").write_text(build_info)
    return dest


def fake_workspace(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Cargo.toml").write_text('[package]\nname = "tinkex"\n')
    (root / "include").mkdir(exist_ok=True)
    (root / "include" / "tinkex.h").write_text("/* marker */\n")
    return root


def plant(root: Path, kind: str, tmp: Path) -> Path:
    """Puts a library at root/target/release/libtinkex.so (plus the workspace markers the old
    code and this code look for): a copy of the real library, or one whose constructor
    writes a marker file."""
    fake_workspace(root)
    lib = root / "target" / "release" / REAL_LIB.name
    lib.parent.mkdir(parents=True)
    if kind == "copy":
        shutil.copy2(REAL_LIB, lib)
    else:
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            pytest.skip("no C compiler to build the planted library")
        src = tmp / "planted.c"
        src.write_text(PLANTED_C)
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60)
    return lib


def probe(pythonpath: Path, cwd: Path, marker: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TINKEX_LIBRARY", "PYTHONPATH")}
    env["PYTHONPATH"] = str(pythonpath)
    if marker is not None:
        env["TINKEX_PLANTED_MARKER"] = str(marker)
    r = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # The case is only meaningful if the child imported our copy, not the installed package.
    assert Path(out["origin"]).resolve().parent.parent == pythonpath.resolve(), out
    return out


def assert_not_loaded(out: dict, planted: Path, marker: Path) -> None:
    planted = planted.resolve()
    assert out.get("loaded") is None or Path(out["loaded"]).resolve() != planted, out
    assert str(planted) not in out.get("maps", []), out
    assert not marker.exists(), f"the planted library's code ran: {marker.read_text()!r}"
    if "error" in out:
        # No library elsewhere: the clear not-found error, which names no CWD path.
        assert "libtinkex was not found" in out["error"], out
        assert "current directory" not in out["error"].split("Looked in:")[-1], out


@pytest.mark.parametrize("kind", ["copy", "constructor"])
def test_library_in_the_working_directory_is_never_loaded(tmp_path: Path, kind: str):
    # The package sits where it has no workspace; the working directory is a subdirectory of
    # a tree holding target/release/libtinkex.so (e.g. a downloaded project).
    site = tmp_path / "site"
    copy_package(site)
    hostile = tmp_path / "hostile-project"
    planted = plant(hostile, kind, tmp_path)
    cwd = hostile / "src" / "deeper"
    cwd.mkdir(parents=True)
    marker = tmp_path / "marker"
    for where in (hostile, cwd):  # the directory itself and one of its parents
        out = probe(site, where, marker)
        assert_not_loaded(out, planted, marker)


@pytest.mark.parametrize("kind", ["copy", "constructor"])
def test_library_above_the_package_is_never_loaded(tmp_path: Path, kind: str):
    # A virtualenv in a shared directory (e.g. /tmp/venv): anyone who can write to /tmp can
    # create /tmp/target/release/libtinkex.so. Only the exact checkout layout counts.
    site = tmp_path / "venv" / "lib" / "python3" / "site-packages"
    copy_package(site)
    planted = plant(tmp_path, kind, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = tmp_path / "marker"
    out = probe(site, elsewhere, marker)
    assert_not_loaded(out, planted, marker)


def test_relative_recorded_workspace_is_ignored(tmp_path: Path):
    # A recorded workspace must be absolute: a relative one would be resolved against the CWD.
    site = tmp_path / "site"
    copy_package(site, build_info="WORKSPACE = 'ws'\n")
    planted = plant(tmp_path / "ws", "copy", tmp_path)
    marker = tmp_path / "marker"
    out = probe(site, tmp_path, marker)
    assert_not_loaded(out, planted, marker)


def test_source_checkout_library_is_found(tmp_path: Path):
    # <workspace>/bindings/python/tinkex finds <workspace>/target/release, from any CWD.
    ws = tmp_path / "checkout"
    fake_workspace(ws)
    pkg_parent = ws / "bindings" / "python"
    copy_package(pkg_parent)
    lib = ws / "target" / "release" / REAL_LIB.name
    lib.parent.mkdir(parents=True)
    shutil.copy2(REAL_LIB, lib)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = probe(pkg_parent, elsewhere)
    assert Path(out.get("loaded", "")).resolve() == lib.resolve(), out


def test_recorded_build_workspace_library_is_found(tmp_path: Path):
    ws = fake_workspace(tmp_path / "built-from")
    lib = ws / "target" / "release" / REAL_LIB.name
    lib.parent.mkdir(parents=True)
    shutil.copy2(REAL_LIB, lib)
    site = tmp_path / "site"
    copy_package(site, build_info=f"WORKSPACE = {str(ws)!r}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = probe(site, elsewhere)
    assert Path(out.get("loaded", "")).resolve() == lib.resolve(), out


def test_relative_tinkex_library_is_the_checked_file(tmp_path: Path):
    # An explicit relative TINKEX_LIBRARY is the user's choice: the file it names relative to
    # the CWD is loaded (not whatever dlopen's search path finds under that bare name).
    d = tmp_path / "libdir"
    d.mkdir()
    shutil.copy2(REAL_LIB, d / REAL_LIB.name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TINKEX_LIBRARY"] = REAL_LIB.name
    r = subprocess.run(
        [sys.executable, "-c", "import tinkex; print(tinkex.LIBRARY_PATH)"],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == (d / REAL_LIB.name).resolve()
