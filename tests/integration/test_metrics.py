"""Issue 12: /metrics counts what happened and reads the backlog; `syncd health` exits 0/1."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from tests.eventually import eventually
from tests.integration.test_outbound import Setup, _invoice
from tests.integration.test_outbound import setup as setup  # the fixture


async def _metrics(s: Setup) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{s.syncd.http_port}/metrics"
    async with s.qbo.session.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _health(s: Setup) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "health", "--config", str(s.syncd.config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_metrics_count_messages_moves_qbo_calls_and_the_backlog(setup: Setup):
    """Issue 12: what happened, counted; the backlog and the token, read at the scrape.

    Messages in by type and outcome, moves applied and refused, QBO requests with
    latency, reads per realm and month, messages out, jobs, outbox, token expiry.
    """
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "draft"))
    await setup.crm.send("acme", "invoice.upserted", _invoice(2, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
    await setup.crm.send("acme", "invoice.upserted", _invoice(3, "deleted"))  # refused
    await setup.crm.wait_for(lambda r: bool(setup.crm.on("out/input/rejected")))
    rejected = ("syncd_messages_out_total", (("kind", "out/input/rejected"),))

    Found = dict[tuple[str, tuple[tuple[str, str], ...]], float]

    async def counted() -> Found | None:
        # counted once the broker acked it: the CRM may hear it first
        found = await _metrics(setup)
        return found if found.get(rejected) else None

    got: Found = await eventually(counted, timeout=5)

    def value(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    assert (
        value("syncd_messages_in_total", type="invoice.upserted", outcome="applied")
        == 2
    )
    assert (
        value("syncd_messages_in_total", type="invoice.upserted", outcome="refused")
        == 1
    )
    assert value("syncd_moves_total", source="crm", result="applied") == 2
    assert value("syncd_moves_total", source="crm", result="refused") == 1
    assert value("syncd_qbo_requests_total", operation="write", status="200") >= 3
    assert value("syncd_qbo_request_seconds_count", operation="write") >= 3
    month = datetime.now(UTC).strftime("%Y-%m")
    reads = value("syncd_qbo_reads_total", realm=setup.realm, month=month)
    assert reads >= 3  # the company's settings, read once at connection
    assert value("syncd_messages_out_total", kind="sync/invoice") >= 2
    assert value("syncd_messages_out_total", kind="out/input/rejected") == 1
    assert ("syncd_jobs", (("status", "pending"),)) in got
    assert ("syncd_outbox_depth", ()) in got
    assert 0 < value("syncd_token_seconds_to_expiry", tenant="acme") <= 101 * 86400


async def test_health_exits_0_while_ready_and_1_once_stopped(setup: Setup):
    """`syncd health` for a container HEALTHCHECK: asks /readyz of the running daemon."""
    ready = _health(setup)
    assert ready.returncode == 0, ready.stderr
    assert '"status": "ready"' in ready.stdout
    setup.syncd.stop()
    gone = _health(setup)
    assert gone.returncode == 1
    assert "does not answer" in gone.stderr
