"""Issue 22 §1: the shipped broker configuration isolates tenants (a real Mosquitto).

syncd takes the tenant from the topic, so isolation on the broker is its ACL. The
shipped `deploy/mosquitto.conf` took anonymous clients: anyone on the network voided
an acme invoice in QBO with `command.void` and forged retained sync states. Here the
shipped configuration and ACL run as they are (only paths and the port changed): each
CRM logs in as its tenant and reaches only its own topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.crm import envelope, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.integration.test_broker_auth import _passwd
from tests.mosquitto import Broker, free_port
from tests.syncd_process import RULES, SyncdProcess, write_config

ROOT = Path(__file__).resolve().parents[2]
USERS = {"syncd": "pw-of-syncd", "acme": "pw-of-acme", "globex": "pw-of-globex"}


@pytest.fixture
def closed(tmp_path) -> Iterator[Broker]:
    """Mosquitto on deploy/mosquitto.conf and deploy/mosquitto.acl, as shipped."""
    passwords = tmp_path / "mosquitto.passwords"
    for n, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if n == 0 else []
        subprocess.run(
            [_passwd(), *create, "-b", str(passwords), user, password], check=True
        )
    data = tmp_path / "broker"
    data.mkdir()
    port = free_port()
    conf = (
        (ROOT / "deploy" / "mosquitto.conf")
        .read_text()
        .replace("listener 1883", f"listener {port} 127.0.0.1")
        .replace("/mosquitto/config/passwords", str(passwords))
        .replace("/mosquitto/config/acl", str(ROOT / "deploy" / "mosquitto.acl"))
        .replace("/mosquitto/data/", f"{data}/")
        .replace("log_dest stdout", "")
    )
    broker = Broker(data, port, conf=conf)
    broker.start()
    yield broker
    broker.stop()


def _client(broker: Broker, user: str | None, name: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=name,
        username=user,
        password=USERS.get(user or ""),
        protocol=aiomqtt.ProtocolVersion.V5,
    )


def _upsert(tenant: str, invoice_id: str, message_id: str) -> bytes:
    data = invoice(invoice_id, 1, "draft")
    return json.dumps(envelope(tenant, "invoice.upserted", data, message_id)).encode()


async def _applied(db: DbView, message_id: str) -> None:
    sql = "SELECT outcome FROM messages WHERE message_id = ?"
    assert await eventually(lambda: db.query(sql, message_id)) == [("applied",)]


async def _forge(
    broker: Broker, topic: str, payload: bytes, retain: bool = False
) -> None:
    """A CRM (acme's) publishes where it may not: the broker delivers it to no one.

    Mosquitto answers 0x87 Not authorized, and 2.0 then drops the connection.
    """
    with contextlib.suppress(aiomqtt.MqttError):
        async with _client(broker, "acme", f"forger-{topic}") as acme:
            # QoS 1: the broker has answered (0x87) when this returns; what the test
            # publishes next reaches the broker after it
            await acme.publish(topic, payload, qos=1, retain=retain)
            async with asyncio.timeout(10):
                await anext(acme.messages)  # ends with the connection the broker drops


async def test_each_crm_reaches_only_its_own_tenant(closed: Broker, tmp_path):
    """DC3, issue 22 §1: each CRM writes and reads only its own tenant's topics.

    Anonymous clients are refused; acme cannot write globex's CRM topics nor forge what
    syncd says; acme reads only what syncd says to acme; syncd sees no open broker.
    """
    workdir = tmp_path / "s"
    workdir.mkdir()
    config = write_config(workdir, closed.port, {"acme": RULES, "globex": RULES})
    env = {"SYNCD_MQTT_USERNAME": "syncd", "SYNCD_MQTT_PASSWORD": USERS["syncd"]}
    syncd = SyncdProcess(config, env=env)
    await asyncio.to_thread(syncd.start)
    db = DbView(workdir / "syncd.db")
    try:
        with pytest.raises(aiomqtt.MqttError, match="Not authorized"):
            async with _client(closed, None, "anonymous"):
                pass
        async with _client(closed, "globex", "crm-globex") as globex:
            await globex.publish(
                "syncd/globex/crm/invoice/upserted",
                _upsert("globex", "G-1", "g-1"),
                qos=1,
            )
            await _applied(db, "g-1")
        # another tenant's CRM topic, and a forged retained sync state of its own
        await _forge(
            closed,
            "syncd/globex/crm/invoice/upserted",
            _upsert("globex", "G-2", "forged"),
        )
        forged = {"type": "invoice.sync_state", "data": {"invoice_id": "FORGED"}}
        await _forge(
            closed, "syncd/acme/sync/invoice/FORGED", json.dumps(forged).encode(), True
        )
        async with _client(closed, "acme", "crm-acme") as acme:
            await acme.subscribe("syncd/#", qos=1)
            await acme.publish(
                "syncd/acme/crm/invoice/upserted", _upsert("acme", "A-1", "a-1"), qos=1
            )
            await _applied(db, "a-1")
            seen: list[str] = []
            async with asyncio.timeout(15):
                async for message in acme.messages:
                    seen.append(message.topic.value)
                    if message.topic.value == "syncd/acme/sync/invoice/A-1":
                        break
        assert db.query("SELECT * FROM messages WHERE message_id = 'forged'") == []
        assert db.status("globex", "G-2") is None
        # what acme read: its own sync state (and syncd's status), never globex's, and
        # no forged state was retained
        assert all(t.startswith(("syncd/acme/", "syncd/status")) for t in seen), seen
        assert "syncd/acme/sync/invoice/FORGED" not in seen
        async with _client(closed, "globex", "crm-globex-2") as globex:
            await globex.subscribe("syncd/acme/#", qos=1)
            await globex.subscribe("syncd/globex/sync/#", qos=1)
            async with asyncio.timeout(15):
                message = await anext(globex.messages)
            assert message.topic.value == "syncd/globex/sync/invoice/G-1"
    finally:
        syncd.stop()
    assert '"event":"broker_accepts_anonymous"' not in syncd.log()


async def test_syncd_warns_when_its_broker_lets_anyone_in(syncd: SyncdProcess):
    """Issue 22 §1: the tests' own brokers take anonymous clients: syncd says so."""
    await eventually(lambda: '"event":"broker_accepts_anonymous"' in syncd.log())
