"""The store's roles: one small Protocol per consumer, composed into `Store`.

Each consumer is typed against the roles it uses, so a second implementation
(PostgreSQL, issue 24) is held to exactly what syncd needs, role by role.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from syncd.models import (
    Backlog,
    ChangeSet,
    Connection,
    CreditNote,
    Cutoffs,
    Failure,
    Fence,
    Held,
    HistoryEntry,
    Invoice,
    Job,
    LedgerEntry,
    Link,
    LinkKind,
    MoneyKind,
    OutboxRow,
    Parked,
    PaymentRecord,
    StoredWebhook,
    TenantCounts,
    UnderWay,
)


@dataclass(frozen=True, slots=True)
class TokenTurn:
    """A realm's sealed token as stored, and how to keep a rotated one, during a turn."""

    sealed: bytes | None  # None: no connection holds the realm now
    keep: Callable[[bytes], Awaitable[None]]


class Health(Protocol):
    """The database's state, for /readyz and start-up and shut-down."""

    @property
    def problem(self) -> str | None:
        """Why the store cannot be used now (for /readyz); None when fine."""

    async def open(self) -> None:
        """Open the database and run pending migrations."""

    async def close(self) -> None:
        """Finish queued work and close."""

    @property
    def is_open(self) -> bool:
        """Tell whether the store can be used (for /readyz)."""


class Committer(Protocol):
    """Writes one ChangeSet in one transaction (every writer's one way in)."""

    async def commit(self, changes: ChangeSet) -> None:
        """Write a whole ChangeSet in one transaction.

        Raises StoreError when the database cannot be used (read-only, corrupt, full),
        anything else when this ChangeSet cannot be written.
        """


class Payments(Protocol):
    """Payments, receipts and refunds and their QBO copies (issue 26)."""

    async def payment_records(
        self, tenant: str, kinds: tuple[MoneyKind, ...], payment_ids: list[str]
    ) -> list[PaymentRecord]:
        """The records of these CRM payments (or refunds), of these kinds."""

    async def payments_in_qbo(
        self, tenant: str, qbo_ids: list[str]
    ) -> list[PaymentRecord]:
        """The records whose QBO copy is one of these Payments (any kind)."""

    async def refunded(self, tenant: str, payment_id: str) -> Decimal:
        """What the CRM's refunds of one payment add up to (those not removed)."""

    async def credit_notes(
        self, tenant: str, credit_note_ids: list[str]
    ) -> dict[str, CreditNote]:
        """These credit notes as syncd keeps them, by id."""

    async def money_of_invoice(
        self, tenant: str, invoice_id: str
    ) -> tuple[list[PaymentRecord], list[CreditNote]]:
        """An invoice's payments (with their refunds) and credit notes, for the admin."""


