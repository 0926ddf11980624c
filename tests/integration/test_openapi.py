"""Issue 12: every admin API route answers as its OpenAPI document says (schemathesis).

schemathesis generates requests for each documented operation (odd tenants, ids and
filters included) and checks each answer: a documented status, the documented content
type, a body that fits the schema. The seeded examples are checked the same way.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from syncd.web.openapi import DOCUMENT
from tests.crm import envelope, invoice
from tests.eventually import until
from tests.mosquitto import Broker
from tests.syncd_process import ADMIN, QBO_ENV, SyncdProcess, write_config

SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class Api:
    base: str
    syncd: SyncdProcess


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One syncd (not connected to QBO) with one invoice and one refused move."""
    workdir: Path = tmp_path_factory.mktemp("openapi")
    broker = Broker(workdir / "broker")
    broker.start()
    syncd = SyncdProcess(write_config(workdir, broker.port), env=QBO_ENV)
    syncd.start()
    try:
        import paho.mqtt.publish as publish

        for version, status in ((1, "draft"), (2, "paid")):  # draft → paid is refused
            body = envelope(
                "acme", "invoice.upserted", invoice("INV-1", version, status)
            )
            publish.single(
                "syncd/acme/crm/invoice/upserted",
                json.dumps(body),
                qos=1,
                port=broker.port,
            )
        yield Api(f"http://127.0.0.1:{syncd.http_port}", syncd)
    finally:
        syncd.stop()
        broker.stop()


@SCHEMA.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_every_route_answers_as_documented(case, api: Api):
    """Each operation, with generated parameters: documented status, type and body."""
    case.call_and_validate(base_url=api.base, headers=AUTH)


def _get(api: Api, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(api.base + path, headers=AUTH)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _fits(path: str, status: int, body: Any) -> None:
    responses = DOCUMENT["paths"][path]["get"]["responses"]
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, schema)


def _failures(api: Api) -> tuple[int, Any] | None:
    status, failures = _get(api, "/api/tenants/acme/failures")
    return (status, failures) if failures else None


def test_the_document_is_served_and_the_examples_fit_it(api: Api):
    """`/openapi.json` is the document; a real invoice, history and failure fit it."""
    with urllib.request.urlopen(api.base + "/openapi.json", timeout=5) as r:
        assert json.loads(r.read()) == json.loads(json.dumps(DOCUMENT))
    # the two messages are applied asynchronously
    status, failures = until(lambda: _failures(api), timeout=5, every=0.1)
    _fits("/api/tenants/{tenant}/failures", status, failures)
    assert failures and failures[0]["code"] == "move_refused"
    status, listed = _get(api, "/api/tenants/acme/invoices")
    _fits("/api/tenants/{tenant}/invoices", status, listed)
    assert [i["invoice_id"] for i in listed] == ["INV-1"]
    status, one = _get(api, "/api/tenants/acme/invoices/INV-1")
    _fits("/api/tenants/{tenant}/invoices/{invoice}", status, one)
    status, unknown = _get(api, "/api/tenants/nobody/invoices")
    assert status == 404
    _fits("/api/tenants/{tenant}/invoices", 404, unknown)
