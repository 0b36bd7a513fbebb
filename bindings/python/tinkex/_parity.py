"""Compares tinkex with the official SDK's public surface (the JSON
``tests/_official_surface.py`` prints under the official SDK's interpreter). Used by the
parity test (``tests/test_api_parity.py``) and by ``tools/gen_api_coverage.py``."""

from __future__ import annotations

import dataclasses
import enum
import inspect
from typing import Any, Dict, List, Tuple

#: tinkex additions allowed after the official parameters (keyword-only, with defaults).
_EXTRA_OK = inspect.Parameter.KEYWORD_ONLY


def _plain(v: Any) -> Any:
    if hasattr(v, "model_dump") and not isinstance(v, type):
        try:
            return v.model_dump(mode="json")
        except TypeError:
            return v.model_dump()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _is_future_annotation(ret: str) -> bool:
    return "Future" in ret


def method_problems(cls: Any, name: str, official: Dict[str, Any]) -> List[str]:
    """Why ``cls.name`` differs from the official method (empty: it matches)."""
    where = f"{cls.__name__}.{name}"
    static = inspect.getattr_static(cls, name, None)
    if static is None:
        return [f"{where}: missing"]
    if official.get("property"):
        return [] if isinstance(static, property) else [f"{where}: not a property"]
    fn = getattr(cls, name)
    if not callable(fn):
        return [f"{where}: not callable"]
    out: List[str] = []
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = ""
    if "raise NotImplementedError" in src:
        out.append(f"{where}: raises NotImplementedError")
    if official.get("static") and not isinstance(static, (staticmethod, classmethod)):
        out.append(f"{where}: should be a static/class method")
    sig = inspect.signature(fn)
    ours = list(sig.parameters.values())
    theirs = [p for p in official["params"] if p["kind"] != "VAR_KEYWORD"]
    by_name = {p.name: (i, p) for i, p in enumerate(ours)}
    last = -1
    for p in theirs:
        if p["name"] not in by_name:
            out.append(f"{where}: missing parameter {p['name']}")
            continue
        i, mine = by_name[p["name"]]
        if i < last:
            out.append(f"{where}: parameter {p['name']} out of order")
        last = i
        if mine.kind.name != p["kind"]:
            out.append(f"{where}: {p['name']} is {mine.kind.name}, official {p['kind']}")
        if p.get("required"):
            if mine.default is not inspect.Parameter.empty:
                out.append(f"{where}: {p['name']} has a default, official has none")
        elif mine.default is inspect.Parameter.empty:
            out.append(f"{where}: {p['name']} is required, official defaults to {p['value']!r}")
        elif _plain(mine.default) != p["value"]:
            out.append(f"{where}: {p['name']} defaults to {mine.default!r}, official {p['value']!r}")
    official_names = {p["name"] for p in official["params"]}
    for p in ours:
        if p.name in official_names or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty or (p.kind != _EXTRA_OK and not p.name.startswith("_")):
            out.append(f"{where}: extra parameter {p.name} must be keyword-only with a default")
    ret = official.get("returns", "")
    if ret:
        mine_ret = sig.return_annotation
        mine_ret = "" if mine_ret is inspect.Signature.empty else str(mine_ret)
        if _is_future_annotation(ret) != _is_future_annotation(mine_ret):
            out.append(f"{where}: returns {mine_ret or '?'}, official {ret}")
    return out


def methods_problems(tinkex: Any, official: Dict[str, Dict[str, Any]]) -> Dict[Tuple[str, str], List[str]]:
    """Per official (class, method): the problems of tinkex's counterpart."""
    out: Dict[Tuple[str, str], List[str]] = {}
    for cname, ms in official.items():
        cls = getattr(tinkex, cname, None)
        for name, spec in ms.items():
            if name == "__init__" and spec.get("params") and spec["params"][1:2] and spec["params"][1]["name"] == "holder":
                # Constructed by the SDK from its internal holder, never by users: tinkex's
                # clients are created by ServiceClient / from_sampler_handle instead.
                out[(cname, name)] = []
                continue
            if cls is None:
                out[(cname, name)] = [f"{cname}: missing class"]
            else:
                out[(cname, name)] = method_problems(cls, name, spec)
    return out


def _our_fields(cls: Any) -> Dict[str, Any]:
    """name -> {"required": True} | {"value": default} of a tinkex record/dataclass."""
    from ._record import _REQUIRED, _Factory

    out: Dict[str, Any] = {}
    if hasattr(cls, "_fields") and isinstance(getattr(cls, "_fields"), tuple):
        for n, d in cls._fields:
            if d is _REQUIRED:
                out[n] = {"required": True}
            else:
                out[n] = {"value": _plain(d() if isinstance(d, _Factory) else d)}
    elif dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name.startswith("_"):
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = {"value": _plain(f.default)}
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = {"value": _plain(f.default_factory())}  # type: ignore[misc]
            else:
                out[f.name] = {"required": True}
    else:
        try:
            params = inspect.signature(cls).parameters.values()
        except (TypeError, ValueError):
            params = []
        for p in params:
            if p.default is inspect.Parameter.empty:
                out[p.name] = {"required": True}
            else:
                out[p.name] = {"value": _plain(p.default)}
    return out


def types_problems(types: Any, official: Dict[str, Any]) -> List[str]:
    """Names of ``tinker.types`` missing from ``tinkex.types``, and models whose fields or
    defaults differ (a field the official SDK requires may default to None here: responses
    are parsed leniently)."""
    out: List[str] = []
    for name, spec in official.items():
        ours = getattr(types, name, None)
        if ours is None:
            out.append(f"types.{name}: missing")
            continue
        kind = spec["kind"]
        if kind == "model":
            mine = _our_fields(ours)
            for f, d in spec["fields"].items():
                if f not in mine:
                    out.append(f"types.{name}: missing field {f}")
                elif "value" in d and mine[f].get("value", object()) != d["value"]:
                    out.append(f"types.{name}.{f}: default {mine[f]}, official {d['value']!r}")
        elif kind == "dataclass":
            mine = _our_fields(ours)
            for f in spec["fields"]:
                if f not in mine and not hasattr(ours, f):
                    out.append(f"types.{name}: missing field {f}")
        elif kind == "enum":
            members = {m.name: m.value for m in ours} if isinstance(ours, type) and issubclass(ours, enum.Enum) else {}
            if members != spec["members"]:
                out.append(f"types.{name}: members {members}, official {spec['members']}")
    return out


def exceptions_problems(tinkex: Any, official: Dict[str, List[str]]) -> List[str]:
    out: List[str] = []
    for name, bases in official.items():
        cls = getattr(tinkex, name, None)
        if cls is None:
            out.append(f"{name}: missing")
            continue
        mine = {b.__name__ for b in cls.__mro__[1:]}
        for b in bases:
            if b not in mine:
                out.append(f"{name}: not a subclass of {b}")
    return out
