"""Inbound CRM messages: validate, dedupe, decide, and commit a batch in one transaction.

The broker is the durable inbox until the ack: the MQTT link acknowledges a batch only
after `Inbox.handle` returns, i.e. after the ledger row of every message and all of its
effects (invoice state, history, failures, outbound messages) are committed together.
A crash anywhere before that commit leaves every message un-acked, and the broker
redelivers it; the ledger turns a redelivery of a committed message into a no-op.

One message never stops the others: when deciding or storing a batch fails for any
reason but an unusable store, each message is handled alone, and one that fails alone is
recorded (ledger, failure, `…/out/input/rejected`) and acked like any refusal. A store
that cannot be written (StoreError) fails the whole batch, un-acked: the MQTT link
pauses intake and tries again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import structlog
from structlog.contextvars import bound_contextvars

from syncd import metrics
from syncd.bus import envelope
from syncd.bus.payloads import DATA_SPECS
from syncd.clock import Clock
from syncd.const import TENANT_ID_RE
from syncd.engine import decide, money
from syncd.engine.rulebook import RuleBook
from syncd.exceptions import (
    ContendedError,
    InvalidMessageError,
    StaleWriteError,
    StoreError,
)
from syncd.messages import InputRejected
from syncd.models import (
    ChangeSet,
    CreditNote,
    Envelope,
    Failure,
    Invoice,
    LedgerEntry,
    MoneyKind,
    Outcome,
    PaymentRecord,
    RawMessage,
)
from syncd.store import Intake

log = structlog.get_logger(__name__)
STALE_TRIES = 3  # another writer changed an invoice: read and decide again
PARK_BATCH = 200  # parked messages decided again at once
PARK_ROUNDS = 10  # rounds while each decides something (a message frees the next)


class Inbox:
    """Turns batches of raw MQTT messages into committed ChangeSets."""

    def __init__(
        self,
        store: Intake,
        rulebook: RuleBook,
        *,
        prefix: str,
        max_payload_bytes: int,
        clock: Clock,
        ids_kept: timedelta = timedelta(days=8),
        park_for: timedelta | None = None,
    ) -> None:
        self._store = store
        # replicas: how long a message may wait for its invoice's earlier ones (None:
        # one process, whose broker keeps an invoice's messages in order)
        self._park_for = park_for
        self._rulebook = rulebook
        self._prefix = prefix
        self._max_bytes = max_payload_bytes
        self._clock = clock
        self._ids_kept = ids_kept  # how long the ledger remembers a message id

    async def handle(self, batch: list[RawMessage]) -> ChangeSet:
        """Process a batch; return once its effects are committed.

        Raises StoreError only: the store cannot be used, and nothing was committed.
        """
        try:
            return await self._handle_fresh(batch)
        except StoreError:
            raise
        except StaleWriteError as exc:
            if len(batch) == 1:  # a race, every try lost: handed over again, un-acked
                raise ContendedError(
                    f"its invoice kept changing under it ({STALE_TRIES} tries)"
                ) from exc
        except Exception:  # noqa: BLE001 -- whatever it was, isolate it (logged below)
            if len(batch) == 1:
                return await self._failed(batch[0])
        log.warning("batch_failed_handling_each_alone", size=len(batch))
        changes = ChangeSet()
        for raw in batch:
            changes.merge(await self.handle([raw]))
        return changes

    async def _handle_fresh(self, batch: list[RawMessage]) -> ChangeSet:
        """Decide and commit; decide again when another writer changed an invoice."""
        for _ in range(STALE_TRIES - 1):
            try:
                return await self._handle(batch)
            except StaleWriteError:
                log.info("batch_decided_again", size=len(batch))
        return await self._handle(batch)

    async def _failed(self, raw: RawMessage) -> ChangeSet:
        """Record a valid message that failed alone, so that it is acked and answered."""
        log.exception("message_failed", topic=raw.topic)
        refusal = self._refusal(
            raw,
            InvalidMessageError(
                "syncd could not process this valid message (an internal error, "
                "recorded for the admin); it will not be retried"
            ),
        )
        now = self._clock()
        changes = ChangeSet()
        if refusal.message_id:
            seen = await self._store.known_messages(
                [(refusal.tenant, refusal.message_id)]
            )
            if seen:
                return changes  # committed in another try: nothing more to do
        self._refuse(refusal, set(), now, changes, Outcome.FAILED)
        if TENANT_ID_RE.match(refusal.tenant):
            changes.failures.append(
                Failure(
                    tenant=refusal.tenant,
                    invoice_id=None,
                    operation="intake",
                    code="internal_error",
                    message=f"{refusal.reason} (topic {raw.topic!r})",
                    event_id=refusal.message_id,
                    at=now,
                )
            )
        try:
            await self._store.commit(changes)
        except StoreError:
            raise
        except Exception:
            # not even the record of it can be stored: the log line is all that is left
            log.exception(
                "message_dropped", topic=raw.topic, payload=raw.payload[:1024]
            )
            return ChangeSet()
        return changes

    async def _handle(self, batch: list[RawMessage]) -> ChangeSet:
        now = self._clock()
        changes = ChangeSet()
        accepted: list[Envelope] = []
        refused: list[_Refusal] = []
        for raw in batch:
            self._accept(raw, now, accepted, refused)
        seen = await self._seen(accepted, refused)
        for refusal in refused:
            self._refuse(refusal, seen, now, changes)
        fresh = _unseen(accepted, seen)
        loaded = await self._load(fresh)
        for env in fresh:
            with bound_contextvars(
                tenant=env.tenant,
                message_id=env.id,
                invoice=_invoice_id(env),
            ):
                await self._route(env, now, changes, loaded)
        await self._store.commit(changes)  # StaleWriteError: decided again (above)
        metrics.decided(changes, "crm")
        for parked in changes.parked:
            log.info(
                "message_parked",
                tenant=parked.tenant,
                message_id=parked.message_id,
                invoice=parked.invoice_id,
                reason=parked.reason,
            )
        if self._park_for is not None and changes.invoices:
            changes.merge(await self._waiting_on(set(changes.invoices)))
        return changes

    async def _waiting_on(self, invoices: set[tuple[str, str]]) -> ChangeSet:
        """Decide again the messages parked on these invoices, which just changed.

        Never raises: what fails here is decided again by the next sweep.
        """
        try:
            return await self.redecide_parked(invoices)
        except StoreError:
            raise
        except Exception:
            log.exception("parked_redecide_failed")
            return ChangeSet()

    async def redecide_parked(
        self, invoices: set[tuple[str, str]] | None = None
    ) -> ChangeSet:
        """Decide again the parked messages (of `invoices`, else all): what it decided.

        Each is decided as if it came now, allowed to wait on until it has waited
        `park_for`; then it is refused or rejected as any message would be. Rounds go on
        while they decide something (a message applied may free the next one).
        """
        decided = ChangeSet()
        if self._park_for is None:
            return decided
        for _ in range(PARK_ROUNDS):
            done = await self._redecide_once(invoices, self._park_for)
            if not done.unparked:
                break
            decided.merge(done)
        return decided

    async def _redecide_once(
        self, invoices: set[tuple[str, str]] | None, park_for: timedelta
    ) -> ChangeSet:
        waiting = await self._store.parked_messages(PARK_BATCH, invoices)
        if not waiting:
            return ChangeSet()
        now = self._clock()
        changes = ChangeSet()
        envelopes: list[tuple[Envelope, bool]] = []
        for parked in waiting:
            raw = RawMessage(
                topic=parked.topic, payload=parked.payload, received_at=parked.parked_at
            )
            try:
                env = envelope.parse(raw, self._prefix, self._max_bytes)
            except InvalidMessageError as exc:  # the prefix changed since: refused
                changes.unparked.append((parked.tenant, parked.message_id))
                self._refuse(self._refusal(raw, exc), set(), now, changes)
                continue
            envelopes.append((env, now - parked.parked_at < park_for))
        envelopes.sort(key=lambda e: _version(e[0]))
        loaded = await self._load([env for env, _ in envelopes])
        for env, may_wait in envelopes:
            part = ChangeSet()
            with bound_contextvars(
                tenant=env.tenant, message_id=env.id, invoice=_invoice_id(env)
            ):
                await self._route(env, now, part, loaded, may_wait=may_wait)
            if part.parked:
                continue  # still early: it waits on, its row as it was
            part.unparked.append((env.tenant, env.id))
            changes.merge(part)
        if not changes.unparked:
            return changes
        try:
            await self._store.commit(changes)
        except StaleWriteError:  # decided elsewhere, or its invoice moved: next time
            log.info("parked_decided_elsewhere", messages=len(changes.unparked))
            return ChangeSet()
        metrics.decided(changes, "crm")
        log.info("parked_decided", messages=len(changes.unparked))
        return changes

    def _accept(
        self,
        raw: RawMessage,
        now: datetime,
        accepted: list[Envelope],
        refused: list[_Refusal],
    ) -> None:
        try:
            env = envelope.parse(raw, self._prefix, self._max_bytes)
            envelope.check_timely(env, now, self._ids_kept)
        except InvalidMessageError as exc:
            refused.append(self._refusal(raw, exc))
            return
        if self._rulebook.machine(env.tenant) is None:
            # anyone who can publish can name any tenant: what is kept is what a person
            # needs (topic, id, reason, size), never the payload
            metrics.UNSERVED.inc()
            reason = (
                f"tenant {env.tenant!r} is not served by this syncd "
                f"(the payload, {len(raw.payload)} bytes, is not kept)"
            )
            refusal = self._refusal(raw, InvalidMessageError(reason, env.id))
            refused.append(dataclasses.replace(refusal, keep_payload=False))
        else:
            accepted.append(env)

    def _refusal(self, raw: RawMessage, exc: InvalidMessageError) -> _Refusal:
        rest = raw.topic.removeprefix(self._prefix + "/")
        tenant = rest.split("/", 1)[0] if rest != raw.topic else ""
        message_id = exc.message_id or envelope.readable_id(
            raw.payload, self._max_bytes
        )
        return _Refusal(
            raw=raw, tenant=tenant, message_id=message_id, reason=exc.reason
        )

    async def _seen(
        self, accepted: list[Envelope], refused: list[_Refusal]
    ) -> set[tuple[str, str]]:
        keys = [(env.tenant, env.id) for env in accepted]
        keys += [(r.tenant, r.message_id) for r in refused if r.message_id]
        return await self._store.known_messages(keys) if keys else set()

    def _refuse(
        self,
        r: _Refusal,
        seen: set[tuple[str, str]],
        now: datetime,
        changes: ChangeSet,
        outcome: Outcome = Outcome.REJECTED,
    ) -> None:
        key = (r.tenant, r.message_id or "")
        if r.message_id and key in seen:
            return  # a redelivery of a message already refused
        log.warning(
            "message_rejected",
            topic=r.raw.topic,
            message_id=r.message_id,
            reason=r.reason,
        )
        if not TENANT_ID_RE.match(r.tenant):
            return  # no topic of that tenant can be written: the log line is all
        changes.outbox.append(
            InputRejected.of(r.tenant, r.raw.topic, r.message_id, r.reason, now)
        )
        if r.message_id:
            seen.add(key)
            changes.ledger.append(
                LedgerEntry(
                    tenant=r.tenant,
                    message_id=r.message_id,
                    topic=r.raw.topic,
                    type="?",
                    outcome=outcome,
                    reason=r.reason,
                    received_at=now,
                    payload=r.raw.payload if r.keep_payload else None,
                )
            )

    async def _load(self, fresh: list[Envelope]) -> _Loaded:
        wanted: dict[str, list[str]] = {}
        for env in fresh:
            if invoice_id := _invoice_id(env):
                wanted.setdefault(env.tenant, []).append(invoice_id)
            if env.type == "payment.recorded":  # a payment of several invoices
                shares = env.data.get("invoices") or []
                wanted.setdefault(env.tenant, []).extend(
                    str(a["invoice_id"]) for a in shares
                )
        loaded = _Loaded()
        for tenant, ids in wanted.items():
            found = await self._store.load_invoices(tenant, sorted(set(ids)))
            loaded.invoices.update(((tenant, i), inv) for i, inv in found.items())
        await self._load_payments(fresh, loaded)
        return loaded

    async def _load_payments(self, fresh: list[Envelope], loaded: _Loaded) -> None:
        """What the store knows of the payments and refunds the messages name."""
        named: dict[str, set[str]] = {}
        for env in fresh:
            if env.type in _MONEY_TYPES:
                names = (env.data.get("payment_id"), env.data.get("refund_id"))
                named.setdefault(env.tenant, set()).update(
                    i for i in names if isinstance(i, str)
                )
                if env.type == "payment.refunded" and env.data.get("payment_id"):
                    key = (env.tenant, str(env.data["payment_id"]))
                    loaded.refunded[key] = await self._store.refunded(*key)
        notes: dict[str, list[str]] = {}
        for env in fresh:
            if env.type == "credit_note.upserted":
                notes.setdefault(env.tenant, []).append(str(env.data["credit_note_id"]))
        for tenant, ids in named.items():
            loaded.payments += await self._store.payment_records(
                tenant, tuple(MoneyKind), sorted(ids)
            )
        for tenant, note_ids in notes.items():
            found = await self._store.credit_notes(tenant, note_ids)
            loaded.credit_notes.update(((tenant, k), n) for k, n in found.items())

    async def _route(
        self,
        env: Envelope,
        now: datetime,
        changes: ChangeSet,
        loaded: _Loaded,
        *,
        may_wait: bool | None = None,
    ) -> None:
        machine = self._rulebook.machine(env.tenant)
        if machine is None:  # rules reloaded without this tenant since _accept
            return
        key = (env.tenant, _invoice_id(env) or "")
        ctx = decide.Context(
            envelope=env,
            machine=machine,
            now=now,
            changes=changes,
            may_wait=self._park_for is not None if may_wait is None else may_wait,
        )
        invoices = loaded.invoices
        if env.type in _MONEY_TYPES:
            _route_money(ctx, loaded, invoices.get(key))
            return
        if env.type == "contact.upserted":
            decide.apply_contact(ctx)
            return
        if env.type == "invoice.deleted":
            decide.apply_deleted(ctx, invoices.get(key))
            return
        if env.type == "command.refresh":
            decide.apply_refresh(ctx, invoices.get(key))
            return
        if env.type in ("command.link", "command.unlink"):
            decide.apply_link(ctx)
            return
        if env.type != "invoice.upserted":
            await decide.apply_command(ctx, invoices.get(key))
            return
        invoice = await decide.apply_upsert(ctx, invoices.get(key))
        if invoice is not None:
            invoices[key] = invoice


@dataclass(slots=True)
class _Loaded:
    """What the store knows of one batch's invoices and payments."""

    invoices: dict[tuple[str, str], Invoice] = field(default_factory=dict)
    payments: list[PaymentRecord] = field(default_factory=list)
    refunded: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    credit_notes: dict[tuple[str, str], CreditNote] = field(default_factory=dict)


