"""The money after the invoice, through broker, syncd and the sandbox (issue 26, HS6, HS7).

Payments deleted in the CRM leave QBO (deleted or voided) and QBO gives the invoice its
balance back; payments deleted or voided in QBO reach the CRM as `payment.removed` and
a checked move; a processor's fee is booked once as an expense; a refund is a refund
receipt (or a credit memo) for the right customer, never more than was paid.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_inbound import (
    BOTH_FORMATS,
    _pay,
    _synced_invoice,
    unwired,
    wired,
)
from tests.integration.test_outbound import Setup, _invoice, _payment
from tests.integration.test_outbound import setup as setup  # the fixture

__all__ = ["unwired", "wired"]  # fixtures used here


def _removed(s: Setup) -> list[dict[str, Any]]:
    return [m.body["data"] for m in s.crm.on("acme/out/payment/removed")]


def _moves(s: Setup) -> list[tuple[str, str]]:
    return [
        (m.body["data"]["from"], m.body["data"]["to"])
        for m in s.crm.on("acme/out/invoice/set_status")
    ]


async def _now(
    s: Setup, predicate: Any, timeout: float = 15, invoice_id: str = "INV-1"
) -> dict[str, Any]:
    """Wait until the invoice's latest state message satisfies `predicate`."""

    def latest() -> dict[str, Any] | None:
        found = s.crm.on(f"acme/sync/invoice/{invoice_id}")
        return found[-1].body["data"] if found else None

    await s.crm.wait_for(lambda r: predicate(latest() or {}), timeout)
    return latest() or {}


async def _decided(s: Setup, message_type: str, count: int) -> None:
    """Wait until syncd's ledger holds `count` messages of a type (whatever became of them)."""
    db = DbView(s.syncd.config.parent / "syncd.db")
    sql = f"SELECT count(*) FROM messages WHERE type = '{message_type}'"
    await eventually(lambda: db.query(sql)[0][0] >= count)


def _refusals(s: Setup) -> list[str]:
    return [m.body["data"]["reason"] for m in s.crm.on("acme/out/input/rejected")]


async def _paid_in_crm(s: Setup, **extra: Any) -> dict[str, Any]:
    """INV-1 synced, and the CRM's payment P-1 (50.00) written to QBO."""
    await s.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await s.crm.send("acme", "payment.recorded", _payment(**extra))
    await s.state("INV-1", lambda d: d["balance"] == "150.00")
    await s.settled()
    [payment] = await s.qbo_rows("select * from Payment")
    return payment


@BOTH_FORMATS
@pytest.mark.rules(
    'partially_paid = ["paid", "overdue", "voided"]',
    'partially_paid = ["paid", "open", "overdue", "voided"]',
)
async def test_a_payment_removed_in_qbo_reaches_the_crm(wired: Setup):
    """Voided (one payment left: partly paid), then deleted (open again), each told once."""
    invoice = await _synced_invoice(wired)
    await _pay(wired, invoice, "50.00")
    await wired.state("INV-1", lambda d: d["status"] == "partially_paid")
    await _pay(wired, invoice, "150.00")
    await wired.state("INV-1", lambda d: d["status"] == "paid")
    first, second = sorted(
        await wired.qbo_rows("select * from Payment"), key=lambda p: int(p["Id"])
    )
    await wired.qbo.admin("POST", f"realms/{wired.realm}/payment/{second['Id']}/void")
    await wired.crm.wait_for(lambda r: len(_removed(wired)) >= 1)
    [voided] = _removed(wired)
    assert voided == {
        "invoice_id": "INV-1",
        "payment_id": None,  # made in QBO, not by the CRM
        "qbo_payment_id": second["Id"],
        "how": "voided",
        "balance": "150.00",
    }
    await wired.state("INV-1", lambda d: d["status"] == "partially_paid")
    await wired.qbo.admin("POST", f"realms/{wired.realm}/payment/{first['Id']}/delete")
    await wired.crm.wait_for(lambda r: len(_removed(wired)) >= 2)
    deleted = _removed(wired)[1]
    assert (deleted["qbo_payment_id"], deleted["how"], deleted["balance"]) == (
        first["Id"],
        "deleted",
        "200.00",
    )
    state = await wired.state("INV-1", lambda d: d["status"] == "open")
    assert (state["qbo_status"], state["balance"]) == ("open", "200.00")
    await wired.settled()
    assert _moves(wired) == [
        ("open", "partially_paid"),
        ("partially_paid", "paid"),
        ("paid", "partially_paid"),
        ("partially_paid", "open"),
    ]
    assert len(_removed(wired)) == 2


