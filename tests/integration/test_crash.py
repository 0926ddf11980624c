"""Crash safety: SIGKILL of syncd and a broker restart mid-stream lose and double nothing."""

from __future__ import annotations

import asyncio
import contextlib
import random

from syncd.store.sql import DATABASE_ERRORS
from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.mosquitto import Broker
from tests.syncd_process import SyncdProcess, write_config

INVOICES, VERSIONS = 20, 25


def _stream() -> list[tuple[str, int, str]]:
    """Every message is an allowed move: draft, open, draft, open … per invoice."""
    return [
        (f"INV-{i}", v, "draft" if v % 2 else "open")
        for v in range(1, VERSIONS + 1)
        for i in range(INVOICES)
    ]


async def _wait_applied(db: DbView, count: int, timeout: float = 60) -> None:
    def done() -> bool:
        with contextlib.suppress(*DATABASE_ERRORS):  # the file may not exist yet
            sql = "SELECT count(*) FROM messages WHERE tenant = 'acme'"
            return bool(db.query(sql)[0][0] >= count)
        return False

    await eventually(done, timeout=timeout)


def _assert_exactly_once(db: DbView, sent: dict[str, list[str]]) -> None:
    outcomes = db.outcomes("acme")
    assert len(outcomes) == sum(len(ids) for ids in sent.values())
    assert set(outcomes.values()) == {"applied"}
    for invoice_id, ids in sent.items():
        history = db.history("acme", invoice_id)
        assert [h[2] for h in history] == ids  # each move once, in order, none lost
        assert db.status("acme", invoice_id) == (
            "draft" if VERSIONS % 2 else "open",
            VERSIONS,
        )


async def test_sigkill_while_streaming_loses_and_doubles_nothing(tmp_path, broker):
    """SIGKILL syncd three times mid-stream: every message takes effect exactly once."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port))
    proc.start()
    sent: dict[str, list[str]] = {}
    rng = random.Random(7)
    async with Crm(broker.port) as crm:

        async def publish() -> None:
            for n, (inv, version, status) in enumerate(_stream()):
                env = await crm.send(
                    "acme", "invoice.upserted", invoice(inv, version, status)
                )
                sent.setdefault(inv, []).append(env["id"])
                if n % 20 == 0:
                    await asyncio.sleep(0.01)

        publisher = asyncio.create_task(publish())
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.15, 0.4))
            proc.kill()
            await asyncio.sleep(0.1)
            proc.start(wait_ready=False)
            await asyncio.to_thread(proc.wait_ready)
        await publisher
        await _wait_applied(DbView(workdir / "syncd.db"), INVOICES * VERSIONS)
        every = {i for ids in sent.values() for i in ids}
        await crm.wait_for(
            lambda r: (
                every
                <= {
                    m.body.get("causation_id") for m in r if "/sync/invoice/" in m.topic
                }
            ),
            timeout=30,
        )
    proc.stop()
    assert "syncd_started" in proc.log()
    _assert_exactly_once(DbView(workdir / "syncd.db"), sent)
    assert DbView(workdir / "syncd.db").outbox_size() == 0


async def test_broker_restart_mid_stream_loses_nothing(tmp_path):
    """The broker restarts under load: syncd reconnects and every message applies once."""
    broker = Broker(tmp_path / "b")
    broker.start()
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port))
    proc.start()
    stream = _stream()
    half = len(stream) // 2
    sent: dict[str, list[str]] = {}
    try:
        for part in (stream[:half], stream[half:]):
            async with Crm(broker.port) as crm:
                for inv, version, status in part:
                    env = await crm.send(
                        "acme", "invoice.upserted", invoice(inv, version, status)
                    )
                    sent.setdefault(inv, []).append(env["id"])
            if part is not stream[half:]:
                broker.stop()  # syncd is still working through the first half
                await asyncio.sleep(0.5)
                broker.start()
        await _wait_applied(DbView(workdir / "syncd.db"), len(stream))
        # and the publisher caught up after the restart
        await eventually(lambda: DbView(workdir / "syncd.db").outbox_size() == 0)
    finally:
        proc.stop()
        broker.stop()
    assert '"event":"mqtt_disconnected"' in proc.log()
    _assert_exactly_once(DbView(workdir / "syncd.db"), sent)
    assert DbView(workdir / "syncd.db").outbox_size() == 0


async def test_sigterm_finishes_the_batch_and_flushes_the_outbox(tmp_path, broker):
    """SIGTERM under load: what was committed is published before exit; the rest waits."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port))
    proc.start()
    sent: dict[str, list[str]] = {}
    async with Crm(broker.port) as crm:
        for inv, version, status in _stream():
            env = await crm.send(
                "acme", "invoice.upserted", invoice(inv, version, status)
            )
            sent.setdefault(inv, []).append(env["id"])
        assert proc.stop() == 0
        db = DbView(workdir / "syncd.db")
        assert db.outbox_size() == 0
        processed = len(db.outcomes("acme"))
        assert '"event":"syncd_stopped"' in proc.log()
        proc.start()
        await _wait_applied(db, INVOICES * VERSIONS)
    proc.stop()
    assert processed > 0
    _assert_exactly_once(db, sent)
