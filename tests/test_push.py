"""Push planning, pure: what to write for a snapshot, what QBO's answer means, who is in.

No server: the body is built, the write decided and the answer recorded by functions
(the job worker's end-to-end runs are in tests/integration/test_outbound.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.engine.qbo_events import qbo_status
from syncd.models import ChangeSet, Connection, Invoice, Job, JobKind, SyncState
from syncd.outbound import mapping
from syncd.outbound.payments import push_payment
from syncd.outbound.push import (
    Create,
    JobContext,
    Update,
    adopt_send,
    ineligible,
    plan_write,
    prepare_push,
    record,
    void_invoice,
)
from syncd.rules.model import SyncRules
from tests.test_inbox import RULES

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
RESOLVED = mapping.Resolved(customer_id="58", items={"Consulting": "7"})
cents = st.decimals(min_value=0, max_value=10**7, places=2)


def _data(**extra: Any) -> dict[str, Any]:
    line = {"item": "Consulting", "quantity": "2", "unit_price": "100.00"}
    return {"invoice_id": "I-1", "lines": [line], "total": "200.00", **extra}


def _invoice(invoice_id: str = "I-1", **kw: Any) -> Invoice:
    return Invoice(
        tenant="acme",
        invoice_id=invoice_id,
        status="open",
        version=1,
        data=_data(),
        updated_at=NOW,
        **kw,
    )


def _conn(**kw: Any) -> Connection:
    return Connection(
        tenant="acme",
        realm_id="9130",
        status="connected",
        sealed_token=b"",
        connected_at=NOW - timedelta(days=1),
        **kw,
    )


def test_a_new_invoice_is_created_with_a_request_id_stable_for_it():
    """OD5, HS11: the same CRM invoice always asks QBO with the same requestid."""
    body = mapping.invoice_body("acme", _data(), RULES, RESOLVED)
    plan = plan_write("acme", _invoice(), body)
    assert isinstance(plan, Create) and plan.body == body
    again = plan_write("acme", _invoice(), body)
    assert isinstance(again, Create) and again.request_id == plan.request_id
    other = plan_write("acme", _invoice(invoice_id="I-2"), body)
    assert isinstance(other, Create) and other.request_id != plan.request_id
    assert len(plan.request_id) <= 50  # QBO's bound (qbo.md §3)


def test_an_unchanged_snapshot_writes_nothing_and_an_edit_only_what_changed():
    """OD4: a sparse update with only the changed fields; none at all when equal."""
    body = mapping.invoice_body("acme", _data(), RULES, RESOLVED)
    synced = _invoice(qbo_id="130", pushed_body=mapping.canonical(body))
    assert plan_write("acme", synced, body) is None
    edited = mapping.invoice_body("acme", _data(number="A-7"), RULES, RESOLVED)
    plan = plan_write("acme", synced, edited)
    assert isinstance(plan, Update) and plan.changed == {"DocNumber": "A-7"}


def test_a_copy_found_after_an_unclear_outcome_is_written_whole():
    """HS11: an invoice adopted from QBO (no body remembered) gets every field."""
    body = mapping.invoice_body("acme", _data(), RULES, RESOLVED)
    plan = plan_write("acme", _invoice(qbo_id="130"), body)
    assert isinstance(plan, Update) and plan.changed == body


def test_an_update_after_an_unclear_outcome_is_written_whole():
    """Issue 25: a write that landed unrecorded (its replica fenced) left QBO unknown.

    Found by the three-replica chaos run: v5 (quantity 33) was written by a replica whose
    lease had been taken over, so not recorded; v6 went back to v4's quantity, and its
    diff against v4 sent no line: QBO kept 33, and the totals differed.
    """
    v4 = mapping.invoice_body("acme", _data(), RULES, RESOLVED)
    kept = _invoice(qbo_id="130", pushed_body=mapping.canonical(v4))
    assert plan_write("acme", kept, v4) is None
    plan = plan_write("acme", kept, v4, unclear=True)
    assert isinstance(plan, Update) and plan.changed == v4


def _answer(total: Decimal, balance: Decimal, **extra: Any) -> dict[str, Any]:
    return {
        "Id": "130",
        "SyncToken": "0",
        "DocNumber": "1001",
        "TotalAmt": total,
        "Balance": balance,
        **extra,
    }


def test_recording_an_answer_keeps_ids_and_flags_different_totals():
    """HL6: QBO's own total differing from the CRM's is a problem, never silent."""
    body = mapping.invoice_body("acme", _data(), RULES, RESOLVED)
    inv = _invoice()
    assert record(inv, _answer(Decimal("200.00"), Decimal("200.00")), body, NOW) is None
    assert (inv.qbo_id, inv.qbo_sync_token, inv.qbo_doc_number) == ("130", "0", "1001")
    assert inv.sync_state is SyncState.SYNCED and inv.last_synced_at == NOW
    assert inv.pushed_body == mapping.canonical(body)
    problem = record(inv, _answer(Decimal("216.00"), Decimal("216.00")), body, NOW)
    assert problem is not None and problem[0] == "total_mismatch"
    assert "216.00" in problem[1] and "200.00" in problem[1]


def test_a_send_answer_is_adopted_only_when_the_send_alone_changed_the_invoice():
    """OD6, RO6: a send's answer is syncd's own view only when the send alone moved it.

    Found by the chaos run: a void in QBO between syncd's create and its send came back
    in the send's answer, was taken as syncd's own write, and never reached the CRM.
    """
    inv = _invoice(
        qbo_id="130", qbo_sync_token="1", balance="200.00", qbo_status="open"
    )
    voided = _answer(Decimal(0), Decimal(0), SyncToken="3", PrivateNote="Voided")
    adopt_send(inv, voided, NOW)
    assert (inv.qbo_sync_token, inv.balance, inv.qbo_status) == ("1", "200.00", "open")
    assert inv.sync_state is SyncState.SYNCED and inv.last_synced_at == NOW
    adopt_send(inv, _answer(Decimal(200), Decimal(200), SyncToken="2"), NOW)
    assert (inv.qbo_sync_token, inv.balance) == ("2", "200")


@given(total=cents, paid=cents, late=st.booleans())
def test_qbos_view_of_an_invoice_follows_its_balance(total, paid, late):
    """qbo.md §9: paid, partially paid, overdue or open, from total, balance and due."""
    balance = max(total - paid, Decimal(0))
    due = (NOW.date() - timedelta(days=1 if late else -1)).isoformat()
    status = qbo_status(_answer(total, balance, DueDate=due), NOW.date())
    if total > 0 and balance == 0:
        assert status == "paid"
    elif 0 < balance < total:
        assert status == "partially_paid"
    elif balance > 0 and late:
        assert status == "overdue"
    else:
        assert status == "open"


def _offline(
    inv: Invoice, kind: JobKind, client: Any = None, store: Any = None
) -> JobContext:
    """A job's context with no QBO (or only the fake given) and the rules as shipped."""
    return JobContext(
        job=Job.for_invoice("acme", kind, "I-1", NOW),
        invoice=inv,
        client=client,
        connection=_conn(),
        rules=RULES,
        store=store,
        now=NOW,
        unclear=False,
        changes=ChangeSet(),
    )


