"""Argument conversion of the generated REST/admin wrappers: each value becomes the JSON the
method table's parameter type names (dates as ``YYYY-MM-DD``, datetimes as RFC 3339 text,
request models as their JSON object)."""

from __future__ import annotations

import datetime as _dt
import operator
from typing import Any


def _arg(kind: str, value: Any) -> Any:
    """The JSON form of ``value`` for a parameter of table type ``kind``."""
    if value is None:
        return None
    base = kind.rstrip("?")
    if base == "date":
        if isinstance(value, _dt.datetime):
            return value.date().isoformat()
        if isinstance(value, _dt.date):
            return value.isoformat()
        return str(value)
    if base == "datetime":
        if isinstance(value, _dt.datetime):
            if value.tzinfo is None:
                # As the official SDK: a naive datetime is taken as UTC.
                value = value.replace(tzinfo=_dt.timezone.utc)
            s = value.isoformat()
            return s[:-6] + "Z" if s.endswith("+00:00") else s
        if isinstance(value, _dt.date):
            return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc).isoformat().replace("+00:00", "Z")
        return str(value)
    if base == "int":
        if isinstance(value, bool):
            raise TypeError("expected an int, got bool")
        return operator.index(value)
    if base == "bool":
        return bool(value)
    if base == "str":
        if not isinstance(value, str):
            raise TypeError(f"expected a str, got {type(value).__name__}")
        return value
    if hasattr(value, "model_dump"):
        try:
            return value.model_dump(mode="json")
        except TypeError:
            return value.model_dump()
    return value