class Intake(Committer, Payments, Protocol):
    """The CRM inbox: which messages are known, the invoices and payments a batch names."""

    async def known_messages(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Return which (tenant, message id) pairs the ledger already holds."""

    async def load_invoices(self, tenant: str, ids: list[str]) -> dict[str, Invoice]:
        """Return the stored invoices among `ids` of `tenant`."""

    async def parked_messages(
        self, limit: int, invoices: Collection[tuple[str, str]] | None = None
    ) -> list[Parked]:
        """Parked messages (of these (tenant, invoice) only, if given), oldest first."""


class Outbox(Committer, Protocol):
    """The publisher: the messages committed and not yet acknowledged by the broker."""

    async def pending_outbox(self, limit: int) -> list[OutboxRow]:
        """Return the oldest unpublished messages, in order."""

    async def outbox_done(self, seqs: list[int]) -> None:
        """Forget published messages."""


class DriftReports(Committer, Protocol):
    """Each tenant's latest drift report (issue 27); a check commits it with its mends."""

    async def drift_report(self, tenant: str) -> bytes | None:
        """The tenant's latest drift report (JSON), if a check has run."""

    async def drift_open(self) -> dict[str, int]:
        """Each checked tenant's differences in its latest report."""

    async def request_drift_check(self, tenant: str, at: datetime, heal: bool) -> None:
        """Ask for a check now (whichever replica holds the company runs it)."""

    async def drift_requests(self) -> dict[str, tuple[datetime, bool]]:
        """The checks asked for and not started since: tenant → (when, heal?)."""

    async def drift_progress(self, tenant: str) -> str | None:
        """How far the running check is (a line for a person), if one runs."""

    async def set_drift_progress(self, tenant: str, progress: str | None) -> None:
        """Say how far the tenant's check is (None: none runs)."""

    async def drift_failed(self, tenant: str, started: datetime, reason: str) -> None:
        """A check that began at `started` failed: said, and the requests before it end."""


class InvoiceReads(Protocol):
    """What the admin side, reconciliation and the workers read of invoices."""

    async def invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        """Return one invoice."""

    async def history(self, tenant: str, invoice_id: str) -> list[HistoryEntry]:
        """Return one invoice's moves, oldest first."""

    async def histories(
        self, tenant: str, invoice_ids: list[str]
    ) -> dict[str, list[HistoryEntry]]:
        """The moves of each of these invoices, oldest first, in one query."""

    async def failures(self, tenant: str) -> list[Failure]:
        """Return a tenant's failures, oldest first."""

    async def ledger(self, tenant: str, message_id: str) -> LedgerEntry | None:
        """Return what became of one inbound message."""

    async def invoices(
        self, tenant: str, sync_state: str | None = None
    ) -> list[Invoice]:
        """A tenant's invoices (optionally in one sync state), newest change first."""

    async def invoice_page(
        self,
        tenant: str,
        *,
        limit: int,
        sync_state: str | None = None,
        status: str | None = None,
        before: tuple[str, str] | None = None,
        offset: int = 0,
    ) -> list[Invoice]:
        """A page of a tenant's invoices, newest change first.

        `before`: the (updated_at, invoice_id) of the last invoice of the page before.
        """

    async def past_due(self, tenant: str, today: date, limit: int) -> list[Invoice]:
        """Up to `limit` synced invoices QBO shows open or partly paid, due before today."""

    async def tenant_counts(self, tenant: str) -> TenantCounts:
        """The tenant's invoices by sync state, jobs not finished, failures open."""

    async def backlog(self) -> Backlog:
        """Jobs waiting and in flight, the outbox's depth, the oldest waiting webhook."""


class Realms(Committer, Protocol):
    """Each tenant's QBO company: connection, sealed tokens, books, reads, OAuth states."""

    async def connection(self, tenant: str) -> Connection | None:
        """Return the tenant's QBO connection."""

    async def save_connection(self, conn: Connection) -> None:
        """Insert or update a tenant's connection; RealmTakenError if another holds it."""

    async def save_token(self, tenant: str, realm_id: str, sealed: bytes) -> None:
        """Persist a rotated token set, sealed (before it is used)."""

    def token_turn(
        self, tenant: str, realm_id: str
    ) -> AbstractAsyncContextManager[TokenTurn]:
        """The realm's sealed token while no one else may refresh it (any process)."""

    async def set_preferences(self, tenant: str, preferences: dict[str, Any]) -> None:
        """Keep what was read of the company at connection."""

    async def set_connection_status(
        self, tenant: str, status: str, error: str | None
    ) -> None:
        """Mark a connection (e.g. needs_reconnect after invalid_grant)."""

    async def set_warned(self, tenant: str, days: int) -> None:
        """Remember the expiry warning given for the tenant's grant (30 or 7 days)."""

    async def delete_connection(self, tenant: str) -> None:
        """Forget a tenant's connection (after revoke)."""

    async def tenant_of_realm(self, realm_id: str) -> str | None:
        """The tenant connected to a QBO company."""

    async def new_state(
        self, state: str, tenant: str, force: bool, now: datetime, ttl: timedelta
    ) -> None:
        """Remember a one-time OAuth state; forget those older than `ttl`."""

    async def take_state(self, state: str) -> tuple[str, bool, datetime] | None:
        """Consume a one-time OAuth state: (tenant, force, created) or None."""

    async def books(self, tenant: str) -> tuple[str, datetime] | None:
        """The QBO company the tenant's references belong to, and its first connection."""

    async def add_reads(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add QBO reads counted since the last call, by (realm, month "YYYY-MM")."""

    async def reads(self, month: str | None = None) -> list[tuple[str, str, int]]:
        """(realm, month, reads), newest month first; of one month when given."""

    async def remembers_references(self, tenant: str) -> bool:
        """Whether any link or QBO id is remembered for the tenant."""

    async def linked_invoices(self, tenant: str) -> int:
        """How many of the tenant's invoices have a QBO copy."""

    async def linked_invoices_of(self, tenant: str) -> list[Invoice]:
        """The tenant's invoices that have a QBO copy."""


class References(Payments, Protocol):
    """What QBO's objects are to syncd: links, deals, payments, writes under way."""

    async def invoice(self, tenant: str, invoice_id: str) -> Invoice | None:
        """Return one invoice."""

    async def invoices_by_qbo_ids(
        self, tenant: str, qbo_ids: list[str]
    ) -> dict[str, Invoice]:
        """The tenant's invoices synced as these QBO invoices, by QBO Id."""

    async def link(self, tenant: str, kind: LinkKind, key: str) -> str | None:
        """The QBO id a CRM customer or item is linked to."""

    async def links_to(self, tenant: str, kind: LinkKind, qbo_id: str) -> list[Link]:
        """The CRM customers or items linked to one QBO object."""

    async def deals(self, tenant: str, qbo_invoice_ids: list[str]) -> dict[str, str]:
        """The CRM deals these QBO-made invoices are linked to (HS4)."""

    async def writes_under_way(self, tenant: str, invoice_ids: list[str]) -> UnderWay:
        """The deletes, voids and CRM payments queued for these invoices, unfinished."""

    async def linked_customers(self, tenant: str, qbo_ids: list[str]) -> set[str]:
        """Which of these QBO customers syncd created or matched (linked)."""


class JobQueue(Committer, Protocol):
    """The QBO job queue."""

    async def due_jobs(
        self,
        now: datetime,
        limit: int,
        skip: Collection[str] = (),
        only: Collection[str] | None = None,
    ) -> list[Job]:
        """Jobs to run now, in queue order: up to `limit` per tenant, of `only`'s."""

    async def start_jobs(self, jobs: list[Job], fence: Fence | None = None) -> None:
        """Claim jobs (in flight, one more attempt) in one write, before their QBO call.

        FencedError, nothing written, if `fence`'s lease was taken over or another
        replica claimed one of them meanwhile.
        """

    async def postpone_jobs(self, tenant: str, now: datetime, until: datetime) -> int:
        """Make a tenant's jobs due by `now` wait until `until`; return how many."""

    async def jobs_due_now(self, tenant: str, now: datetime) -> None:
        """Make a tenant's waiting jobs due (its company was just reconnected)."""

    async def job(self, job_id: int) -> Job | None:
        """One job, by its id."""

    async def jobs(self, tenant: str) -> list[Job]:
        """Every job of a tenant, oldest first."""


class Webhooks(Committer, Protocol):
    """QBO's stored webhook bodies, applied event keys and the CRM's refresh requests."""

    async def store_inbound(
        self, body: bytes, now: datetime, realm_id: str | None = None
    ) -> None:
        """Keep a webhook body, of one company if `realm_id` (before the 200)."""

    async def pending_inbound(
        self,
        limit: int,
        now: datetime | None = None,
        *,
        tenants: Collection[str] | None = None,
        strays: bool = True,
    ) -> list[StoredWebhook]:
        """Stored bodies not yet processed (and due at `now`: retries wait), oldest first.

        With `tenants`, their companies' only, and (`strays`) those no tenant claims.
        """

    async def new_events(self, realm_id: str, keys: list[str]) -> set[str]:
        """Which event keys of a realm were not applied yet."""

    async def pending_refreshes(
        self, limit: int, tenants: Collection[str] | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """The CRM's refresh requests not yet done (of `tenants` only), oldest first."""


class Pruning(Protocol):
    """Forgetting what is old enough, and keeping the file in shape."""

    async def prune(self, cutoffs: Cutoffs, limit: int) -> dict[str, int]:
        """Delete up to `limit` finished records of each kind older than `cutoffs`.

        Returns how many of each kind went; a kind at `limit` may have more.
        """

    async def optimize(self) -> None:
        """Refresh the query planner's statistics where the data has changed."""


class AdminSessions(Protocol):
    """The admin page's logged-in browsers, by the SHA-256 of their cookie's id."""

    async def start_session(
        self, sid_hash: str, csrf: str, expires: datetime, now: datetime
    ) -> None:
        """Keep a new session (and forget those expired by `now`)."""

    async def session(
        self, sid_hash: str, now: datetime
    ) -> tuple[str, datetime] | None:
        """A live session's CSRF token and end, or None."""

    async def end_session(self, sid_hash: str) -> None:
        """Forget a session (logged out)."""


class Leases(Protocol):
    """Replicas' heartbeats and the leases that keep a piece of work in one place."""

    async def beat(self, replica: str, now: datetime, ttl: timedelta) -> list[str]:
        """Say `replica` lives; the replicas seen within `ttl`, itself included."""

    async def hold(
        self,
        replica: str,
        names: Sequence[str],
        share: int,
        now: datetime,
        ttl: timedelta,
        busy: Collection[str] = (),
        spent: Mapping[str, str] = {},
    ) -> dict[str, Held]:
        """Hold `share` of the leases `names`, and the `busy` ones beyond it."""

    async def release(
        self, replica: str, now: datetime, spent: Mapping[str, str] = {}
    ) -> None:
        """Give back every lease of `replica` at once (each with its `spent` record)."""

    async def keep_spent(self, replica: str, spent: Mapping[str, str]) -> None:
        """Keep `spent` records in the leases `replica` holds (name → record)."""

    async def leases(self) -> list[tuple[str, str | None, int, datetime]]:
        """Every lease: name, owner (None when free), epoch, until when."""


class WakeUps(Protocol):
    """What other processes on the store commit for this one to act on."""

    def wake_ups(self) -> AsyncIterator[str]:
        """`jobs`, `outbox`, `inbound` as they commit (`all` after a gap); never ends."""
