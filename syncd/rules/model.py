"""rules/*.toml → frozen Rules: statuses, allowed moves, sync triggers, QBO event map.

Validation proves before deploy what the rival products only warn about in prose (RO7):
every status that `sync.*` or `qbo_events` names must be reachable through the moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from syncd.const import QBO_EVENTS
from syncd.exceptions import ConfigError
from syncd.rules.tables import TableReader, read_toml

_TAX_METHODS = ("auto", "codes", "override")
MAX_DUE_DAYS = (
    3650  # ten years of terms: beyond, no business, and date arithmetic fails
)
_SECTIONS = {"statuses", "moves", "sync", "qbo_events", "customers", "items", "taxes"}
_SECTIONS |= {"payments", "refunds", "fields", "reviews", "drift"}
_SYNC_LISTS = ("on", "send_on", "void_on", "delete_on")
_MATCH = ("display_name", "email", "display_name_then_email")


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRules:
    """When an invoice goes to QBO, and which invoices may (RO3, HS1, HL8)."""

    on: tuple[str, ...] = ()
    send_on: tuple[str, ...] = ()
    void_on: tuple[str, ...] = ()
    delete_on: tuple[str, ...] = ()
    since: str = "connection"
    min_total: Decimal | None = None
    currencies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerRules:
    """How CRM contacts become QBO customers (OD7, HL4, PD5)."""

    match: str = "display_name"  # or "email", "display_name_then_email"
    create_missing: bool = True
    push_updates: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemRules:
    """How line items find QBO items (OD3, PD3, OD2)."""

    on_missing: str = "create"  # or "fail"
    income_account: str = "Services"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaxRules:
    """Tax codes and how QBO's tax meets the CRM's (RO5, HL6, HL7)."""

    default: str = "NON"
    map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    code: str = ""
    after_discount: bool = True
    method: str = "auto"  # or "codes", "override"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRules:
    """Where QBO payments are deposited (RO4); fees and deleted payments (issue 26)."""

    deposit_account: str = "Undeposited Funds"
    fee_account: str = ""  # the expense account fees are booked on ("": not booked)
    fee_paid_from: str = ""  # the account fees are paid from ("": deposit_account)
    on_delete: str = "delete"  # or "void": a payment deleted in the CRM, in QBO


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundRules:
    """How a CRM refund is written to QBO (issue 26, HS7)."""

    as_: str = "refund_receipt"  # or "credit_memo" (`as` in the rules file)
    account: str = ""  # paid from ("": [payments] deposit_account)


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldRules:
    """Due dates and custom fields (PD2, HS9)."""

    due_days: int = 30
    custom: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewRules:
    """Review requests (HL2)."""

    on_first_payment: bool = False


# issue 27: who wins, per field group, where the CRM and QBO disagree; the owners each
# group can have ("crm": QBO is set back; "qbo": the CRM is told; "report": listed only)
DRIFT_OWNERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "lines": ("report", "crm", "qbo"),  # lines, total, tax
        "due_date": ("report", "crm", "qbo"),
        "customer": ("report", "crm", "qbo"),
        "status": ("report", "qbo"),  # QBO's payments and voids are not undone
        "payments": ("report", "qbo"),  # balance, payments, credits
        "existence": ("report", "qbo"),  # missing on one side (a delete is not undone)
    }
)
MAX_DRIFT_INTERVAL = 366 * 86400


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftRules:
    """The drift check (issue 27): how often, and who owns each field group."""

    interval: int = 0  # seconds between checks; 0 = on demand only
    owner: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(DRIFT_OWNERS, "report"))
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """One tenant's validated rules."""

    source: str
    statuses: tuple[str, ...]
    initial: str
    final: frozenset[str]
    moves: Mapping[str, tuple[str, ...]]
    sync: SyncRules = field(default_factory=SyncRules)
    qbo_events: Mapping[str, str] = field(default_factory=dict)
    customers: CustomerRules = field(default_factory=CustomerRules)
    items: ItemRules = field(default_factory=ItemRules)
    taxes: TaxRules = field(default_factory=TaxRules)
    payments: PaymentRules = field(default_factory=PaymentRules)
    refunds: RefundRules = field(default_factory=RefundRules)
    fields: FieldRules = field(default_factory=FieldRules)
    reviews: ReviewRules = field(default_factory=ReviewRules)
    drift: DriftRules = field(default_factory=DriftRules)

    def allows(self, source: str, dest: str) -> bool:
        """Tell whether the rules allow the move `source` → `dest`."""
        return dest in self.moves.get(source, ())

    def reachable(self) -> frozenset[str]:
        """Return the statuses an invoice can reach from the initial status."""
        return _reachable(self.initial, self.moves)

    def explain_refusal(self, source: str, dest: str) -> str:
        """Say, for a person, why `source` → `dest` is refused and what to change."""
        if source in self.final:
            return (
                f"the rules ({self.source}) refuse {source} → {dest}: "
                f"{source!r} is final, no move leaves it"
            )
        allowed = ", ".join(self.moves.get(source, ())) or "nothing"
        return (
            f"the rules ({self.source}) refuse {source} → {dest}: from {source!r} "
            f"they allow {allowed}; add {dest!r} to [moves] {source} to allow it"
        )