async def test_a_payment_removed_in_qbo_reaches_the_crm_by_cdc(unwired: Setup):
    """No webhook at all: reconciliation sees the deleted payment's tombstone."""
    invoice = await _synced_invoice(unwired)
    paid = await unwired.qbo.pay_by_hand(unwired.realm, invoice, "200.00")
    await unwired.state("INV-1", lambda d: d["status"] == "paid", timeout=20)
    await unwired.qbo.admin(
        "POST", f"realms/{unwired.realm}/payment/{paid['Id']}/delete"
    )
    await unwired.crm.wait_for(lambda r: bool(_removed(unwired)), timeout=20)
    [removed] = _removed(unwired)
    assert (removed["qbo_payment_id"], removed["how"]) == (paid["Id"], "deleted")
    await unwired.state("INV-1", lambda d: d["status"] == "open", timeout=20)
    await unwired.reconciled(rounds=2)
    assert len(_removed(unwired)) == 1


async def test_a_payment_deleted_in_the_crm_leaves_qbo_once(wired: Setup):
    """HS7: QBO's Payment deleted, the invoice's balance back; no echo; twice refused."""
    payment = await _paid_in_crm(wired)
    await wired.crm.send("acme", "payment.deleted", {"payment_id": "P-1"})
    state = await _now(wired, lambda d: d.get("balance") == "200.00")
    assert (state["qbo_status"], state["status"]) == ("open", "open")
    assert await wired.qbo_rows("select * from Payment") == []
    gone = await wired.qbo.call("GET", f"payment/{payment['Id']}", expect=400)
    assert gone["Fault"]["Error"][0]["code"] == "610"
    await wired.crm.send("acme", "payment.deleted", {"payment_id": "P-1"})
    await wired.crm.wait_for(lambda r: bool(_refusals(wired)))
    assert _refusals(wired) == ["payment 'P-1' was already deleted"]
    await wired.settled()
    assert _removed(wired) == []  # syncd's own removal is not news for the CRM
    assert _moves(wired) == []


@pytest.mark.rules('on_delete = "delete"', 'on_delete = "void"')
async def test_a_payment_deleted_in_the_crm_is_voided_when_the_rules_say_so(
    setup: Setup,
):
    payment = await _paid_in_crm(setup)
    await setup.crm.send("acme", "payment.deleted", {"payment_id": "P-1"})
    await _now(setup, lambda d: d.get("balance") == "200.00")
    voided = (await setup.qbo.call("GET", f"payment/{payment['Id']}"))["Payment"]
    assert (voided["TotalAmt"], voided["PrivateNote"]) == (0, "Voided")


