from __future__ import annotations

from tests.crm import Crm, invoice


async def test_a_move_is_applied_and_published(broker, syncd):
    """An allowed move is applied and the retained state message says so."""
    async with Crm(broker.port) as crm:
        await crm.send("acme", "invoice.upserted", invoice("INV-1", 1, "draft"))
        await crm.send("acme", "invoice.upserted", invoice("INV-1", 2, "open"))
        await crm.wait_for(
            lambda r: len([m for m in r if "sync/invoice/INV-1" in m.topic]) >= 2
        )
    states = [m.body["data"]["status"] for m in crm.on("sync/invoice/INV-1")]
    assert states == ["draft", "open"]