def load_rules(path: Path, label: str | None = None) -> Rules:
    """Read and validate one rules file; raise ConfigError listing every problem.

    Problems name the file's path (for the admin); `label` names the rules in what
    goes out to the CRM (no server paths).
    """
    rules = parse_rules(read_toml(path, str(path)), str(path))
    return replace(rules, source=label) if label else rules


def parse_rules(data: dict[str, Any], source: str) -> Rules:
    """Validate parsed TOML; raise ConfigError listing every problem."""
    r = TableReader(source)
    r.table(data, "", _SECTIONS)
    statuses, initial, final = _statuses(r, data)
    known = set(statuses)
    moves = _moves(r, data, known, final)
    rules = Rules(
        source=source,
        statuses=statuses,
        initial=initial,
        final=frozenset(final),
        moves=MappingProxyType(moves),
        sync=_sync(r, data, known),
        qbo_events=MappingProxyType(_qbo_events(r, data, known)),
        **_plain_sections(r, data),
    )
    _check_reachable(r, rules)
    if r.problems:
        raise ConfigError(r.problems)
    return rules


def _statuses(
    r: TableReader, data: dict[str, Any]
) -> tuple[tuple[str, ...], str, set[str]]:
    t = r.sub(data, "", "statuses", {"all", "initial", "final"})
    statuses = r.texts(t, "statuses", "all")
    if not statuses:
        r.problem("statuses.all", "must list at least one status")
    if len(set(statuses)) != len(statuses):
        r.problem("statuses.all", "lists a status twice")
    known = set(statuses)
    initial = r.text(t, "statuses", "initial", default=statuses[0] if statuses else "")
    if statuses and initial not in known:
        r.problem("statuses.initial", f"unknown status {initial!r}")
    final = set(r.texts(t, "statuses", "final"))
    for name in sorted(final - known):
        r.problem("statuses.final", f"unknown status {name!r}")
    if initial in final:
        r.problem("statuses.initial", f"{initial!r} is also final: nothing could move")
    return statuses, initial, final


def _moves(
    r: TableReader, data: dict[str, Any], known: set[str], final: set[str]
) -> dict[str, tuple[str, ...]]:
    table = r.sub(data, "", "moves", None)
    moves: dict[str, tuple[str, ...]] = {}
    for source in table:
        key = f"moves.{source}"
        dests = r.texts(table, "moves", source)
        if source not in known:
            r.problem(key, f"unknown status {source!r}")
        if source in final and dests:
            r.problem(key, f"{source!r} is final: no move may leave it")
        for dest in dests:
            if dest not in known:
                r.problem(key, f"unknown status {dest!r}")
            if dest == source:
                r.problem(key, f"a move from {source!r} to itself is not a move")
        moves[source] = tuple(dict.fromkeys(dests))
    return moves


def _sync(r: TableReader, data: dict[str, Any], known: set[str]) -> SyncRules:
    lists = {*_SYNC_LISTS, "since"}
    t = r.sub(data, "", "sync", {*lists, "filters"})
    chosen = {name: r.texts(t, "sync", name) for name in _SYNC_LISTS}
    for name, values in chosen.items():
        for value in values:
            if value not in known:
                r.problem(f"sync.{name}", f"unknown status {value!r}")
    since = r.text(t, "sync", "since", default="connection")
    if since not in ("connection", "all"):
        try:
            date.fromisoformat(since)
        except ValueError:
            r.problem("sync.since", f'{since!r} is not "connection", "all" or a date')
    filters = r.sub(t, "sync", "filters", {"min_total", "currencies"})
    return SyncRules(
        **chosen,
        since=since,
        min_total=r.money(filters, "sync.filters", "min_total", ""),
        currencies=r.texts(filters, "sync.filters", "currencies"),
    )


def _qbo_events(
    r: TableReader, data: dict[str, Any], known: set[str]
) -> dict[str, str]:
    t = r.sub(data, "", "qbo_events", set(QBO_EVENTS))
    events = {name: r.text(t, "qbo_events", name, default="") for name in QBO_EVENTS}
    for name, status in events.items():
        if status and status not in known:
            r.problem(f"qbo_events.{name}", f"unknown status {status!r}")
    return events


