"""Each tenant's latest drift report (issue 27): one JSON document, replaced whole.

A check asked for (the API, the page) is a row's `requested_at`; whichever replica holds
the company sees it and runs the check, whose report clears a request made before it
started. Times are kept as fixed-width UTC text, so they compare as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from syncd.store.database import many
from syncd.store.sql import Db, Sql

FAILED = "failed: "  # a progress line that says the last check failed, and why


def stamp(at: datetime) -> str:
    """A time as fixed-width UTC text."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class DriftTables:
    """A SqlStore's drift reports and check requests."""

    _db: Db

    async def drift_report(self, tenant: str) -> bytes | None:
        """The tenant's latest drift report (JSON), if a check has run."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT report FROM drift WHERE tenant = ?", (tenant,)
            )
            row = await cur.fetchone()
        return bytes(row[0]) if row is not None and row[0] is not None else None

    async def drift_failed(self, tenant: str, started: datetime, reason: str) -> None:
        """A check that began at `started` failed: said, and the requests before it end."""
        async with self._db.tx() as db:
            await db.execute(
                "UPDATE drift SET progress = ?, requested_at = CASE WHEN "
                "requested_at <= ? THEN NULL ELSE requested_at END WHERE tenant = ?",
                (f"{FAILED}{reason}", stamp(started), tenant),
            )

    async def drift_open(self) -> dict[str, int]:
        """Each checked tenant's differences in its latest report."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT tenant, open FROM drift WHERE open IS NOT NULL"
            )
            found = await cur.fetchall()
        return {str(t): int(n) for t, n in found}

    async def request_drift_check(self, tenant: str, at: datetime, heal: bool) -> None:
        """Ask for a check now (whichever replica holds the company runs it)."""
        async with self._db.tx() as db:
            await db.execute(
                "INSERT INTO drift (tenant, requested_at, heal) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET requested_at = "
                "excluded.requested_at, heal = excluded.heal",
                (tenant, stamp(at), int(heal)),
            )

    async def drift_requests(self) -> dict[str, tuple[datetime, bool]]:
        """The checks asked for and not started since: tenant → (when, heal?)."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT tenant, requested_at, heal FROM drift "
                "WHERE requested_at IS NOT NULL"
            )
            found = await cur.fetchall()
        return {
            str(t): (datetime.fromisoformat(str(at)), bool(heal))
            for t, at, heal in found
        }

    async def drift_progress(self, tenant: str) -> str | None:
        """How far the running check is (a line for a person), if one runs."""
        async with self._db.read() as db:
            cur = await db.execute(
                "SELECT progress FROM drift WHERE tenant = ?", (tenant,)
            )
            row = await cur.fetchone()
        return str(row[0]) if row is not None and row[0] is not None else None

    async def set_drift_progress(self, tenant: str, progress: str | None) -> None:
        """Say how far the tenant's check is (None: none runs)."""
        async with self._db.tx() as db:
            await db.execute(
                "INSERT INTO drift (tenant, progress) VALUES (?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET progress = excluded.progress",
                (tenant, progress),
            )


async def write_drift(db: Sql, reports: Mapping[str, bytes]) -> None:
    """Replace the tenants' reports; a request made before a check started is done."""
    await many(
        db,
        "INSERT INTO drift (tenant, report, checked_at, open) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (tenant) DO UPDATE SET report = excluded.report, "
        "open = excluded.open, "
        "checked_at = excluded.checked_at, progress = NULL, requested_at = CASE WHEN "
        "drift.requested_at <= ? THEN NULL ELSE drift.requested_at END",
        [
            (
                tenant,
                report,
                stamp(_at(report, "checked_at")),
                len(orjson.loads(report)["differences"]),
                stamp(_at(report, "started_at")),
            )
            for tenant, report in reports.items()
        ],
    )


def _at(report: bytes, key: str) -> datetime:
    return datetime.fromisoformat(orjson.loads(report)[key])
