"""The Store on one SQLite file: the shared tables on `database.Database`.

`synchronous=FULL` because a commit here precedes the MQTT ack: an acknowledged message
must survive a power cut, not only a process crash.
"""

from __future__ import annotations

from pathlib import Path

from syncd.store.database import Database
from syncd.store.tables import SqlStore


class SqliteStore(SqlStore):
    """The default store: one file, one writer, nothing to install."""

    def __init__(self, path: Path, check: str = "quick", prefix: str = "syncd") -> None:
        self.database = Database(path, check)
        super().__init__(self.database, prefix)
        self.path = path