def _plain_sections(r: TableReader, data: dict[str, Any]) -> dict[str, Any]:
    """Sections later features read; their keys and types are checked here.

    The defaults are the dataclasses' own: one place for each.
    """
    c = r.sub(data, "", "customers", {"match", "create_missing", "push_updates"})
    i = r.sub(data, "", "items", {"on_missing", "income_account"})
    t = r.sub(data, "", "taxes", {"default", "map", "code", "after_discount", "method"})
    p = r.sub(
        data,
        "",
        "payments",
        {"deposit_account", "fee_account", "fee_paid_from", "on_delete"},
    )
    u = r.sub(data, "", "refunds", {"as", "account"})
    f = r.sub(data, "", "fields", {"due_days", "custom"})
    v = r.sub(data, "", "reviews", {"on_first_payment"})
    d = r.sub(data, "", "drift", {"interval", "owner"})
    owners = r.sub(d, "drift", "owner", set(DRIFT_OWNERS))
    cd, idf, td = CustomerRules(), ItemRules(), TaxRules()
    pd, fd, vd, ud = PaymentRules(), FieldRules(), ReviewRules(), RefundRules()
    return {
        "customers": CustomerRules(
            match=r.text(c, "customers", "match", cd.match, _MATCH),
            create_missing=r.flag(c, "customers", "create_missing", cd.create_missing),
            push_updates=r.flag(c, "customers", "push_updates", cd.push_updates),
        ),
        "items": ItemRules(
            on_missing=r.text(
                i, "items", "on_missing", idf.on_missing, ("create", "fail")
            ),
            income_account=r.text(i, "items", "income_account", idf.income_account),
        ),
        "taxes": TaxRules(
            default=r.text(t, "taxes", "default", td.default),
            map=MappingProxyType(r.text_map(t, "taxes", "map")),
            code=r.text(t, "taxes", "code", td.code),
            after_discount=r.flag(t, "taxes", "after_discount", td.after_discount),
            method=r.text(t, "taxes", "method", td.method, _TAX_METHODS),
        ),
        "payments": PaymentRules(
            deposit_account=r.text(
                p, "payments", "deposit_account", pd.deposit_account
            ),
            fee_account=r.text(p, "payments", "fee_account", pd.fee_account),
            fee_paid_from=r.text(p, "payments", "fee_paid_from", pd.fee_paid_from),
            on_delete=r.text(
                p, "payments", "on_delete", pd.on_delete, ("delete", "void")
            ),
        ),
        "refunds": RefundRules(
            as_=r.text(u, "refunds", "as", ud.as_, ("refund_receipt", "credit_memo")),
            account=r.text(u, "refunds", "account", ud.account),
        ),
        "fields": FieldRules(
            due_days=r.integer(f, "fields", "due_days", fd.due_days, high=MAX_DUE_DAYS),
            custom=MappingProxyType(r.text_map(f, "fields", "custom")),
        ),
        "reviews": ReviewRules(
            on_first_payment=r.flag(
                v, "reviews", "on_first_payment", vd.on_first_payment
            )
        ),
        "drift": DriftRules(
            interval=r.integer(d, "drift", "interval", 0, high=MAX_DRIFT_INTERVAL),
            owner=MappingProxyType(
                {
                    group: r.text(owners, "drift.owner", group, "report", choices)
                    for group, choices in DRIFT_OWNERS.items()
                }
            ),
        ),
    }


def _check_reachable(r: TableReader, rules: Rules) -> None:
    """RO7: a status named by sync.* or qbo_events must be reachable by some move."""
    if rules.initial not in rules.statuses:
        return
    reachable = rules.reachable()
    known = set(rules.statuses)
    named = [(f"sync.{n}", s) for n in _SYNC_LISTS for s in getattr(rules.sync, n)]
    named += [(f"qbo_events.{n}", s) for n, s in rules.qbo_events.items() if s]
    # what a synced invoice can be in: reached from any sync.on status (one walk)
    synced = _reachable_from(rules.sync.on or tuple(reachable), rules.moves)
    for key, status in named:
        if status in known and status not in reachable:
            r.problem(
                key,
                f"{status!r} cannot be reached from {rules.initial!r} by any move "
                "in [moves], so this would never happen",
            )
        elif key.startswith("qbo_events.") and status in reachable:
            _check_event_target(r, rules, key, status, synced)


def _check_event_target(
    r: TableReader, rules: Rules, key: str, status: str, synced: frozenset[str]
) -> None:
    """A QBO event happens to a synced invoice: some synced status must move there."""
    if not any(rules.allows(s, status) for s in synced):
        r.problem(
            key,
            f"no status a synced invoice can be in ({', '.join(sorted(synced))}) "
            f"has {status!r} in its [moves], so this mapping would always be refused",
        )


def _reachable(initial: str, moves: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    return _reachable_from((initial,), moves)


def _reachable_from(
    starts: tuple[str, ...], moves: Mapping[str, tuple[str, ...]]
) -> frozenset[str]:
    """Every status some move path leads to from one of `starts` (linear: one walk)."""
    seen, todo = set(starts), list(starts)
    while todo:
        for dest in moves.get(todo.pop(), ()):
            if dest not in seen:
                seen.add(dest)
                todo.append(dest)
    return frozenset(seen)
