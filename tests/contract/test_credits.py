"""qbo.md §11 in the sandbox (issue 26).

Credit memos, $0 payments applying credit, refunds, payments across several invoices,
overpayment, deleted and voided payments, fees booked as purchases.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.sandbox_process import Connection


def _sale_line(item: dict[str, Any], amount: str) -> dict[str, Any]:
    return {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal(amount),
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }


def _link(kind: str, obj: dict[str, Any], amount: str) -> dict[str, Any]:
    return {
        "Amount": Decimal(amount),
        "LinkedTxn": [{"TxnId": obj["Id"], "TxnType": kind}],
    }


async def _read(qbo: Connection, entity: str, obj: dict[str, Any]) -> dict[str, Any]:
    answer = await qbo.call("GET", f"{entity.lower()}/{obj['Id']}")
    return dict(answer[entity])


async def _balance(qbo: Connection, customer: dict[str, Any]) -> Decimal:
    return Decimal((await _read(qbo, "Customer", customer))["Balance"])


def _code(answer: dict[str, Any]) -> str:
    return str(answer["Fault"]["Error"][0]["code"])


async def test_a_credit_memo_is_numbered_with_sales_and_lowers_the_balance(
    qbo: Connection,
):
    """§11.1: RemainingCredit = Balance = TotalAmt; shared DocNumbers; no DueDate."""
    customer, item = await qbo.customer(), await qbo.item()
    invoice = await qbo.invoice(customer, item, "239.00")
    memo = await qbo.create(
        "CreditMemo",
        {"CustomerRef": {"value": customer["Id"]}, "Line": [_sale_line(item, "100")]},
    )
    assert (memo["TotalAmt"], memo["RemainingCredit"], memo["Balance"]) == (
        100,
        100,
        100,
    )
    assert int(memo["DocNumber"]) == int(invoice["DocNumber"]) + 1
    assert "DueDate" not in memo and "LinkedTxn" not in memo
    assert await _balance(qbo, customer) == Decimal("139.00")
    taken = await qbo.call(
        "POST",
        "creditmemo",
        {
            "CustomerRef": {"value": customer["Id"]},
            "DocNumber": invoice["DocNumber"],
            "Line": [_sale_line(item, "5")],
        },
        expect=400,
    )
    assert _code(taken) == "6140"
    # a number a client set itself is never given again by the sequence
    chosen = int(memo["DocNumber"]) + 1
    await qbo.invoice(customer, item, "10.00", DocNumber=str(chosen))
    after = await qbo.create(
        "CreditMemo",
        {"CustomerRef": {"value": customer["Id"]}, "Line": [_sale_line(item, "1")]},
    )
    assert int(after["DocNumber"]) == chosen + 1


async def test_a_zero_payment_applies_credit_and_deleting_it_gives_it_back(
    qbo: Connection,
):
    """§11.2: two positive lines link the invoice and the memo; §11.4 delete restores."""
    customer, item = await qbo.customer(), await qbo.item()
    invoice = await qbo.invoice(customer, item, "205.00")
    memo = await qbo.create(
        "CreditMemo",
        {"CustomerRef": {"value": customer["Id"]}, "Line": [_sale_line(item, "100")]},
    )
    link = await qbo.create(
        "Payment",
        {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": 0,
            "Line": [
                _link("Invoice", invoice, "100"),
                _link("CreditMemo", memo, "100"),
            ],
        },
    )
    assert (link["TotalAmt"], link["UnappliedAmt"]) == (0, 0)
    applied = await _read(qbo, "Invoice", invoice)
    assert applied["Balance"] == Decimal("105.00")
    assert applied["LinkedTxn"] == [{"TxnId": link["Id"], "TxnType": "Payment"}]
    spent = await _read(qbo, "CreditMemo", memo)
    assert (spent["RemainingCredit"], spent["Balance"]) == (0, 0)
    assert await _balance(qbo, customer) == Decimal("105.00")
    refused = await qbo.call(
        "POST",
        "creditmemo",
        {"Id": memo["Id"], "SyncToken": spent["SyncToken"]},
        params={"operation": "delete"},
        expect=400,
    )
    assert _code(refused) == "6000"
    too_much = await qbo.call(
        "POST",
        "payment",
        {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": 0,
            "Line": [_link("Invoice", invoice, "5"), _link("CreditMemo", memo, "5")],
        },
        expect=400,
    )
    assert _code(too_much) == "6000"  # no credit left on the memo
    current = await _read(qbo, "Payment", link)
    gone = await qbo.call(
        "POST",
        "payment",
        {"Id": link["Id"], "SyncToken": current["SyncToken"]},
        params={"operation": "delete"},
    )
    assert gone["Payment"]["status"] == "Deleted"
    missing = await qbo.call("GET", f"payment/{link['Id']}", expect=400)
    assert _code(missing) == "610"
    assert (await _read(qbo, "Invoice", invoice))["Balance"] == Decimal("205.00")
    assert (await _read(qbo, "CreditMemo", memo))["RemainingCredit"] == 100
    assert await _balance(qbo, customer) == Decimal("105.00")


async def test_one_payment_pays_two_invoices_and_keeps_the_surplus_unapplied(
    qbo: Connection,
):
    """§11.4: a line per invoice, the rest `UnappliedAmt`; the customer's balance says so."""
    customer, item = await qbo.customer(), await qbo.item()
    first = await qbo.invoice(customer, item, "40.00")
    second = await qbo.invoice(customer, item, "60.00")
    payment = await qbo.create(
        "Payment",
        {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": Decimal("125.00"),
            "Line": [
                _link("Invoice", first, "40.00"),
                _link("Invoice", second, "60.00"),
            ],
        },
    )
    assert payment["UnappliedAmt"] == Decimal("25.00")
    for invoice in (first, second):
        assert (await _read(qbo, "Invoice", invoice))["Balance"] == 0
    assert await _balance(qbo, customer) == Decimal("-25.00")
    negative = await qbo.call(
        "POST",
        "payment",
        {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": 1,
            "Line": [_link("Invoice", first, "-1")],
        },
        expect=400,
    )
    assert _code(negative) == "2290"
    # quickbooks-ruby voids with `include=void` alone (§11.4): both forms are accepted
    voided = await qbo.call(
        "POST",
        "payment",
        {"Id": payment["Id"], "SyncToken": payment["SyncToken"], "sparse": True},
        params={"include": "void"},
    )
    assert (voided["Payment"]["TotalAmt"], voided["Payment"]["Line"]) == (0, [])
    assert (await _read(qbo, "Invoice", second))["Balance"] == Decimal("60.00")
    assert await _balance(qbo, customer) == Decimal("100.00")


