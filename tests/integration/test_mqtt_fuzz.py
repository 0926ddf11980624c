"""Issue 13: structure-aware fuzzing of the MQTT entrance, through a real Mosquitto.

Each example publishes one hostile message on tenant acme's topics (deep nesting, huge
and tiny numbers, NaN, invalid UTF-8, duplicate keys, control and bidi characters in ids,
floats for money, unknown fields, a topic that disagrees with the envelope, the other
tenant's ids), then a valid message of tenant beta. Property: beta's message is applied
(nothing stopped), and the hostile one is answered: applied, ignored, refused or
rejected, in the ledger or refused on `…/out/input/rejected` when it has no readable id.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import paho.mqtt.publish as publish
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from tests.crm import envelope, invoice
from tests.dbview import DbView
from tests.eventually import until
from tests.mosquitto import Broker
from tests.syncd_process import RULES, SyncdProcess, write_config

SEEN: Counter[str] = Counter()  # outcome → how many, across the examples
_n = itertools.count(1)

odd_text = st.sampled_from(
    [
        "\u202egnp.exe",  # right-to-left override
        "INV\u200b-1",  # zero-width space
        "INV\u0000",
        "a/b",
        "#",
        "+",
        "x" * 200,
        "\ud7ff\uffff",
        "B-1",  # the other tenant's invoice
        "",
    ]
) | st.text(max_size=20)
numbers = st.sampled_from(
    [10**30, -(2**63) - 1, 2**63, -1, 0, 1e-300, 1e308, float("nan"), float("inf")]
) | st.floats(allow_nan=True, allow_infinity=True)
odd = st.none() | st.booleans() | numbers | odd_text
deep = st.integers(min_value=10, max_value=400).map(
    lambda n: json.loads("[" * n + "]" * n)
)
money = st.sampled_from(["199.50", "1e3", "-0.00", "12.345", "NaN"]) | numbers


@st.composite
def invoice_data(draw: st.DrawFn) -> dict[str, Any]:
    data = invoice("INV-1", draw(st.integers(1, 5)), "draft")
    for key, strategy in (
        ("invoice_id", odd_text),
        ("version", numbers | odd_text),
        ("status", odd_text | st.sampled_from(["open", "paid", "voided"])),
        ("total", money),
        ("lines", deep | st.lists(st.dictionaries(st.text(max_size=8), odd))),
        ("customer", odd | deep),
        ("unknown_field", odd | deep),
    ):
        if draw(st.booleans()):
            data[key] = draw(strategy)
    return data


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(topic, payload, the envelope id to look for)."""
    # unique per example, and of one width: a replayed example has the same length
    message_id = f"fz-{next(_n):09d}"
    kind = draw(
        st.sampled_from(
            ["invoice.upserted", "payment.recorded", "command.void", "invoice.deleted"]
        )
    )
    data: Any = draw(
        invoice_data()
        | st.fixed_dictionaries(
            {"invoice_id": odd_text},
            optional={"payment_id": odd_text, "amount": money, "version": numbers},
        )
        | odd
    )
    env: dict[str, Any] = envelope(
        draw(st.sampled_from(["acme", "acme", "beta", "nobody"])),
        draw(st.sampled_from([kind, kind, "invoice.deleted", "x"])),
        data,
        message_id,
    )
    if draw(st.booleans()):
        env["extra"] = draw(odd)
    text = json.dumps(env, allow_nan=True)
    shape = draw(st.sampled_from(["plain", "duplicate keys", "bad utf-8", "cut"]))
    if shape == "duplicate keys":  # the last wins, checked as any other value
        text = text[:-1] + f', "id": "{message_id}-dup", "tenant": "beta"}}'
    payload = text.encode()
    if shape == "bad utf-8":
        at = draw(st.integers(0, len(payload)))
        payload = payload[:at] + b"\xff\xfe\xc0" + payload[at:]
    elif shape == "cut":
        payload = payload[: draw(st.integers(0, len(payload)))]
    topic = "syncd/acme/crm/" + kind.replace(".", "/")
    return topic, payload, message_id


