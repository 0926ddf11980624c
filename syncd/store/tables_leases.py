"""Replicas and their leases (issue 25): who is alive, who runs which realm, who leads.

A lease row names one piece of work that must run in one place at a time (a realm's
QBO side, the leader's chores). Its epoch grows each time it changes hands, so work
done under an older epoch is refused at commit (`fence`). Rows are locked in name
order, so two replicas balancing at once never deadlock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from syncd.exceptions import FencedError
from syncd.models import Fence, Held
from syncd.store import rows
from syncd.store.database import many, rows_among
from syncd.store.sql import Db, Sql

_TAKE = (
    "UPDATE leases SET owner = ?, epoch = epoch + 1, expires_at = ? "
    "WHERE name = ? AND (owner IS NULL OR expires_at <= ?)"
)


class LeaseTables:
    """A store's replicas and leases."""

    _db: Db

    async def beat(self, replica: str, now: datetime, ttl: timedelta) -> list[str]:
        """Say `replica` lives; the replicas seen within `ttl`, itself included."""
        async with self._db.tx() as db:
            await db.execute(
                "INSERT INTO replicas VALUES (?, ?) ON CONFLICT (name) "
                "DO UPDATE SET seen_at = excluded.seen_at",
                (replica, now.isoformat()),
            )
            sql = "SELECT name FROM replicas WHERE seen_at > ? ORDER BY name"
            async with db.execute(sql, ((now - ttl).isoformat(),)) as cur:
                return [str(r[0]) for r in await cur.fetchall()]

    async def hold(
        self,
        replica: str,
        names: Sequence[str],
        share: int,
        now: datetime,
        ttl: timedelta,
        busy: Collection[str] = (),
        spent: Mapping[str, str] = {},
    ) -> dict[str, Held]:
        """Hold `share` of the leases `names`: name → as held.

        Renews the replica's own (up to `share`, and those `busy` beyond it: work under
        them is under way), gives back the rest at once, and takes free or expired ones
        until it holds `share`. Each of its own keeps its `spent` record (the quota as
        spent so far); each comes with the record kept before this call (for one just
        taken, its last holder's; a replica restarted under the same name gets its
        former self's).
        """
        at, until = now.isoformat(), (now + ttl).isoformat()
        ordered = sorted(set(names))
        async with self._db.tx() as db:
            await many(
                db,
                "INSERT INTO leases (name, owner, epoch, expires_at) "
                "VALUES (?, NULL, 0, ?) ON CONFLICT (name) DO NOTHING",
                [(n, at) for n in ordered],
            )
            found = await rows_among(
                db,
                "SELECT name, owner, expires_at, spent FROM leases "
                "WHERE name IN ({among})",
                [],
                ordered,
            )
            mine = sorted(str(n) for n, owner, _, _ in found if owner == replica)
            keep = mine[:share] + [n for n in mine[share:] if n in busy]
            give = [n for n in mine if n not in keep]
            await many(
                db,
                "UPDATE leases SET expires_at = ?, spent = COALESCE(?, spent) "
                "WHERE name = ? AND owner = ?",
                [(until, spent.get(n), n, replica) for n in keep],
            )
            await many(
                db,
                "UPDATE leases SET owner = NULL, expires_at = ?, "
                "spent = COALESCE(?, spent) WHERE name = ? AND owner = ?",
                [(at, spent.get(n), n, replica) for n in give],
            )
            free = {
                str(n): owner is not None
                for n, owner, expires, _ in found
                if owner != replica and (owner is None or rows.when(expires) <= now)
            }
            records = {str(n): record for n, _, _, record in found}
            taken_over: set[str] = set()
            for name in sorted(free)[: max(0, share - len(keep))]:
                cur = await db.execute(_TAKE, (replica, until, name, at))
                if cur.rowcount:
                    keep.append(name)
                    if free[name]:
                        taken_over.add(name)
            held = await rows_among(
                db,
                "SELECT name, epoch FROM leases WHERE owner = ? AND name IN ({among})",
                [replica],
                sorted(keep),
            )
        return {
            str(n): Held(int(e), str(n) in taken_over, records.get(str(n)))
            for n, e in held
        }

    async def release(
        self, replica: str, now: datetime, spent: Mapping[str, str] = {}
    ) -> None:
        """Give back every lease of `replica` at once (it stops): others take them now.

        Each keeps its `spent` record for the next holder.
        """
        async with self._db.tx() as db:
            await _keep_spent(db, replica, spent)
            await db.execute(
                "UPDATE leases SET owner = NULL, expires_at = ? WHERE owner = ?",
                (now.isoformat(), replica),
            )
            await db.execute("DELETE FROM replicas WHERE name = ?", (replica,))

    async def keep_spent(self, replica: str, spent: Mapping[str, str]) -> None:
        """Keep `spent` records in the leases `replica` holds (name → record)."""
        async with self._db.tx() as db:
            await _keep_spent(db, replica, spent)

    async def leases(self) -> list[tuple[str, str | None, int, datetime]]:
        """Every lease: name, owner (None when free), epoch, until when."""
        sql = "SELECT name, owner, epoch, expires_at FROM leases ORDER BY name"
        async with self._db.read() as db, db.execute(sql) as cur:
            return [
                (str(n), o, int(e), rows.when(x)) for n, o, e, x in await cur.fetchall()
            ]


async def check_fence(db: Sql, fence: Fence | None) -> None:
    """FencedError unless `fence`'s lease is still held at its epoch (the row locked)."""
    if fence is None:
        return
    cur = await db.execute(
        "UPDATE leases SET epoch = epoch WHERE name = ? AND owner = ? AND epoch = ?",
        (fence.name, fence.owner, fence.epoch),
    )
    if cur.rowcount != 1:
        raise FencedError(f"the lease {fence.name} was taken over: nothing written")


async def _keep_spent(db: Sql, replica: str, spent: Mapping[str, str]) -> None:
    await many(
        db,
        "UPDATE leases SET spent = ? WHERE name = ? AND owner = ?",
        [(record, name, replica) for name, record in spent.items()],
    )
