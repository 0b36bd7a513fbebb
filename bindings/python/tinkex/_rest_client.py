"""RestClient: training runs and checkpoints (the official SDK's names and signatures)."""

from __future__ import annotations

from ctypes import byref, c_void_p
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from . import _ffi
from ._api_future import APIFuture
from ._ffi import Handle, check, parse_json
from ._lib import lib
from .types import (
    CheckpointsListResponse,
    GetServerCapabilitiesResponse,
    ParsedCheckpointTinkerPath,
    TrainingRun,
    TrainingRunsResponse,
    WeightsInfoResponse,
)

if TYPE_CHECKING:
    from ._service_client import ServiceClient


class RestClient:
    """Training runs and checkpoints. ``RestClient(base_url=, api_key=)`` or
    ``service_client.create_rest_client()``."""

    def __init__(
        self,
        _holder: Any = None,
        *,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        _handle: Optional[Handle] = None,
        _service: Optional[ServiceClient] = None,
    ) -> None:
        if _handle is None:
            from ._service_client import ServiceClient  # imports this module

            _service = ServiceClient(base_url=base_url, api_key=api_key)
            out = c_void_p()
            err = c_void_p()
            with _service._handle.use() as ptr:
                check(lib.tinkex_service_client_create_rest_client(ptr, byref(out), byref(err)), err)
            _handle = Handle(out.value, lib.tinkex_rest_client_free, "rest client")
        self._handle = _handle
        self._service = _service

    def _call(self, call: Any, args: Tuple[Any, ...], converter: Callable[[bytes], Any], label: str) -> APIFuture[Any]:
        with self._handle.use() as ptr:
            state = _ffi.submit(call, ptr, *args, converter=converter, label=label)
        return APIFuture(state)

    def get_server_capabilities(self) -> APIFuture[GetServerCapabilitiesResponse]:
        assert self._service is not None
        return APIFuture(self._service._capabilities_state())

    def list_training_runs(self, limit: int = 20, offset: int = 0, access_scope: str = "owned", project_id: Optional[str] = None) -> APIFuture[TrainingRunsResponse]:
        return self._call(
            lib.tinkex_rest_client_list_training_runs,
            (int(limit), int(offset)),
            lambda raw: TrainingRunsResponse._from_json(parse_json(raw)),
            "list_training_runs",
        )

    def get_training_run(self, training_run_id: str, access_scope: str = "owned") -> APIFuture[TrainingRun]:
        b = training_run_id.encode()
        return self._call(
            lib.tinkex_rest_client_get_training_run, (b, len(b)), lambda raw: TrainingRun._from_json(parse_json(raw)), "get_training_run"
        )

    def get_training_run_by_tinker_path(self, tinker_path: str, access_scope: str = "owned") -> APIFuture[TrainingRun]:
        return self.get_training_run(ParsedCheckpointTinkerPath.from_tinker_path(tinker_path).training_run_id)

    def list_checkpoints(self, training_run_id: str) -> APIFuture[CheckpointsListResponse]:
        b = training_run_id.encode()
        return self._call(
            lib.tinkex_rest_client_list_checkpoints,
            (b, len(b)),
            lambda raw: CheckpointsListResponse._from_json(parse_json(raw)),
            "list_checkpoints",
        )

    def list_user_checkpoints(self, limit: int = 100, offset: int = 0) -> APIFuture[CheckpointsListResponse]:
        return self._call(
            lib.tinkex_rest_client_list_user_checkpoints,
            (int(limit), int(offset)),
            lambda raw: CheckpointsListResponse._from_json(parse_json(raw)),
            "list_user_checkpoints",
        )

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        b = tinker_path.encode()
        return self._call(lib.tinkex_rest_client_delete_checkpoint, (b, len(b)), lambda raw: None, "delete_checkpoint")

    def delete_checkpoint(self, training_run_id: str, checkpoint_id: str) -> APIFuture[None]:
        return self.delete_checkpoint_from_tinker_path(f"tinker://{training_run_id}/{checkpoint_id}")

    def get_weights_info_by_tinker_path(self, tinker_path: str) -> APIFuture[WeightsInfoResponse]:
        b = tinker_path.encode()
        from .types import _build

        return self._call(
            lib.tinkex_rest_client_get_weights_info,
            (b, len(b)),
            lambda raw: _build(WeightsInfoResponse, parse_json(raw)),
            "get_weights_info",
        )

    def close(self) -> None:
        self._handle.close()
