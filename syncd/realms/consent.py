"""The consent's rules: how long a state lives, whose a company is, what a reconnect keeps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from syncd.exceptions import ConnectError
from syncd.models import Connection

STATE_TTL = timedelta(minutes=10)  # an OAuth state, from /oauth/connect to the callback


def taken(realm_id: str, tenant: str, holder: str | None) -> ConnectError:
    """A company another tenant holds: refused (409), naming who holds it."""
    who = f"tenant {holder!r}" if holder else "another tenant"
    return ConnectError(
        f"QBO company {realm_id} is already connected to {who}: a company belongs to "
        f"one tenant, so {tenant!r} was not connected. Consent with {tenant!r}'s own "
        f"company, or disconnect {who} first.",
        409,
    )


def checkpoint(conn: Connection | None, realm_id: str) -> dict[str, Any]:
    """What a reconnection to the same company keeps: how far reconciliation got.

    Before any pass, that is the earlier connection's time.

    Without it, a reconnection started CDC from the new connection's time, and what
    changed in QBO while the tenant waited to be reconnected never reached the CRM
    (found by the chaos run).
    """
    if conn is None or conn.realm_id != realm_id:
        return {}
    kept = conn.preferences.get("reconciled_to") or conn.connected_at.isoformat()
    return {"reconciled_to": kept}
