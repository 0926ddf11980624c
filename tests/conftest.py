from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from hypothesis import settings

from syncd.bus.inbox import Inbox
from syncd.store.sqlite import SqliteStore
from tests.mosquitto import Broker
from tests.postgres import MADE, drop_made
from tests.sandbox_process import SandboxProcess
from tests.syncd_process import SyncdProcess, write_config

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci")

structlog.configure(
    processors=[structlog.processors.KeyValueRenderer()],
    cache_logger_on_first_use=False,
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def syncd(tmp_path: Path, broker: Broker) -> Iterator[SyncdProcess]:
    workdir = tmp_path / "syncd"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port))
    proc.start()
    yield proc
    if proc.proc is not None:
        proc.stop()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """One QBO sandbox process for the suite; every test connects its own company."""
    process = SandboxProcess(Path(tmp_path_factory.mktemp("sandbox")))
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real store on a new file, open for the test."""
    s = SqliteStore(tmp_path / "syncd.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def inbox(store: SqliteStore) -> Inbox:
    """The inbox on a real store, tenants acme and beta on the default rules, at NOW."""
    from tests.test_isolation import inbox_on

    return inbox_on(store)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop the PostgreSQL databases the run's syncd processes were given."""
    if MADE:
        drop_made()
