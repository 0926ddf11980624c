"""`syncd drift`: ask the running syncd for a check, follow it, print the report."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from syncd.drift.compare import CAUSES
from syncd.drift.report import Report
from syncd.store import DriftReports, Health
from syncd.store.tables_drift import FAILED

POLL = 0.5  # seconds between looks at the check's progress


class DriftFailed(Exception):
    """The check asked for ran and failed (the reason is the syncd's)."""


class Following(DriftReports, Health, Protocol):
    """The store as the command line uses it."""


async def follow(
    store: Following,
    tenant: str,
    heal: bool,
    within: float,
    say: Callable[[str], None],
) -> Report:
    """Ask for a check, say its progress as it goes, and return its report."""
    await store.open()
    try:
        asked = datetime.now(UTC)
        await store.request_drift_check(tenant, asked, heal)
        said = None
        async with asyncio.timeout(within):
            while True:
                raw = await store.drift_report(tenant)
                report = Report.from_json(raw) if raw else None
                if report is not None and report.started_at >= asked:
                    return report
                progress = await store.drift_progress(tenant)
                asked_still = tenant in await store.drift_requests()
                if progress and progress.startswith(FAILED) and not asked_still:
                    raise DriftFailed(f"the check of {tenant!r} {progress}")
                if progress and progress != said:
                    say(f"drift: {_bar(progress)} {progress}")
                    said = progress
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise TimeoutError(
            f"no check of {tenant!r} within {within:.0f} s: is syncd running, "
            "and connected to QBO?"
        ) from None
    finally:
        await store.close()


def _bar(progress: str, width: int = 20) -> str:
    """`[#####-----]` from a progress line's leading `done/total`."""
    try:
        done, total = (int(n) for n in progress.split(" ", 1)[0].split("/"))
    except ValueError:
        return ""
    filled = width * done // max(1, total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def text(report: Report) -> str:
    """The report for a person: a line per difference, then the reads against target."""
    lines = [
        f"{d.invoice_id or '-'}  qbo {d.qbo_id or '-'}  {d.field}: CRM {d.crm!r} / "
        f"QBO {d.qbo!r}  ({CAUSES.get(d.cause, d.cause)}) -> {d.action}"
        for d in report.differences
    ]
    lines.append(
        f"drift: {report.tenant}: {report.invoices_checked} invoices of syncd and "
        f"{report.qbo_invoices} in QBO checked at {report.checked_at.isoformat()}; "
        f"{len(report.differences)} differences; {report.qbo_reads} QBO reads "
        f"(target {report.reads_target})"
        + ("; mended per [drift.owner]" if report.healed else "")
    )
    return "\n".join(lines)
