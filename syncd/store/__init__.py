"""The durable store: what syncd needs from a database, whichever one fills it.

SQLite (`syncd.store.sqlite`) fills it today; a PostgreSQL implementation for several
replicas fills the same Protocol later. `Store` is its roles (`roles`: intake, outbox,
invoice reads, realms, references, job queue, webhooks, retention, health) at once; each
consumer is typed against the roles it uses. Everything a batch changes arrives as one
ChangeSet and is written in one transaction, so implementations stay small; the
messages it decides are rendered there (`outbox`: topic, envelope, id), once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import structlog

from syncd.exceptions import StaleWriteError
from syncd.store.roles import (
    AdminSessions,
    Committer,
    DriftReports,
    Health,
    Intake,
    InvoiceReads,
    JobQueue,
    Leases,
    Outbox,
    Payments,
    Pruning,
    Realms,
    References,
    TokenTurn,
    WakeUps,
    Webhooks,
)

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
STALE_TRIES = 3  # another writer came first: decide again this many times at most

__all__ = [
    "AdminSessions",
    "Committer",
    "DriftReports",
    "Health",
    "Intake",
    "InvoiceReads",
    "JobQueue",
    "Leases",
    "Outbox",
    "Payments",
    "Pruning",
    "Realms",
    "References",
    "Store",
    "TokenTurn",
    "WakeUps",
    "Webhooks",
    "decided_afresh",
    "postgres_store",
    "sqlite_store",
]


async def decided_afresh(
    read_decide_commit: Callable[[], Awaitable[_T]], tries: int = STALE_TRIES
) -> _T:
    """Run read-decide-commit again while another writer commits first.

    The store refuses a write made from a stale read (StaleWriteError), in one process
    or across replicas: there is no lock to hold, only a decision to make again.
    """
    for attempt in range(1, tries + 1):
        try:
            return await read_decide_commit()
        except StaleWriteError:
            if attempt == tries:
                raise
            log.info("decided_again", attempt=attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def sqlite_store(path: Path, check: str = "quick", prefix: str = "syncd") -> Store:
    """The Store on one SQLite file; its outbox renders topics under `prefix`."""
    from syncd.store.sqlite import SqliteStore

    return SqliteStore(path, check=check, prefix=prefix)


def postgres_store(url: str, password: str | None, prefix: str = "syncd") -> Store:
    """The Store on a PostgreSQL database, for several replicas."""
    from syncd.store.postgres import PostgresStore

    return PostgresStore(url, password, prefix=prefix)


class Store(
    Health,
    Intake,
    Outbox,
    InvoiceReads,
    Realms,
    References,
    JobQueue,
    Webhooks,
    Pruning,
    AdminSessions,
    Leases,
    WakeUps,
    DriftReports,
    Protocol,
):
    """Every role at once: what an implementation fills (SQLite today)."""