async def test_a_refund_receipt_is_paid_from_a_bank_and_leaves_the_invoice(
    qbo: Connection,
):
    """§11.3: paid from a Bank or Other Current Asset; links to nothing.

    The API cannot void it, a person in QBO can; it can be deleted.
    """
    customer, item = await qbo.customer(), await qbo.item()
    invoice = await qbo.invoice(customer, item, "50.00")
    await qbo.pay_by_hand(qbo.realm, invoice, Decimal("50.00"))
    body: dict[str, Any] = {
        "CustomerRef": {"value": customer["Id"]},
        "Line": [_sale_line(item, "20.00")],
    }
    missing = await qbo.call("POST", "refundreceipt", body, expect=400)
    assert _code(missing) == "2020"
    income = await qbo.call(
        "POST",
        "refundreceipt",
        body | {"DepositToAccountRef": {"value": "1"}},
        expect=400,
    )
    assert _code(income) == "6000"
    checking = await qbo.call(
        "GET",
        "query",
        params={"query": "select * from Account where Name = 'Checking'"},
    )
    bank = checking["QueryResponse"]["Account"][0]["Id"]
    refund = await qbo.create(
        "RefundReceipt", body | {"DepositToAccountRef": {"value": bank}}
    )
    assert (refund["TotalAmt"], refund["Balance"]) == (Decimal("20.00"), 0)
    assert (await _read(qbo, "Invoice", invoice))["Balance"] == 0
    assert await _balance(qbo, customer) == 0
    key = {"Id": refund["Id"], "SyncToken": refund["SyncToken"]}
    api_void = await qbo.call(
        "POST", "refundreceipt", key, params={"operation": "void"}, expect=400
    )
    assert _code(api_void) == "500"
    by_hand = await qbo.admin(
        "POST", f"realms/{qbo.realm}/refundreceipt/{refund['Id']}/void"
    )
    assert by_hand["RefundReceipt"]["PrivateNote"].startswith("Voided")
    voided = await _read(qbo, "RefundReceipt", refund)
    deleted = await qbo.call(
        "POST",
        "refundreceipt",
        {"Id": refund["Id"], "SyncToken": voided["SyncToken"]},
        params={"operation": "delete"},
    )
    assert deleted["RefundReceipt"]["status"] == "Deleted"


