"""One invoice's drift, decided (issue 27): each cause, and no difference where none is.

No files and no sockets: an invoice as syncd keeps it, QBO's copy, what is found.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncd.config import load_config
from syncd.drift.check import DriftChecker
from syncd.drift.compare import Found, Seen, drift
from syncd.drift.report import Difference, Report
from syncd.models import ChangeSet, Connection, Invoice, SyncState
from syncd.rules.model import load_rules
from syncd.store.sqlite import SqliteStore

RULES = load_rules(Path(__file__).resolve().parent.parent / "rules" / "default.toml")
NOW = datetime.now(UTC).replace(microsecond=0)
WRITTEN = NOW - timedelta(days=2)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _pushed(amount: str = "200.00", description: str = "Work done") -> dict[str, Any]:
    return {
        "CustomerRef": {"value": "7"},
        "DueDate": (NOW + timedelta(days=30)).date().isoformat(),
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": amount,
                "Description": description,
                "SalesItemLineDetail": {
                    "ItemRef": {"value": "3"},
                    "Qty": "2",
                    "UnitPrice": "100",
                },
            }
        ],
    }


def _inv(**extra: Any) -> Invoice:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "invoice_id": "I-1",
        "status": "open",
        "version": 1,
        "data": {"invoice_id": "I-1", "total": "200.00"},
        "sync_state": SyncState.SYNCED,
        "qbo_id": "40",
        "qbo_sync_token": "1",
        "qbo_status": "open",
        "balance": "200.00",
        "last_synced_at": WRITTEN,
        "pushed_body": _pushed(),
        "updated_at": WRITTEN,
    }
    return Invoice(**(fields | extra))


def _qbo(**extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "Id": "40",
        "SyncToken": "1",
        "CustomerRef": {"value": "7", "name": "Acme"},
        "DueDate": (NOW + timedelta(days=30)).date().isoformat(),
        "TotalAmt": 200,
        "Balance": 200,
        "BillAddr": {"Line1": "1 Main St", "Country": "USA"},  # ISO-3, as QBO answers
        "MetaData": {"LastUpdatedTime": _stamp(WRITTEN)},
        "Line": [
            {
                "Id": "1",
                "LineNum": 1,
                "DetailType": "SalesItemLineDetail",
                "Amount": 200,
                "Description": "Work done",
                "SalesItemLineDetail": {
                    "ItemRef": {"value": "3", "name": "Consulting"},
                    "Qty": 2,
                    "UnitPrice": 100,
                    "TaxCodeRef": {"value": "NON"},
                },
            },
            {"DetailType": "SubTotalLineDetail", "Amount": 200},
        ],
    }
    return obj | extra


def _seen(**extra: Any) -> Seen:
    return Seen(now=NOW, rules=RULES, **extra)


def _fields(found: list[Found]) -> set[tuple[str, str]]:
    return {(f.field, f.cause) for f in found}


def test_an_invoice_as_written_has_no_drift():
    assert drift(_inv(), _qbo(), _seen()) == []


@given(
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999"), places=2),
    spaces=st.sampled_from(["", " ", "  ", "\t", "\n "]),
    cents=st.booleans(),
)
def test_number_formats_and_whitespace_are_no_difference(
    amount: Decimal, spaces: str, cents: bool
):
    """Amounts as "100" or "100.00" or a float, stray spaces: the same invoice."""
    said = f"{amount:.2f}" if cents else format(amount.normalize(), "f")
    inv = _inv(
        data={"invoice_id": "I-1", "total": said},
        balance=said,
        pushed_body=_pushed(said, f"{spaces}Work{spaces} done{spaces}"),
    )
    qbo = _qbo(TotalAmt=float(amount), Balance=float(amount))
    qbo["Line"][0]["Amount"] = float(amount)
    assert drift(inv, qbo, _seen()) == []


def test_what_qbo_fills_in_is_no_difference():
    """Syncd wrote an amount alone (a discount folded in): QBO's quantity is its own."""
    pushed = _pushed()
    del pushed["Line"][0]["SalesItemLineDetail"]["Qty"]
    del pushed["Line"][0]["Description"]
    assert drift(_inv(pushed_body=pushed), _qbo(), _seen()) == []


