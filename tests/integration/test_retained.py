"""Issue 22 §3: a CRM message published retained acts once, ledger window or not.

A broker sends a topic's retained message again at every subscribe. syncd subscribed
with default options, so each reconnect replayed every retained `…/crm/#` message, and
once its ledger row had aged out (`keep_ledger_days`) it acted again: a second Sales
Receipt, a second e-mail.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from syncd.store.sql import DATABASE_ERRORS
from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.syncd_process import SyncdProcess, write_config

PAYMENT = {
    "payment_id": "RP-1",
    "customer": {"name": "Booker", "email": "booker@acme.test"},
    "amount": "40.00",
    "currency": "USD",
    "method": "card",
    "kind": "booking",
}


async def _until(db: DbView, sql: str, expected: object) -> None:
    def check() -> bool:
        with contextlib.suppress(*DATABASE_ERRORS):  # the store may not exist yet
            return db.query(sql) == expected
        return False

    await eventually(check)


async def test_a_retained_message_is_not_replayed_after_its_ledger_row_expires(
    tmp_path, broker
):
    """HL3, DC3: applied once live; after a restart with its ledger row gone, not again."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port))
    proc.start()
    db = DbView(workdir / "syncd.db")
    jobs = "SELECT kind, status FROM jobs WHERE subject = 'RP-1' ORDER BY id"
    payment = {**PAYMENT, "date": datetime.now(UTC).date().isoformat()}
    async with Crm(broker.port) as crm:
        await crm.send(
            "acme", "payment.recorded", payment, message_id="retained-1", retain=True
        )
        await _until(db, jobs, [("receipt.push", "pending")])
    proc.stop()
    # what retention does after keep_ledger_days: the job finished long ago, the
    # message's ledger row is gone
    db.execute("UPDATE jobs SET status = 'done' WHERE subject = 'RP-1'")
    db.execute("DELETE FROM messages WHERE message_id = 'retained-1'")

    proc.start()
    async with Crm(broker.port) as crm:
        # a later message: once it is applied, a replay sent at subscribe came before it
        await crm.send(
            "acme", "invoice.upserted", invoice("I-1", 1, "draft"), message_id="later"
        )
        await _until(
            db,
            "SELECT outcome FROM messages WHERE message_id = 'later'",
            [("applied",)],
        )
    proc.stop()
    assert db.query(jobs) == [("receipt.push", "done")]
    assert db.query("SELECT * FROM messages WHERE message_id = 'retained-1'") == []
