"""A job's results committed onto its invoice as it stands now, in one write.

The CRM side may have moved on during the QBO call: its fields are kept and the QBO
side is taken from the job; another writer committing first means reading again (the
QBO call is never repeated for that). Each QBO event the job saw moves the CRM status as
the rules map it (RO6). A batch's results that cannot be committed together are
committed one job at a time: one bad result never holds back the others'.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import random
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog

from syncd.engine import qbo_events
from syncd.engine.decide import jobs_for_move
from syncd.engine.machine import InvoiceMachine
from syncd.exceptions import FencedError, StaleWriteError, StoreError
from syncd.messages import StateChanged
from syncd.models import (
    ChangeSet,
    Fence,
    Invoice,
    Job,
    JobKind,
    JobStatus,
    SyncState,
)
from syncd.store import Committer, InvoiceReads

log = structlog.get_logger(__name__)
# another writer changed the invoice during the call: read it again. Replicas take CRM
# messages on the same invoices at once: three tries lost the race (the 30-minute run)
STALE_TRIES = 12
Done = tuple[Job, Invoice | None, ChangeSet, list[str]]  # job, invoice, changes, seen

_QBO_SIDE = (
    "qbo_id",
    "qbo_sync_token",
    "qbo_doc_number",
    "qbo_status",
    "balance",
    "sync_state",
    "error",
    "last_synced_at",
    "pushed_body",
)


def loaded(invoice: Invoice) -> Invoice:
    """Mark a job's copy as loaded: its QBO side is what recording compares against."""
    invoice.loaded_qbo = {
        name: copy.deepcopy(getattr(invoice, name)) for name in _QBO_SIDE
    }
    return invoice


class Recording(Committer, InvoiceReads, Protocol):
    """What recording a job's results needs of the store."""


async def commit(
    store: Recording,
    done: list[Done],
    machine: InvoiceMachine | None,
    *,
    clock: Callable[[], datetime],
    fence: Fence | None = None,
) -> None:
    """Commit the jobs' results together, else one job at a time (under `fence`)."""
    if await _together(store, done, machine, clock=clock, fence=fence):
        return
    for entry in done:
        try:
            await commit(store, [entry], machine, clock=clock, fence=fence)
        except (StoreError, FencedError):
            raise
        except Exception:
            log.exception("job_result_not_recorded", job_id=entry[0].id)


async def _together(
    store: Recording,
    done: list[Done],
    machine: InvoiceMachine | None,
    *,
    clock: Callable[[], datetime],
    fence: Fence | None,
) -> bool:
    """True once committed; False when a batch's results must go one by one."""
    for attempt in range(1, STALE_TRIES + 1):
        batch_changes = ChangeSet(fence=fence)
        for job, worked, changes, seen in done:
            fresh = None
            if worked is not None and job.invoice_id is not None:
                fresh = await store.invoice(job.tenant, job.invoice_id)
            batch_changes.merge(
                await onto_fresh(job, worked, fresh, changes, machine, seen, clock())
            )
        try:
            await store.commit(batch_changes)
        except StaleWriteError:
            if attempt == STALE_TRIES:
                raise
            log.info("job_result_recorded_again", attempt=attempt)
            # a pause that grows, jittered: writers that met here do not meet again
            await asyncio.sleep(random.uniform(0, 0.01 * attempt))  # noqa: S311
            continue
        except (StoreError, FencedError):
            # the store itself (intake pauses), or the realm's lease lost: the jobs stay
            # in flight, for this replica later or for the new holder
            raise
        except Exception:
            if len(done) == 1:
                raise
            log.warning("batch_result_recorded_job_by_job", exc_info=True)
            return False
        return True
    raise AssertionError("unreachable")  # pragma: no cover


async def onto_fresh(
    job: Job,
    worked: Invoice | None,
    stored: Invoice | None,
    changes: ChangeSet,
    machine: InvoiceMachine | None,
    seen: list[str],
    now: datetime,
) -> ChangeSet:
    """One job's results onto the invoice as stored now (read under the lock)."""
    if worked is None or job.invoice_id is None:
        return changes
    fresh = stored or worked
    base = worked.loaded_qbo
    for name in _QBO_SIDE:
        value = getattr(worked, name)
        # only what the job changed: a webhook may have moved the rest since it loaded
        # (a job with nothing to write put an older balance back: the long chaos run)
        if base is None or base.get(name) != value:
            setattr(fresh, name, value)
    moved = ChangeSet()
    if machine is not None:  # a job ran: its tenant has rules
        for event in seen:
            await qbo_events.apply(fresh, event, machine, now, moved)
    again = caught_up(job, worked, fresh, machine, now)
    state = StateChanged.of(fresh, now)
    return dataclasses.replace(
        changes,
        invoices={(fresh.tenant, fresh.invoice_id): fresh},
        history=[*changes.history, *moved.history],
        failures=[*changes.failures, *moved.failures],
        outbox=[*changes.outbox, *moved.outbox, state],
        jobs=[*changes.jobs, *again],
    )


def caught_up(
    job: Job,
    worked: Invoice,
    fresh: Invoice,
    machine: InvoiceMachine | None,
    now: datetime,
) -> list[Job]:
    """Another push when the CRM changed the invoice while this one was in QBO.

    An edit arriving while the first push was in flight queued nothing (the invoice had
    no QBO copy yet), and the push had written the snapshot it started with: QBO kept
    the older total for good (found by the chaos run).
    """
    if (
        machine is None
        or job.kind is not JobKind.INVOICE_PUSH
        or job.status is not JobStatus.DONE
        or fresh.version == worked.version
    ):
        return []
    kinds = jobs_for_move(machine.rules, fresh, entered=False)
    if JobKind.INVOICE_PUSH not in kinds:
        return []
    fresh.sync_state = SyncState.PENDING
    return [Job.for_invoice(fresh.tenant, JobKind.INVOICE_PUSH, fresh.invoice_id, now)]