async def test_a_payment_deleted_before_it_reached_qbo_never_gets_there(setup: Setup):
    """Recorded and deleted in one breath: nothing is left in QBO."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.crm.send("acme", "payment.recorded", _payment())
    await setup.crm.send("acme", "payment.deleted", {"payment_id": "P-1"})
    await _decided(setup, "payment.deleted", 1)
    await setup.settled()
    assert await setup.qbo_rows("select * from Payment") == []
    state = await _now(setup, lambda d: d.get("sync_state") == "synced")
    assert state["balance"] == "200.00"


async def test_a_processors_fee_is_booked_once_as_an_expense(setup: Setup):
    """HS6: a Purchase on Bank Charges, paid from the deposit account, memo naming P-1."""
    fee = {"amount": "2.90", "processor": "stripe"}
    await _paid_in_crm(setup, fee=fee)
    # the CRM sends the same payment again (a new message id): still one fee
    await setup.crm.send("acme", "payment.recorded", _payment(fee=fee))
    await _decided(setup, "payment.recorded", 2)
    await setup.settled()
    [purchase] = await setup.qbo_rows("select * from Purchase")
    assert purchase["TotalAmt"] == Decimal("2.90")
    assert purchase["AccountRef"]["name"] == "Undeposited Funds"
    [line] = purchase["Line"]
    assert line["AccountBasedExpenseLineDetail"]["AccountRef"]["name"] == "Bank Charges"
    assert "P-1" in purchase["PrivateNote"] and "stripe" in purchase["PrivateNote"]
    assert len(await setup.qbo_rows("select * from Payment")) == 1
    # a payment with no invoice (a Sales Receipt): its fee queues on its own
    booking = _payment(payment_id="B-7", kind="booking", fee={"amount": "0.80"})
    del booking["invoice_id"]
    await setup.crm.send("acme", "payment.recorded", booking)
    await eventually(lambda: _purchases(setup, 2))
    await setup.crm.send(
        "acme",
        "payment.recorded",
        _payment(payment_id="P-2", fee={"amount": "1.00", "currency": "EUR"}),
    )
    await setup.crm.wait_for(lambda r: bool(_refusals(setup)))
    assert "the fee is in EUR and the payment in USD" in _refusals(setup)[0]


async def _purchases(s: Setup, count: int) -> bool:
    return len(await s.qbo_rows("select * from Purchase")) == count


def _refund(**extra: Any) -> dict[str, Any]:
    return {
        "refund_id": "R-1",
        "payment_id": "P-1",
        "invoice_id": "INV-1",
        "customer": {"name": "Acme Ltd"},
        "amount": "20.00",
        "currency": "USD",
        "date": _payment()["date"],
        "method": "card",
        "reason": "one hour not worked",
        **extra,
    }


async def test_a_refund_is_a_refund_receipt_for_the_customer_once(setup: Setup):
    """HS7: from the deposit account, the invoice's customer; more than paid is refused."""
    payment = await _paid_in_crm(setup)
    await setup.crm.send("acme", "payment.refunded", _refund())
    await setup.crm.send("acme", "payment.refunded", _refund())  # a repeat
    await setup.crm.send(
        "acme", "payment.refunded", _refund(refund_id="R-2", amount="30.01")
    )
    await setup.crm.wait_for(lambda r: bool(_refusals(setup)))
    await setup.settled()
    [receipt] = await setup.qbo_rows("select * from RefundReceipt")
    assert receipt["TotalAmt"] == Decimal("20.00")
    assert receipt["CustomerRef"]["value"] == payment["CustomerRef"]["value"]
    assert receipt["DepositToAccountRef"]["name"] == "Undeposited Funds"
    assert receipt["PrivateNote"] == "syncd:acme:refund:R-1"
    assert _refusals(setup) == [
        "a refund of 30.01 is more than what is left of payment 'P-1' "
        "(50.00 paid, 20.00 refunded already)"
    ]
    # the invoice's own status stays the CRM's word
    state = await _now(setup, lambda d: d.get("sync_state") == "synced")
    assert (state["status"], state["balance"]) == ("open", "150.00")
    assert setup.crm.on("acme/out/payment/refunded") == []  # never an echo


@pytest.mark.rules('as = "refund_receipt"', 'as = "credit_memo"')
async def test_a_refund_can_be_a_credit_memo(setup: Setup):
    await _paid_in_crm(setup)
    await setup.crm.send("acme", "payment.refunded", _refund(amount="50.00"))
    [memo] = await eventually(lambda: setup.qbo_rows("select * from CreditMemo"))
    assert (memo["TotalAmt"], memo["RemainingCredit"]) == (50, 50)
    assert await setup.qbo_rows("select * from RefundReceipt") == []


def _credit_note(version: int, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "credit_note_id": "CN-1",
        "version": version,
        "status": status,
        "invoice_id": "INV-1",
        "customer": {"contact_id": "C-9", "name": "Acme Ltd"},
        "lines": [
            {
                "description": "Goodwill: one hour",
                "item": "Consulting",
                "quantity": "1",
                "unit_price": "50.00",
            }
        ],
        "total": "50.00",
        "currency": "USD",
        "issue_date": _payment()["date"],
        **extra,
    }


async def _note(s: Setup, predicate: Any) -> dict[str, Any]:
    """Wait until the credit note's latest retained state satisfies `predicate`."""

    def latest() -> dict[str, Any]:
        found = s.crm.on("acme/sync/credit_note/CN-1")
        return found[-1].body["data"] if found else {}

    await s.crm.wait_for(lambda r: predicate(latest()))
    return latest()


async def _memo_writes(s: Setup) -> int:
    return sum(1 for w in await s.writes() if "/creditmemo" in w["path"])


