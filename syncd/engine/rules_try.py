"""Try rules before deploying: a tenant's recorded history against new rules.

`compare` is pure: given the rules in force, the new ones and invoices with their
history, it says what would change; `replay` feeds it the tenant's store a page at a
time. What would change: moves the new rules refuse (CRM or QBO caused), invoices
whose current status would start or stop syncing, statuses the new rules do not know,
and QBO events that would map to another CRM status.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from syncd.models import HistoryEntry, Invoice
from syncd.rules.model import Rules

SHOWN = 200  # lines listed per section; the rest are counted


class History(Protocol):
    """What a replay reads: a tenant's invoices a page at a time, and their moves.

    The store's own methods fill it; the engine never imports the store.
    """

    async def invoice_page(
        self, tenant: str, *, limit: int, before: tuple[str, str] | None = None
    ) -> list[Invoice]:
        """Invoices by last change, newest first, after `before`."""

    async def histories(
        self, tenant: str, invoice_ids: list[str]
    ) -> dict[str, list[HistoryEntry]]:
        """The moves of each invoice, oldest first."""


@dataclass(frozen=True, slots=True)
class Report:
    """What the new rules would change, each item a line a person reads.

    Each section lists its first SHOWN lines; `counts` has every section's whole count.
    """

    refused: list[str] = field(default_factory=list)  # recorded moves now refused
    now_synced: list[str] = field(default_factory=list)
    no_longer_synced: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # statuses the new rules lack
    remapped: list[str] = field(default_factory=list)  # QBO events going elsewhere
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def changes(self) -> int:
        """How many things would change."""
        return sum(self.counts.values())

    def add(self, section: str, line: str) -> None:
        """One more change in a section (listed while the section is short)."""
        self.counts[section] += 1
        lines: list[str] = getattr(self, section)
        if len(lines) < SHOWN:
            lines.append(line)


def compare(
    old: Rules,
    new: Rules,
    invoices: list[Invoice],
    history: Mapping[str, list[HistoryEntry]],
) -> Report:
    """What `new` would change for these invoices, compared with `old`."""
    report = Report()
    _page(old, new, invoices, history, report)
    _remapped(old, new, report)
    return report


async def replay(
    store: History, tenant: str, old: Rules, new: Rules, page: int = 1000
) -> tuple[int, Report]:
    """`compare` over the tenant's whole store, a page at a time (flat memory at any size)."""
    report, seen = Report(), 0
    before: tuple[str, str] | None = None
    while found := await store.invoice_page(tenant, limit=page, before=before):
        history = await store.histories(tenant, [i.invoice_id for i in found])
        # the comparing is CPU work: in a thread, so a daemon's loop serves on meanwhile
        await asyncio.to_thread(_page, old, new, found, history, report)
        seen += len(found)
        last = found[-1]
        before = (last.updated_at.isoformat(), last.invoice_id)
    _remapped(old, new, report)
    return seen, report


def _page(
    old: Rules,
    new: Rules,
    invoices: list[Invoice],
    history: Mapping[str, list[HistoryEntry]],
    report: Report,
) -> None:
    for inv in invoices:
        _invoice(old, new, inv, history.get(inv.invoice_id, []), report)


def _remapped(old: Rules, new: Rules, report: Report) -> None:
    for event in sorted(set(old.qbo_events) | set(new.qbo_events)):
        before, after = old.qbo_events.get(event, ""), new.qbo_events.get(event, "")
        if before != after:
            report.add(
                "remapped",
                f"QBO {event}: {before or '(nothing)'} → {after or '(nothing)'}",
            )


def _invoice(
    old: Rules, new: Rules, inv: Invoice, history: list[HistoryEntry], report: Report
) -> None:
    for h in history:
        if h.from_status is None or h.from_status == h.to_status:
            continue
        if old.allows(h.from_status, h.to_status) and not new.allows(
            h.from_status, h.to_status
        ):
            when = h.at.strftime("%Y-%m-%d %H:%M")
            report.add(
                "refused",
                f"{inv.invoice_id}: {h.from_status} → {h.to_status} ({h.cause}, "
                f"{when}) would be refused",
            )
    if inv.status not in new.statuses:
        report.add(
            "unknown",
            f"{inv.invoice_id}: its status {inv.status!r} is not in the new rules",
        )
        return
    was, will = inv.status in old.sync.on, inv.status in new.sync.on
    if will and not was and inv.qbo_id is None:
        report.add(
            "now_synced", f"{inv.invoice_id} ({inv.status}) would be copied to QBO"
        )
    if was and not will:
        report.add(
            "no_longer_synced",
            f"{inv.invoice_id} ({inv.status}) would no longer sync on entering it",
        )


def render(report: Report) -> list[str]:
    """The report as lines, section by section (empty sections left out)."""
    lines: list[str] = []
    for title, section in (
        ("recorded moves the new rules refuse", "refused"),
        ("invoices that would now go to QBO", "now_synced"),
        ("invoices that would stop syncing", "no_longer_synced"),
        ("statuses the new rules do not know", "unknown"),
        ("QBO events that would map elsewhere", "remapped"),
    ):
        items: list[str] = getattr(report, section)
        count = report.counts[section]
        if count:
            lines.append(f"{title} ({count}):")
            lines += [f"  {item}" for item in items]
            if count > len(items):
                lines.append(f"  … and {count - len(items)} more")
    lines.append(
        f"{report.changes} change(s)" if report.changes else "nothing would change"
    )
    return lines