_MONEY_TYPES = (
    "payment.recorded",
    "payment.deleted",
    "payment.refunded",
    "credit_note.upserted",
)


def _route_money(ctx: decide.Context, loaded: _Loaded, invoice: Invoice | None) -> None:
    env = ctx.envelope
    if env.type == "payment.recorded":
        mine = None
        if env.data.get("invoices"):
            mine = {
                i: inv for (t, i), inv in loaded.invoices.items() if t == env.tenant
            }
        money.apply_recorded(ctx, invoice, loaded.payments, mine)
    elif env.type == "payment.deleted":
        money.apply_deleted(ctx, loaded.payments)
    elif env.type == "credit_note.upserted":
        key = (env.tenant, str(env.data["credit_note_id"]))
        note = money.apply_credit_note(ctx, loaded.credit_notes.get(key), invoice)
        if note is not None:
            loaded.credit_notes[key] = note  # a later version in the batch sees it
    else:
        refunded = loaded.refunded.get((env.tenant, str(env.data.get("payment_id"))))
        money.apply_refunded(ctx, invoice, loaded.payments, refunded or Decimal(0))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Refusal:
    raw: RawMessage
    tenant: str
    message_id: str | None
    reason: str
    keep_payload: bool = True  # for the admin's diagnosis (never an unserved tenant's)


def _invoice_id(env: Envelope) -> str | None:
    """The invoice a message is about, for the types whose (validated) data names one.

    Other types may carry any extra `invoice_id` (extra fields are allowed, unchecked).
    """
    if "invoice_id" not in DATA_SPECS[env.type]:
        return None
    value = env.data.get("invoice_id")
    return value if isinstance(value, str) else None


def _version(env: Envelope) -> int:
    """An invoice snapshot's CRM version (0 for other types): older ones decided first."""
    version = env.data.get("version")
    return version if isinstance(version, int) else 0


def _unseen(accepted: list[Envelope], seen: set[tuple[str, str]]) -> list[Envelope]:
    """Drop messages whose id the ledger (or this batch) already holds."""
    fresh: list[Envelope] = []
    for env in accepted:
        key = (env.tenant, env.id)
        if key in seen:
            log.info("duplicate_ignored", tenant=env.tenant, message_id=env.id)
            continue
        seen.add(key)
        fresh.append(env)
    return fresh