async def test_a_void_already_seen_in_qbo_leaves_the_invoice_synced():
    """PD7: the void's own webhook came back before its retry: nothing to write, synced.

    Found by the long chaos run (2 of 932 voids): the first try's answer was lost, the
    webhook of that very void marked the QBO view voided, and the retry returned without
    a word: the invoice stayed `pending` for good.
    """
    inv = _invoice(
        qbo_id="2855",
        qbo_sync_token="2",
        qbo_status="voided",
        sync_state=SyncState.PENDING,
        error="retrying: QBO 3001",
    )
    inv.status = "voided"
    ctx = _offline(inv, JobKind.INVOICE_VOID)  # no QBO call may happen
    await void_invoice(ctx)
    assert (inv.sync_state, inv.error, inv.last_synced_at) == (
        SyncState.SYNCED,
        None,
        NOW,
    )


async def test_a_push_never_writes_over_an_invoice_voided_in_qbo():
    """PD7: a CRM edit's push queued before a bookkeeper's void was seen writes nothing.

    Found by issue 27's CI chaos run: the push wrote the lines back over the voided
    invoice, and QBO (the sandbox, as its UI) showed it unpaid again.
    """
    for final in ("voided", "deleted"):
        inv = _invoice(qbo_id="2855", qbo_sync_token="4", qbo_status=final)
        inv.data = {**inv.data, "total": "999.00"}  # a changed snapshot
        ctx = _offline(inv, JobKind.INVOICE_PUSH)  # no QBO call may happen
        assert await prepare_push(ctx) is None
        assert ctx.note == f"not updated: the invoice is {final} in QBO"