async def test_a_fee_is_a_purchase_from_a_bank_on_an_expense_account(qbo: Connection):
    """§11.6 B: PaymentType and AccountRef required; TotalAmt is the lines' sum; no void."""
    line = {
        "Amount": Decimal("2.90"),
        "DetailType": "AccountBasedExpenseLineDetail",
        "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "8"}},
    }
    found = await qbo.call(
        "GET",
        "query",
        params={"query": "select * from Account where Name = 'Checking'"},
    )
    bank = found["QueryResponse"]["Account"][0]["Id"]
    untyped = await qbo.call(
        "POST", "purchase", {"AccountRef": {"value": bank}, "Line": [line]}, expect=400
    )
    assert _code(untyped) == "2020"
    fee = await qbo.create(
        "Purchase",
        {"PaymentType": "Cash", "AccountRef": {"value": bank}, "Line": [line, line]},
    )
    assert fee["TotalAmt"] == Decimal("5.80")
    assert fee["Line"][0]["AccountBasedExpenseLineDetail"]["AccountRef"]["name"] == (
        "Bank Charges"
    )
    voided = await qbo.call(
        "POST",
        "purchase",
        {"Id": fee["Id"], "SyncToken": fee["SyncToken"]},
        params={"operation": "void"},
        expect=400,
    )
    assert voided["Fault"]["Error"][0]["Detail"] == "Operation void is not supported."
    negative = await qbo.call(
        "POST",
        "purchase",
        {
            "PaymentType": "Cash",
            "AccountRef": {"value": bank},
            "Line": [line | {"Amount": Decimal("-1")}],
        },
        expect=400,
    )
    assert _code(negative) == "2290"


async def test_cdc_carries_credit_memos_refunds_and_deleted_payments(qbo: Connection):
    """§11.5: CDC names the new entities; a deleted payment is a tombstone."""
    before = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    customer, item = await qbo.customer(), await qbo.item()
    invoice = await qbo.invoice(customer, item, "30.00")
    paid = await qbo.pay_by_hand(qbo.realm, invoice, Decimal("30.00"))
    await qbo.admin("POST", f"realms/{qbo.realm}/payment/{paid['Id']}/delete")
    memo = await qbo.create(
        "CreditMemo",
        {"CustomerRef": {"value": customer["Id"]}, "Line": [_sale_line(item, "3")]},
    )
    answer = await qbo.call(
        "GET",
        "cdc",
        params={"entities": "Payment,CreditMemo,RefundReceipt", "changedSince": before},
    )
    payments, memos, refunds = answer["CDCResponse"][0]["QueryResponse"]
    tombstone = payments["Payment"]
    assert [(p["Id"], p["status"], "Line" in p) for p in tombstone] == [
        (paid["Id"], "Deleted", False)
    ]
    assert [m["Id"] for m in memos["CreditMemo"]] == [memo["Id"]]
    assert refunds == {}
