"""syncd as a process against a real Mosquitto: what a CRM and an operator see."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiomqtt

from tests.crm import Crm, envelope, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.mosquitto import Broker
from tests.syncd_process import RULES, SyncdProcess, write_config


def _db(syncd: SyncdProcess) -> DbView:
    return DbView(syncd.config.parent / "syncd.db")


def _states(crm: Crm, invoice_id: str) -> list[str]:
    """The statuses the retained state went through (a QBO job republishes the same one)."""
    seen = [m.body["data"]["status"] for m in crm.on(f"sync/invoice/{invoice_id}")]
    return [s for n, s in enumerate(seen) if n == 0 or seen[n - 1] != s]


async def test_moves_are_applied_stored_and_retained(broker, syncd):
    """DC2/DC3/HS3: allowed moves are stored, in history, and the state is retained."""
    async with Crm(broker.port) as crm:
        await crm.send("acme", "invoice.upserted", invoice("INV-1", 1, "draft"))
        await crm.send("acme", "invoice.upserted", invoice("INV-1", 2, "open"))
        await crm.wait_for(lambda r: len(_states(crm, "INV-1")) >= 2)
    assert _states(crm, "INV-1") == ["draft", "open"]
    assert _db(syncd).status("acme", "INV-1") == ("open", 2)
    assert [h[:2] for h in _db(syncd).history("acme", "INV-1")] == [
        (None, "draft"),
        ("draft", "open"),
    ]
    async with Crm(
        broker.port
    ) as late:  # a CRM that connects later gets the retained state
        await late.wait_for(lambda r: bool(late.on("sync/invoice/INV-1")))
    [retained] = late.on("sync/invoice/INV-1")
    assert retained.retain
    assert retained.body["data"]["status"] == "open"
    # open is a sync status; with no QBO connected the push waits, and says why
    assert retained.body["data"]["sync_state"] == "pending"


async def test_refused_move_is_answered_and_changes_nothing(broker, syncd):
    """DC4/RO7: a move the rules forbid is refused with the move named."""
    async with Crm(broker.port) as crm:
        await crm.send("acme", "invoice.upserted", invoice("INV-2", 1, "draft"))
        bad = await crm.send("acme", "invoice.upserted", invoice("INV-2", 2, "paid"))
        await crm.wait_for(lambda r: bool(crm.on("out/input/rejected")))
    [rejected] = crm.on("acme/out/input/rejected")
    assert rejected.body["data"]["message_id"] == bad["id"]
    assert "draft → paid" in rejected.body["data"]["reason"]
    # issue 9 §7: the CRM is told which rules, never the server's file paths
    assert "the rules (rules/default.toml) refuse" in rejected.body["data"]["reason"]
    assert str(RULES.parent.parent) not in rejected.body["data"]["reason"]
    assert rejected.body["causation_id"] == bad["id"]
    assert _states(crm, "INV-2") == ["draft"]
    assert _db(syncd).status("acme", "INV-2") == ("draft", 1)
    [failure] = _db(syncd).failures("acme")
    assert failure[:3] == ("INV-2", "status_move", "move_refused")


async def test_bad_input_is_rejected_and_the_rest_flows(broker, syncd):
    """Bad input never crashes syncd nor blocks what follows; each gets a reason."""
    base = "syncd/acme/crm/invoice/upserted"
    good = envelope("acme", "invoice.upserted", invoice("OK-1", 1, "draft"))
    floaty = envelope(
        "acme", "invoice.upserted", invoice("OK-2", 1, "draft", total=19.5)
    )
    wrong_tenant = envelope("beta", "invoice.upserted", invoice("OK-3", 1, "draft"))
    unknown = envelope("acme", "invoice.exploded", {"invoice_id": "x"})
    bad = [
        (base, b"\x00\xffnot json"),
        (base, b"{not json"),
        (base, json.dumps(floaty).encode()),
        (base, json.dumps(wrong_tenant).encode()),
        ("syncd/acme/crm/invoice/exploded", json.dumps(unknown).encode()),
        (base, b"[" * 300_000),
        (base, json.dumps({"id": "no-rest"}).encode()),
    ]
    async with Crm(broker.port) as crm:
        for topic, payload in bad:
            await crm.publish_raw(topic, payload)
        await crm.publish_raw(base, json.dumps(good).encode())
        await crm.wait_for(
            lambda r: (
                len(crm.on("out/input/rejected")) >= len(bad)
                and bool(_states(crm, "OK-1"))
            )
        )
    reasons = [m.body["data"]["reason"] for m in crm.on("out/input/rejected")]
    assert any("not valid UTF-8" in r for r in reasons)
    assert any("payload is not JSON" in r for r in reasons)
    assert any("data.total must be a decimal string" in r for r in reasons)
    assert any("tenant 'beta' disagrees" in r for r in reasons)
    assert any("unknown message type 'invoice.exploded'" in r for r in reasons)
    assert any("over the limit of 262144 bytes" in r for r in reasons)
    assert any("type None disagrees" in r for r in reasons)
    assert _states(crm, "OK-1") == ["draft"]
    assert syncd.get("/healthz")[0] == 200


async def test_tenants_have_their_own_rules_and_nothing_crosses(tmp_path, broker):
    """Each tenant has its own rules; messages for an unknown tenant are refused."""
    strict = tmp_path / "strict.toml"
    strict.write_text(
        RULES.read_text().replace(
            'draft = ["open", "deleted"]', 'draft = ["sent", "deleted"]'
        )
    )
    workdir = tmp_path / "two"
    workdir.mkdir()
    proc = SyncdProcess(
        write_config(workdir, broker.port, {"acme": RULES, "strict": strict})
    )
    proc.start()
    try:
        async with Crm(broker.port) as crm:
            for tenant in ("acme", "strict"):
                await crm.send(tenant, "invoice.upserted", invoice("INV-1", 1, "draft"))
                await crm.send(tenant, "invoice.upserted", invoice("INV-1", 2, "open"))
            await crm.send("ghost", "invoice.upserted", invoice("INV-1", 1, "draft"))
            await crm.wait_for(
                lambda r: (
                    len(crm.on("strict/out/input/rejected")) == 1
                    and len(crm.on("acme/sync/invoice/INV-1")) == 2
                    and len(crm.on("ghost/out/input/rejected")) == 1
                )
            )
        db = _db(proc)
        assert db.status("acme", "INV-1") == ("open", 2)
        assert db.status("strict", "INV-1") == ("draft", 1)
        assert db.status("ghost", "INV-1") is None
        assert [
            m.body["data"]["status"] for m in crm.on("strict/sync/invoice/INV-1")
        ] == ["draft"]
        ghost = crm.on("ghost/out/input/rejected")[0].body["data"]["reason"]
        assert ghost.startswith(
            "tenant 'ghost' is not served by this syncd (the payload"
        )
    finally:
        proc.stop()


async def test_status_online_then_offline_on_stop_and_on_kill(tmp_path, broker):
    """P/status is retained: online while up, offline on SIGTERM, SIGINT and (will) SIGKILL."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port))

    async def status() -> str:
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe("syncd/status", qos=1)
            async with asyncio.timeout(5):
                async for m in c.messages:
                    return bytes(m.payload).decode()
        raise AssertionError("no retained status")

    proc.start()
    assert await status() == "online"
    assert proc.stop() == 0
    assert await status() == "offline"
    proc.start()
    assert await status() == "online"
    proc.signal(signal.SIGINT)
    assert proc.stop() == 0
    assert await status() == "offline"
    assert proc.log().count('"event":"syncd_stopped"') == 2
    proc.start()
    proc.kill()

    async def offline() -> bool:
        return await status() == "offline"

    await eventually(offline)  # the will, once the broker notices


