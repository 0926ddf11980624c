"""Value objects that flow between inbox, machine, store and publisher."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar


class SyncState(StrEnum):
    """Where syncd stands with the QBO copy of an invoice (not a CRM status)."""

    NOT_SYNCED = "not_synced"
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"
    OUT_OF_DATE = "out_of_date"
    OTHER_COMPANY = "other_company"  # synced to a company the tenant left
    SKIPPED = "skipped"  # `[sync] since` or `[sync.filters]` keep it out of QBO


class Outcome(StrEnum):
    """What became of one inbound message, as the ledger records it."""

    APPLIED = "applied"
    IGNORED = "ignored"
    REFUSED = "refused"
    REJECTED = "rejected"
    FAILED = "failed"  # valid, but failed while being decided or stored: isolated
    # waiting for its invoice's earlier messages (replicas deliver out of order): decided
    # again when the invoice changes, refused only once it has waited too long
    PARKED = "parked"


@dataclass(frozen=True, slots=True, kw_only=True)
class RawMessage:
    """One MQTT message as received, before any validation."""

    topic: str
    payload: bytes
    received_at: datetime
    retained: bool = False  # delivered with the retain flag: a replay, never acted on


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A validated inbound message (contract: Envelope)."""

    id: str
    type: str
    tenant: str
    occurred_at: datetime
    data: dict[str, Any]
    topic: str
    payload: bytes = field(repr=False)


@dataclass(slots=True, kw_only=True)
class Invoice:
    """An invoice as syncd keeps it: CRM status and snapshot, beside its sync state."""

    tenant: str
    invoice_id: str
    status: str
    version: int
    data: dict[str, Any]
    sync_state: SyncState = SyncState.NOT_SYNCED
    qbo_id: str | None = None
    qbo_sync_token: str | None = None
    qbo_doc_number: str | None = None
    qbo_status: str | None = None
    balance: str | None = None
    last_synced_at: datetime | None = None
    error: str | None = None
    # the last body written to QBO: an unchanged snapshot makes no call, a changed one
    # sends only the fields that differ
    pushed_body: dict[str, Any] | None = None
    updated_at: datetime
    first_seen_at: datetime | None = None  # when syncd first heard of it (HL8)
    # the stored row's revision this copy was read at (0: not stored yet); a write of a
    # copy the store has moved past is refused (StaleWriteError)
    rev: int = 0
    # a job's copy: its QBO side as loaded, so that recording it writes back only what
    # the job changed (a webhook may have moved the rest meanwhile); never stored
    loaded_qbo: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def total(self) -> str | None:
        """The CRM total, a decimal string."""
        total = self.data.get("total")
        return total if isinstance(total, str) else None

    @property
    def due_date(self) -> date | None:
        """When payment is due: as last written to QBO, else as the CRM has it."""
        due = (self.pushed_body or {}).get("DueDate") or self.data.get("due_date")
        try:
            return date.fromisoformat(due) if isinstance(due, str) else None
        except ValueError:
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    """One status move of one invoice, with its cause."""

    tenant: str
    invoice_id: str
    from_status: str | None
    to_status: str
    cause: str
    event_id: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """Something that did not happen, kept for the admin's failed-syncs panel (HS2)."""

    tenant: str
    invoice_id: str | None
    operation: str
    code: str
    message: str
    event_id: str | None
    at: datetime
    attempts: int = 1
    retryable: bool = False
    id: int | None = None
    job_id: int | None = None  # the QBO job that failed (its retry runs it again)
    resolved_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One message for a tenant's CRM, decided: its kinds are in `syncd.messages`."""

    tenant: str
    at: datetime
    data: dict[str, Any]
    causation_id: str | None = None

    type: ClassVar[str] = ""
    below: ClassVar[str] = ""  # its topic below "<prefix>/<tenant>/"
    retain: ClassVar[bool] = False

    def subtopic(self) -> str:
        """The topic below `<prefix>/<tenant>/`."""
        return self.below


