"""Issue 25: a company's QBO quota goes with its lease, so two replicas never pass it.

The holder keeps in the lease, at each beat, the requests of its minute and a grant of
what it may send before the next beat (it sends no more). The replica that takes the
realm next, after a clean hand-over or a crash, counts that record as its own before it
sends anything. Real leases on a real SQLite store; the limiters are the ones syncd's
QBO clients use.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from syncd.qbo import RealmLimiter
from syncd.replicas import Replica
from syncd.store.sqlite import SqliteStore
from tests.qbo.test_client import goes
from tests.test_inbox import NOW

LEASE = timedelta(seconds=30)  # a beat every 10 s
MINUTE = 40  # requests a minute
BATCHES = 4


class Quotas:
    """One replica's limiters, by tenant (syncd's `Connections` does this)."""

    def __init__(self) -> None:
        self.limiters: dict[str, RealmLimiter] = {}

    def limiter(self, tenant: str) -> RealmLimiter:
        return self.limiters.setdefault(
            tenant, RealmLimiter(MINUTE, batches_per_minute=BATCHES, window=60)
        )

    def quota_record(self, tenant: str, ahead: float) -> str:
        return json.dumps(self.limiter(tenant).record(ahead))

    def quota_grant(self, tenant: str, record: str) -> None:
        self.limiter(tenant).grant(json.loads(record))

    def quota_charge(self, tenant: str, record: str | None) -> None:
        self.limiter(tenant).charge(json.loads(record) if record else {})


async def sent(limiter: RealmLimiter, count: int, batch: bool = False) -> int:
    """How many of `count` requests go now (the rest would wait)."""
    for went in range(count):
        if not await goes(limiter, batch):
            return went
    return count


def replica(
    name: str, store: SqliteStore, clock: dict[str, datetime], quotas: Quotas
) -> Replica:
    return Replica(
        name, store, lambda: ["acme"], lambda: clock["now"], lease=LEASE, quotas=quotas
    )


async def test_a_realm_taken_over_after_a_crash_counts_what_its_holder_spent(
    store: SqliteStore,
) -> None:
    clock: dict[str, Any] = {"now": NOW}
    qa, qb = Quotas(), Quotas()
    a, b = replica("a", store, clock, qa), replica("b", store, clock, qb)
    await a.beat()
    assert a.owned() == ["acme"]
    # a's grant until its next beat: twice the quota's pace over 10 s, 14 requests
    assert await sent(qa.limiter("acme"), 20) == 14
    await a.beat()  # kept: 14 sent; a new grant of 14 ahead
    assert await sent(qa.limiter("acme"), 5) == 5
    # a dies; b takes the realm once a's lease has expired
    clock["now"] += LEASE + timedelta(seconds=1)
    await b.beat()
    assert b.owned() == ["acme"]
    # b counts a's 14 and its whole grant ahead (14: a's 5 and what it might have
    # sent): 28 of the minute's 40; b's own grant is 14, of which 40 - 28 = 12 fit
    assert await sent(qb.limiter("acme"), 20) == 12
    # two replicas together in that minute: at most a's 19 + b's 12 = 31 ≤ 40


async def test_a_clean_stop_hands_over_what_was_spent(store: SqliteStore) -> None:
    clock: dict[str, Any] = {"now": NOW}
    qa, qb = Quotas(), Quotas()
    a, b = replica("a", store, clock, qa), replica("b", store, clock, qb)
    await a.beat()
    assert await sent(qa.limiter("acme"), 2, batch=True) == 2
    assert await sent(qa.limiter("acme"), 12) == 12  # the grant's 14, 2 were batches
    await a.beat()
    assert await sent(qa.limiter("acme"), 14) == 14
    await a.leave()  # its record (28 sent, nothing ahead): b may take it at once
    await b.beat()
    assert b.owned() == ["acme"]
    limiter = qb.limiter("acme")
    assert await sent(limiter, 40) == 40 - 28  # fewer than b's grant of 14
    assert limiter.batch_free()  # 2 of the minute's 4 batches spent


async def test_a_new_holder_sends_nothing_before_its_grant_is_kept(
    store: SqliteStore,
) -> None:
    """Until its own record is in the lease, a holder that just took a realm waits."""
    qa = Quotas()
    limiter = qa.limiter("acme")
    qa.quota_charge("acme", None)  # taken: nothing counted, nothing granted yet
    assert await sent(limiter, 1) == 0
    qa.quota_grant("acme", qa.quota_record("acme", 10))
    assert await sent(limiter, 1) == 1


async def test_a_replica_restarted_under_its_name_counts_what_it_spent_before(
    store: SqliteStore,
) -> None:
    """SIGKILLed and back at once: its leases are still its own, its minute is not new."""
    clock: dict[str, Any] = {"now": NOW}
    before = Quotas()
    a = replica("a", store, clock, before)
    await a.beat()
    assert await sent(before.limiter("acme"), 14) == 14
    await a.beat()
    after = Quotas()
    again = replica("a", store, clock, after)
    await again.beat()
    assert again.owned() == ["acme"]
    assert await sent(after.limiter("acme"), 40) == 40 - 28


async def test_a_realm_given_back_promises_nothing_more(store: SqliteStore) -> None:
    """A replica joins: the realm handed to it carries what was sent, no grant ahead.

    The giver keeps to that (it sends nothing more there), so the taker waits only for
    requests that were really sent, not for a grant that will never be used.
    """
    clock: dict[str, Any] = {"now": NOW}
    qa, qb = Quotas(), Quotas()

    def named(name: str, quotas: Quotas) -> Replica:
        return Replica(
            name,
            store,
            lambda: ["acme", "beta"],
            lambda: clock["now"],
            lease=LEASE,
            quotas=quotas,
        )

    a, b = named("a", qa), named("b", qb)
    await a.beat()
    assert a.owned() == ["acme", "beta"]
    assert await sent(qa.limiter("beta"), 14) == 14
    await a.beat()
    assert await sent(qa.limiter("beta"), 14) == 14  # 28 in the minute
    await b.beat()  # b is seen; nothing free yet
    await a.beat()  # a's share is one realm now: beta goes back
    assert a.owned() == ["acme"]
    assert await sent(qa.limiter("beta"), 1) == 0  # a sends nothing more there
    await b.beat()
    assert b.owned() == ["beta"]
    assert await sent(qb.limiter("beta"), 40) == 40 - 28
