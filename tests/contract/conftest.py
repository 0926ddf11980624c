from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.sandbox_process import Connection, SandboxProcess


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """One sandbox process for the suite; every test connects its own company."""
    process = SandboxProcess(Path(tmp_path_factory.mktemp("sandbox")))
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def qbo(sandbox: SandboxProcess, http: aiohttp.ClientSession) -> Connection:
    """An app connected to a fresh company."""
    return await Connection(http, sandbox.origin).connect()