async def test_readyz_follows_the_broker(tmp_path):
    """/readyz is 503 naming the broker while it is down, 200 once syncd reconnects."""
    broker = Broker(tmp_path / "b")
    broker.start()
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port))
    proc.start()
    try:
        assert proc.get("/readyz")[0] == 200
        broker.stop()
        code, body = await eventually(lambda: _not_ready(proc))
        assert code == 503
        assert json.loads(body)["checks"] == {
            "store": True,
            "broker": False,
            "rules": True,
        }
        assert proc.get("/healthz")[0] == 200
        broker.start()
        proc.wait_ready(timeout=30)
    finally:
        proc.stop()
        broker.stop()


async def test_sighup_reloads_good_rules_and_keeps_old_on_bad(tmp_path, broker):
    """SIGHUP swaps in valid rules; invalid ones are refused and the old stay."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        RULES.read_text().replace(
            'draft = ["open", "deleted"]', 'draft = ["sent", "deleted"]'
        )
    )
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port, {"acme": rules}))
    proc.start()
    try:
        async with Crm(broker.port) as crm:
            await crm.send("acme", "invoice.upserted", invoice("I", 1, "draft"))
            await crm.send("acme", "invoice.upserted", invoice("I", 2, "open"))
            await crm.wait_for(lambda r: len(crm.on("out/input/rejected")) == 1)
            rules.write_text(RULES.read_text())
            proc.signal(signal.SIGHUP)
            await _wait_log(proc, "rules_reloaded")
            await crm.send("acme", "invoice.upserted", invoice("I", 3, "open"))
            await crm.wait_for(lambda r: _states(crm, "I") == ["draft", "open"])
            rules.write_text("[moves\n")
            proc.signal(signal.SIGHUP)
            await _wait_log(proc, "rules_reload_refused")
            # issue 22 §9: tomllib recursed; SIGHUP logged asyncio's own traceback
            rules.write_text("a = " + "[" * 2000 + "]" * 2000 + "\n")
            proc.signal(signal.SIGHUP)
            await eventually(lambda: "nested too deeply" in proc.log(), timeout=10)
            assert "Exception in callback" not in proc.log()
            await crm.send("acme", "invoice.upserted", invoice("I", 4, "sent"))
            await crm.wait_for(lambda r: _states(crm, "I") == ["draft", "open", "sent"])
    finally:
        proc.stop()


async def test_messages_sent_while_syncd_is_down_are_processed(tmp_path, broker):
    """The persistent session: the broker keeps syncd's messages while it is stopped."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    proc = SyncdProcess(write_config(workdir, broker.port))
    proc.start()
    proc.stop()
    async with Crm(broker.port) as crm:
        for n in range(50):
            await crm.send("acme", "invoice.upserted", invoice(f"D-{n}", 1, "draft"))
        proc.start()
        await crm.wait_for(
            lambda r: (
                len(crm.on("out/input/rejected"))
                + len([m for m in r if "/sync/invoice/D-" in m.topic])
                >= 50
            )
        )
    proc.stop()
    assert sum(1 for v in _db(proc).outcomes("acme").values() if v == "applied") == 50


async def _wait_log(proc: SyncdProcess, event: str, timeout: float = 10) -> None:
    await eventually(lambda: f'"event":"{event}"' in proc.log(), timeout=timeout)


def _not_ready(proc: SyncdProcess) -> tuple[int, bytes] | None:
    """/readyz's answer once it is 503, else None."""
    code, body = proc.get("/readyz")
    return (code, body) if code == 503 else None


def test_config_paths_are_real(tmp_path: Path):
    """The test config names the shipped rules file."""
    assert RULES.exists()