async def test_a_snapshot_that_changes_nothing_in_qbo_leaves_the_invoice_synced():
    """Issue 25's 30-minute run: 4 invoices stayed `pending` with their QBO copy right.

    The CRM's `paid` snapshot (parked, decided later) queued a push whose body QBO
    already held: no call, and the invoice must read synced, as after a write.
    """
    inv = _invoice(qbo_id="4157", qbo_sync_token="3", sync_state=SyncState.PENDING)
    inv.data = {**inv.data, "customer": {"contact_id": "C-1", "name": "Acme"}}

    class Linked:
        async def link(self, tenant: str, kind: Any, key: str) -> str:
            return RESOLVED.customer_id if key == "C-1" else RESOLVED.items[key]

    ctx = _offline(inv, JobKind.INVOICE_PUSH, store=Linked())  # no QBO call may happen
    first = await prepare_push(ctx)  # QBO's copy was written by another body
    assert first is not None and inv.sync_state is SyncState.PENDING
    inv.pushed_body = mapping.canonical(first.body)  # … and now holds this one
    assert await prepare_push(ctx) is None
    assert (inv.sync_state, inv.error, inv.last_synced_at) == (
        SyncState.SYNCED,
        None,
        NOW,
    )
    inv.sync_state, inv.error = SyncState.FAILED, "QBO's total differs"
    assert await prepare_push(ctx) is None
    assert inv.sync_state is SyncState.FAILED  # a failure stays said


def test_a_voided_invoice_reads_as_voided():
    """PD7: QBO voids by zeroing the amounts and noting it."""
    voided = _answer(Decimal(0), Decimal(0), PrivateNote="Voided")
    assert qbo_status(voided, date(2026, 11, 22)) == "voided"


@pytest.mark.parametrize(
    ("sync", "data", "kept_out"),
    [
        (SyncRules(min_total=Decimal("500")), {}, "below [sync.filters] min_total"),
        (SyncRules(currencies=("USD",)), {"currency": "EUR"}, "not in [sync.filters]"),
        (SyncRules(since="all"), {"created_at": "2020-01-01"}, None),
        (
            SyncRules(since="2026-01-01"),
            {"created_at": "2025-12-31T23:59:00Z"},
            "before [sync] since (2026-01-01)",
        ),
        (
            SyncRules(since="connection"),
            {"created_at": "2026-11-01"},
            "before the QBO connection",
        ),
        (SyncRules(since="connection"), {}, None),  # first heard of now: in
        (  # handed over by `syncd backfill`: history counts in (issue 14)
            SyncRules(since="connection"),
            {"created_at": "2020-01-01", "backfill": True},
            None,
        ),
        (  # ... but the amount and currency filters still apply
            SyncRules(min_total=Decimal("500")),
            {"created_at": "2020-01-01", "backfill": True},
            "below [sync.filters] min_total",
        ),
    ],
)
def test_the_filters_keep_out_what_they_name(sync, data, kept_out):
    """HS1, HL8: amount, currency and creation date filters, each with its reason."""
    inv = _invoice(first_seen_at=NOW)
    inv.data = {**inv.data, **data}
    reason = ineligible(inv, replace(RULES, sync=sync), _conn())
    if kept_out is None:
        assert reason is None
    else:
        assert reason is not None and kept_out in reason