@dataclass(frozen=True, slots=True, kw_only=True)
class Outbound:
    """An MQTT message to publish after the transaction that caused it commits."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """The processed-message ledger row: one per envelope id and tenant (dedupe)."""

    tenant: str
    message_id: str
    topic: str
    type: str
    outcome: Outcome
    reason: str
    received_at: datetime
    payload: bytes | None = None


class JobStatus(StrEnum):
    """Where a QBO job stands.

    `in_flight` is the intent ledger: committed before the call, so after a crash its
    outcome is unclear and QBO is asked before retrying.
    """

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"


class Subject(StrEnum):
    """What a job is about."""

    INVOICE = "invoice"
    PAYMENT = "payment"  # a payment of a CRM invoice
    RECEIPT = "receipt"  # a payment with no invoice (a QBO Sales Receipt)
    CONTACT = "contact"
    REFUND = "refund"  # money paid back (a QBO RefundReceipt or CreditMemo)
    CREDIT_NOTE = "credit_note"  # a CRM credit note (a QBO CreditMemo)


class JobKind(StrEnum):
    """The QBO writes syncd makes; each names what its job is about."""

    INVOICE_PUSH = "invoice.push"
    INVOICE_SEND = "invoice.send"
    INVOICE_VOID = "invoice.void"
    INVOICE_DELETE = "invoice.delete"
    PAYMENT_PUSH = "payment.push"
    RECEIPT_PUSH = "receipt.push"
    CUSTOMER_PUSH = "customer.push"
    # issue 26: the money after the invoice
    PAYMENT_REMOVE = "payment.remove"  # a CRM payment deleted: its QBO copy goes
    RECEIPT_REMOVE = "receipt.remove"
    FEE_PUSH = "fee.push"  # a processor's fee, booked as an expense
    REFUND_PUSH = "refund.push"
    CREDIT_NOTE_PUSH = "credit_note.push"  # copied, updated, applied, or removed

    @property
    def subject(self) -> Subject:
        """What a job of this kind is about."""
        return _SUBJECTS.get(self, Subject.INVOICE)

    @property
    def writes_invoice(self) -> bool:
        """Whether it changes QBO's copy of its invoice.

        Its retries and failures show on the invoice; a fee or a refund in an invoice's
        queue changes nothing there.
        """
        return self.subject is Subject.INVOICE or self in _INVOICE_MONEY


_INVOICE_MONEY = frozenset({"payment.push", "payment.remove"})
_SUBJECTS = {
    JobKind.PAYMENT_PUSH: Subject.PAYMENT,
    JobKind.RECEIPT_PUSH: Subject.RECEIPT,
    JobKind.CUSTOMER_PUSH: Subject.CONTACT,
    JobKind.PAYMENT_REMOVE: Subject.PAYMENT,
    JobKind.RECEIPT_REMOVE: Subject.RECEIPT,
    JobKind.FEE_PUSH: Subject.PAYMENT,
    JobKind.REFUND_PUSH: Subject.REFUND,
    JobKind.CREDIT_NOTE_PUSH: Subject.CREDIT_NOTE,
}


@dataclass(slots=True, kw_only=True)
class Job:
    """One QBO write, durable until done: the intent ledger.

    `subject` is the id of what `kind.subject` names (an invoice, payment, receipt or
    contact); `invoice_id` the CRM invoice the job belongs to (a payment's invoice), or
    None for a receipt or a contact. Jobs of one queue run in order, one at a time.
    """

    tenant: str
    kind: JobKind
    subject: str
    invoice_id: str | None
    id: int | None = None
    status: JobStatus = JobStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def queue(self) -> str:
        """Jobs of one invoice run in order; a receipt or a contact is its own queue."""
        return self.invoice_id or f"{self.kind.subject}:{self.subject}"

    @classmethod
    def for_invoice(
        cls, tenant: str, kind: JobKind, invoice_id: str, now: datetime
    ) -> Job:
        """A job about one CRM invoice."""
        return cls(
            tenant=tenant,
            kind=kind,
            subject=invoice_id,
            invoice_id=invoice_id,
            next_attempt_at=now,
        )


@dataclass(slots=True, kw_only=True)
class Connection:
    """A tenant's QBO company and the app's tokens for it, sealed (secrets.Cipher).

    Only `Connections` opens the token set, to build the tenant's client.
    """

    tenant: str
    realm_id: str
    status: str  # connected, needs_reconnect
    sealed_token: bytes = field(repr=False)
    preferences: dict[str, Any] = field(default_factory=dict)
    connected_at: datetime
    error: str | None = None
    since: datetime | None = (
        None  # first connected to this company (reconnects keep it)
    )
    warned: int | None = None  # the expiry warning last given for this grant (days)
    last_webhook_at: datetime | None = None  # a QBO notification last applied


class LinkKind(StrEnum):
    """What a link ties to a QBO object."""

    CUSTOMER = "customer"  # a CRM contact (by e-mail or name, as the rules match)
    ITEM = "item"  # a CRM line item's name


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """A CRM customer or item known to be a QBO object."""

    tenant: str
    kind: LinkKind
    key: str
    qbo_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DealLink:
    """A QBO-made invoice linked to a CRM deal by the CRM (HS4), or unlinked (None)."""

    tenant: str
    qbo_invoice_id: str
    deal_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredWebhook:
    """A webhook body kept before its 200, waiting to be applied."""

    seq: int
    body: bytes
    received_at: datetime  # when QBO first delivered what it holds (the lag)
    attempts: int = 0  # how many times fetching what it names failed


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookRetry:
    """Notifications whose fetch failed: stored again, to try once `next_at` comes."""

    body: bytes
    received_at: datetime
    attempts: int
    next_at: datetime
    realm_id: str | None = None  # the company it is about (its owner applies it)


@dataclass(frozen=True, slots=True, kw_only=True)
class Parked:
    """A CRM message that cannot be decided yet: kept whole until its invoice changes."""

    tenant: str
    message_id: str
    invoice_id: str
    topic: str
    payload: bytes = field(repr=False)
    reason: str
    parked_at: datetime


@dataclass(frozen=True, slots=True)
class Held:
    """A lease as a replica holds it after a beat."""

    epoch: int
    # taken from a replica that did not give it back (dead, or cut off): what it had
    # under way may still land, so its unclear work waits before it is looked into
    taken_over: bool = False
    # what was recorded of the realm's quota spent (JSON) before this beat: the last
    # holder's, for a lease this replica did not hold
    spent: str | None = None


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease as held: its name, the replica holding it, and the epoch it was taken at."""

    name: str
    owner: str
    epoch: int


@dataclass(slots=True)
class ChangeSet:
    """Everything one batch changes, written by the store in one transaction."""

    ledger: list[LedgerEntry] = field(default_factory=list)
    invoices: dict[tuple[str, str], Invoice] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    outbox: list[Message] = field(default_factory=list)  # rendered at commit
    jobs: list[Job] = field(default_factory=list)  # new (id None) or updated
    links: list[Link] = field(default_factory=list)
    deals: list[DealLink] = field(default_factory=list)
    # QBO webhooks: stored bodies now processed, and the event keys now applied
    inbound_done: list[int] = field(default_factory=list)
    inbound_new: list[WebhookRetry] = field(default_factory=list)  # to try again
    inbound_events: list[tuple[str, str]] = field(default_factory=list)
    outbox_done: list[int] = field(default_factory=list)  # published, or parked
    # the CRM's `command.refresh` requests: new ones, and the seqs of those done
    refreshes: list[dict[str, Any]] = field(default_factory=list)
    refreshes_done: list[int] = field(default_factory=list)
    # failures handled (retried, or fixed by the admin): (tenant, failure id, when)
    resolved: list[tuple[str, int, datetime]] = field(default_factory=list)
    # jobs that succeeded after failing: their open failures are over (tenant, job, when)
    jobs_recovered: list[tuple[str, int, datetime]] = field(default_factory=list)
    # tenant → (the QBO company its references now belong to, with it since when);
    # the tenant's links are forgotten
    books: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    # when it was decided: stamps the webhook rows and event keys it adds
    at: datetime | None = None
    # CRM messages parked (to decide later), and parked ones now decided (tenant, id)
    parked: list[Parked] = field(default_factory=list)
    unparked: list[tuple[str, str]] = field(default_factory=list)
    # the lease the work was done under: refused whole (FencedError) once taken over
    fence: Fence | None = None
    # tenant → when a QBO notification of its company was last applied
    webhooks_applied: dict[str, datetime] = field(default_factory=dict)
    # payments, receipts and refunds as syncd knows them (issue 26)
    payments: list[PaymentRecord] = field(default_factory=list)
    # credit notes: the CRM's snapshots (newer versions only), and their QBO side as a
    # job left it (never over a newer snapshot's state)
    credit_notes: list[CreditNote] = field(default_factory=list)
    credit_notes_synced: list[CreditNote] = field(default_factory=list)
    # tenant → its latest drift report (issue 27), a JSON document
    drift: dict[str, bytes] = field(default_factory=dict)

    def merge(self, other: ChangeSet) -> None:
        """Add what `other` changes (later changes of one invoice win)."""
        self.ledger += other.ledger
        self.invoices.update(other.invoices)
        self.history += other.history
        self.failures += other.failures
        self.outbox += other.outbox
        self.jobs += other.jobs
        self.links += other.links
        self.deals += other.deals
        self.inbound_done += other.inbound_done
        self.inbound_new += other.inbound_new
        self.inbound_events += other.inbound_events
        self.outbox_done += other.outbox_done
        self.books.update(other.books)
        self.resolved += other.resolved
        self.jobs_recovered += other.jobs_recovered
        self.refreshes += other.refreshes
        self.refreshes_done += other.refreshes_done
        self.at = self.at or other.at
        self.fence = self.fence or other.fence
        self.parked += other.parked
        self.unparked += other.unparked
        self.webhooks_applied.update(other.webhooks_applied)
        self.payments += other.payments
        self.credit_notes += other.credit_notes
        self.credit_notes_synced += other.credit_notes_synced
        self.drift.update(other.drift)


class MoneyKind(StrEnum):
    """What a payment record is."""

    PAYMENT = "payment"  # a CRM payment of an invoice: a QBO Payment
    RECEIPT = "receipt"  # a CRM payment with no invoice: a QBO Sales Receipt
    QBO_PAYMENT = "qbo_payment"  # a payment made in QBO on a synced invoice
    REFUND = "refund"  # a CRM refund: a QBO RefundReceipt or CreditMemo


class MoneyState(StrEnum):
    """Where a payment stands; it only moves forward (recorded → removing → removed)."""

    RECORDED = "recorded"
    REMOVING = "removing"  # the CRM deleted it: syncd's delete in QBO is under way
    REMOVED = "removed"  # gone from QBO (deleted or voided), by syncd or by a person


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRecord:
    """A payment, receipt or refund and what it is in QBO (issue 26).

    `payment_id` is the CRM's id (a refund's `refund_id`), or QBO's Id for a payment
    made in QBO; such a payment on several synced invoices has a record per invoice.
    """

    tenant: str
    kind: MoneyKind
    payment_id: str
    invoice_id: str = ""  # the CRM invoice it pays ("" for none)
    amount: Decimal
    state: MoneyState = MoneyState.RECORDED
    qbo_id: str | None = None  # the QBO Payment, Sales Receipt or refund, once known
    qbo_invoice_id: str | None = None
    refunds: str | None = None  # a refund: the CRM payment it pays back, if named
    at: datetime


@dataclass(slots=True, kw_only=True)
class CreditNote:
    """A CRM credit note beside its QBO CreditMemo (issue 26).

    `status` is the CRM's: `draft` (kept in the CRM), `open` (copied to QBO, applied to
    its invoice when it names one), `voided` (removed from QBO: deleted, as its API
    cannot void one).
    """

    tenant: str
    credit_note_id: str
    version: int
    status: str
    data: dict[str, Any]
    sync_state: SyncState = SyncState.NOT_SYNCED
    qbo_id: str | None = None
    qbo_sync_token: str | None = None
    qbo_doc_number: str | None = None
    qbo_status: str | None = None  # open, applied, deleted
    remaining_credit: str | None = None
    applied_payment: str | None = None  # the QBO $0 Payment linking it to its invoice
    pushed_body: dict[str, Any] | None = None
    error: str | None = None
    last_synced_at: datetime | None = None
    updated_at: datetime

    @property
    def invoice_id(self) -> str | None:
        """The CRM invoice it credits, if it names one."""
        value = self.data.get("invoice_id")
        return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnderWay:
    """syncd's own QBO writes queued and not recorded yet, for some invoices."""

    removing: set[str]  # invoices with a delete or void
    paying: dict[str, Decimal]  # invoices with CRM payments (and credits): their total
    # invoices with a CRM payment's removal under way: a balance coming back is that
    unpaying: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cutoffs:
    """What retention deletes: finished records older than these."""

    ledger: datetime  # messages applied, ignored or refused
    rejected: datetime  # messages rejected or failed, with their payloads
    finished: datetime  # done jobs, resolved failures, applied webhooks and refreshes


@dataclass(frozen=True, slots=True, kw_only=True)
class Backlog:
    """What waits in the store: for /metrics."""

    jobs_pending: int
    jobs_in_flight: int
    outbox: int
    oldest_webhook: datetime | None  # received_at of the oldest body not yet applied


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantCounts:
    """A tenant's invoices by sync state, jobs not finished, failures open: the page's."""

    sync_states: dict[str, int]
    jobs_waiting: int
    open_failures: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRow:
    """A stored outbound message waiting for its PUBACK."""

    seq: int
    topic: str
    payload: bytes
    retain: bool
