"""syncd's QBO client library.

It imports only the stdlib, aiohttp, authlib, simplejson and syncd.exceptions.
"""

from __future__ import annotations

from syncd.qbo import queries
from syncd.qbo.auth import (
    App,
    Endpoints,
    MemoryTokens,
    QboAuth,
    RefreshGate,
    StoredToken,
    TokenStore,
    authorize_url,
    exchange_code,
    revoke,
)
from syncd.qbo.client import BATCH_ITEMS, BatchItem, QboClient
from syncd.qbo.throttle import RealmLimiter, spare

__all__ = [
    "BATCH_ITEMS",
    "App",
    "BatchItem",
    "Endpoints",
    "MemoryTokens",
    "QboAuth",
    "QboClient",
    "RealmLimiter",
    "RefreshGate",
    "StoredToken",
    "TokenStore",
    "authorize_url",
    "exchange_code",
    "queries",
    "revoke",
    "spare",
]
