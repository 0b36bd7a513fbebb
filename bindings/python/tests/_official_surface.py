"""Run by the official SDK's interpreter (tinker 0.38): prints, as JSON, the public surface
the parity test compares tinkex with — the six client classes' public methods (parameter
names, kinds, defaults; whether the result is a future), ``tinker.__all__``, the public
names of ``tinker.types`` with the fields and defaults of every model, and the exception
hierarchy. Reads the SDK by introspection only."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import types as pytypes

import pydantic
import tinker
from tinker import types

CLASSES = ["ServiceClient", "TrainingClient", "SamplingClient", "RestClient", "APIFuture", "AdminClient"]


def _default(v):
    if v is inspect.Parameter.empty:
        return {"required": True}
    return {"value": _plain(v)}


def _plain(v):
    if isinstance(v, pydantic.BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def methods():
    out = {}
    for cname in CLASSES:
        cls = getattr(tinker, cname)
        ms = {}
        for name, fn in inspect.getmembers(cls):
            if name.startswith("_") and name != "__init__":
                continue
            if name == "__init__" and "__init__" not in cls.__dict__:
                continue
            if isinstance(inspect.getattr_static(cls, name), property):
                ms[name] = {"property": True}
                continue
            if not callable(fn):
                continue
            sig = inspect.signature(fn)
            params = [
                {"name": p.name, "kind": p.kind.name, **_default(p.default)}
                for p in sig.parameters.values()
            ]
            ret = sig.return_annotation
            ret = "" if ret is inspect.Signature.empty else str(ret)
            ms[name] = {
                "params": params,
                "returns": ret,
                "static": isinstance(inspect.getattr_static(cls, name), (staticmethod, classmethod)),
            }
        out[cname] = ms
    return out


def type_names():
    out = {}
    for n in dir(types):
        if n.startswith("_") or n == "annotations":
            continue
        o = getattr(types, n)
        if isinstance(o, pytypes.ModuleType):
            continue
        entry = {"kind": "alias"}
        if inspect.isclass(o) and issubclass(o, pydantic.BaseModel):
            fields = {}
            for fn, f in o.model_fields.items():
                if f.is_required():
                    fields[fn] = {"required": True}
                else:
                    v = f.default_factory() if f.default_factory is not None else f.default
                    fields[fn] = {"value": _plain(v)}
            entry = {"kind": "model", "fields": fields}
        elif inspect.isclass(o) and dataclasses.is_dataclass(o):
            entry = {"kind": "dataclass", "fields": [f.name for f in dataclasses.fields(o) if not f.name.startswith("_")]}
        elif inspect.isclass(o) and issubclass(o, enum.Enum):
            entry = {"kind": "enum", "members": {m.name: m.value for m in o}}
        elif inspect.isclass(o):
            entry = {"kind": "class"}
        out[n] = entry
    return out


def exceptions():
    out = {}
    for n in tinker.__all__:
        o = getattr(tinker, n)
        if inspect.isclass(o) and issubclass(o, BaseException):
            out[n] = [b.__name__ for b in o.__mro__[1:] if b.__module__.startswith("tinker")]
    return out


print(
    json.dumps(
        {
            "version": tinker.__version__,
            "all": list(tinker.__all__),
            "methods": methods(),
            "types": type_names(),
            "exceptions": exceptions(),
        }
    )
)
