"""Payments, receipts and refunds and their QBO copies (issue 26), in the shared SQL.

A payment deleted in the CRM is found by the CRM's id; one removed in QBO by QBO's. A
record's state only moves forward (recorded → removing → removed), whichever writer
comes last: syncd's own push recording its QBO copy never brings a deleted payment back.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from syncd.models import MoneyKind, MoneyState, PaymentRecord
from syncd.store import rows
from syncd.store.database import many, rows_among
from syncd.store.sql import Db, Sql

_COLS = (
    "tenant, kind, payment_id, invoice_id, amount, state, qbo_id, qbo_invoice_id, "
    "refunds, at"
)
# the later of two states (recorded < removing < removed)
_STATE = (
    "CASE WHEN payments.state = 'removed' OR excluded.state = 'removed' THEN 'removed' "
    "WHEN payments.state = 'removing' OR excluded.state = 'removing' THEN 'removing' "
    "ELSE 'recorded' END"
)


class MoneyTables:
    """A SqlStore's payment records."""

    _db: Db

    async def payment_records(
        self, tenant: str, kinds: tuple[MoneyKind, ...], payment_ids: list[str]
    ) -> list[PaymentRecord]:
        """The records of these CRM payments (or refunds), of these kinds."""
        marks = ",".join("?" * len(kinds))
        sql = (
            f"SELECT {_COLS} FROM payments WHERE tenant = ? AND kind IN ({marks}) "
            "AND payment_id IN ({among})"
        )
        async with self._db.read() as db:
            found = await rows_among(
                db, sql, [tenant, *kinds], sorted(set(payment_ids))
            )
        return [_record(row) for row in found]

    async def payments_in_qbo(
        self, tenant: str, qbo_ids: list[str]
    ) -> list[PaymentRecord]:
        """The records whose QBO copy is one of these Payments (any kind)."""
        sql = f"SELECT {_COLS} FROM payments WHERE tenant = ? AND qbo_id IN ({{among}})"
        async with self._db.read() as db:
            found = await rows_among(db, sql, [tenant], sorted(set(qbo_ids)))
        return [_record(row) for row in found]

    async def refunded(self, tenant: str, payment_id: str) -> Decimal:
        """What the CRM's refunds of one payment add up to (those not removed)."""
        sql = (
            "SELECT amount FROM payments WHERE tenant = ? AND refunds = ? "
            "AND kind = 'refund' AND state <> 'removed'"
        )
        async with (
            self._db.read() as db,
            db.execute(sql, (tenant, payment_id)) as cur,
        ):
            found = await cur.fetchall()
        return sum((Decimal(amount) for (amount,) in found), Decimal(0))


async def write_payments(db: Sql, records: list[PaymentRecord]) -> None:
    """Add or update payment records; a known QBO copy is never forgotten."""
    await many(
        db,
        f"INSERT INTO payments ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant, kind, payment_id, invoice_id) DO UPDATE SET "
        f"amount = excluded.amount, state = {_STATE}, "
        "qbo_id = coalesce(excluded.qbo_id, payments.qbo_id), "
        "qbo_invoice_id = coalesce(excluded.qbo_invoice_id, payments.qbo_invoice_id), "
        "refunds = coalesce(excluded.refunds, payments.refunds)",
        [
            (
                r.tenant,
                r.kind.value,
                r.payment_id,
                r.invoice_id,
                str(r.amount),
                r.state.value,
                r.qbo_id,
                r.qbo_invoice_id,
                r.refunds,
                r.at.isoformat(),
            )
            for r in records
        ],
    )


def _record(row: Any) -> PaymentRecord:
    (
        tenant,
        kind,
        payment_id,
        invoice_id,
        amount,
        state,
        qbo_id,
        qbo_inv,
        refunds,
        at,
    ) = row
    return PaymentRecord(
        tenant=tenant,
        kind=MoneyKind(kind),
        payment_id=payment_id,
        invoice_id=invoice_id,
        amount=Decimal(amount),
        state=MoneyState(state),
        qbo_id=qbo_id,
        qbo_invoice_id=qbo_inv,
        refunds=refunds,
        at=rows.when(at),
    )
