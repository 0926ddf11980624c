"""Try rules before deploying: a tenant's recorded history against new rules.

Pure: given the rules in force, the new ones and the tenant's invoices with their
history, say what would change: moves the new rules refuse (CRM or QBO caused), invoices
whose current status would start or stop syncing, statuses the new rules do not know,
and QBO events that would map to another CRM status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from syncd.engine.rules import Rules
from syncd.models import HistoryEntry, Invoice


@dataclass(frozen=True, slots=True)
class Report:
    """What the new rules would change, each item a line a person reads."""

    refused: list[str] = field(default_factory=list)  # recorded moves now refused
    now_synced: list[str] = field(default_factory=list)
    no_longer_synced: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # statuses the new rules lack
    remapped: list[str] = field(default_factory=list)  # QBO events going elsewhere

    @property
    def changes(self) -> int:
        """How many things would change."""
        return sum(
            len(x)
            for x in (
                self.refused,
                self.now_synced,
                self.no_longer_synced,
                self.unknown,
                self.remapped,
            )
        )


def compare(
    old: Rules,
    new: Rules,
    invoices: list[Invoice],
    history: Mapping[str, list[HistoryEntry]],
) -> Report:
    """What `new` would change for these invoices, compared with `old`."""
    report = Report()
    for inv in invoices:
        for h in history.get(inv.invoice_id, []):
            if h.from_status is None or h.from_status == h.to_status:
                continue
            if old.allows(h.from_status, h.to_status) and not new.allows(
                h.from_status, h.to_status
            ):
                when = h.at.strftime("%Y-%m-%d %H:%M")
                report.refused.append(
                    f"{inv.invoice_id}: {h.from_status} → {h.to_status} ({h.cause}, "
                    f"{when}) would be refused"
                )
        if inv.status not in new.statuses:
            report.unknown.append(
                f"{inv.invoice_id}: its status {inv.status!r} is not in the new rules"
            )
            continue
        was, will = inv.status in old.sync.on, inv.status in new.sync.on
        if will and not was and inv.qbo_id is None:
            report.now_synced.append(
                f"{inv.invoice_id} ({inv.status}) would be copied to QBO"
            )
        if was and not will:
            report.no_longer_synced.append(
                f"{inv.invoice_id} ({inv.status}) would no longer sync on entering it"
            )
    for event in sorted(set(old.qbo_events) | set(new.qbo_events)):
        before, after = old.qbo_events.get(event, ""), new.qbo_events.get(event, "")
        if before != after:
            report.remapped.append(
                f"QBO {event}: {before or '(nothing)'} → {after or '(nothing)'}"
            )
    return report


def render(report: Report) -> list[str]:
    """The report as lines, section by section (empty sections left out)."""
    lines: list[str] = []
    for title, items in (
        ("recorded moves the new rules refuse", report.refused),
        ("invoices that would now go to QBO", report.now_synced),
        ("invoices that would stop syncing", report.no_longer_synced),
        ("statuses the new rules do not know", report.unknown),
        ("QBO events that would map elsewhere", report.remapped),
    ):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {item}" for item in items]
    lines.append(
        f"{report.changes} change(s)" if report.changes else "nothing would change"
    )
    return lines
