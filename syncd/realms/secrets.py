"""Secrets at rest: QBO tokens are encrypted with Fernet under SYNCD_SECRET_KEY."""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from syncd.exceptions import ConfigError, StoreError


class Cipher:
    """Encrypts and decrypts small JSON values."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except ValueError as exc:
            raise ConfigError(
                [
                    "SYNCD_SECRET_KEY: must be a Fernet key (URL-safe base64 of 32 random bytes)"
                ]
            ) from exc

    def seal(self, value: dict[str, Any]) -> bytes:
        """Encrypt a JSON value."""
        return self._fernet.encrypt(orjson.dumps(value))

    def open(self, blob: bytes) -> dict[str, Any]:
        """Decrypt a sealed value; a wrong key is a StoreError, never silent garbage."""
        try:
            value: dict[str, Any] = orjson.loads(self._fernet.decrypt(blob))
        except InvalidToken as exc:
            raise StoreError(
                "stored QBO tokens cannot be decrypted: wrong SYNCD_SECRET_KEY?"
            ) from exc
        return value
