"""What syncd tells a tenant's CRM, as decided: typed intents, not yet topics or bytes.

Decisions append these to a ChangeSet's outbox. The store renders each one
(`syncd.store.outbox.render`) into topic, envelope and id inside the transaction that
commits it: one place knows the topic prefix and mints ids (contract: "syncd → CRM").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from syncd.const import (
    TOPIC_REJECTED,
    TOPIC_SET_STATUS,
    TOPIC_STATE,
    TOPIC_SYNC_FAILED,
    TYPE_REJECTED,
    TYPE_SYNC_STATE,
)
from syncd.models import CreditNote, Invoice, Message

__all__ = [
    "ConnectionState",
    "ConnectionWarning",
    "ContactCreated",
    "CreditNoteImported",
    "CreditNoteState",
    "DriftFound",
    "InputRejected",
    "InvoiceImported",
    "InvoiceLinked",
    "Message",
    "PaymentReceived",
    "PaymentRefunded",
    "PaymentRemoved",
    "PaymentUnapplied",
    "ReviewRequested",
    "StateChanged",
    "StatusSet",
    "SyncFailed",
    "invoice_view",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(Message):
    """The retained latest word on one invoice (HS3)."""

    type: ClassVar[str] = TYPE_SYNC_STATE
    retain: ClassVar[bool] = True

    @classmethod
    def of(
        cls, invoice: Invoice, at: datetime, causation_id: str | None = None
    ) -> StateChanged:
        """The state of `invoice` as it stands now."""
        return cls(
            tenant=invoice.tenant,
            at=at,
            data=invoice_view(invoice),
            causation_id=causation_id,
        )

    def subtopic(self) -> str:
        """`sync/invoice/<invoice id>`."""
        return TOPIC_STATE.format(invoice_id=self.data["invoice_id"])


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditNoteState(Message):
    """The retained latest word on one credit note (issue 26)."""

    type: ClassVar[str] = "credit_note.sync_state"
    retain: ClassVar[bool] = True

    @classmethod
    def of(
        cls, note: CreditNote, at: datetime, causation_id: str | None = None
    ) -> CreditNoteState:
        """The state of `note` as it stands now."""
        synced = note.last_synced_at
        data = {
            "credit_note_id": note.credit_note_id,
            "sync_state": note.sync_state.value,
            "status": note.status,
            "version": note.version,
            "invoice_id": note.invoice_id,
            "qbo_id": note.qbo_id,
            "qbo_doc_number": note.qbo_doc_number,
            "qbo_status": note.qbo_status,
            "total": note.data.get("total"),
            "remaining_credit": note.remaining_credit,
            "last_synced_at": synced.isoformat() if synced else None,
            "error": note.error,
        }
        return cls(tenant=note.tenant, at=at, data=data, causation_id=causation_id)

    def subtopic(self) -> str:
        """`sync/credit_note/<credit note id>`."""
        return f"sync/credit_note/{self.data['credit_note_id']}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRejected(Message):
    """A refused message: its topic, its id if readable, and why."""

    type: ClassVar[str] = TYPE_REJECTED
    below: ClassVar[str] = TOPIC_REJECTED

    @classmethod
    def of(
        cls,
        tenant: str,
        topic: str,
        message_id: str | None,
        reason: str,
        at: datetime,
    ) -> InputRejected:
        """`topic` is the refused message's own; `message_id` its id if readable."""
        data = {"topic": topic, "message_id": message_id, "reason": reason}
        return cls(tenant=tenant, at=at, data=data, causation_id=message_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncFailed(Message):
    """A sync that failed (HS2): invoice, operation, QBO code and message, attempts."""

    type: ClassVar[str] = "sync.failed"
    below: ClassVar[str] = TOPIC_SYNC_FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusSet(Message):
    """A QBO event moved the invoice (RO6): `{invoice_id, from, to, reason}`."""

    type: ClassVar[str] = "invoice.set_status"
    below: ClassVar[str] = TOPIC_SET_STATUS


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentReceived(Message):
    """A QBO payment on a synced invoice (OD10, HS5)."""

    type: ClassVar[str] = "payment.received"
    below: ClassVar[str] = "out/payment/received"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRemoved(Message):
    """A payment on a synced invoice deleted or voided in QBO (issue 26, HS7)."""

    type: ClassVar[str] = "payment.removed"
    below: ClassVar[str] = "out/payment/removed"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentUnapplied(Message):
    """A CRM payment larger than its invoice's balance: the surplus QBO keeps unapplied."""

    type: ClassVar[str] = "payment.unapplied"
    below: ClassVar[str] = "out/payment/unapplied"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRefunded(Message):
    """A refund a person made in QBO for a synced customer (issue 26); never an echo."""

    type: ClassVar[str] = "payment.refunded"
    below: ClassVar[str] = "out/payment/refunded"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditNoteImported(Message):
    """A credit memo a person made in QBO (issue 26); never an echo."""

    type: ClassVar[str] = "credit_note.imported"
    below: ClassVar[str] = "out/credit_note/imported"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceLinked(Message):
    """A QBO-made invoice linked to a CRM deal, or unlinked (`deal_id` null)."""

    type: ClassVar[str] = "invoice.linked"
    below: ClassVar[str] = "out/invoice/linked"


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceImported(Message):
    """An invoice a person made in QBO, shown in the CRM (HS3, HS4)."""

    type: ClassVar[str] = "invoice.imported"
    below: ClassVar[str] = "out/invoice/imported"


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftFound(Message):
    """A difference between the CRM and QBO a drift check found (issue 27)."""

    type: ClassVar[str] = "drift.found"
    below: ClassVar[str] = "out/drift/found"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactCreated(Message):
    """A customer new in QBO (HL1)."""

    type: ClassVar[str] = "contact.created"
    below: ClassVar[str] = "out/contact/created"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewRequested(Message):
    """A customer's first QBO payment, when reviews are switched on (HL2)."""

    type: ClassVar[str] = "review.requested"
    below: ClassVar[str] = "out/review/requested"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionState(Message):
    """The retained state of the tenant's QBO connection (`P/T/connection`)."""

    type: ClassVar[str] = "connection.state"
    below: ClassVar[str] = "connection"
    retain: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionWarning(Message):
    """`30_days`, `7_days` or `reconnect_needed` before the connection lapses."""

    type: ClassVar[str] = "connection.warning"
    below: ClassVar[str] = "out/connection/warning"


def invoice_view(invoice: Invoice) -> dict[str, Any]:
    """An invoice as the CRM and the admin API see it: CRM status beside QBO's view."""
    synced = invoice.last_synced_at
    return {
        "invoice_id": invoice.invoice_id,
        "sync_state": invoice.sync_state.value,
        "status": invoice.status,
        "version": invoice.version,
        "qbo_id": invoice.qbo_id,
        "qbo_doc_number": invoice.qbo_doc_number,
        "qbo_status": invoice.qbo_status,
        "balance": invoice.balance,
        "total": invoice.total,
        "last_synced_at": synced.isoformat() if synced else None,
        "error": invoice.error,
    }