async def test_a_credit_note_is_copied_applied_updated_and_voided(setup: Setup):
    """A CreditMemo kept like an invoice, applied through a $0 payment, then removed."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    await setup.crm.send("acme", "credit_note.upserted", _credit_note(1, "open"))
    state = await _note(setup, lambda d: d.get("qbo_status") == "applied")
    assert (state["sync_state"], state["remaining_credit"], state["total"]) == (
        "synced",
        "0.00",
        "50.00",
    )
    [memo] = await setup.qbo_rows("select * from CreditMemo")
    assert (memo["Id"], memo["TotalAmt"], memo["RemainingCredit"]) == (
        state["qbo_id"],
        Decimal("50.00"),
        0,
    )
    [link] = await setup.qbo_rows("select * from Payment")
    assert (link["TotalAmt"], len(link["Line"])) == (0, 2)
    [invoice] = await setup.qbo_rows("select * from Invoice")
    assert invoice["Balance"] == Decimal("150.00")
    await setup.settled()
    writes = await _memo_writes(setup)
    # the same content again: no call; a new description: that field alone
    await setup.crm.send("acme", "credit_note.upserted", _credit_note(2, "open"))
    await _note(setup, lambda d: d.get("version") == 2 and d["sync_state"] == "synced")
    await setup.settled()
    assert await _memo_writes(setup) == writes
    changed = _credit_note(3, "open")
    changed["lines"][0]["description"] = "Goodwill: one hour, as agreed"
    await setup.crm.send("acme", "credit_note.upserted", changed)
    await _note(setup, lambda d: d.get("version") == 3 and d["sync_state"] == "synced")
    await setup.settled()
    assert await _memo_writes(setup) == writes + 1
    [memo] = await setup.qbo_rows("select * from CreditMemo")
    assert memo["Line"][0]["Description"] == "Goodwill: one hour, as agreed"
    await setup.crm.send("acme", "credit_note.upserted", _credit_note(4, "voided"))
    state = await _note(setup, lambda d: d.get("qbo_status") == "deleted")
    assert await setup.qbo_rows("select * from CreditMemo") == []
    assert await setup.qbo_rows("select * from Payment") == []
    [invoice] = await setup.qbo_rows("select * from Invoice")
    assert invoice["Balance"] == Decimal("200.00")
    await setup.crm.send("acme", "credit_note.upserted", _credit_note(5, "open"))
    await setup.crm.wait_for(lambda r: bool(_refusals(setup)))
    assert _refusals(setup) == [
        "credit note 'CN-1' is voided: a voided credit note is final"
    ]


async def test_the_customers_balance_agrees_to_the_cent(setup: Setup):
    """Issue 26's proof: invoice, partial payment, credit note, refund, removed payment.

    The CRM's figure is its own arithmetic (invoices less payments still standing less
    open credit notes; a refund receipt gives money back for what was sold, so it is
    no debt); QBO's is the customer's Balance.
    """
    crm_balance = Decimal("200.00")
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.crm.send("acme", "payment.recorded", _payment(amount="80.00"))
    crm_balance -= Decimal("80.00")
    await setup.crm.send("acme", "credit_note.upserted", _credit_note(1, "open"))
    crm_balance -= Decimal("50.00")
    await setup.crm.send("acme", "payment.refunded", _refund(amount="30.00"))
    await setup.crm.send("acme", "payment.deleted", {"payment_id": "P-1"})
    crm_balance += Decimal("80.00")
    await _decided(setup, "payment.deleted", 1)
    await _note(setup, lambda d: d.get("qbo_status") == "applied")
    await setup.settled()
    [invoice] = await setup.qbo_rows("select * from Invoice")
    customer = (
        await setup.qbo.call("GET", f"customer/{invoice['CustomerRef']['value']}")
    )["Customer"]
    assert Decimal(str(customer["Balance"])) == crm_balance == Decimal("150.00")
    assert invoice["Balance"] == crm_balance
    [refund] = await setup.qbo_rows("select * from RefundReceipt")
    assert refund["TotalAmt"] == Decimal("30.00")
    assert _refusals(setup) == []


@BOTH_FORMATS
async def test_refunds_and_credits_made_in_qbo_reach_the_crm(wired: Setup):
    """HS7 back: a person's refund receipt and credit memo go to the CRM once.

    For a synced customer; a credit applied to a synced invoice moves it as a payment
    would (`credit_applied = ""`), and is no money received.
    """
    invoice = await _synced_invoice(wired)
    customer = invoice["CustomerRef"]["value"]
    [line] = [ln for ln in invoice["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
    item = line["SalesItemLineDetail"]["ItemRef"]["value"]
    sale = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("60.00"),
        "SalesItemLineDetail": {"ItemRef": {"value": item}},
    }
    base = f"realms/{wired.realm}"
    memo = (
        await wired.qbo.admin(
            "POST",
            f"{base}/creditmemo",
            {"CustomerRef": {"value": customer}, "Line": [sale]},
            expect=201,
        )
    )["CreditMemo"]
    link = {
        "CustomerRef": {"value": customer},
        "TotalAmt": 0,
        "Line": [
            {
                "Amount": 60,
                "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
            },
            {
                "Amount": 60,
                "LinkedTxn": [{"TxnId": memo["Id"], "TxnType": "CreditMemo"}],
            },
        ],
    }
    await wired.qbo.admin("POST", f"{base}/payment", link, expect=201)
    accounts = await wired.qbo_rows("select * from Account where Name = 'Checking'")
    refund = {
        "CustomerRef": {"value": customer},
        "DepositToAccountRef": {"value": accounts[0]["Id"]},
        "Line": [sale | {"Amount": Decimal("15.00")}],
    }
    made = (await wired.qbo.admin("POST", f"{base}/refundreceipt", refund, expect=201))[
        "RefundReceipt"
    ]
    await wired.crm.wait_for(
        lambda r: (
            bool(wired.crm.on("acme/out/payment/refunded"))
            and bool(wired.crm.on("acme/out/credit_note/imported"))
        )
    )
    state = await wired.state("INV-1", lambda d: d["status"] == "partially_paid")
    assert state["balance"] == "140.00"
    await wired.settled()
    [told] = [m.body["data"] for m in wired.crm.on("acme/out/payment/refunded")]
    assert (told["qbo_refund_id"], told["amount"], told["invoice_id"]) == (
        made["Id"],
        "15.00",
        None,
    )
    [imported] = [m.body["data"] for m in wired.crm.on("acme/out/credit_note/imported")]
    assert (imported["qbo_id"], imported["total"], imported["applied_to"]) == (
        memo["Id"],
        "60.00",
        ["INV-1"],
    )
    assert _moves(wired) == [("open", "partially_paid")]
    assert wired.crm.on("acme/out/payment/received") == []  # a credit is no money in


@pytest.mark.rules('credit_applied = ""', 'credit_applied = "paid"')
async def test_a_credit_applied_in_qbo_moves_as_the_rules_map(wired: Setup):
    """`[qbo_events] credit_applied` set: the credit's move is its own (here: paid)."""
    invoice = await _synced_invoice(wired)
    customer = invoice["CustomerRef"]["value"]
    item = next(
        ln["SalesItemLineDetail"]["ItemRef"]["value"]
        for ln in invoice["Line"]
        if ln["DetailType"] == "SalesItemLineDetail"
    )
    base = f"realms/{wired.realm}"
    sale = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("20.00"),
        "SalesItemLineDetail": {"ItemRef": {"value": item}},
    }
    body = {"CustomerRef": {"value": customer}, "Line": [sale]}
    memo = (await wired.qbo.admin("POST", f"{base}/creditmemo", body, expect=201))[
        "CreditMemo"
    ]
    link = {
        "CustomerRef": {"value": customer},
        "TotalAmt": 0,
        "Line": [
            {
                "Amount": 20,
                "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
            },
            {
                "Amount": 20,
                "LinkedTxn": [{"TxnId": memo["Id"], "TxnType": "CreditMemo"}],
            },
        ],
    }
    await wired.qbo.admin("POST", f"{base}/payment", link, expect=201)
    state = await wired.state("INV-1", lambda d: d["status"] == "paid")
    assert (state["qbo_status"], state["balance"]) == ("partially_paid", "180.00")
    assert _moves(wired) == [("open", "paid")]


