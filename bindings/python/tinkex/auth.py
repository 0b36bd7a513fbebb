"""Credentials, as the official ``tinker.auth`` module: whether credentials are available and
the API key they resolve to. libtinkex resolves credentials itself (PROTOCOL.md 2.3:
``api_key`` argument, ``TINKER_API_KEY``, ``TINKER_CREDENTIAL_CMD``, then the default key of
``~/.tinker/credentials.json``); these helpers read the same sources, for code that checks
them before creating a client."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

from ._exceptions import TinkerError

__all__ = [
    "ApiKeyAuthProvider",
    "TinkerError",
    "get_tinker_token",
    "raise_if_tinker_not_accessible",
    "resolve_auth_provider",
    "tinker_has_credentials",
]


class ApiKeyAuthProvider:
    """Authenticates with an API key (``X-API-Key``)."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def __repr__(self) -> str:  # never the key
        return "<ApiKeyAuthProvider>"


def _credentials_file_key() -> Optional[str]:
    path = Path(os.environ.get("TINKER_CREDENTIALS_FILE", "~/.tinker/credentials.json")).expanduser()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict):
        default = data.get("default")
        keys = data.get("keys") if isinstance(data.get("keys"), dict) else data
        if isinstance(default, str) and isinstance(keys.get(default), str):
            return keys[default]
        if isinstance(data.get("api_key"), str):
            return data["api_key"]
    return None


def get_tinker_token(api_key: Optional[str] = None) -> Optional[str]:
    """The API key the client would use, or None."""
    if api_key:
        return api_key
    env = os.environ.get("TINKER_API_KEY")
    if env:
        return env
    cmd = os.environ.get("TINKER_CREDENTIAL_CMD")
    if cmd:
        try:
            out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        token = out.stdout.strip()
        return token or None
    return _credentials_file_key()


def tinker_has_credentials(api_key: Optional[str] = None) -> bool:
    """Whether some credential source gives an API key."""
    return get_tinker_token(api_key) is not None


def resolve_auth_provider(api_key: Optional[str] = None) -> ApiKeyAuthProvider:
    """The provider of the resolved API key; raises :class:`TinkerError` when none."""
    token = get_tinker_token(api_key)
    if token is None:
        raise TinkerError("no Tinker credentials: set TINKER_API_KEY or pass api_key=")
    return ApiKeyAuthProvider(token)


def raise_if_tinker_not_accessible(api_key: Optional[str] = None) -> None:
    """Raises :class:`TinkerError` when no credentials are available."""
    resolve_auth_provider(api_key)
