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


from ._record import _REQUIRED, _Record, ValidationError  # noqa: E402


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


def _dmel_length(data: bytes) -> int:
    """Dimension 0 of a serialized TensorContainer's shape, read from its header without
    decoding the payload (PROTOCOL.md 20.1)."""
    pos = 0
    if not data:
        raise ValueError("DmelChunk: empty TensorContainer")
    if data[0] == 254:  # constant-tensor marker
        pos = 1
    if pos >= len(data):
        raise ValueError("DmelChunk: truncated TensorContainer header")
    if data[pos] > 7:
        raise ValueError(f"DmelChunk: unknown TensorContainer dtype byte {data[pos]}")
    pos += 1

    def varint() -> int:
        nonlocal pos
        value = 0
        shift = 0
        while True:
            if pos >= len(data):
                raise ValueError("DmelChunk: truncated TensorContainer header")
            b = data[pos]
            pos += 1
            if shift > 56 and (b & 0x7F) >> (63 - shift):
                raise ValueError("DmelChunk: TensorContainer varint longer than 63 bits")
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("DmelChunk: TensorContainer varint longer than 63 bits")

    ndim = varint()
    if ndim < 1:
        raise ValueError("DmelChunk: TensorContainer has no dimension 0")
    return varint()


@dataclass
class DmelChunk(_Model):
    """Audio as discretised mel frames: ``dmel`` is a serialized TensorContainer (raw bytes,
    or base64 text); its token length is dimension 0 of the container's shape (20.1)."""

    dmel: Union[bytes, str]
    type: Literal["dmel"] = "dmel"

    def _bytes(self) -> bytes:
        d = self.dmel
        if isinstance(d, str):
            return base64.b64decode(d)
        return bytes(d)

    @property
    def length(self) -> int:
        return _dmel_length(self._bytes())

    def _json(self) -> Dict[str, Any]:
        return {"type": "dmel", "dmel": base64.b64encode(self._bytes()).decode()}


ModelInputChunk = Union[EncodedTextChunk, ImageAssetPointerChunk, ImageChunk, DmelChunk]


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
    if t == "dmel":
        return DmelChunk(dmel=d["dmel"])
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
    def model_validate(cls, obj: Any) -> "TensorData":
        """A ``TensorData`` from its JSON form ``{"data", "dtype", "shape"?,
        "sparse_crow_indices"?, "sparse_col_indices"?}`` (or a ``TensorData``, returned as
        is), as the official pydantic model validates it; ``ValidationError`` (a
        ``ValueError``) when ``data`` or ``dtype`` is missing or malformed."""
        if isinstance(obj, TensorData):
            return obj
        if not isinstance(obj, Mapping):
            raise ValidationError(f"TensorData: expected an object, got {type(obj).__name__}")
        unknown = set(obj) - {"data", "dtype", "shape", "sparse_crow_indices", "sparse_col_indices"}
        if unknown:
            raise ValidationError(f"TensorData: unknown field(s) {sorted(unknown)}")
        for key in ("data", "dtype"):
            if key not in obj:
                raise ValidationError(f"TensorData.{key}: field required")
        if obj["dtype"] not in ("int64", "float32"):
            raise ValidationError(f"TensorData.dtype: expected 'int64' or 'float32', got {obj['dtype']!r}")
        try:
            return cls._from_json(obj)
        except (TypeError, ValueError) as e:
            raise ValidationError(f"TensorData: {e}") from None

    @classmethod
    def model_validate_json(cls, data: Union[str, bytes]) -> "TensorData":
        """``model_validate`` of a JSON text."""
        import json

        return cls.model_validate(json.loads(data))

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
    if isinstance(value, Mapping):  # TensorData JSON, as the official pydantic model accepts
        return TensorData.model_validate(value)
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


def _check_tiling(kwarg: str, spans: Sequence[Any], expected: int) -> None:
    total = sum(span.length for span in spans)
    if total != expected:
        raise ValueError(
            f"with_provenance {kwarg} spans cover {total} positions but the field has {expected}; "
            "the runs must tile it exactly"
        )


class _Span:
    """A run of ``length`` tokens at ``offset`` of the sequence ``sequence_id``."""

    __slots__ = ("sequence_id", "offset", "length")

    def __init__(self, *, sequence_id: str, offset: int = 0, length: int) -> None:
        if length < 0:
            raise ValueError(f"{type(self).__name__}.length must be >= 0, got {length}")
        if not sequence_id:
            raise ValueError(f"{type(self).__name__}.sequence_id must be non-empty")
        if offset < 0:
            raise ValueError(f"{type(self).__name__}.offset must be >= 0, got {offset}")
        self.sequence_id = sequence_id
        self.offset = int(offset)
        self.length = int(length)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (self.sequence_id, self.offset, self.length) == (
            other.sequence_id,  # type: ignore[attr-defined]
            other.offset,  # type: ignore[attr-defined]
            other.length,  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.sequence_id, self.offset, self.length))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sequence_id={self.sequence_id!r}, offset={self.offset}, length={self.length})"