def test_since_connection_counts_from_the_first_connection_to_any_company():
    """HL8: a reconnect to another company does not let older invoices in."""
    inv = _invoice(first_seen_at=NOW - timedelta(hours=2))
    rules = replace(RULES, sync=SyncRules(since="connection"))
    assert ineligible(inv, rules, _conn()) is None
    reconnected = _conn(since=NOW - timedelta(days=1))
    reconnected.connected_at = NOW - timedelta(hours=1)
    assert ineligible(inv, rules, reconnected) is None
    late = _conn()
    late.connected_at = NOW - timedelta(hours=1)
    reason = ineligible(inv, rules, late)
    assert reason is not None and "first heard of" in reason


async def test_the_payment_that_settles_an_invoice_is_seen_as_qbos_payment():
    """Issue 25's 30-minute run: an invoice stayed partially_paid, paid in QBO.

    The webhook of the first (partial) payment, read before the second was in QBO,
    moved the CRM back to partially paid after it had said paid; the second payment's
    job must bring it to paid: its write is seen as QBO's `payment_created`.
    """
    inv = _invoice(
        qbo_id="3761",
        qbo_sync_token="2",
        qbo_status="partially_paid",
        balance="50.00",
        pushed_body={"CustomerRef": {"value": "58"}},
    )

    class Qbo:
        async def create(self, entity: str, body: Any, request_id: str) -> Any:
            return {"Id": "99"}

    class NoRecords:  # a store from before payments had records (issue 26)
        async def payment_records(self, *args: Any) -> list[Any]:
            return []

    payment = {"payment_id": "P-2", "amount": "50.00", "date": "2026-11-22"}
    job = Job(
        tenant="acme",
        kind=JobKind.PAYMENT_PUSH,
        subject="P-2",
        invoice_id="I-1",
        next_attempt_at=NOW,
        payload=payment,
    )
    ctx = JobContext(
        job=job,
        invoice=inv,
        client=Qbo(),  # type: ignore[arg-type]
        connection=_conn(preferences={"accounts": {"Undeposited Funds": "4"}}),
        rules=RULES,
        store=NoRecords(),  # type: ignore[arg-type]
        now=NOW,
        unclear=False,
        changes=ChangeSet(),
    )
    await push_payment(ctx)
    # its QBO copy is remembered, so that a delete on either side finds the other
    [record] = ctx.changes.payments
    assert (record.payment_id, record.qbo_id, record.qbo_invoice_id) == (
        "P-2",
        "99",
        "3761",
    )
    assert inv.qbo_sync_token == "3+"  # the payment moved it: at least one more
    assert (inv.balance, inv.qbo_status, ctx.seen) == (
        "0.00",
        "paid",
        ["payment_created"],
    )
    # a partial payment from open says nothing: the CRM moved the status itself
    inv.qbo_status, inv.balance, ctx.seen = "open", "100.00", []
    await push_payment(ctx)
    assert (inv.qbo_status, ctx.seen) == ("partially_paid", [])


async def test_an_update_after_a_payment_moved_the_token_reads_it_first():
    """An update never goes out without a SyncToken (QBO 2020, failed for good).

    Issue 26's long chaos run: a payment syncd removed left the token unknown.
    """
    inv = _invoice(
        qbo_id="4157",
        qbo_sync_token=None,  # a payment syncd wrote or removed moved it
        qbo_status="open",
        balance="200.00",
        sync_state=SyncState.PENDING,
        pushed_body={"Line": []},
    )
    inv.data = {**inv.data, "customer": {"contact_id": "C-1", "name": "Acme"}}

    class Linked:
        async def link(self, tenant: str, kind: Any, key: str) -> str:
            return RESOLVED.customer_id if key == "C-1" else RESOLVED.items[key]

    class Qbo:
        async def read(self, entity: str, entity_id: str) -> dict[str, Any]:
            return {
                "Id": entity_id,
                "SyncToken": "7",
                "TotalAmt": Decimal("200.00"),
                "Balance": Decimal("200.00"),
            }

    ctx = _offline(inv, JobKind.INVOICE_PUSH, client=Qbo(), store=Linked())
    prepared = await prepare_push(ctx)
    assert prepared is not None and isinstance(prepared.plan, Update)
    assert inv.qbo_sync_token == "7"  # what the update (single or batched) will carry
