"""Issue 13 (fuzzing, begun): any webhook body, signed or not, in either format.

Property: syncd answers each with 200 (a notification it stored), 400 (unreadable), 401
(bad signature) or 413 (too large), never stops, and the next valid CRM message is
applied. Bodies are shaped like QBO's (CloudEvents and legacy) with hostile values in
every slot, or arbitrary bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as publish
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.crm import envelope, invoice
from tests.dbview import DbView
from tests.eventually import until
from tests.mosquitto import Broker
from tests.syncd_process import QBO_ENV, SyncdProcess, write_config

VERIFIER = QBO_ENV["SYNCD_QBO_VERIFIER_TOKEN"]
SEEN: dict[int, int] = {}  # status → how many, across the examples

hostile = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(
        ["", "\u0000", "\ud7ff\uffff", "Invoice", "Payment", "9130", "a/b#+"]
    )
)
values = st.recursive(
    hostile,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
cloudevent = st.fixed_dictionaries(
    {
        "specversion": st.sampled_from(["1.0", 1, None]),
        "id": values,
        "type": st.sampled_from(
            ["qbo.invoice.updated.v1", "qbo.payment.created.v1", "qbo.x", ""]
        )
        | values,
        "intuitentityid": values,
        "intuitaccountid": values,
        "time": values,
    },
    optional={"data": values, "deletedId": values},
)
legacy = st.fixed_dictionaries(
    {
        "eventNotifications": st.lists(
            st.fixed_dictionaries(
                {
                    "realmId": values,
                    "dataChangeEvent": st.fixed_dictionaries(
                        {
                            "entities": st.lists(
                                st.dictionaries(st.text(max_size=12), values),
                                max_size=3,
                            )
                        }
                    )
                    | values,
                }
            ),
            max_size=3,
        )
        | values
    }
)
bodies = (
    st.lists(cloudevent, max_size=4).map(lambda e: json.dumps(e).encode())
    | legacy.map(lambda e: json.dumps(e).encode())
    | st.binary(max_size=300)
    | st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n + b"]" * n)
)


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SyncdProcess, Broker]]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    broker = Broker(workdir / "broker")
    broker.start()
    syncd = SyncdProcess(write_config(workdir, broker.port), env=QBO_ENV)
    syncd.start()
    yield syncd, broker
    syncd.stop()
    broker.stop()


def _post(syncd: SyncdProcess, body: bytes, signature: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["intuit-signature"] = signature
    request = urllib.request.Request(
        f"http://127.0.0.1:{syncd.http_port}/webhooks/qbo", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _sign(body: bytes) -> str:
    digest = hmac.new(VERIFIER.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@given(body=bodies, signing=st.sampled_from(["valid", "wrong", "missing", "garbage"]))
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_webhook_is_answered_clearly(target, body, signing):
    """A clear answer to each; a bad signature is 401 whatever the body."""
    syncd, _ = target
    signature = {
        "valid": _sign(body),
        "wrong": _sign(body + b"x"),
        "missing": None,
        "garbage": "not base64!",
    }[signing]
    status = _post(syncd, body, signature)
    SEEN[status] = SEEN.get(status, 0) + 1
    assert status in (200, 400, 401, 413), status
    if signing != "valid":
        assert status == 401


def test_syncd_still_serves_after_the_fuzzing(target):
    """Ready, no loop crashed, and the next CRM message is applied."""
    syncd, broker = target
    assert SEEN.get(200) and SEEN.get(400) and SEEN.get(401), SEEN  # every path taken
    assert syncd.get("/readyz")[0] == 200
    body = envelope("acme", "invoice.upserted", invoice("AFTER-1", 1, "draft"))
    publish.single(
        "syncd/acme/crm/invoice/upserted", json.dumps(body), qos=1, port=broker.port
    )
    view = DbView(syncd.config.parent / "syncd.db")
    until(lambda: view.status("acme", "AFTER-1") is not None, timeout=10)
    assert view.status("acme", "AFTER-1") == ("draft", 1)
    assert "loop_crashed" not in syncd.log()
    assert "inbound_item_failed" not in syncd.log()  # every stored body was handled