class PromptProvenanceSpan(_Span):
    """Datum positions that are ``[offset, offset + length)`` of a request's prompt."""


class SampledProvenanceSpan(_Span):
    """Datum positions that are ``[offset, offset + length)`` of a sampled sequence."""


ProvenanceSpans = List[Union[PromptProvenanceSpan, SampledProvenanceSpan]]


@dataclass
class Datum(_Model):
    """One training example: a model input and its loss inputs (lists, numpy arrays, torch
    tensors, ``TensorData`` or TensorData JSON ``{"data", "dtype", "shape"}``; converted to
    ``TensorData``). ``Datum.model_validate`` builds one from its JSON form."""

    model_input: ModelInput
    loss_fn_inputs: LossFnInputs = field(default_factory=dict)
    #: Provenance of the input tokens (runs tiling ``model_input``); client-side only.
    model_input_spans: Optional[List[Any]] = None
    #: Provenance of the loss rows (runs tiling ``loss_fn_inputs["target_tokens"]``).
    loss_fn_input_spans: Optional[List[Any]] = None

    def __post_init__(self) -> None:
        if isinstance(self.model_input, Mapping):
            self.model_input = ModelInput(chunks=list(self.model_input.get("chunks", [])))
        self.loss_fn_inputs = {k: _to_tensor(k, v) for k, v in dict(self.loss_fn_inputs).items()}
        for name in ("model_input_spans", "loss_fn_input_spans"):
            for span in getattr(self, name) or ():
                if not isinstance(span, (PromptProvenanceSpan, SampledProvenanceSpan)):
                    raise TypeError(
                        f"{name} entries must be PromptProvenanceSpan or SampledProvenanceSpan, got {type(span).__name__}"
                    )
        if (self.model_input_spans is None) != (self.loss_fn_input_spans is None):
            raise AssertionError("provenance comes as a pair: set both span lists or neither")

    def with_provenance(self, model_input: List[Any], loss_fn_inputs: List[Any]) -> "Datum":
        """A copy carrying provenance spans for the input tokens and the loss rows; each
        list must tile its field exactly."""
        _check_tiling("model_input", model_input, self.model_input.length)
        tt = self.loss_fn_inputs.get("target_tokens")
        if tt is not None and tt.shape is not None and len(tt.shape) == 1:
            _check_tiling("loss_fn_inputs", loss_fn_inputs, tt.shape[0])
        return dataclasses.replace(self, model_input_spans=list(model_input), loss_fn_input_spans=list(loss_fn_inputs))

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


class AdamOptimizerConfig(_Record):
    """The AdamW optimizer family (the default of ``create_lora_training_client``)."""

    _fields = (("type", "adamw"),)
    _strict = True


class DimuonOptimizerConfig(_Record):
    """The Dimuon optimizer family (``create_lora_training_client(optimizer=...)``); steps
    then take :class:`DimuonParams`."""

    _fields = (("type", "dimuon"), ("version", 1))
    _strict = True


class DimuonParams(_Record):
    """Parameters of one Dimuon optimizer step (NaN/Inf are rejected by libtinkex)."""

    _fields = (("type", "dimuon"), ("learning_rate", _REQUIRED), ("grad_clip_norm", 0.0), ("beta1", 0.9))
    _strict = True


#: Any optimizer family's configuration (``create_lora_training_client(optimizer=...)``).
OptimizerConfig = Union[AdamOptimizerConfig, DimuonOptimizerConfig]
#: Any optimizer step's parameters (``TrainingClient.optim_step``).
OptimParams = Union[AdamParams, DimuonParams]


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


