"""A QBO connection's health: how long until it must be reconnected, and who was told.

Intuit ends a refresh token after 100 days unused, and every grant after a hard maximum
(5 years; qbo.md §8, §10). syncd refreshes hourly while it works, so it is the hard
maximum that comes: the admin is warned 30 and then 7 days before, once each, on the
retained connection state, `…/out/connection/warning` and the log. A refresh Intuit
refuses says "reconnect needed" the same ways at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.messages import ConnectionState, ConnectionWarning

WARN_DAYS = (30, 7)  # warned once each, the larger first


@dataclass(frozen=True, slots=True)
class Health:
    """Where a tenant's connection stands."""

    status: str  # connected, expiring, needs_reconnect
    expires_at: datetime | None
    days_left: int | None
    reason: str | None = None


def assess(now: datetime, expires_at: int | None) -> Health:
    """The health of a connection whose refresh token dies at `expires_at` (epoch s)."""
    if expires_at is None:
        return Health("connected", None, None)
    when = datetime.fromtimestamp(expires_at, UTC)
    days = int((when - now).total_seconds() // 86400)
    if days < 0:
        return Health("needs_reconnect", when, days, "the QBO authorization has ended")
    if days <= WARN_DAYS[0]:
        reason = f"the QBO authorization ends in {days} days: reconnect before then"
        return Health("expiring", when, days, reason)
    return Health("connected", when, days)


def due_warning(health: Health, warned: int | None) -> int | None:
    """The threshold (30 or 7 days) to warn of now, or None: each is said once."""
    if health.days_left is None or health.status != "expiring":
        return None
    crossed = [d for d in WARN_DAYS if health.days_left <= d]
    threshold = min(crossed) if crossed else None
    if threshold is None or (warned is not None and warned <= threshold):
        return None
    return threshold


def state_message(
    tenant: str, realm_id: str, health: Health, now: datetime
) -> ConnectionState:
    """The retained `P/T/connection` state."""
    data = {
        "status": health.status,
        "realm_id": realm_id,
        "expires_at": health.expires_at.isoformat() if health.expires_at else None,
        "days_left": health.days_left,
        "reason": health.reason,
    }
    return ConnectionState(tenant=tenant, at=now, data=data)


def warning_message(
    tenant: str, level: str, health: Health, now: datetime
) -> ConnectionWarning:
    """`P/T/out/connection/warning`: `30_days`, `7_days` or `reconnect_needed`."""
    data = {
        "level": level,
        "days_left": health.days_left,
        "expires_at": health.expires_at.isoformat() if health.expires_at else None,
        "reason": health.reason,
    }
    return ConnectionWarning(tenant=tenant, at=now, data=data)