async def test_an_overpayment_keeps_its_surplus_unapplied_and_says_so(setup: Setup):
    """QBO's unapplied amount is reported back, never silently lost (qbo.md §11.4)."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.crm.send("acme", "payment.recorded", _payment(amount="250.00"))
    await setup.crm.wait_for(lambda r: bool(setup.crm.on("acme/out/payment/unapplied")))
    [told] = [m.body["data"] for m in setup.crm.on("acme/out/payment/unapplied")]
    [payment] = await setup.qbo_rows("select * from Payment")
    assert told == {
        "payment_id": "P-1",
        "invoice_id": "INV-1",
        "qbo_payment_id": payment["Id"],
        "amount": "250.00",
        "applied": "200.00",
        "unapplied": "50.00",
        "currency": "USD",
    }
    assert (payment["TotalAmt"], payment["UnappliedAmt"]) == (
        Decimal("250.00"),
        Decimal("50.00"),
    )
    state = await _now(setup, lambda d: d.get("qbo_status") == "paid")
    assert state["balance"] == "0.00"
    customer = (
        await setup.qbo.call("GET", f"customer/{payment['CustomerRef']['value']}")
    )["Customer"]
    assert Decimal(str(customer["Balance"])) == Decimal("-50.00")


async def test_one_payment_across_two_invoices_is_one_qbo_payment(wired: Setup):
    """A line per invoice, the rest unapplied and told; deleted, both balances return."""
    second = _invoice(1, "open", number="1002")
    second["invoice_id"] = "INV-2"
    await wired.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await wired.crm.send("acme", "invoice.upserted", second)
    for invoice_id in ("INV-1", "INV-2"):
        await wired.state(invoice_id, lambda d: d["sync_state"] == "synced")
    shares = [
        {"invoice_id": "INV-1", "amount": "200.00"},
        {"invoice_id": "INV-2", "amount": "100.00"},
    ]
    payment = _payment(payment_id="P-9", amount="330.00", invoices=shares)
    del payment["invoice_id"]
    await wired.crm.send("acme", "payment.recorded", payment)
    await wired.crm.wait_for(lambda r: bool(wired.crm.on("acme/out/payment/unapplied")))
    [told] = [m.body["data"] for m in wired.crm.on("acme/out/payment/unapplied")]
    assert (told["invoice_id"], told["applied"], told["unapplied"]) == (
        None,
        "300.00",
        "30.00",
    )
    [qbo_payment] = await wired.qbo_rows("select * from Payment")
    assert [ln["Amount"] for ln in qbo_payment["Line"]] == [200, 100]
    await wired.state("INV-1", lambda d: d["qbo_status"] == "paid")
    await wired.state("INV-2", lambda d: d["balance"] == "100.00")
    await wired.crm.send("acme", "payment.deleted", {"payment_id": "P-9"})
    for invoice_id in ("INV-1", "INV-2"):
        state = await _now(
            wired, lambda d: d.get("balance") == "200.00", invoice_id=invoice_id
        )
        assert state["qbo_status"] == "open"
    assert await wired.qbo_rows("select * from Payment") == []
    await wired.settled()
    assert _removed(wired) == []  # syncd's own removal is no news
    refused = _payment(payment_id="P-10", amount="100.00", invoices=shares)
    del refused["invoice_id"]
    await wired.crm.send("acme", "payment.recorded", refused)
    await wired.crm.wait_for(lambda r: bool(_refusals(wired)))
    assert _refusals(wired) == [
        "the amounts applied to its invoices (300.00) are more than the payment (100.00)"
    ]


@pytest.mark.rules("create_missing = true", "create_missing = false")
async def test_a_credit_note_for_an_unknown_customer_fails_clearly_and_alone(
    setup: Setup,
):
    """Bad input is refused with a reason a person reads; what follows goes on."""
    stranger = _credit_note(1, "open", customer={"name": "Nobody Inc"})
    del stranger["invoice_id"]
    await setup.crm.send("acme", "credit_note.upserted", stranger)
    await setup.crm.wait_for(lambda r: bool(setup.crm.on("acme/out/sync/failed")))
    [failed] = [m.body["data"] for m in setup.crm.on("acme/out/sync/failed")]
    assert failed["operation"] == "credit_note.push"
    assert "no QBO customer matches 'Nobody Inc'" in failed["message"]
    state = await _note(setup, lambda d: d.get("sync_state") == "failed")
    assert state["error"] == failed["message"]
    # the invoice and its payment behind it are not held up (its customer is in QBO)
    customer = {"DisplayName": "Acme Ltd"}
    await setup.qbo.admin(
        "POST", f"realms/{setup.realm}/customer", customer, expect=201
    )
    await _paid_in_crm(setup)


async def test_a_credit_note_whose_total_qbo_disagrees_with_is_failed_with_both(
    setup: Setup,
):
    """HL6 for credit notes: never silently different books."""
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.crm.send(
        "acme", "credit_note.upserted", _credit_note(1, "open", total="49.00")
    )
    state = await _note(setup, lambda d: d.get("sync_state") == "failed")
    assert state["error"] == (
        "QBO computed a credit memo total of 50.00 but the CRM total is 49.00: "
        "check the tax codes mapped for this credit note"
    )
