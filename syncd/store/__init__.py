"""The durable store: what syncd needs from a database, whichever one fills it.

SQLite (`syncd.store.sqlite`) fills it today; a PostgreSQL implementation for several
replicas fills the same Protocol later. `Store` is its roles (`roles`: intake, outbox,
invoice reads, realms, references, job queue, webhooks, retention, health) at once; each
consumer is typed against the roles it uses. Everything a batch changes arrives as one
ChangeSet and is written in one transaction, so implementations stay small; the
messages it decides are rendered there (`outbox`: topic, envelope, id), once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from syncd.store.roles import (
    Committer,
    Health,
    Intake,
    InvoiceReads,
    JobQueue,
    Outbox,
    Pruning,
    Realms,
    References,
    Webhooks,
    WriteLock,
)

__all__ = [
    "Committer",
    "Health",
    "Intake",
    "InvoiceReads",
    "JobQueue",
    "Outbox",
    "Pruning",
    "Realms",
    "References",
    "Store",
    "Webhooks",
    "WriteLock",
    "postgres_store",
    "sqlite_store",
]


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
    WriteLock,
    Protocol,
):
    """Every role at once: what an implementation fills (SQLite today)."""
