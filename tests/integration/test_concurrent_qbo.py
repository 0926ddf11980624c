"""QBO changed under syncd's own write (RO6, OD5): found by the chaos run, guarded here.

The sandbox of these tests sends no webhooks, so syncd learns of a bookkeeper's change
only through its own writes (or a refresh): exactly the window the chaos run hit.
"""

from __future__ import annotations

from decimal import Decimal

from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_inbound import _pay
from tests.integration.test_outbound import Setup, _invoice
from tests.integration.test_outbound import setup as setup  # the fixture

LINES_300 = [
    {
        "description": "Ticket #42: fix login",
        "item": "Consulting",
        "quantity": "3",
        "unit_price": "100.00",
    }
]


async def _synced(setup: Setup) -> dict[str, object]:
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    [row] = await setup.qbo_rows("select * from Invoice")
    return row


async def test_a_payment_under_an_edit_reaches_the_crm(setup: Setup):
    """A QBO payment syncd has not heard of, then a CRM edit: both count.

    The update meets a new SyncToken (5010) and reads the invoice again: the payment is
    a QBO event of its own (partially paid), not taken as syncd's own write, and the
    edit goes on top.
    """
    invoice = await _synced(setup)
    await _pay(setup, invoice, "50.00")
    edit = _invoice(2, "open", lines=LINES_300, total="300.00")
    await setup.crm.send("acme", "invoice.upserted", edit)
    state = await setup.state(
        "INV-1", lambda d: d["sync_state"] == "synced" and d["total"] == "300.00"
    )
    [moved] = setup.crm.on("acme/out/invoice/set_status")
    assert (moved.body["data"]["from"], moved.body["data"]["to"]) == (
        "open",
        "partially_paid",
    )
    assert (state["status"], state["balance"]) == ("partially_paid", "250.00")
    [row] = await setup.qbo_rows("select * from Invoice")
    assert (row["TotalAmt"], row["Balance"]) == (Decimal("300.00"), Decimal("250.00"))


async def test_an_edit_raising_a_paid_total_makes_it_partly_paid(setup: Setup):
    """The CRM raises the total of an invoice QBO holds as paid: partly paid again.

    QBO's view becomes partially paid, and so does the CRM's status (paid →
    partially_paid, as the rules' payment_created_partial maps it), where the CRM went
    on saying paid before.
    """
    invoice = await _synced(setup)
    await _pay(setup, invoice, "200.00")
    await setup.crm.send("acme", "command.refresh", {"invoice_id": "INV-1"})
    await setup.state("INV-1", lambda d: d["status"] == "paid")
    edit = _invoice(2, "paid", lines=LINES_300, total="300.00")
    await setup.crm.send("acme", "invoice.upserted", edit)
    state = await setup.state("INV-1", lambda d: d["status"] == "partially_paid")
    assert (state["balance"], state["qbo_status"]) == ("100.00", "partially_paid")
    moves = [
        (m.body["data"]["from"], m.body["data"]["to"])
        for m in setup.crm.on("acme/out/invoice/set_status")
    ]
    assert moves == [("open", "paid"), ("paid", "partially_paid")]


async def test_an_edit_while_the_first_push_is_in_flight_reaches_qbo(setup: Setup):
    """OD5: the CRM edits an invoice while its first push is still in QBO's hands.

    The edit queued nothing (no QBO copy yet) and the push wrote the snapshot it started
    with: QBO kept the older total for good (found by the chaos run). The job now pushes
    again when the CRM moved on during its call.
    """
    await setup.qbo.admin("PUT", "faults", {"api": {"slow": 1.0, "slow_seconds": 1}})
    try:
        await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
        db = DbView(setup.syncd.config.parent / "syncd.db")
        in_flight = "SELECT count(*) FROM jobs WHERE status = 'in_flight'"
        await eventually(lambda: db.query(in_flight)[0][0] == 1)  # in QBO's hands
        edit = _invoice(2, "open", lines=LINES_300, total="300.00")
        sent = await setup.crm.send("acme", "invoice.upserted", edit)
        await eventually(lambda: sent["id"] in db.outcomes("acme"))
        assert db.query(in_flight)[0][0] == 1  # the edit came during the first push
    finally:
        await setup.qbo.admin("PUT", "faults", {"api": {"slow": 0.0}})
    await setup.state(
        "INV-1",
        lambda d: d["sync_state"] == "synced" and d["balance"] == "300.00",
        timeout=40,
    )
    [row] = await setup.qbo_rows("select * from Invoice")
    assert row["TotalAmt"] == Decimal("300.00")
