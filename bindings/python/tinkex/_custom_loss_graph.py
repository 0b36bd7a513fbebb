"""Server-side custom losses (``ServiceClient.create_custom_loss``, PROTOCOL.md 5.10, 11.6):
tracing a per-datum loss with ``torch.fx`` into the JSON graph the server runs, and the
:class:`LossHandle` that names the registered loss.

torch is imported only here, when a loss is created; without it the call raises an
``ImportError`` saying what to install."""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: ``fn(logprobs, *inputs) -> (loss, metrics)``: the per-datum loss of ``create_custom_loss``.
PerDatumLossFn = Any


class LossHandle:
    """A loss registered on the server by ``ServiceClient.create_custom_loss``; pass it to
    ``TrainingClient.forward_backward_custom`` (clients of the same session only)."""

    def __init__(self, name: str, inputs: Tuple[Any, ...], session_id: str, graph: Any, loss_id: Optional[str] = None) -> None:
        self.name = name
        self.inputs = tuple(inputs)
        self.session_id = session_id
        self.graph = graph
        self.loss_id = loss_id

    @property
    def input_names(self) -> Tuple[str, ...]:
        """The parameter names of the loss: ``logprobs`` first, then the ``loss_fn_inputs``
        keys it reads."""
        return tuple(i.name if hasattr(i, "name") else i["name"] for i in self.inputs)

    @property
    def key(self) -> Tuple[str, str]:
        """(session id, loss name): a loss is created once per session."""
        return (self.session_id, self.name)

    def __repr__(self) -> str:
        return f"<tinkex.LossHandle {self.name!r} loss_id={self.loss_id!r}>"


def _import_torch_fx() -> Any:
    try:
        import torch  # type: ignore[import-not-found]  # noqa: F401
        import torch.fx  # type: ignore[import-not-found]
    except ImportError as e:
        raise ImportError(
            "create_custom_loss traces the loss with torch.fx and needs PyTorch: "
            "pip install torch (or pip install 'tinkex[torch]')"
        ) from e
    return torch


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
    if module == "_operator":
        module = "operator"
    if module.startswith("torch._C._") or module == "torch._tensor" or not module:
        module = "torch"
    return f"{module}.{name}"


def _encode(arg: Any, torch: Any) -> Any:
    """One node argument in the graph's JSON encoding (5.10)."""
    import torch.fx  # type: ignore[import-not-found]

    if isinstance(arg, torch.fx.Node):
        return {"ref": arg.name}
    if isinstance(arg, bool) or arg is None or isinstance(arg, (int, str)):
        return arg
    if isinstance(arg, float):
        if math.isnan(arg):
            return {"float": "nan"}
        if math.isinf(arg):
            return {"float": "inf" if arg > 0 else "-inf"}
        return arg
    if isinstance(arg, list):
        return [_encode(a, torch) for a in arg]
    if isinstance(arg, tuple):
        return {"tuple": [_encode(a, torch) for a in arg]}
    if isinstance(arg, dict):
        return {"dict": {str(k): _encode(v, torch) for k, v in arg.items()}}
    if isinstance(arg, slice):
        return {"slice": [_encode(arg.start, torch), _encode(arg.stop, torch), _encode(arg.step, torch)]}
    if arg is Ellipsis:
        return {"ellipsis": True}
    if isinstance(arg, torch.dtype):
        return {"dtype": str(arg).replace("torch.", "")}
    if isinstance(arg, torch.device):
        return {"device": str(arg)}
    if isinstance(arg, torch.layout):
        return {"layout": str(arg).replace("torch.", "")}
    if isinstance(arg, torch.memory_format):
        return {"memory_format": str(arg).replace("torch.", "")}
    raise ValueError(f"create_custom_loss: the traced loss uses a value the server cannot run: {arg!r}")


def trace(fn: Any, input_ranks: Mapping[str, int]) -> Dict[str, Any]:
    """The ``create_custom_loss`` request body of ``fn`` (name, inputs, graph)."""
    if not callable(fn):
        raise TypeError("create_custom_loss needs a callable loss function")
    params = list(inspect.signature(fn).parameters)
    if not params:
        raise ValueError("the loss function takes logprobs (then one parameter per loss_fn_inputs key)")
    inputs: List[Dict[str, Any]] = []
    for p in params:
        if p not in input_ranks:
            raise ValueError(f"input_ranks has no rank for parameter {p!r} (0, 1 or 2)")
        rank = input_ranks[p]
        if rank not in (0, 1, 2):
            raise ValueError(f"input_ranks[{p!r}] must be 0, 1 or 2, got {rank!r}")
        inputs.append({"name": p, "rank": int(rank)})
    extra = sorted(set(input_ranks) - set(params))
    if extra:
        raise ValueError(f"input_ranks names parameters the loss does not take: {', '.join(extra)}")
    torch = _import_torch_fx()
    import torch.fx  # type: ignore[import-not-found]

    gm = torch.fx.symbolic_trace(fn)
    nodes: List[Dict[str, Any]] = []
    for node in gm.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            raise ValueError("create_custom_loss: the loss may not use torch.nn modules or captured tensors")
        nodes.append(
            {
                "op": node.op,
                "name": node.name,
                "target": _target_name(node.target),
                "args": [_encode(a, torch) for a in node.args],
                "kwargs": {k: _encode(v, torch) for k, v in node.kwargs.items()},
            }
        )
    name = getattr(fn, "__name__", None) or "loss"
    return {"name": name, "inputs": inputs, "graph": {"format": 1, "nodes": nodes}}
