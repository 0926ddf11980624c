"""Which due jobs go together in a QBO batch request, and how each takes its answer.

Pushes (creates and sparse updates) of different invoices of one realm, due together
and not in doubt, go in batches of up to 30; the rest, and a lone push, go one by one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from syncd.exceptions import QboError, QboStaleError
from syncd.models import Job, JobKind, JobStatus
from syncd.outbound.push import JobContext, Prepared, Update, finish_push, update_alone
from syncd.qbo import BATCH_ITEMS, BatchItem


def split(jobs: list[Job]) -> tuple[list[list[Job]], list[Job]]:
    """The batches (each of 2 to 30 pushes) and the jobs that run alone.

    A job in flight is in doubt (its write may have happened): it runs alone, and looks
    for that write first.
    """
    pushes = [
        j
        for j in jobs
        if j.kind is JobKind.INVOICE_PUSH and j.status is JobStatus.PENDING
    ]
    if len(pushes) < 2:
        return [], jobs
    taken = {id(j) for j in pushes}
    chunks = [pushes[n : n + BATCH_ITEMS] for n in range(0, len(pushes), BATCH_ITEMS)]
    if len(chunks[-1]) == 1:  # a batch of one is a single write with extra steps
        taken.discard(id(chunks.pop()[0]))
    return chunks, [j for j in jobs if id(j) not in taken]


def request_id(items: list[BatchItem], tries: list[int]) -> str:
    """The batch's requestid (≤ 36 characters): the same jobs at the same tries.

    A resend of this very request (a lost answer) gets QBO's first answer; the same
    jobs at their next try make a new request (a replayed fault would never end).
    """
    named = "|".join(f"{i.bid}:{n}" for i, n in zip(items, tries, strict=True))
    return "b-" + hashlib.sha256(named.encode()).hexdigest()[:34]


def take(
    prepared: Prepared, result: dict[str, Any] | QboError
) -> Callable[[JobContext], Awaitable[None]]:
    """The handler that gives one job its item's answer, or raises its fault.

    A stale SyncToken (someone changed the invoice in QBO) is handled as a single
    update does: QBO's version is read, its change seen, and the update written on top.
    """

    async def handler(ctx: JobContext) -> None:
        if isinstance(result, QboStaleError) and isinstance(prepared.plan, Update):
            await update_alone(ctx, prepared)
        elif isinstance(result, QboError):
            raise result
        else:
            finish_push(ctx, prepared, result)

    return handler