def test_overdue_is_open_with_its_date_passed():
    inv = _inv(qbo_status="overdue")
    qbo = _qbo(DueDate=(NOW - timedelta(days=3)).date().isoformat())
    pushed = {**_pushed(), "DueDate": qbo["DueDate"]}
    assert drift(dataclasses.replace(inv, pushed_body=pushed), qbo, _seen()) == []


def test_lines_edited_by_hand_after_syncds_write():
    """Its webhook came (syncd took QBO's balance); the content is the CRM's."""
    qbo = _qbo(
        TotalAmt=300,
        Balance=300,
        MetaData={"LastUpdatedTime": _stamp(NOW)},
        SyncToken="2",
    )
    qbo["Line"][0] = {
        **qbo["Line"][0],
        "Amount": 300,
        "SalesItemLineDetail": {**qbo["Line"][0]["SalesItemLineDetail"], "Qty": 3},
    }
    found = drift(_inv(qbo_sync_token="2", balance="300.00"), qbo, _seen())
    assert _fields(found) == {("lines", "qbo_edited"), ("total", "qbo_edited")}
    lines = next(f for f in found if f.field == "lines")
    assert "x 2 = 200.00" in (lines.crm or "") and "x 3 = 300.00" in (lines.qbo or "")


def test_a_total_apart_with_the_same_lines_is_the_tax():
    qbo = _qbo(TotalAmt=216, TxnTaxDetail={"TotalTax": 16}, Balance=216)
    qbo["MetaData"] = {"LastUpdatedTime": _stamp(NOW)}
    found = drift(_inv(balance="216.00"), qbo, _seen())
    assert [(f.field, f.crm, f.qbo, f.cause) for f in found] == [
        ("tax", "0.00", "16.00", "qbo_edited")
    ]


def test_a_change_older_than_cdc_never_heard_of_is_missed():
    """Older than CDC's 30 days, newer than the SyncToken syncd knows: both missed."""
    old = NOW - timedelta(days=40)
    inv = _inv(last_synced_at=NOW - timedelta(days=50))
    qbo = _qbo(
        DueDate="2020-01-31", SyncToken="5", MetaData={"LastUpdatedTime": _stamp(old)}
    )
    assert _fields(drift(inv, qbo, _seen())) == {("due_date", "missed")}


def test_a_payment_syncd_never_heard_of_is_missed_balance_and_status():
    qbo = _qbo(
        Balance=0, SyncToken="3", LinkedTxn=[{"TxnId": "77", "TxnType": "Payment"}]
    )
    found = drift(_inv(), qbo, _seen())
    assert {(f.field, f.crm, f.qbo, f.cause) for f in found} == {
        ("balance", "200.00", "0.00 (payments 77)", "missed"),
        ("status", "open", "paid", "missed"),
    }


def test_a_move_the_rules_refused_stays_said():
    """Syncd saw QBO paid; the rules refuse `partially_paid` → `paid`."""
    rules = dataclasses.replace(
        RULES, moves={**RULES.moves, "partially_paid": ("overdue",)}
    )
    inv = _inv(status="partially_paid", qbo_status="paid", balance="0.00")
    found = drift(inv, _qbo(Balance=0), Seen(now=NOW, rules=rules))
    assert _fields(found) == {("status", "refused")}


def test_a_payment_removed_in_qbo_is_the_crm_paid_against_qbo_open():
    inv = _inv(status="paid", qbo_status="paid", balance="0.00")
    found = drift(inv, _qbo(SyncToken="4"), _seen())
    assert {(f.field, f.crm, f.qbo) for f in found} == {
        ("balance", "0.00", "200.00"),
        ("status", "paid", "open"),
    }


def test_an_invoice_gone_from_qbo_was_deleted_there():
    assert _fields(drift(_inv(), None, _seen())) == {("invoice", "deleted_in_qbo")}


def test_a_delete_syncd_saw_is_no_difference_once_the_crm_followed():
    inv = _inv(qbo_status="deleted", status="deleted")
    assert drift(inv, None, _seen()) == []


