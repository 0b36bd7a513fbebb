"""tinkex: the Tinker fine-tuning API client of libtinkex, for Python.

A pure-Python (ctypes) binding of libtinkex's C ABI with the official ``tinker`` SDK's
public names, so code written for the SDK runs after ``import tinkex as tinker``::

    import tinkex as tinker
    from tinkex import types

    service_client = tinker.ServiceClient(base_url="http://127.0.0.1:8000", api_key="tml-...")
    training_client = service_client.create_lora_training_client(base_model="Qwen/Qwen3-8B").result()
    fwd = training_client.forward_backward(data, "cross_entropy")
    opt = training_client.optim_step(types.AdamParams(learning_rate=1e-4))
    print(fwd.result().metrics, opt.result())

See README.md for library discovery, the API and the differences from the official SDK.
"""

from __future__ import annotations

from typing import Any, Dict

from . import _events, _ffi, _lib, auth, types
from ._api_future import APIFuture
from ._ffi import shutdown
from ._rest_client import AdminClient, RestClient
from ._compat import ExperimentalWarning, RequestOptions, Timeout
from ._client_common import Telemetry
from ._custom_loss_graph import LossHandle, PerDatumLossFn
from ._sampling_client import SamplingClient
from ._service_client import ServiceClient
from ._training_client import TrainingClient
from ._custom_loss import numpy_loss
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BillingError,
    ClientStateError,
    ConflictError,
    InternalError,
    InternalServerError,
    InvalidArgumentError,
    NoProgressError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestFailedError,
    SessionExpiredError,
    ShutDownError,
    TinkerError,
    UnprocessableEntityError,
)
from ._lib import ABI_VERSION, LIBRARY_PATH, LIBRARY_VERSION, LibraryError
from .lib.retry_handler import RetryConfig, RetryableException
from .types import (
    AdamOptimizerConfig,
    AdamParams,
    DimuonOptimizerConfig,
    DimuonParams,
    DmelChunk,
    ModelID,
    OptimParams,
    OptimStepRequest,
    PromptProvenanceSpan,
    SampledProvenanceSpan,
    SampleRequest,
    Checkpoint,
    CheckpointType,
    Datum,
    EncodedTextChunk,
    ForwardBackwardOutput,
    LoraConfig,
    ModelInput,
    ModelInputChunk,
    OptimStepResponse,
    ParsedCheckpointTinkerPath,
    QueueState,
    SampledSequence,
    SampleResponse,
    SamplingParams,
    StopReason,
    TensorData,
    TensorDtype,
    TrainingRun,
)

def _setup_logging() -> None:
    # As the official SDK: TINKER_LOG=info|debug configures logging for the package's logger.
    import logging
    import os

    level = os.environ.get("TINKER_LOG")
    if level in ("debug", "info"):
        logging.basicConfig(
            format="[%(asctime)s - %(name)s:%(lineno)d - %(levelname)s] %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S",
        )
        logging.getLogger("tinkex").setLevel(logging.DEBUG if level == "debug" else logging.INFO)


_setup_logging()

__version__ = "0.1.0"
__title__ = "tinkex"

# Official aliases kept for drop-in use.
BackcompatTrainingClientFuture = APIFuture
BackcompatSamplingClientFuture = APIFuture


def diagnostics() -> Dict[str, Any]:
    """Counters of the binding: operations submitted/completed, completions still pending
    (``inflight``), live event subscriptions (``subscriptions``), completion callbacks that
    found no pending operation (``orphan_callbacks``, always 0), datum batches built
    (``batches``) and their datums passed as typed arrays (``typed_datums``) or as JSON
    (``json_datums``)."""
    d: Dict[str, Any] = dict(_ffi.stats)
    d["inflight"] = _ffi.inflight_count()
    d["subscriptions"] = _events.hub_count()
    d["library"] = LIBRARY_PATH
    d["library_version"] = LIBRARY_VERSION
    return d


__all__ = [
    "RetryConfig",
    "RetryableException",
    "ServiceClient",
    "TrainingClient",
    "SamplingClient",
    "RestClient",
    "AdminClient",
    "APIFuture",
    "LossHandle",
    "PerDatumLossFn",
    "Telemetry",
    "auth",
    "Timeout",
    "RequestOptions",
    "ExperimentalWarning",
    "BackcompatTrainingClientFuture",
    "BackcompatSamplingClientFuture",
    "types",
    "numpy_loss",
    "shutdown",
    "diagnostics",
    # types
    "AdamOptimizerConfig",
    "AdamParams",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "DmelChunk",
    "ModelID",
    "OptimParams",
    "OptimStepRequest",
    "PromptProvenanceSpan",
    "SampledProvenanceSpan",
    "SampleRequest",
    "Checkpoint",
    "CheckpointType",
    "Datum",
    "EncodedTextChunk",
    "ForwardBackwardOutput",
    "LoraConfig",
    "ModelInput",
    "ModelInputChunk",
    "OptimStepResponse",
    "ParsedCheckpointTinkerPath",
    "QueueState",
    "SampledSequence",
    "SampleResponse",
    "SamplingParams",
    "StopReason",
    "TensorData",
    "TensorDtype",
    "TrainingRun",
    # exceptions
    "TinkerError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "APIConnectionError",
    "APIResponseValidationError",
    "RequestFailedError",
    "BadRequestError",
    "AuthenticationError",
    "BillingError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "NoProgressError",
    "SessionExpiredError",
    "InvalidArgumentError",
    "ClientStateError",
    "ShutDownError",
    "InternalError",
    "LibraryError",
    # version info
    "ABI_VERSION",
    "LIBRARY_PATH",
    "LIBRARY_VERSION",
    "__version__",
    "__title__",
]
