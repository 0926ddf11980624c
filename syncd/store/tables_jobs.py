"""The QBO job queue on SQLite: due jobs per realm in queue order, claims, postponements."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import orjson

from syncd.exceptions import FencedError
from syncd.models import (
    Fence,
    Job,
    JobStatus,
)
from syncd.store import rows
from syncd.store.database import many
from syncd.store.rows import UNFINISHED
from syncd.store.sql import Db, Sql
from syncd.store.tables_leases import check_fence

_JOB_COLS = "tenant, queue, kind, subject, status, attempts, next_attempt_at, payload, last_error"

_PENDING = JobStatus.PENDING.value


_ABSORBED = "absorbed by the same job queued again meanwhile"


class JobTables:
    """A SqliteStore's job queue."""

    _db: Db

    async def due_jobs(
        self,
        now: datetime,
        limit: int,
        skip: Collection[str] = (),
        only: Collection[str] | None = None,
    ) -> list[Job]:
        """Jobs to run now, never ahead of an earlier unfinished job of the same invoice.

        Up to `limit` of each tenant's (not of the tenants in `skip`; of those in `only`
        if given), oldest first: one realm's burst never hides another's work. In-flight
        jobs are due too: a crash left their outcome unclear.
        """
        sql = (
            f"SELECT id, {_JOB_COLS} FROM jobs j INDEXED BY jobs_waiting_tenant "
            f"WHERE j.tenant = ? AND j.status IN {UNFINISHED} "
            "AND j.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM jobs e WHERE "
            "e.tenant = j.tenant AND e.queue = j.queue AND e.id < j.id "
            f"AND e.status IN {UNFINISHED}) ORDER BY j.id LIMIT ?"
        )
        due: list[Job] = []
        async with self._db.read() as db:
            for tenant in await _waiting_tenants(db):
                if tenant in skip or (only is not None and tenant not in only):
                    continue
                async with db.execute(sql, (tenant, now.isoformat(), limit)) as cur:
                    due += [rows.job(r) for r in await cur.fetchall()]
        return due

    async def start_jobs(self, jobs: list[Job], fence: Fence | None = None) -> None:
        """Record the intent before the call (each job's new status and attempts).

        A claim: each job only from the attempts it was read at, under `fence`'s lease.
        FencedError, nothing written, when another replica claimed one meanwhile.
        """
        async with self._db.tx() as db:
            await check_fence(db, fence)
            claimed = await many(
                db,
                "UPDATE jobs SET status = ?, attempts = ? WHERE id = ? AND attempts = ?",
                [(j.status.value, j.attempts, j.id, j.attempts - 1) for j in jobs],
            )
            if claimed != len(jobs):
                raise FencedError("a job was claimed elsewhere meanwhile: none started")

    async def postpone_jobs(self, tenant: str, now: datetime, until: datetime) -> int:
        """Make a tenant's due jobs wait (its company is not connected); return how many.

        Only those due by `now`: jobs already waiting are not written again (every
        round used to rewrite every pending job of a disconnected tenant).
        """
        async with self._db.tx() as db:
            cur = await db.execute(
                # in-flight jobs too (a crash left them unclear): they were due again
                # at once, and the worker looped on them while the tenant waited
                f"UPDATE jobs SET next_attempt_at = ? WHERE tenant = ? AND status IN "
                f"{UNFINISHED} AND next_attempt_at <= ?",
                (until.isoformat(), tenant, now.isoformat()),
            )
            return int(cur.rowcount)

    async def jobs_due_now(self, tenant: str, now: datetime) -> None:
        """Make a tenant's waiting jobs due (its company was just reconnected)."""
        async with self._db.tx() as db:
            await db.execute(
                f"UPDATE jobs SET next_attempt_at = ? WHERE tenant = ? AND status = '{_PENDING}'",
                (now.isoformat(), tenant),
            )

    async def job(self, job_id: int) -> Job | None:
        """One job, by its id."""
        sql = f"SELECT id, {_JOB_COLS} FROM jobs WHERE id = ?"
        async with self._db.read() as db, db.execute(sql, (job_id,)) as cur:
            row = await cur.fetchone()
        return rows.job(row) if row else None

    async def jobs(self, tenant: str) -> list[Job]:
        """Every job of a tenant, oldest first."""
        sql = f"SELECT id, {_JOB_COLS} FROM jobs WHERE tenant = ? ORDER BY id"
        async with self._db.read() as db, db.execute(sql, (tenant,)) as cur:
            return [rows.job(r) for r in await cur.fetchall()]


async def write_jobs(db: Sql, jobs: list[Job]) -> None:
    """New jobs (a pending one of the same kind for the invoice absorbs them), updates."""
    new = [rows.job_row(j) for j in jobs if j.id is None]
    await many(
        db,
        f"INSERT INTO jobs ({_JOB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        new,
    )
    for job in (j for j in jobs if j.id is not None):
        if job.status is JobStatus.PENDING:
            # put back to wait while the same job was queued anew during its call (the
            # CRM changed the invoice): the new one does the same work, at its turn
            async with db.execute(_ABSORB, (job.attempts, _ABSORBED, job.id)) as cur:
                if cur.rowcount:
                    continue
        await db.execute(
            "UPDATE jobs SET status = ?, attempts = ?, next_attempt_at = ?, "
            "payload = ?, last_error = ? WHERE id = ?",
            (
                job.status.value,
                job.attempts,
                job.next_attempt_at.isoformat(),
                orjson.dumps(job.payload),
                job.last_error,
                job.id,
            ),
        )


# a job put back to pending while its twin waits: the twin does the work (checked, not
# caught: an error inside a transaction ends it on PostgreSQL)
_ABSORB = (
    "UPDATE jobs SET status = 'done', attempts = ?, last_error = ? WHERE id = ? "
    "AND EXISTS (SELECT 1 FROM jobs twin WHERE twin.tenant = jobs.tenant "
    "AND twin.queue = jobs.queue AND twin.kind = jobs.kind "
    "AND twin.subject = jobs.subject AND twin.status = 'pending' AND twin.id <> jobs.id)"
)


async def _waiting_tenants(db: Sql) -> list[str]:
    """The tenants with unfinished jobs: an index seek each (a loose index scan)."""
    sql = (
        "SELECT tenant FROM jobs INDEXED BY jobs_waiting_tenant "
        f"WHERE status IN {UNFINISHED} AND tenant > ? ORDER BY tenant LIMIT 1"
    )
    found: list[str] = []
    after = ""
    while True:
        async with db.execute(sql, (after,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return found
        after = str(row[0])
        found.append(after)