def test_an_invoice_synced_to_another_company_says_so():
    inv = _inv(qbo_id=None, sync_state=SyncState.OTHER_COMPANY)
    assert _fields(drift(inv, None, _seen())) == {("invoice", "other_company")}


def test_a_failed_push_is_an_invoice_missing_in_qbo():
    inv = _inv(qbo_id=None, sync_state=SyncState.FAILED)
    assert _fields(drift(inv, None, _seen())) == {("invoice", "not_synced")}
    draft = _inv(qbo_id=None, status="draft", sync_state=SyncState.NOT_SYNCED)
    assert drift(draft, None, _seen()) == []  # never meant for QBO


def test_a_merged_customer_is_told_apart_from_a_customer_changed():
    qbo = _qbo(CustomerRef={"value": "9", "name": "Acme Group"}, SyncToken="2")
    qbo["MetaData"] = {"LastUpdatedTime": _stamp(NOW)}
    merged = drift(_inv(), qbo, _seen(gone_customers=frozenset({"7"})))
    changed = drift(_inv(), qbo, _seen())
    assert [(f.field, f.crm, f.qbo, f.cause) for f in merged] == [
        ("customer", "7", "9 (Acme Group)", "merged_customer")
    ]
    assert _fields(changed) == {("customer", "qbo_edited")}


def test_syncds_own_writes_under_way_are_not_compared():
    busy = _qbo(Balance=0)
    assert drift(_inv(sync_state=SyncState.PENDING), busy, _seen()) == []
    assert drift(_inv(), busy, _seen(paying=frozenset({"I-1"}))) == []


def test_a_report_reads_back_as_kept():
    found = Difference(
        invoice_id="I-1",
        qbo_id="40",
        field="total",
        crm="200.00",
        qbo="300.00",
        cause="qbo_edited",
        action="reported",
        found_at=NOW.isoformat(),
    )
    report = Report(
        tenant="acme",
        started_at=NOW,
        checked_at=NOW,
        invoices_checked=1,
        qbo_reads=2,
        differences=[found],
    )
    assert Report.from_json(report.to_json()) == report


def test_a_voided_invoices_zeroed_lines_are_no_difference():
    """QBO zeroes a voided invoice's amounts: only its status is compared."""
    qbo = _qbo(TotalAmt=0, Balance=0, PrivateNote="Voided", SyncToken="3")
    qbo["Line"][0] = {**qbo["Line"][0], "Amount": 0}
    inv = _inv(status="voided", qbo_status="voided", balance="0")
    assert drift(inv, qbo, _seen()) == []
    still_open = drift(_inv(qbo_status="voided", balance="0"), qbo, _seen())
    # syncd saw the void and the rules allow the move: no cause it can tell
    assert _fields(still_open) == {("status", "unknown")}


async def test_a_scheduled_check_comes_an_interval_after_connecting_or_the_last(
    tmp_path,
):
    """Not at every start: a day after the connection, then a day after each check."""
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    clock = {"now": NOW}
    none: Any = None
    config = load_config(Path(__file__).resolve().parent.parent / "syncd.toml", {})
    checker = DriftChecker(
        config, store, none, none, none, lambda: clock["now"], lambda: None
    )
    assert not await checker._due("acme", 86400)  # not connected: nothing to compare
    await store.save_connection(
        Connection(
            tenant="acme",
            realm_id="9130",
            status="connected",
            sealed_token=b"x",
            connected_at=NOW - timedelta(hours=3),
        )
    )
    assert not await checker._due("acme", 86400)
    assert not await checker._due("acme", 0)  # 0: only when asked
    clock["now"] = NOW + timedelta(hours=21, minutes=1)
    assert await checker._due("acme", 86400)
    checked = Report(tenant="acme", started_at=NOW, checked_at=clock["now"])
    await store.commit(ChangeSet(drift={"acme": checked.to_json()}))
    fresh = DriftChecker(
        config, store, none, none, none, lambda: clock["now"], lambda: None
    )
    assert not await fresh._due("acme", 86400)  # a restart counts from the last check
    clock["now"] += timedelta(days=1)
    assert await fresh._due("acme", 86400)
    await store.close()
