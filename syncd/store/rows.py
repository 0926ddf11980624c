"""Rows ↔ models for the SQLite store."""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

import orjson

from syncd.models import (
    Failure,
    HistoryEntry,
    Invoice,
    Job,
    JobKind,
    JobStatus,
    LedgerEntry,
    SyncState,
)

# jobs not finished yet, as an SQL tuple: ('pending', 'in_flight')
UNFINISHED = (JobStatus.PENDING.value, JobStatus.IN_FLIGHT.value)


def when(value: str | datetime) -> datetime:
    """A stored time: SQLite keeps ISO text, PostgreSQL a timestamptz (in UTC)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


INVOICE_COLS = (
    "tenant, invoice_id, status, version, sync_state, data, qbo_id, qbo_doc_number, "
    "qbo_status, balance, last_synced_at, error, updated_at, qbo_sync_token, pushed_body, "
    "first_seen_at, rev"
)
# written, never read back: derived from the rest, for indexed questions
INVOICE_WRITTEN = INVOICE_COLS + ", due_date"
# what an update rewrites: everything but the key and the revision
_UPDATED = [c for c in INVOICE_WRITTEN.split(", ")[2:] if c != "rev"]
UPDATE_INVOICE = (
    "UPDATE invoices SET "
    + ", ".join(f"{c} = ?" for c in _UPDATED)
    + ", rev = rev + 1 WHERE tenant = ? AND invoice_id = ? AND rev = ?"
)


def pack(value: Any) -> bytes:
    """A JSON document as stored: zlib-compressed (raw JSON from before still reads).

    An invoice's snapshot and last QBO body came to ~1.6 KB, past what SQLite keeps in
    the row's own page (about 1 KB in a WITHOUT ROWID table): every row spilled into an
    overflow page of its own, 4.6 KB an invoice on disk, two pages written per update.
    """
    return zlib.compress(orjson.dumps(value), 6)


def unpack(stored: bytes) -> Any:
    """What `pack` stored, or a JSON document stored raw by an earlier syncd."""
    return orjson.loads(zlib.decompress(stored) if stored[:1] == b"\x78" else stored)


def iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def ledger_row(e: LedgerEntry) -> tuple[Any, ...]:
    return (
        e.tenant,
        e.message_id,
        e.topic,
        e.type,
        e.outcome.value,
        e.reason,
        e.received_at.isoformat(),
        e.payload,
    )


def invoice_row(i: Invoice) -> tuple[Any, ...]:
    return (
        i.tenant,
        i.invoice_id,
        i.status,
        i.version,
        i.sync_state.value,
        pack(i.data),
        i.qbo_id,
        i.qbo_doc_number,
        i.qbo_status,
        i.balance,
        iso(i.last_synced_at),
        i.error,
        i.updated_at.isoformat(),
        i.qbo_sync_token,
        pack(i.pushed_body) if i.pushed_body is not None else None,
        iso(i.first_seen_at),
        1,
        due.isoformat() if (due := i.due_date) else None,
    )


def invoice_update(i: Invoice) -> tuple[Any, ...]:
    """Parameters of UPDATE_INVOICE: the new values, then the key and the revision read."""
    row = invoice_row(i)
    return (*row[2:-2], row[-1], i.tenant, i.invoice_id, i.rev)


def invoice(row: Any) -> Invoice:
    (
        tenant,
        invoice_id,
        status,
        version,
        sync_state,
        data,
        qbo_id,
        doc,
        qbo_status,
        balance,
        last_synced_at,
        error,
        updated_at,
        sync_token,
        pushed,
        first_seen,
        rev,
    ) = row
    return Invoice(
        tenant=tenant,
        invoice_id=invoice_id,
        status=status,
        version=version,
        sync_state=SyncState(sync_state),
        data=unpack(data),
        qbo_id=qbo_id,
        qbo_doc_number=doc,
        qbo_status=qbo_status,
        balance=balance,
        last_synced_at=when(last_synced_at) if last_synced_at else None,
        error=error,
        updated_at=when(updated_at),
        qbo_sync_token=sync_token,
        pushed_body=unpack(pushed) if pushed else None,
        first_seen_at=when(first_seen) if first_seen else None,
        rev=rev,
    )


def history_row(h: HistoryEntry) -> tuple[Any, ...]:
    return (
        h.tenant,
        h.invoice_id,
        h.from_status,
        h.to_status,
        h.cause,
        h.event_id,
        h.at.isoformat(),
    )


def failure_row(f: Failure) -> tuple[Any, ...]:
    return (
        f.tenant,
        f.invoice_id,
        f.operation,
        f.code,
        f.message,
        f.attempts,
        int(f.retryable),
        f.event_id,
        f.at.isoformat(),
        f.job_id,
    )


def job_row(j: Job) -> tuple[Any, ...]:
    return (
        j.tenant,
        j.queue,
        j.kind.value,
        j.subject,
        j.status.value,
        j.attempts,
        j.next_attempt_at.isoformat(),
        orjson.dumps(j.payload),
        j.last_error,
    )


def job(row: Any) -> Job:
    job_id, tenant, queue, kind, subject, status, attempts, next_at, payload, error = (
        row
    )
    kind = JobKind(kind)
    return Job(
        id=job_id,
        tenant=tenant,
        kind=kind,
        subject=subject,
        # a job of no invoice is its own queue (`Job.queue`); any other, its invoice's
        invoice_id=None if queue == f"{kind.subject}:{subject}" else queue,
        status=JobStatus(status),
        attempts=attempts,
        next_attempt_at=when(next_at),
        payload=orjson.loads(payload),
        last_error=error,
    )
