"""The drift check (issue 27): the CRM and QBO side by side, invoice by invoice.

Per tenant, every `[drift] interval` seconds and when asked (API, page, `syncd drift`),
by whichever replica holds the company:

1. read QBO's invoices in pages of 1,000 (QBO answers whole objects: no projections,
   qbo.md §5), after one `count(*)` that sizes the progress bar: a 10,000-invoice
   company costs 11 reads;
2. compare each with what the CRM last said (`compare`), then read what only a change
   can explain: the invoices syncd knows that no page held (a delete, or a page that
   shifted under a concurrent delete), and the customers an invoice moved away from
   (merged in QBO): one read per 100 of them, so never more than one per changed invoice;
3. decide again, on a fresh read of the store, for the invoices that differ (a webhook
   applied meanwhile is no difference), and mend per `[drift.owner]`: `"qbo"` applies
   QBO's invoice as a webhook would have (a status move through the rules, the balance,
   an invoice made in QBO), or links a merged customer's survivor, or tells the CRM;
   `"crm"` sets QBO back through the invoice's normal push job (exactly once: the job
   ledger, requestids and marker look-ups); `"report"` lists;
4. commit the mends, a `drift.found` for each difference not in the last report, and
   the report, in one transaction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from syncd import metrics
from syncd.config import Config
from syncd.drift.compare import GROUP, Found, Seen, drift
from syncd.drift.report import Difference, Report
from syncd.engine.rulebook import RuleBook
from syncd.exceptions import FencedError
from syncd.inbound.news import QboChanges
from syncd.inbound.worker import InboundWorker
from syncd.loop import Loop, Said
from syncd.messages import DriftFound, StateChanged
from syncd.models import (
    ChangeSet,
    HistoryEntry,
    Invoice,
    Job,
    JobKind,
    Link,
    LinkKind,
    SyncState,
)
from syncd.outbound.resolve import customer_key
from syncd.qbo import QboClient, queries
from syncd.qbo.steps import Step, next_step
from syncd.replicas import Alone, Ownership
from syncd.rules.model import Rules
from syncd.store import (
    DriftReports,
    Intake,
    InvoiceReads,
    Realms,
    References,
    decided_afresh,
)
from syncd.worker import Clients

log = structlog.get_logger(__name__)
PAGE = 1000  # QBO's most rows a query answers
AMONG = 100  # ids asked about in one query
TICK = 5.0  # seconds between looks for checks asked for or due
# what a "crm" mend forgets of the last body written, so the push writes it again
_REWRITE = {
    "lines": ("Line", "TxnTaxDetail"),
    "total": ("Line", "TxnTaxDetail"),
    "tax": ("Line", "TxnTaxDetail"),
    "due_date": ("DueDate",),
    "customer": ("CustomerRef",),
}


class Checking(InvoiceReads, References, Intake, DriftReports, Realms, Protocol):
    """What the check reads and commits."""

    async def new_events(self, realm_id: str, keys: list[str]) -> set[str]:
        """Which of these event keys were not applied yet."""


class DriftError(Exception):
    """A check that cannot run (the tenant is not connected, or unknown)."""


@dataclass(slots=True)
class _Pass:
    """One check under way."""

    tenant: str
    realm: str
    rules: Rules
    client: QboClient
    started: datetime
    heal: bool
    connected_at: datetime
    reads: int = 0
    qbo: dict[str, dict[str, Any]] = field(default_factory=dict)  # Id → invoice
    gone_customers: set[str] = field(default_factory=set)


class DriftChecker:
    """Runs drift checks for the tenants whose company this replica holds."""

    def __init__(
        self,
        config: Config,
        store: Checking,
        connections: Clients,
        inbound: InboundWorker,
        rulebook: RuleBook,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None],
        ownership: Ownership | None = None,
    ) -> None:
        self._config, self._store, self._connections = config, store, connections
        self._inbound, self._rulebook, self._clock = inbound, rulebook, clock
        self._on_commit = on_commit
        self._ownership: Ownership = ownership or Alone()
        self._last: dict[str, datetime] = {}  # tenant → its last check's end
        self._loop = Loop(
            self._round,
            interval=TICK,
            said=Said(paused="drift_paused", failed="drift_crashed"),
        )

    def stop(self) -> None:
        """End `run`."""
        self._loop.stop()

    def wake(self) -> None:
        """Look for checks asked for now."""
        self._loop.wake()

    async def run(self) -> None:
        """Check each tenant when asked, and every `[drift] interval` seconds."""
        await self._loop.run()

    async def _round(self) -> int:
        asked = await self._store.drift_requests()
        for tenant in self._config.tenants:
            machine = self._rulebook.machine(tenant)
            if machine is None or not self._ownership.owns(tenant):
                continue
            heal = asked[tenant][1] if tenant in asked else True
            if tenant in asked or await self._due(tenant, machine.rules.drift.interval):
                started = self._clock()
                try:
                    await self.check(tenant, heal=heal)
                except FencedError as exc:  # taken over mid-check: the holder checks
                    log.warning("realm_lease_lost", tenant=tenant, reason=str(exc))
                except Exception as exc:  # noqa: BLE001 -- one tenant's, never the rest's
                    await self._failed(tenant, started, exc)
        return 0

    async def _due(self, tenant: str, interval: int) -> bool:
        """An interval since the last check; the first, an interval after connecting."""
        if not interval:
            return False
        if tenant not in self._last:
            raw = await self._store.drift_report(tenant)
            conn = await self._store.connection(tenant)
            if raw is not None:
                self._last[tenant] = Report.from_json(raw).checked_at
            elif conn is not None:
                self._last[tenant] = conn.connected_at
            else:
                return False  # not connected: nothing to compare with
        return self._clock() - self._last[tenant] >= timedelta(seconds=interval)

    async def _failed(self, tenant: str, started: datetime, exc: Exception) -> None:
        """Said on the report and in the log; the next try is the next interval's."""
        self._last[tenant] = self._clock()
        then = next_step(exc)
        reason = str(exc) if isinstance(exc, DriftError) else then.message
        await self._store.drift_failed(tenant, started, reason)
        if isinstance(exc, DriftError):
            log.warning("drift_not_checked", tenant=tenant, reason=reason)
        elif then.step is Step.RECONNECT:
            await self._connections.needs_reconnect(tenant, str(exc))
        elif then.step is Step.DEFECT:
            log.error("drift_crashed", tenant=tenant, exc_info=exc)
        else:
            log.warning("drift_failed", tenant=tenant, error=then.message)

    async def check(self, tenant: str, heal: bool = True) -> Report:
        """One check of one tenant; its mends (when `heal`) and report committed."""
        machine = self._rulebook.machine(tenant)
        got = await self._connections.connected(tenant)
        if machine is None or got is None:
            raise DriftError(f"tenant {tenant!r} is not connected to QBO")
        client, conn = got
        p = _Pass(
            tenant=tenant,
            realm=conn.realm_id,
            rules=machine.rules,
            client=client,
            started=self._clock(),
            heal=heal,
            connected_at=conn.connected_at,
        )
        log.info("drift_check_started", tenant=tenant, heal=heal)
        await self._read_qbo(p)
        invoices = await self._store.invoices(tenant)
        await self._confirm_absent(p, invoices)
        await self._read_customers(p, invoices)
        report = await decided_afresh(lambda: self._decide(p, invoices))
        self._last[tenant] = report.checked_at
        metrics.DRIFT_OPEN.labels(tenant).set(len(report.differences))
        metrics.DRIFT_CHECKED.labels(tenant).inc()
        self._on_commit()
        log.info(
            "drift_checked",
            tenant=tenant,
            invoices=report.invoices_checked,
            qbo_invoices=report.qbo_invoices,
            differences=len(report.differences),
            qbo_reads=report.qbo_reads,
            reads_target=report.reads_target,
        )
        return report

    async def _read_qbo(self, p: _Pass) -> None:
        """Every QBO invoice, a page of 1,000 at a time, with progress said."""
        count = await p.client.query("select count(*) from Invoice")
        p.reads += 1
        total = int(count.get("totalCount") or 0)
        pages = max(1, math.ceil(total / PAGE))
        while True:
            await self._progress(p, len(p.qbo) // PAGE, pages)
            answer = await p.client.query(
                f"select * from Invoice orderby Id startposition {len(p.qbo) + 1} "
                f"maxresults {PAGE}"
            )
            p.reads += 1
            page = list(answer.get("Invoice") or [])
            p.qbo.update((str(o["Id"]), o) for o in page)
            # made since the count: the next check reads them (what syncd knows of them
            # is asked for by Id below)
            if len(page) < PAGE or len(p.qbo) >= total:
                return

    async def _progress(self, p: _Pass, done: int, pages: int) -> None:
        per_read = 60.0 / max(1, self._config.qbo.requests_per_minute)
        left = max(0, pages - done)
        await self._store.set_drift_progress(
            p.tenant,
            f"{done}/{pages} pages of QBO invoices read, {p.reads} reads; "
            f"about {math.ceil(left * per_read)} s left at QBO's quota",
        )

    async def _confirm_absent(self, p: _Pass, invoices: list[Invoice]) -> None:
        """The invoices syncd knows that no page held: asked for by Id."""
        absent = sorted(
            {
                i.qbo_id
                for i in invoices
                if i.qbo_id and i.qbo_id not in p.qbo and i.qbo_status != "deleted"
            }
        )  # a delete syncd saw is not asked about again at every check
        for n in range(0, len(absent), AMONG):
            answer = await p.client.query(
                queries.by_ids("Invoice", absent[n : n + AMONG])
            )
            p.reads += 1
            p.qbo.update((str(o["Id"]), o) for o in answer.get("Invoice") or [])

    async def _read_customers(self, p: _Pass, invoices: list[Invoice]) -> None:
        """The customers invoices moved away from: gone (merged, deleted) or not."""
        moved: set[str] = set()
        for inv in invoices:
            obj = p.qbo.get(inv.qbo_id or "")
            ours = str(
                ((inv.pushed_body or {}).get("CustomerRef") or {}).get("value") or ""
            )
            if obj is not None and ours and ours != str(obj["CustomerRef"]["value"]):
                moved.add(ours)
        wanted = sorted(moved)
        for n in range(0, len(wanted), AMONG):
            answer = await p.client.query(
                queries.by_ids("Customer", wanted[n : n + AMONG])
            )
            p.reads += 1
            there = {str(c["Id"]) for c in answer.get("Customer") or []}
            p.gone_customers |= set(wanted[n : n + AMONG]) - there

    async def _decide(self, p: _Pass, invoices: list[Invoice]) -> Report:
        """Compare, look again at what differs, mend, and commit the report."""
        now = self._clock()
        under_way = await self._store.writes_under_way(
            p.tenant, [i.invoice_id for i in invoices if i.qbo_id]
        )
        busy = set(under_way.paying) | under_way.removing | under_way.unpaying
        seen = Seen(
            now=now,
            rules=p.rules,
            gone_customers=frozenset(p.gone_customers),
            paying=frozenset(busy),
        )
        differing = [i.invoice_id for i in invoices if self._found(p, i, seen)]
        fresh = await self._store.load_invoices(p.tenant, differing)
        found = {
            inv.invoice_id: (inv, f)
            for inv in fresh.values()
            if (f := self._found(p, inv, seen))
        }
        unknown = await self._made_in_qbo(p, {i.qbo_id for i in invoices if i.qbo_id})
        changes = ChangeSet(at=now, fence=self._ownership.fence(p.tenant))
        differences = await self._act(p, found, unknown, changes, now)
        differences = await self._dated(p.tenant, differences, changes, now)
        report = Report(
            tenant=p.tenant,
            started_at=p.started,
            checked_at=self._clock(),
            invoices_checked=len(invoices),
            qbo_invoices=len(p.qbo),
            qbo_reads=p.reads,
            reads_target=_target(len(p.qbo), len(found) + len(unknown)),
            healed=p.heal,
            differences=differences,
        )
        changes.drift[p.tenant] = report.to_json()
        await self._store.commit(changes)
        return report

    def _found(self, p: _Pass, inv: Invoice, seen: Seen) -> list[Found]:
        return drift(inv, p.qbo.get(inv.qbo_id) if inv.qbo_id else None, seen)

    async def _made_in_qbo(self, p: _Pass, known: set[str]) -> list[dict[str, Any]]:
        """QBO invoices a person made that the CRM was never told of.

        Only those made since the connection, and within how long syncd remembers
        what it told (`[store] keep_finished_days`): older ones cannot be told apart.
        """
        horizon = max(
            p.started - timedelta(days=self._config.retention.finished_days),
            p.connected_at,
        )
        candidates = {
            f"invoice-imported:{qbo_id}": obj
            for qbo_id, obj in p.qbo.items()
            if qbo_id not in known
            and not str(obj.get("PrivateNote", "")).startswith("syncd:")
            and (made := _created(obj)) is not None
            and made >= horizon
        }
        fresh = await self._store.new_events(p.realm, sorted(candidates))
        return [candidates[key] for key in sorted(fresh)]

    async def _act(
        self,
        p: _Pass,
        found: dict[str, tuple[Invoice, list[Found]]],
        unknown: list[dict[str, Any]],
        changes: ChangeSet,
        now: datetime,
    ) -> list[Difference]:
        """Each difference with the action its owner calls for (made when healing)."""
        out: list[Difference] = []
        to_apply = QboChanges()
        for invoice_id, (inv, diffs) in sorted(found.items()):
            done: list[str] = []
            for f in diffs:
                owner = p.rules.drift.owner[GROUP[f.field]]
                action = self._action(p, inv, f, owner, to_apply, changes, now)
                if p.heal and owner != "report":
                    done.append(f"{f.field}: {action}")
                out.append(
                    Difference(
                        invoice_id=invoice_id,
                        qbo_id=inv.qbo_id,
                        field=f.field,
                        crm=f.crm,
                        qbo=f.qbo,
                        cause=f.cause,
                        action=action,
                        found_at=now.isoformat(),
                    )
                )
            if done:
                changes.history.append(_mended(inv, done, p.started, now))
        for obj in unknown:
            owner = p.rules.drift.owner["existence"]
            if p.heal and owner == "qbo":
                to_apply.invoices[str(obj["Id"])] = obj
                action = "told the CRM (invoice.imported)"
            else:
                action = (
                    "reported"
                    if owner == "report"
                    else _listed(False, "tell the CRM (invoice.imported)")
                )
            out.append(
                Difference(
                    invoice_id=None,
                    qbo_id=str(obj["Id"]),
                    field="invoice",
                    crm=None,
                    qbo=f"#{obj.get('DocNumber') or obj['Id']} {obj.get('TotalAmt')}",
                    cause="created_in_qbo",
                    action=action,
                    found_at=now.isoformat(),
                )
            )
        if to_apply.invoices or to_apply.deleted:
            await self._inbound.apply(p.tenant, p.realm, to_apply, changes)
        return out

    def _action(
        self,
        p: _Pass,
        inv: Invoice,
        f: Found,
        owner: str,
        to_apply: QboChanges,
        changes: ChangeSet,
        now: datetime,
    ) -> str:
        """What `owner` calls for on one difference; made (into `changes`) when healing."""
        obj = p.qbo.get(inv.qbo_id or "")
        if owner == "report":
            return "reported"
        if f.cause in ("other_company", "not_synced"):
            return "reported: command.sync (or the admin page's retry) writes it to QBO"
        if f.cause == "refused":
            return "reported: the rules refuse the move ([moves])"
        if owner == "crm":
            if f.field == "customer" and f.cause == "merged_customer":
                return "reported: the CRM's customer is gone from QBO (merged)"
            if p.heal and obj is not None:
                _set_back(inv, f.field, obj, changes, now)
            return _listed(p.heal, "QBO set back to the CRM's (invoice.push)")
        return _told(p.heal, inv, f, obj, to_apply, changes, now)

    async def _dated(
        self,
        tenant: str,
        differences: list[Difference],
        changes: ChangeSet,
        now: datetime,
    ) -> list[Difference]:
        """Keep when each was first found; say each new one on `out/drift/found`."""
        raw = await self._store.drift_report(tenant)
        before = {d.key: d for d in Report.from_json(raw).differences} if raw else {}
        out = []
        for d in differences:
            if d.key in before:
                d = replace(d, found_at=before[d.key].found_at)
            else:
                changes.outbox.append(
                    DriftFound(tenant=tenant, at=now, data=d.as_dict())
                )
            out.append(d)
        return out


def _told(
    heal: bool,
    inv: Invoice,
    f: Found,
    obj: dict[str, Any] | None,
    to_apply: QboChanges,
    changes: ChangeSet,
    now: datetime,
) -> str:
    """The `"qbo"` owner's mend: QBO's side taken, and the CRM told."""
    if not heal:
        return _listed(False, "tell the CRM")
    if f.field == "customer" and obj is not None:
        return _adopt_customer(inv, obj, changes, now)
    if f.field in ("status", "balance", "invoice"):
        if f.cause not in ("missed", "deleted_in_qbo"):
            return "reported: the CRM was told QBO's state; its status is the CRM's to move"
        if obj is None:
            to_apply.deleted.add(inv.qbo_id or "")
        else:
            to_apply.invoices[inv.qbo_id or ""] = obj
        return "applied QBO's invoice as its webhook would have (the CRM told)"
    return "told the CRM (drift.found)"


def _listed(heal: bool, would: str) -> str:
    return would if heal else f"would {would} (a check that heals does)"


def _set_back(
    inv: Invoice,
    field_name: str,
    obj: dict[str, Any],
    changes: ChangeSet,
    now: datetime,
) -> None:
    """The invoice's push writes the CRM's `field_name` again over QBO's."""
    current = changes.invoices.get((inv.tenant, inv.invoice_id), inv)
    body = dict(current.pushed_body or {})
    for key in _REWRITE[field_name]:
        body.pop(key, None)
    current.pushed_body = body
    current.qbo_sync_token = str(obj.get("SyncToken"))
    if (inv.tenant, inv.invoice_id) not in changes.invoices:
        changes.jobs.append(
            Job.for_invoice(inv.tenant, JobKind.INVOICE_PUSH, inv.invoice_id, now)
        )
    current.sync_state = SyncState.PENDING
    changes.invoices[(inv.tenant, inv.invoice_id)] = current
    changes.outbox.append(StateChanged.of(current, now))


def _adopt_customer(
    inv: Invoice, obj: dict[str, Any], changes: ChangeSet, now: datetime
) -> str:
    """QBO's customer becomes the CRM customer's link (a merge's survivor)."""
    survivor = str(obj["CustomerRef"]["value"])
    key = customer_key(inv.data.get("customer") or {})
    changes.links.append(
        Link(tenant=inv.tenant, kind=LinkKind.CUSTOMER, key=key, qbo_id=survivor)
    )
    current = changes.invoices.get((inv.tenant, inv.invoice_id), inv)
    current.pushed_body = {
        **(current.pushed_body or {}),
        "CustomerRef": {"value": survivor},
    }
    changes.invoices[(inv.tenant, inv.invoice_id)] = current
    return f"linked the CRM customer {key!r} to QBO's customer {survivor}"


def _mended(
    inv: Invoice, done: list[str], started: datetime, now: datetime
) -> HistoryEntry:
    return HistoryEntry(
        tenant=inv.tenant,
        invoice_id=inv.invoice_id,
        from_status=inv.status,
        to_status=inv.status,
        cause="drift check: " + "; ".join(done),
        event_id=f"drift:{started.isoformat()}",
        at=now,
    )


def _created(obj: dict[str, Any]) -> datetime | None:
    created = (obj.get("MetaData") or {}).get("CreateTime")
    return datetime.fromisoformat(created) if isinstance(created, str) else None


def _target(qbo_invoices: int, changed: int) -> int:
    """The reads a check may use: a count, the pages, and one per changed invoice."""
    return 1 + max(1, math.ceil(qbo_invoices / PAGE)) + changed
