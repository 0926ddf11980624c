"""Opaque page cursors: where the last page ended, in a form clients pass back as is."""

from __future__ import annotations

import base64
import binascii

import orjson


def encode(updated_at: str, invoice_id: str) -> str:
    """The cursor after the invoice last changed at `updated_at`."""
    return base64.urlsafe_b64encode(orjson.dumps([updated_at, invoice_id])).decode()


def decode(text: str) -> tuple[str, str]:
    """The (updated_at, invoice_id) a cursor names; ValueError if it is not one."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ValueError("after: not a cursor this API gave") from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, str) for v in value)
    ):
        raise ValueError("after: not a cursor this API gave")
    return value[0], value[1]