def _topk_np(rows: Optional[List[Any]]) -> Optional[Any]:
    if rows is None:
        return None
    k = max((len(r) for r in rows if r), default=0)
    ids = np.zeros((len(rows), k), dtype=np.int64)
    lps = np.full((len(rows), k), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        for j, (t, lp) in enumerate(r or ()):
            ids[i, j] = t
            lps[i, j] = lp
    return ids, lps


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

    @property
    def topk_logprobs_np(self) -> Optional[Any]:
        """The top-k logprobs as (ids int64 [T, k], logprobs float32 [T, k]); None if absent."""
        return _topk_np(self.topk_logprobs)

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
    #: Logprobs of the ids of ``sample(target_prompt_logprobs=...)`` (float32 ``[len(prompt) - 1, K]``).
    target_prompt_logprobs: Optional[TensorData] = None
    #: The draws ``sample(prompt_alt_tokens_k=k)`` asked for.
    prompt_alt_tokens: Optional["PromptAltTokens"] = None

    @property
    def topk_prompt_logprobs_np(self) -> Optional[Any]:
        """The prompt's top-k logprobs as (ids int64 [T, k], logprobs float32 [T, k])."""
        return _topk_np(self.topk_prompt_logprobs)

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
            target_prompt_logprobs=TensorData._from_json(d["target_prompt_logprobs"]) if d.get("target_prompt_logprobs") else None,
            prompt_alt_tokens=PromptAltTokens._from_json(d["prompt_alt_tokens"]) if d.get("prompt_alt_tokens") else None,
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


# ---- REST records (generated: _types_generated.py) --------------------------------------


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


# ---- the rest of the official names -------------------------------------------------------


@dataclass(frozen=True)
class PromptAltTokens:
    """Independent draws from the next-token distribution at every prompt position after
    the first: ``tokens`` (int64) and ``logprobs`` (float32), both ``[len(prompt) - 1, k]``."""

    tokens: TensorData
    logprobs: TensorData

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> "PromptAltTokens":
        return cls(tokens=TensorData._from_json(d["tokens"]), logprobs=TensorData._from_json(d["logprobs"]))


class RequestErrorCategory(str, enum.Enum):
    """The category of a failed request (``RequestFailedError.category``)."""

    Unknown = "unknown"
    Server = "server"
    User = "user"

    def __str__(self) -> str:
        return self.value


#: A training run / model id.
ModelID = str
#: A server request id.
RequestID = str


@dataclass
class ForwardBackwardInput(_Model):
    """The input of a forward or forward/backward pass."""

    data: List[Datum]
    loss_fn: str
    loss_fn_config: Optional[Mapping[str, Union[float, str]]] = None


@dataclass
class ForwardBackwardRequest(_Model):
    forward_backward_input: ForwardBackwardInput
    model_id: str
    seq_id: Optional[int] = None


@dataclass
class ForwardRequest(_Model):
    forward_input: ForwardBackwardInput
    model_id: str
    seq_id: Optional[int] = None


from ._types_generated import *  # noqa: E402,F401,F403
from ._types_generated import __all__ as _GENERATED  # noqa: E402
from . import _types_generated as _g  # noqa: E402

CustomLossInputRank = Literal[0, 1, 2]
ClientSessionFinishReasonType = Literal["success", "errored", "interrupted"]
EventType = Literal["SESSION_START", "SESSION_END", "UNHANDLED_EXCEPTION", "GENERIC_EVENT"]
Severity = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
BillingEventInfo = Union[
    _g.TrainingBillingEvent,
    _g.SamplingPrefillBillingEvent,
    _g.SamplingSampleBillingEvent,
    _g.CheckpointBillingEvent,
    _g.StorageBillingEvent,
]
ClientSessionFinishReason = Union[_g.ClientSessionFinishSuccess, _g.ClientSessionFinishErrored, _g.ClientSessionFinishInterrupted]
SessionFailedReason = Union[_g.SessionFailedRequestReason, _g.SessionFailedTrainingRunReason, _g.SessionFailedSamplingSessionReason]
SessionStatus = Union[_g.SessionFailed, _g.SessionCancelled, _g.ClientSessionFinished, _g.SessionActive]
SessionStatusQuery = Union[
    _g.ActiveSessionStatusQuery, _g.CancelledSessionStatusQuery, _g.FailedSessionStatusQuery, _g.ClientFinishedSessionStatusQuery
]
SearchOwner = Union[_g.OwnSearchOwner, _g.AccessibleSearchOwner, _g.UserSearchOwner]
FutureCompletion = Union[_g.FutureFinished, _g.FutureFailed]
TelemetryEvent = Union[_g.SessionStartEvent, _g.SessionEndEvent, _g.UnhandledExceptionEvent]
FutureRetrieveResponse = Union[
    ForwardBackwardOutput,
    OptimStepResponse,
    SaveWeightsResponse,
    LoadWeightsResponse,
    SaveWeightsForSamplerResponse,
    _g.SaveWeightsExternalResponse,
    _g.CreateModelResponse,
    _g.UnloadModelResponse,
    _g.RequestFailedResponse,
]

__all__ += list(_GENERATED) + [
    "DmelChunk",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "OptimizerConfig",
    "OptimParams",
    "PromptProvenanceSpan",
    "SampledProvenanceSpan",
    "ProvenanceSpans",
    "PromptAltTokens",
    "RequestErrorCategory",
    "ModelID",
    "RequestID",
    "ForwardBackwardInput",
    "ForwardBackwardRequest",
    "ForwardRequest",
    "CustomLossInputRank",
    "ClientSessionFinishReasonType",
    "EventType",
    "Severity",
    "BillingEventInfo",
    "ClientSessionFinishReason",
    "SessionFailedReason",
    "SessionStatus",
    "SessionStatusQuery",
    "SearchOwner",
    "FutureCompletion",
    "TelemetryEvent",
    "FutureRetrieveResponse",
]


# The sampling retry handler's configuration (also `tinkex.RetryConfig` and
# `tinkex.lib.retry_handler.RetryConfig`).
from .lib.retry_handler import RetryConfig  # noqa: E402
