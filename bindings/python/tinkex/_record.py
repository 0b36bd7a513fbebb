"""The dependency-free base of the generated records (``_types_generated.py``): keyword
construction, nested conversion and the pydantic methods code commonly uses
(``model_dump``, ``model_dump_json``, ``model_validate``, ``model_validate_json``,
``model_copy``, ``model_fields``), without depending on pydantic."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple


class _RequiredType:
    """Marks a field without a default."""

    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _RequiredType()


class _Factory:
    """A default built per instance (lists, dicts, nested models)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self) -> Any:
        return self.fn()


class ValidationError(ValueError):
    """A record was built with a missing, unknown or malformed field (pydantic's
    ``ValidationError`` is a ``ValueError`` too)."""


def _parse_datetime(v: Any) -> Any:
    if isinstance(v, str):
        s = v.strip()
        if s.endswith("Z") or s.endswith("z"):
            s = s[:-1] + "+00:00"
        try:
            return _dt.datetime.fromisoformat(s)
        except ValueError:
            # fromisoformat (3.9/3.10) rejects fractions of other than 3 or 6 digits.
            if "." in s:
                head, _, tail = s.partition(".")
                digits = "".join(c for c in tail if c.isdigit())
                rest = tail[len(digits):]
                return _dt.datetime.fromisoformat(f"{head}.{(digits + '000000')[:6]}{rest}")
            raise
    return v


def _lookup(name: str) -> Any:
    from . import types

    return getattr(types, name, None)


def _convert(spec: str, v: Any, lenient: bool) -> Any:
    if v is None:
        return None
    kind = spec[0]
    if spec == "dt":
        return _parse_datetime(v)
    if kind == "L":
        return [_convert(spec[1:], x, lenient) for x in v] if isinstance(v, (list, tuple)) else v
    if kind == "D":
        return {k: _convert(spec[1:], x, lenient) for k, x in v.items()} if isinstance(v, Mapping) else v
    if kind == "M":
        cls = _lookup(spec[2:])
        if isinstance(v, Mapping) and cls is not None:
            return _validate(cls, v, lenient)
        return v
    if kind == "U":
        if isinstance(v, Mapping):
            for name in spec[2:].split("|"):
                cls = _lookup(name)
                if cls is not None and _matches(cls, v):
                    return _validate(cls, v, lenient)
        return v
    return v


def _validate(cls: Any, v: Mapping[str, Any], lenient: bool) -> Any:
    if hasattr(cls, "_from_json") and lenient:
        return cls._from_json(v)
    if hasattr(cls, "model_validate"):
        return cls.model_validate(v)
    return cls(**v)


def _matches(cls: Any, v: Mapping[str, Any]) -> bool:
    """Whether ``v`` carries the literal tag (``type`` or ``state``) of union member ``cls``."""
    fields = dict(getattr(cls, "_fields", ()))
    for tag in ("type", "state"):
        if tag in fields and tag in v:
            return fields[tag] == v[tag]
    return not any(t in v for t in ("type", "state"))


def _dump(v: Any, mode: str, exclude_none: bool) -> Any:
    if hasattr(v, "model_dump") and not isinstance(v, type):
        try:
            return v.model_dump(mode=mode, exclude_none=exclude_none)
        except TypeError:
            return v.model_dump()
    if isinstance(v, (list, tuple)):
        return [_dump(x, mode, exclude_none) for x in v]
    if isinstance(v, dict):
        return {k: _dump(x, mode, exclude_none) for k, x in v.items()}
    if mode == "json":
        if isinstance(v, (_dt.datetime, _dt.date)):
            s = v.isoformat()
            return s[:-6] + "Z" if s.endswith("+00:00") else s
        if hasattr(v, "value") and not isinstance(v, (int, float, str)):
            return v.value
    return v


class _Record:
    """A record of the official SDK's shape: keyword-only construction (missing required
    fields and, for request models, unknown fields raise :class:`ValidationError`), nested
    records and datetimes converted from their JSON forms."""

    _fields: ClassVar[Tuple[Tuple[str, Any], ...]] = ()
    _nested: ClassVar[Dict[str, str]] = {}
    _strict: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        self._init(kwargs, lenient=False)

    def _init(self, kwargs: Mapping[str, Any], lenient: bool) -> None:
        names = {n for n, _ in self._fields}
        unknown = [k for k in kwargs if k not in names]
        if unknown and self._strict and not lenient:
            raise ValidationError(f"{type(self).__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        for name, default in self._fields:
            if name in kwargs:
                v = kwargs[name]
                spec = self._nested.get(name)
                if spec is not None:
                    v = _convert(spec, v, lenient)
            elif default is _REQUIRED:
                if lenient:  # a server response lacking a field: None, not a failure
                    object.__setattr__(self, name, None)
                    continue
                raise ValidationError(f"{type(self).__name__}: field {name!r} is required")
            elif isinstance(default, _Factory):
                v = default()
            else:
                v = default
            object.__setattr__(self, name, v)

    # -- pydantic-style API --

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Any:
        """From a server response: unknown fields are ignored."""
        if d is None or isinstance(d, cls):
            return d
        obj = cls.__new__(cls)
        obj._init(d, lenient=True)
        return obj

    @classmethod
    def model_validate(cls, obj: Any) -> Any:
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, Mapping):
            raise ValidationError(f"{cls.__name__}: expected an object, got {type(obj).__name__}")
        return cls(**obj) if cls._strict else cls._from_json(obj)

    @classmethod
    def model_validate_json(cls, data: Any) -> Any:
        return cls.model_validate(json.loads(data))

    @classmethod
    def model_construct(cls, **kwargs: Any) -> Any:
        return cls._from_json(kwargs)

    def model_dump(self, *, mode: str = "python", exclude_none: bool = False, exclude_unset: bool = False, **_: Any) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for name, _d in self._fields:
            v = getattr(self, name)
            if exclude_none and v is None:
                continue
            out[name] = _dump(v, mode, exclude_none)
        return out

    def model_dump_json(self, *, exclude_none: bool = False, **_: Any) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=exclude_none), separators=(",", ":"))

    def model_copy(self, update: Optional[Mapping[str, Any]] = None, deep: bool = False) -> Any:
        d = {n: getattr(self, n) for n, _ in self._fields}
        d.update(update or {})
        obj = type(self).__new__(type(self))
        for k, v in d.items():
            object.__setattr__(obj, k, v)
        return obj

    def _json(self) -> Dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    # class-level ``model_fields`` (name -> default; ``_REQUIRED`` when none)
    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.model_fields = {n: d for n, d in cls._fields}  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n, _ in self._fields)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n, _ in self._fields)
        return f"{type(self).__name__}({inner})"

    def __iter__(self):
        # pydantic models iterate as (name, value) pairs: dict(model) works.
        for n, _ in self._fields:
            yield n, getattr(self, n)
