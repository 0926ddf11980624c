"""Payments, receipts, refunds and credit notes and their QBO copies (issue 26).

A payment deleted in the CRM is found by the CRM's id; one removed in QBO by QBO's. A
record's state only moves forward (recorded → removing → removed), whichever writer
comes last: syncd's own push recording its QBO copy never brings a deleted payment back.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from syncd.models import CreditNote, MoneyKind, MoneyState, PaymentRecord, SyncState
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

    async def credit_notes(
        self, tenant: str, credit_note_ids: list[str]
    ) -> dict[str, CreditNote]:
        """These credit notes as syncd keeps them, by id."""
        sql = (
            f"SELECT {_NOTE_COLS} FROM credit_notes WHERE tenant = ? "
            "AND credit_note_id IN ({among})"
        )
        async with self._db.read() as db:
            found = await rows_among(db, sql, [tenant], sorted(set(credit_note_ids)))
        notes = [_note(row) for row in found]
        return {n.credit_note_id: n for n in notes}

    async def money_of_invoice(
        self, tenant: str, invoice_id: str
    ) -> tuple[list[PaymentRecord], list[CreditNote]]:
        """An invoice's payments (with their refunds) and credit notes, for the admin."""
        async with self._db.read() as db:
            async with db.execute(
                f"SELECT {_COLS} FROM payments WHERE tenant = ? AND invoice_id = ?",
                (tenant, invoice_id),
            ) as cur:
                paid = [_record(r) for r in await cur.fetchall()]
            ids = [p.payment_id for p in paid if p.kind != MoneyKind.QBO_PAYMENT]
            refunds = await rows_among(
                db,
                f"SELECT {_COLS} FROM payments WHERE tenant = ? AND kind = 'refund' "
                "AND refunds IN ({among})",
                [tenant],
                ids,
            )
            async with db.execute(
                f"SELECT {_NOTE_COLS} FROM credit_notes WHERE tenant = ? "
                "AND invoice_id = ? ORDER BY credit_note_id",
                (tenant, invoice_id),
            ) as cur:
                notes = [_note(r) for r in await cur.fetchall()]
        records = paid + [_record(r) for r in refunds]
        return sorted(records, key=lambda r: r.at), notes


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


_NOTE_COLS = (
    "tenant, credit_note_id, version, status, data, sync_state, qbo_id, "
    "qbo_sync_token, qbo_doc_number, qbo_status, remaining_credit, applied_payment, "
    "pushed_body, error, last_synced_at, updated_at, invoice_id"
)


async def write_credit_notes(
    db: Sql, snapshots: list[CreditNote], synced: list[CreditNote]
) -> None:
    """The CRM's newer snapshots; then what jobs did in QBO (sync state: of its version)."""
    await many(
        db,
        f"INSERT INTO credit_notes ({_NOTE_COLS}) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant, credit_note_id) DO UPDATE SET version = excluded.version, "
        "status = excluded.status, data = excluded.data, "
        "sync_state = excluded.sync_state, updated_at = excluded.updated_at "
        "WHERE excluded.version > credit_notes.version",
        [_note_row(n) for n in snapshots],
    )
    await many(
        db,
        "UPDATE credit_notes SET qbo_id = ?, qbo_sync_token = ?, qbo_doc_number = ?, "
        "qbo_status = ?, remaining_credit = ?, applied_payment = ?, pushed_body = ?, "
        "error = ?, last_synced_at = ?, "
        "sync_state = CASE WHEN version = ? THEN ? ELSE sync_state END "
        "WHERE tenant = ? AND credit_note_id = ?",
        [
            (
                n.qbo_id,
                n.qbo_sync_token,
                n.qbo_doc_number,
                n.qbo_status,
                n.remaining_credit,
                n.applied_payment,
                orjson.dumps(n.pushed_body) if n.pushed_body is not None else None,
                n.error,
                n.last_synced_at.isoformat() if n.last_synced_at else None,
                n.version,
                n.sync_state.value,
                n.tenant,
                n.credit_note_id,
            )
            for n in synced
        ],
    )


def _note_row(n: CreditNote) -> tuple[Any, ...]:
    return (
        n.tenant,
        n.credit_note_id,
        n.version,
        n.status,
        orjson.dumps(n.data),
        n.sync_state.value,
        n.qbo_id,
        n.qbo_sync_token,
        n.qbo_doc_number,
        n.qbo_status,
        n.remaining_credit,
        n.applied_payment,
        orjson.dumps(n.pushed_body) if n.pushed_body is not None else None,
        n.error,
        n.last_synced_at.isoformat() if n.last_synced_at else None,
        n.updated_at.isoformat(),
        n.invoice_id,
    )


def _note(row: Any) -> CreditNote:
    (tenant, note_id, version, status, data, state, qbo_id, token, doc, view, left,
     applied, pushed, error, synced, updated, _) = row  # fmt: skip
    return CreditNote(
        tenant=tenant,
        credit_note_id=note_id,
        version=int(version),
        status=status,
        data=orjson.loads(data),
        sync_state=SyncState(state),
        qbo_id=qbo_id,
        qbo_sync_token=token,
        qbo_doc_number=doc,
        qbo_status=view,
        remaining_credit=left,
        applied_payment=applied,
        pushed_body=orjson.loads(pushed) if pushed is not None else None,
        error=error,
        last_synced_at=rows.when(synced) if synced else None,
        updated_at=rows.when(updated),
    )
