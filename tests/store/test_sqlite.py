"""The store contract on SQLite: one file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncd.store import Store, sqlite_store
from tests.store.contract import StoreContract


class TestSqlite(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        s = sqlite_store(tmp_path / "syncd.db")
        await s.open()
        yield s
        await s.close()
