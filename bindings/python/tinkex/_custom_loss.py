"""Client-side custom losses for ``TrainingClient.forward_backward_custom`` (PROTOCOL.md 11.6).

The loss runs here, between the two phases libtinkex runs in one reserved turn of the
training client (``tinkex_training_client_forward_backward_custom``, then
``tinkex_custom_loss_backward``): the forward pass gives per-datum target logprobs; this
module computes the user's loss and its gradient ``g = dloss/dlogprobs``; the library sends
the backward pass (``weights = -g`` with ``cross_entropy``) and reports the loss in the
metrics (``loss:sum``, the server's as ``surrogate_loss:sum``).

Gradients: with torch installed, the loss function receives torch tensors (requires_grad)
exactly as with the official SDK, and autograd gives ``g``. Without torch (or for a function
marked with :func:`numpy_loss`) it receives float64 numpy arrays and returns either
``(loss, metrics)`` or ``(loss, metrics, grads)``; without ``grads`` the gradient is taken by
central finite differences (exact for losses linear or quadratic in the logprobs; limited to
:data:`MAX_FINITE_DIFFERENCE_ELEMENTS` elements in total).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any, Callable, List, Sequence, Tuple

import numpy as np

from .types import Datum, ForwardBackwardOutput

try:
    import torch  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    torch = None  # type: ignore[assignment]

MAX_FINITE_DIFFERENCE_ELEMENTS = 20_000
_FD_STEP = 1e-4


def numpy_loss(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a custom loss as numpy-based: it receives float64 numpy arrays even when torch
    is installed, and returns ``(loss, metrics)`` or ``(loss, metrics, grads)``."""
    setattr(fn, "tinkex_numpy", True)
    return fn


_executor_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_pid = 0


def executor() -> concurrent.futures.ThreadPoolExecutor:
    """One worker thread for every client's loss computations (never the dispatcher);
    recreated in a forked child, where the parent's thread does not exist."""
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinkex-custom-loss")
            _executor_pid = os.getpid()
        return _executor


def _logprobs_arrays(data: Sequence[Datum], fwd: ForwardBackwardOutput) -> List[np.ndarray]:
    if len(fwd.loss_fn_outputs) != len(data):
        raise ValueError(
            f"the forward pass returned {len(fwd.loss_fn_outputs)} outputs for {len(data)} datums"
        )
    arrays = []
    for d, out in zip(data, fwd.loss_fn_outputs):
        lp = out["logprobs"].to_numpy().astype(np.float64)
        shape = d.loss_fn_inputs["target_tokens"].shape or out["logprobs"].shape
        if shape is not None and list(lp.shape) != list(shape):
            lp = lp.reshape(shape)
        arrays.append(lp)
    return arrays


def _scalar(x: Any) -> float:
    if torch is not None and isinstance(x, torch.Tensor):
        return float(x.detach().sum().item())
    return float(np.sum(np.asarray(x, dtype=np.float64)))


def compute(
    loss_fn: Callable[..., Any], data: Sequence[Datum], fwd: ForwardBackwardOutput
) -> Tuple[float, dict, List[np.ndarray]]:
    """Runs the loss; returns (loss value, metrics, gradient per datum)."""
    logprobs = _logprobs_arrays(data, fwd)
    use_torch = torch is not None and not getattr(loss_fn, "tinkex_numpy", False)
    if use_torch:
        tensors = [torch.tensor(lp, dtype=torch.float32).requires_grad_(True) for lp in logprobs]
        loss, metrics = loss_fn(list(data), tensors)[:2]
        value = _scalar(loss)
        loss.backward()
        grads = []
        for t in tensors:
            if t.grad is None:
                raise ValueError("No gradient computed for logprob tensor")
            grads.append(t.grad.detach().cpu().numpy().astype(np.float64))
    else:
        result = loss_fn(list(data), [lp.copy() for lp in logprobs])
        if not isinstance(result, tuple) or len(result) not in (2, 3):
            raise TypeError("a custom loss returns (loss, metrics) or (loss, metrics, grads)")
        loss, metrics = result[0], result[1]
        value = _scalar(loss)
        if len(result) == 3:
            grads = [np.asarray(g, dtype=np.float64).reshape(lp.shape) for g, lp in zip(result[2], logprobs)]
            if len(grads) != len(logprobs):
                raise ValueError("grads must hold one array per datum")
        else:
            grads = _finite_differences(loss_fn, data, logprobs)
    return value, {k: _scalar(v) for k, v in dict(metrics or {}).items()}, grads


def _finite_differences(loss_fn: Callable[..., Any], data: Sequence[Datum], logprobs: List[np.ndarray]) -> List[np.ndarray]:
    total = sum(lp.size for lp in logprobs)
    if total > MAX_FINITE_DIFFERENCE_ELEMENTS:
        raise ValueError(
            f"custom loss without torch: {total} logprobs are too many for finite differences "
            f"(limit {MAX_FINITE_DIFFERENCE_ELEMENTS}); return (loss, metrics, grads) instead"
        )
    grads = []
    work = [lp.copy() for lp in logprobs]
    for i, lp in enumerate(logprobs):
        g = np.zeros_like(lp)
        flat = work[i].reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + _FD_STEP
            up = _scalar(loss_fn(list(data), work)[0])
            flat[j] = orig - _FD_STEP
            down = _scalar(loss_fn(list(data), work)[0])
            flat[j] = orig
            g.reshape(-1)[j] = (up - down) / (2 * _FD_STEP)
        grads.append(g)
    return grads