REFUSALS: list[dict[str, Any]] = []  # every `…/out/input/rejected`, in order


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SyncdProcess, Broker, DbView]]:
    workdir: Path = tmp_path_factory.mktemp("mqtt-fuzz")
    broker = Broker(workdir / "broker")
    broker.start()
    config = write_config(workdir, broker.port, {"acme": RULES, "beta": RULES})
    syncd = SyncdProcess(config)
    syncd.start()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2)
    listener.on_message = lambda _c, _u, m: REFUSALS.append(
        {"topic": m.topic, **json.loads(m.payload)["data"]}
    )
    listener.connect("127.0.0.1", broker.port)
    listener.subscribe("syncd/+/out/input/rejected", qos=1)
    listener.loop_start()
    _send(broker, "beta", invoice("B-1", 1, "draft"))  # the other tenant's invoice
    yield syncd, broker, DbView(workdir / "syncd.db")
    listener.loop_stop()
    syncd.stop()
    broker.stop()


def _send(broker: Broker, tenant: str, data: dict[str, Any]) -> str:
    body = envelope(tenant, "invoice.upserted", data)
    publish.single(
        f"syncd/{tenant}/crm/invoice/upserted",
        json.dumps(body),
        qos=1,
        port=broker.port,
    )
    return str(body["id"])


def _wait(predicate: Any, timeout: float = 15) -> bool:
    try:
        return bool(until(predicate, timeout=timeout, every=0.02))
    except AssertionError:
        return False


def _outcome(db: DbView, message_id: str) -> str | None:
    rows = db.query("SELECT outcome FROM messages WHERE message_id = ?", message_id)
    return str(rows[0][0]) if rows else None


@given(message=hostile())
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_crm_message_is_answered_and_the_next_tenant_flows(target, message):
    _, broker, db = target
    topic, payload, message_id = message
    before = len(REFUSALS)
    publish.single(topic, payload, qos=1, port=broker.port)
    after = f"B-after-{next(_n)}"
    _send(broker, "beta", invoice(after, 1, "draft"))
    assert _wait(lambda: db.status("beta", after) is not None), "beta stopped"
    outcome = _outcome(db, message_id) or _outcome(db, f"{message_id}-dup")
    if outcome is None:  # not in the ledger: refused on …/out/input/rejected
        _wait(lambda: len(REFUSALS) > before, timeout=5)
        refusals = REFUSALS[before:]
        assert any(
            r["message_id"] in (message_id, f"{message_id}-dup", None) and r["reason"]
            for r in refusals
        ), (payload[:300], refusals)
        outcome = "refused before the ledger"
    SEEN[outcome] += 1
    assert outcome != "failed"


def test_a_10_mb_message_is_refused_and_the_rest_flows(target):
    syncd, broker, db = target
    big = envelope("acme", "invoice.upserted", invoice("BIG", 1, "draft"), "fz-10mb")
    big["data"]["notes"] = "x" * (10 * 1024 * 1024)
    publish.single(
        "syncd/acme/crm/invoice/upserted", json.dumps(big), qos=1, port=broker.port
    )
    _send(broker, "beta", invoice("B-after-big", 1, "draft"))
    assert _wait(lambda: db.status("beta", "B-after-big") is not None)
    assert db.status("acme", "BIG") is None
    assert '"event":"message_rejected"' in syncd.log()
    assert "over the limit of 262144 bytes" in syncd.log()


def test_after_the_fuzzing_syncd_serves_and_beta_is_untouched(target):
    """Ready, no loop crashed, every path taken; acme's messages never reached beta."""
    syncd, _, db = target
    assert SEEN["rejected"] and SEEN["refused before the ledger"], SEEN
    assert syncd.get("/readyz")[0] == 200
    assert "loop_crashed" not in syncd.log()
    assert db.status("beta", "B-1") == ("draft", 1)
    beta = db.query("SELECT invoice_id FROM invoices WHERE tenant = 'beta'")
    assert all(str(i).startswith("B-") for (i,) in beta), beta
