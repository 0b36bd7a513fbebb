"""Every constant of the generated ``tinkex/_constants.py`` has the value include/tinkex.h
gives it, and every enum value and numeric macro of the header that the ABI defines is in
``_constants`` (the header is parsed here, independently of tools/gen_constants.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO
from tinkex import _constants, _lib

HEADER = REPO / "include" / "tinkex.h"

# Macros of the header that are not ABI constants (the package's own version and
# compiler attributes).
_NOT_CONSTANTS = re.compile(r"^TINKEX_(H|VERSION(_\w+)?|MUST_USE|DEPRECATED)$")
_C_LIMITS = {"UINT64_MAX": 2**64 - 1, "UINT32_MAX": 2**32 - 1, "INT32_MAX": 2**31 - 1, "SIZE_MAX": 2**64 - 1}


def _c_int(text: str) -> int:
    text = text.strip().strip("()")
    if text in _C_LIMITS:
        return _C_LIMITS[text]
    return int(re.sub(r"(?i)[ul]+$", "", text), 0)


def header_constants(path: Path = HEADER) -> dict[str, int]:
    """``TINKEX_*`` enum members and integer macros of the header, by name."""
    text = path.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    found: dict[str, int] = {}
    # Enum bodies; cbindgen puts a C23/C++ underlying type between the name and the brace
    # (``enum tinkex_status\n#if ...\n  : int32_t\n#endif\n {``).
    for body in re.findall(r"\benum\s+\w+(?:\s*#[^\n]*\n|\s*:\s*\w+)*\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"\b(TINKEX_\w+)\s*=\s*([^,}]+)", body):
            found[name] = _c_int(value)
    for name, value in re.findall(r"^[ \t]*#[ \t]*define[ \t]+(TINKEX_\w+)[ \t]+([^\s].*?)[ \t]*$", text, flags=re.M):
        if _NOT_CONSTANTS.match(name):
            continue
        found[name] = _c_int(value)
    return found


def module_constants() -> dict[str, int]:
    return {n: v for n, v in vars(_constants).items() if n.isupper() and not n.startswith("_") and isinstance(v, int)}


@pytest.fixture(scope="module")
def header() -> dict[str, int]:
    if not HEADER.is_file():
        pytest.fail(f"{HEADER} is missing: the constants cannot be checked")
    h = header_constants()
    # The parser found the header's groups (so an empty or unparsable header fails here).
    for prefix in ("TINKEX_STATUS_", "TINKEX_EVENT_KIND_", "TINKEX_DTYPE_", "TINKEX_LOG_LEVEL_"):
        assert sum(n.startswith(prefix) for n in h) >= 4, (prefix, sorted(h))
    assert "TINKEX_ABI_VERSION_MAJOR" in h and "TINKEX_ABI_VERSION_MINOR" in h
    return h


def test_every_python_constant_has_the_header_value(header):
    consts = module_constants()
    assert len(consts) >= 40
    wrong = {n: (v, header.get("TINKEX_" + n)) for n, v in consts.items() if header.get("TINKEX_" + n) != v}
    assert not wrong, f"name: (python, header) {wrong}"


def test_every_header_constant_is_in_python(header):
    consts = module_constants()
    missing = sorted(n for n in header if n[len("TINKEX_") :] not in consts)
    assert not missing, missing


def test_status_names_of_the_library_agree():
    """The loaded library names every status constant after itself."""
    statuses = {n: v for n, v in module_constants().items() if n.startswith("STATUS_")}
    assert statuses
    for name, value in statuses.items():
        assert _lib.status_name(value) == "TINKEX_" + name


def test_abi_version_is_the_headers():
    h = header_constants()
    assert _lib.ABI_VERSION == (h["TINKEX_ABI_VERSION_MAJOR"], h["TINKEX_ABI_VERSION_MINOR"])


def test_the_parser_sees_a_changed_value(tmp_path):
    """The check can fail: a header whose value differs is reported."""
    text = HEADER.read_text().replace("TINKEX_STATUS_PANIC = 901", "TINKEX_STATUS_PANIC = 902", 1)
    assert "TINKEX_STATUS_PANIC = 902" in text
    p = tmp_path / "tinkex.h"
    p.write_text(text)
    assert header_constants(p)["TINKEX_STATUS_PANIC"] == 902 != _constants.STATUS_PANIC
