"""Request and response types, named and shaped like the official SDK's ``tinker.types``.

Tensors are numpy-backed: ``TensorData`` keeps the array it was given (no copy when the
dtype already matches), ``ModelInput.from_ints`` accepts a numpy array as well as a list, and
``TrainingClient.forward_backward`` hands such arrays to libtinkex's typed-array bulk path
(``tinkex_datum_batch_*``) without turning them into Python lists or JSON text.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Union

import numpy as np

try:  # optional, as in the official SDK
    import torch  # type: ignore[import-not-found]

    _HAVE_TORCH = True
except ImportError:  # pragma: no cover - depends on the environment
    torch = None  # type: ignore[assignment]
    _HAVE_TORCH = False

__all__ = [
    "RetryConfig",
    "TensorDtype",
    "LossFnType",
    "StopReason",
    "SamplingClientKind",
    "QueueState",
    "EncodedTextChunk",
    "ImageChunk",
    "ImageAssetPointerChunk",
    "ModelInputChunk",
    "ModelInput",
    "TensorData",
    "Datum",
    "LossFnInputs",
    "LossFnOutput",
    "SamplingParams",
    "AdamParams",
    "LoraConfig",
    "AdamOptimizerConfig",
    "ForwardBackwardOutput",
    "OptimStepResponse",
    "SaveWeightsResponse",
    "SaveWeightsForSamplerResponse",
    "LoadWeightsResponse",
    "SampledSequence",
    "SampleResponse",
    "ModelData",
    "GetInfoResponse",
    "SupportedModel",
    "GetServerCapabilitiesResponse",
    "Checkpoint",
    "CheckpointType",
    "TrainingRun",
    "Cursor",
    "TrainingRunsResponse",
    "CheckpointsListResponse",
    "WeightsInfoResponse",
    "ParsedCheckpointTinkerPath",
    "Event",
]

TensorDtype = Literal["int64", "float32"]
LossFnType = Literal[
    "cross_entropy",
    "importance_sampling",
    "ppo",
    "cispo",
    "dro",
    "gspo",
    "stable_reinforce",
    "custom",
]
StopReason = Literal["length", "stop"]
SamplingClientKind = Literal["snapshot", "inflight"]
CheckpointType = Literal["training", "sampler", "external"]


class QueueState(enum.Enum):
    """Server-reported state of a queued request (PROTOCOL.md 15.1)."""

    ACTIVE = "active"
    PAUSED_RATE_LIMIT = "paused_rate_limit"
    PAUSED_CAPACITY = "paused_capacity"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: Any) -> "QueueState":
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class _Model:
    """Small pydantic-like helpers for the dataclasses below."""

    def model_dump(self, exclude_none: bool = False) -> Dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name.startswith("_"):
                continue
            v = getattr(self, f.name)
            if exclude_none and v is None:
                continue
            out[f.name] = _dump(v)
        return out

    def model_copy(self, update: Optional[Mapping[str, Any]] = None):
        return dataclasses.replace(self, **dict(update or {}))  # type: ignore[type-var]

    @classmethod
    def model_validate(cls, obj: Any):
        return _build(cls, obj)


def _dump(v: Any) -> Any:
    if isinstance(v, _Model):
        return v.model_dump()
    if isinstance(v, list):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {k: _dump(x) for k, x in v.items()}
    return v


def _build(cls: Any, obj: Any) -> Any:
    """Builds dataclass ``cls`` from a JSON object, ignoring unknown keys."""
    if obj is None or isinstance(obj, cls):
        return obj
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in obj.items() if k in names})


# ---- model input -------------------------------------------------------------------------


@dataclass
class EncodedTextChunk(_Model):
    """Token ids. ``tokens`` may be a list or a 1-D integer numpy array (kept as given)."""

    tokens: Sequence[int]
    type: Literal["encoded_text"] = "encoded_text"

    @property
    def length(self) -> int:
        return len(self.tokens)

    def _json(self) -> Dict[str, Any]:
        toks = self.tokens
        if isinstance(toks, np.ndarray):
            toks = toks.ravel().tolist()
        else:
            toks = [int(t) for t in toks]
        return {"type": "encoded_text", "tokens": toks}


@dataclass
class ImageChunk(_Model):
    """An image (``data``: raw bytes or base64 text) of ``format`` png or jpeg."""

    data: Union[bytes, str]
    format: Literal["png", "jpeg"]
    expected_tokens: Optional[int] = None
    type: Literal["image"] = "image"

    @property
    def length(self) -> int:
        if self.expected_tokens is None:
            raise ValueError("ImageChunk.expected_tokens is needed to compute a length")
        return self.expected_tokens

    def _json(self) -> Dict[str, Any]:
        data = self.data
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = base64.b64encode(bytes(data)).decode()
        out: Dict[str, Any] = {"type": "image", "data": data, "format": self.format}
        if self.expected_tokens is not None:
            out["expected_tokens"] = int(self.expected_tokens)
        return out


@dataclass
class ImageAssetPointerChunk(_Model):
    """An image by reference (``location``: a path or URL)."""

    format: Literal["png", "jpeg"]
    location: str
    expected_tokens: Optional[int] = None
    type: Literal["image_asset_pointer"] = "image_asset_pointer"

    @property
    def length(self) -> int:
        if self.expected_tokens is None:
            raise ValueError("ImageAssetPointerChunk.expected_tokens is needed to compute a length")
        return self.expected_tokens

    def _json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"type": "image_asset_pointer", "format": self.format, "location": self.location}
        if self.expected_tokens is not None:
            out["expected_tokens"] = int(self.expected_tokens)
        return out


ModelInputChunk = Union[EncodedTextChunk, ImageChunk, ImageAssetPointerChunk]


def _chunk_from_json(d: Mapping[str, Any]) -> ModelInputChunk:
    t = d.get("type", "encoded_text")
    if t == "encoded_text":
        return EncodedTextChunk(tokens=list(d.get("tokens", [])))
    if t == "image":
        return ImageChunk(data=d["data"], format=d["format"], expected_tokens=d.get("expected_tokens"))
    if t == "image_asset_pointer":
        return ImageAssetPointerChunk(
            format=d["format"], location=d["location"], expected_tokens=d.get("expected_tokens")
        )
    raise ValueError(f"unsupported model input chunk type {t!r}")


@dataclass
class ModelInput(_Model):
    """A sequence of chunks."""

    chunks: List[ModelInputChunk] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.chunks = [c if not isinstance(c, Mapping) else _chunk_from_json(c) for c in self.chunks]

    @classmethod
    def from_ints(cls, tokens: Union[Sequence[int], np.ndarray]) -> "ModelInput":
        """A single encoded-text chunk. A numpy array is kept as is (no list is built)."""
        if isinstance(tokens, np.ndarray):
            if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
                raise ValueError("ModelInput.from_ints needs a 1-D integer array")
            return cls(chunks=[EncodedTextChunk(tokens=tokens)])
        return cls(chunks=[EncodedTextChunk(tokens=list(tokens))])

    def to_ints(self) -> List[int]:
        if not all(isinstance(c, EncodedTextChunk) for c in self.chunks):
            raise ValueError(
                f"to_ints only supported for ModelInput with EncodedTextChunks, got {[type(c) for c in self.chunks]}"
            )
        out: List[int] = []
        for c in self.chunks:
            t = c.tokens  # type: ignore[union-attr]
            out.extend(t.tolist() if isinstance(t, np.ndarray) else t)
        return out

    @property
    def length(self) -> int:
        return sum(c.length for c in self.chunks)

    @classmethod
    def empty(cls) -> "ModelInput":
        return cls(chunks=[])

    def append(self, chunk: ModelInputChunk) -> "ModelInput":
        return ModelInput(chunks=self.chunks + [chunk])

    def append_int(self, token: int) -> "ModelInput":
        return self.append(EncodedTextChunk(tokens=[token]))

    def _json(self) -> Dict[str, Any]:
        return {"chunks": [c._json() for c in self.chunks]}

    def _bulk_tokens(self) -> Optional[np.ndarray]:
        """The token ids as one contiguous int32/int64 array when the bulk path can take
        this input (a single encoded-text chunk, or none), else None."""
        if not self.chunks:
            return np.empty(0, dtype=np.int64)
        if len(self.chunks) != 1 or not isinstance(self.chunks[0], EncodedTextChunk):
            return None
        toks = self.chunks[0].tokens
        if isinstance(toks, np.ndarray):
            if toks.dtype == np.int64 or toks.dtype == np.int32:
                return np.ascontiguousarray(toks)
            return np.ascontiguousarray(toks, dtype=np.int64)
        return np.asarray(toks, dtype=np.int64)


# ---- tensors -----------------------------------------------------------------------------


def _np_dtype(dtype: str) -> Any:
    if dtype == "float32":
        return np.float32
    if dtype == "int64":
        return np.int64
    raise ValueError(f"Unsupported TensorDtype: {dtype}")


def _tensor_dtype_of(np_dtype: Any) -> str:
    kind = np.dtype(np_dtype).kind
    if kind == "f":
        return "float32"
    if kind in "iu":
        return "int64"
    if kind == "b":
        return "int64"
    raise ValueError(f"Unsupported numpy dtype: {np_dtype}")


class TensorData:
    """A tensor (``dtype`` int64 or float32, optional ``shape``, optional sparse CSR form),
    stored as a numpy array.

    Arrays whose dtype is already the target (or, for the bulk path, int32/float64, which
    libtinkex converts itself) are kept without a copy.
    """

    __slots__ = ("dtype", "shape", "sparse_crow_indices", "sparse_col_indices", "_numpy")

    def __init__(
        self,
        data: Union[Sequence[int], Sequence[float], np.ndarray, None] = None,
        dtype: Optional[TensorDtype] = None,
        shape: Optional[Sequence[int]] = None,
        sparse_crow_indices: Optional[Sequence[int]] = None,
        sparse_col_indices: Optional[Sequence[int]] = None,
    ) -> None:
        if dtype is None:
            if isinstance(data, np.ndarray):
                dtype = _tensor_dtype_of(data.dtype)  # type: ignore[assignment]
            else:
                raise TypeError("TensorData requires `dtype`")
        np_dtype = _np_dtype(dtype)  # type: ignore[arg-type]
        if isinstance(data, np.ndarray):
            arr = data if data.dtype == np_dtype else data.astype(np_dtype)
        elif data is None:
            arr = np.empty(0, dtype=np_dtype)
        else:
            arr = np.asarray(data, dtype=np_dtype)
        shape_list = [int(s) for s in shape] if shape is not None else None
        if sparse_crow_indices is None and shape_list is not None and list(arr.shape) != shape_list:
            arr = arr.reshape(shape_list)
        self.dtype: TensorDtype = dtype  # type: ignore[assignment]
        self.shape: Optional[List[int]] = shape_list
        self.sparse_crow_indices = list(sparse_crow_indices) if sparse_crow_indices is not None else None
        self.sparse_col_indices = list(sparse_col_indices) if sparse_col_indices is not None else None
        self._numpy = arr

    @property
    def data(self) -> Union[List[int], List[float]]:
        """Flattened values as a Python list."""
        return self._numpy.ravel().tolist()

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> "TensorData":
        return cls(data=array, dtype=_tensor_dtype_of(array.dtype), shape=list(array.shape))  # type: ignore[arg-type]

    @classmethod
    def from_torch(cls, tensor: Any) -> "TensorData":
        if not _HAVE_TORCH:
            raise ImportError("PyTorch is not installed.")
        if tensor.dtype == torch.bfloat16:
            arr = tensor.detach().float().contiguous().cpu().numpy()
        else:
            arr = tensor.detach().contiguous().cpu().numpy()
        return cls.from_numpy(arr)

    def to_numpy(self, pad_value: int = 0) -> np.ndarray:
        """The values as a numpy array (a sparse tensor is densified with ``pad_value``)."""
        if self.sparse_crow_indices is not None:
            assert self.sparse_col_indices is not None and self.shape is not None
            rows, cols = self.shape
            dense = np.full((rows, cols), pad_value, dtype=self._numpy.dtype)
            crow = self.sparse_crow_indices
            vals = self._numpy.ravel()
            for r in range(rows):
                for i in range(crow[r], crow[r + 1]):
                    dense[r, self.sparse_col_indices[i]] = vals[i]
            return dense
        return self._numpy

    def to_torch(self, pad_value: int = 0) -> Any:
        if not _HAVE_TORCH:
            raise ImportError("PyTorch is not installed. Cannot convert to torch tensor.")
        return torch.from_numpy(np.array(self.to_numpy(pad_value)))

    def tolist(self, pad_value: int = 0) -> List[Any]:
        return self.to_numpy(pad_value).tolist()

    def __len__(self) -> int:
        return int(self._numpy.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorData):
            return NotImplemented
        return (
            self.dtype == other.dtype
            and self.shape == other.shape
            and self.sparse_crow_indices == other.sparse_crow_indices
            and self.sparse_col_indices == other.sparse_col_indices
            and np.array_equal(self._numpy.ravel(), other._numpy.ravel())
        )

    def __repr__(self) -> str:
        return f"TensorData(dtype={self.dtype!r}, shape={self.shape!r}, data={self._numpy.ravel()[:8].tolist()}{'...' if self._numpy.size > 8 else ''})"

    def model_dump(self) -> Dict[str, Any]:
        return self._json()

    def _json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"data": self._numpy.ravel().tolist(), "dtype": self.dtype}
        if self.shape is not None:
            out["shape"] = self.shape
        if self.sparse_crow_indices is not None:
            out["sparse_crow_indices"] = self.sparse_crow_indices
            out["sparse_col_indices"] = self.sparse_col_indices
        return out

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "TensorData":
        return cls(
            data=d.get("data", []),
            dtype=d["dtype"],
            shape=d.get("shape"),
            sparse_crow_indices=d.get("sparse_crow_indices"),
            sparse_col_indices=d.get("sparse_col_indices"),
        )


LossFnInputs = Dict[str, TensorData]
LossFnOutput = Dict[str, TensorData]

# Field name -> wire dtype for plain Python lists (as the official SDK).
_KEY_TO_TYPE = {
    "target_tokens": "int64",
    "weights": "float32",
    "advantages": "float32",
    "logprobs": "float32",
    "clip_low_threshold": "float32",
    "clip_high_threshold": "float32",
    "sequence_ratio_mask": "float32",
}


def _to_tensor(key: str, value: Any) -> TensorData:
    if isinstance(value, TensorData):
        return value
    if _HAVE_TORCH and isinstance(value, torch.Tensor):
        return TensorData.from_torch(value)
    if isinstance(value, np.ndarray):
        return TensorData.from_numpy(value)
    if isinstance(value, ModelInput):  # tolerated by the official docs' examples
        return TensorData(data=value.to_ints(), dtype="int64")
    if isinstance(value, (list, tuple)):
        arr = np.asarray(value)
        if arr.dtype.kind in "fiub":
            target = _KEY_TO_TYPE.get(key, "float32" if arr.dtype.kind == "f" else "int64")
            return TensorData(data=arr.astype(_np_dtype(target)), dtype=target, shape=list(arr.shape))  # type: ignore[arg-type]
        if len(value) == 0:
            target = _KEY_TO_TYPE.get(key, "float32")
            return TensorData(data=[], dtype=target, shape=[0])  # type: ignore[arg-type]
        raise ValueError(f"{key} must be a rectangular numeric array")
    raise TypeError(f"Unsupported loss_fn_inputs value for {key!r}: {type(value).__name__}")


@dataclass
class Datum(_Model):
    """One training example: a model input and its loss inputs (lists, numpy arrays, torch
    tensors or ``TensorData``; converted to ``TensorData``)."""

    model_input: ModelInput
    loss_fn_inputs: LossFnInputs = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.model_input, Mapping):
            self.model_input = ModelInput(chunks=list(self.model_input.get("chunks", [])))
        self.loss_fn_inputs = {k: _to_tensor(k, v) for k, v in dict(self.loss_fn_inputs).items()}

    def _json(self) -> Dict[str, Any]:
        return {
            "model_input": self.model_input._json(),
            "loss_fn_inputs": {k: v._json() for k, v in self.loss_fn_inputs.items()},
        }

    def model_dump(self, exclude_none: bool = False) -> Dict[str, Any]:
        return self._json()


# ---- parameters --------------------------------------------------------------------------


@dataclass
class SamplingParams(_Model):
    max_tokens: Optional[int] = None
    seed: Optional[int] = None
    stop: Union[str, Sequence[str], Sequence[int], None] = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0

    def _json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "temperature": float(self.temperature),
            "top_k": int(self.top_k),
            "top_p": float(self.top_p),
        }
        if self.max_tokens is not None:
            out["max_tokens"] = int(self.max_tokens)
        if self.seed is not None:
            out["seed"] = int(self.seed)
        if self.stop is not None:
            out["stop"] = self.stop if isinstance(self.stop, str) else list(self.stop)
        return out


@dataclass
class AdamParams(_Model):
    learning_rate: float = 0.0001
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0

    def _json(self) -> Dict[str, Any]:
        return {k: float(v) for k, v in self.model_dump().items()}


@dataclass
class AdamOptimizerConfig(_Model):
    type: Literal["adamw"] = "adamw"


@dataclass
class LoraConfig(_Model):
    rank: int = 32
    seed: Optional[int] = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


# ---- responses ---------------------------------------------------------------------------


@dataclass
class ForwardBackwardOutput(_Model):
    loss_fn_output_type: str
    loss_fn_outputs: List[LossFnOutput]
    metrics: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "ForwardBackwardOutput":
        return cls(
            loss_fn_output_type=d.get("loss_fn_output_type", ""),
            loss_fn_outputs=[
                {k: TensorData._from_json(v) for k, v in out.items()} for out in d.get("loss_fn_outputs", [])
            ],
            metrics={k: float(v) for k, v in (d.get("metrics") or {}).items()},
        )


@dataclass
class OptimStepResponse(_Model):
    metrics: Optional[Dict[str, float]] = None


@dataclass
class SaveWeightsResponse(_Model):
    path: str
    type: Optional[str] = None


@dataclass
class SaveWeightsForSamplerResponse(_Model):
    path: str
    type: Optional[str] = None


@dataclass
class LoadWeightsResponse(_Model):
    path: Optional[str] = None
    model_id: Optional[str] = None
    type: Optional[str] = None


@dataclass
class SampledSequence(_Model):
    stop_reason: StopReason
    tokens: List[int]
    logprobs: Optional[List[float]] = None
    topk_logprobs: Optional[List[Optional[List[tuple]]]] = None
    sequence_id: Optional[str] = None

    @property
    def tokens_np(self) -> np.ndarray:
        return np.asarray(self.tokens, dtype=np.int64)

    @property
    def logprobs_np(self) -> Optional[np.ndarray]:
        return None if self.logprobs is None else np.asarray(self.logprobs, dtype=np.float32)

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "SampledSequence":
        topk = d.get("topk_logprobs")
        return cls(
            stop_reason=d.get("stop_reason", "stop"),
            tokens=list(d.get("tokens", [])),
            logprobs=d.get("logprobs"),
            topk_logprobs=[None if r is None else [tuple(p) for p in r] for r in topk] if topk is not None else None,
            sequence_id=d.get("sequence_id"),
        )


@dataclass
class SampleResponse(_Model):
    sequences: List[SampledSequence]
    prompt_logprobs: Optional[List[Optional[float]]] = None
    topk_prompt_logprobs: Optional[List[Optional[List[tuple]]]] = None
    prompt_cache_hit_tokens: int = 0
    type: str = "sample"

    @property
    def prompt_logprobs_np(self) -> Optional[np.ndarray]:
        if self.prompt_logprobs is None:
            return None
        return np.asarray([np.nan if x is None else x for x in self.prompt_logprobs], dtype=np.float32)

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "SampleResponse":
        topk = d.get("topk_prompt_logprobs")
        return cls(
            sequences=[SampledSequence._from_json(s) for s in d.get("sequences", [])],
            prompt_logprobs=d.get("prompt_logprobs"),
            topk_prompt_logprobs=[None if r is None else [tuple(p) for p in r] for r in topk] if topk is not None else None,
            prompt_cache_hit_tokens=int(d.get("prompt_cache_hit_tokens") or 0),
        )


@dataclass
class ModelData(_Model):
    arch: Optional[str] = None
    model_name: Optional[str] = None
    tokenizer_id: Optional[str] = None


@dataclass
class GetInfoResponse(_Model):
    model_data: ModelData
    model_id: str
    optimizer_config: Any = field(default_factory=AdamOptimizerConfig)
    is_lora: Optional[bool] = None
    lora_rank: Optional[int] = None
    model_name: Optional[str] = None
    type: Optional[str] = None

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "GetInfoResponse":
        oc = d.get("optimizer_config") or {"type": "adamw"}
        return cls(
            model_data=_build(ModelData, d.get("model_data") or {}),
            model_id=d["model_id"],
            optimizer_config=AdamOptimizerConfig() if oc.get("type") == "adamw" else oc,
            is_lora=d.get("is_lora"),
            lora_rank=d.get("lora_rank"),
            model_name=d.get("model_name"),
            type=d.get("type"),
        )


@dataclass
class SupportedModel(_Model):
    model_name: Optional[str] = None
    max_context_length: Optional[int] = None
    trainable: Optional[bool] = None
    sampleable: Optional[bool] = None


@dataclass
class GetServerCapabilitiesResponse(_Model):
    supported_models: List[SupportedModel]

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "GetServerCapabilitiesResponse":
        return cls(supported_models=[_build(SupportedModel, m) for m in d.get("supported_models", [])])


# ---- REST records ------------------------------------------------------------------------


@dataclass
class Checkpoint(_Model):
    checkpoint_id: str
    checkpoint_type: str
    time: Any
    tinker_path: str
    size_bytes: Optional[int] = None
    public: bool = False
    user_metadata: Optional[Dict[str, str]] = None
    expires_at: Any = None


@dataclass
class Cursor(_Model):
    offset: int = 0
    limit: int = 0
    total_count: int = 0


@dataclass
class TrainingRun(_Model):
    training_run_id: str
    base_model: str
    model_owner: Optional[str] = None
    is_lora: Optional[bool] = None
    corrupted: bool = False
    lora_rank: Optional[int] = None
    last_request_time: Any = None
    last_checkpoint: Optional[Checkpoint] = None
    last_sampler_checkpoint: Optional[Checkpoint] = None
    user_metadata: Optional[Dict[str, str]] = None

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "TrainingRun":
        d = dict(d)
        for k in ("last_checkpoint", "last_sampler_checkpoint"):
            if d.get(k) is not None:
                d[k] = _build(Checkpoint, d[k])
        return _build(cls, d)


@dataclass
class TrainingRunsResponse(_Model):
    training_runs: List[TrainingRun]
    cursor: Optional[Cursor] = None

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "TrainingRunsResponse":
        return cls(
            training_runs=[TrainingRun._from_json(r) for r in d.get("training_runs", [])],
            cursor=_build(Cursor, d.get("cursor")) if d.get("cursor") else None,
        )


@dataclass
class CheckpointsListResponse(_Model):
    checkpoints: List[Checkpoint]
    cursor: Optional[Cursor] = None

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "CheckpointsListResponse":
        return cls(
            checkpoints=[_build(Checkpoint, c) for c in d.get("checkpoints", [])],
            cursor=_build(Cursor, d.get("cursor")) if d.get("cursor") else None,
        )


@dataclass
class WeightsInfoResponse(_Model):
    base_model: str
    is_lora: bool = False
    lora_rank: Optional[int] = None
    train_unembed: Optional[bool] = None
    train_mlp: Optional[bool] = None
    train_attn: Optional[bool] = None


@dataclass
class ParsedCheckpointTinkerPath(_Model):
    tinker_path: str
    training_run_id: str
    checkpoint_type: str
    checkpoint_id: str

    @classmethod
    def from_tinker_path(cls, tinker_path: str) -> "ParsedCheckpointTinkerPath":
        """Parses ``tinker://{training_run_id}/{kind}/{name}`` with libtinkex's parser
        (``tinkex_tinker_path_parse``: the official SDK's rules); a ``ValueError``
        (:class:`tinkex.InvalidArgumentError`) names what is wrong."""
        from ._ffi import parse_tinker_path

        p = parse_tinker_path(tinker_path)
        kind = p["kind"]
        checkpoint_type = p.get("checkpoint_type") or _CHECKPOINT_TYPES.get(kind, kind)
        return cls(tinker_path, p["training_run_id"], checkpoint_type, p["checkpoint_id"])


# The wire ``checkpoint_type`` of a path kind, for a library whose parse result lacks it.
_CHECKPOINT_TYPES = {"weights": "training", "sampler_weights": "sampler", "external_weights": "external"}


# ---- events (tinkex extension) -----------------------------------------------------------


@dataclass
class Event(_Model):
    """An event of libtinkex (queue state, progress, retry, heartbeat warning, session
    expiry, telemetry overflow, summary): ``type`` is the JSON's ``type``; ``data`` the whole
    event object; ``request_id`` the request it is about, if any."""

    type: str
    data: Dict[str, Any]
    request_id: Optional[str] = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


# The sampling retry handler's configuration (also `tinkex.RetryConfig` and
# `tinkex.lib.retry_handler.RetryConfig`).
from .lib.retry_handler import RetryConfig  # noqa: E402
