"""Issue 12: an authorization that ends soon is said, once per threshold, before it ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.crm import Crm
from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_connect import connect
from tests.sandbox_process import SandboxProcess
from tests.syncd_process import QBO_ENV, SyncdProcess, write_config


@pytest.fixture
async def expiring(tmp_path, broker, http) -> AsyncIterator[tuple[SyncdProcess, Crm]]:
    """A sandbox whose grants end 20 days after consent (Intuit's hard maximum, shrunk)."""
    sandbox = SandboxProcess(tmp_path, "--hard-days", "20")
    await asyncio.to_thread(sandbox.start)
    workdir = tmp_path / "s"
    workdir.mkdir()
    config = write_config(workdir, broker.port, qbo_base_url=sandbox.origin)
    syncd = SyncdProcess(config, env=QBO_ENV)
    await asyncio.to_thread(syncd.start)
    try:
        async with Crm(broker.port) as crm:
            status, body = await connect(http, syncd)
            assert status == 200, body
            yield syncd, crm
    finally:
        syncd.stop()
        sandbox.stop()


async def test_an_ending_authorization_is_warned_once(expiring, http):
    """30 days before the hard end: the retained state says `expiring`, one warning."""
    syncd, crm = expiring
    await crm.wait_for(lambda r: bool(crm.on("acme/out/connection/warning")))
    [state] = [m.body["data"] for m in crm.on("acme/connection")][-1:]
    assert state["status"] == "expiring" and 18 <= state["days_left"] <= 20
    assert "reconnect before then" in state["reason"]
    # restarted, syncd remembers it warned: the state again, the warning not
    syncd.stop()
    await asyncio.to_thread(syncd.start)
    await crm.wait_for(lambda r: len(crm.on("acme/connection")) >= 2, timeout=30)
    # a warning would be committed with the state, and published right after it
    db = DbView(syncd.config.parent / "syncd.db")
    await eventually(lambda: db.outbox_size() == 0)
    await crm.barrier()
    [warning] = crm.on("acme/out/connection/warning")
    assert warning.body["data"]["level"] == "30_days"
    assert "qbo_connection_expiring" in syncd.log()
