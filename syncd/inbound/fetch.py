"""Reading QBO's objects for the inbound side: by Ids, and what removed payments touched."""

from __future__ import annotations

from typing import Any

from syncd.inbound.news import QboChanges
from syncd.qbo import QboClient, queries
from syncd.store import Payments

BY_IDS_CHUNK = 100


async def by_ids(
    client: QboClient, entity: str, ids: set[str]
) -> dict[str, dict[str, Any]]:
    """The objects with these Ids, BY_IDS_CHUNK to a question (a GET's URL is bounded)."""
    found: dict[str, dict[str, Any]] = {}
    listed = sorted(ids)
    for start in range(0, len(listed), BY_IDS_CHUNK):
        chunk = listed[start : start + BY_IDS_CHUNK]
        rows = await client.query_all(queries.by_ids(entity, chunk), entity)
        found.update((str(r["Id"]), r) for r in rows)
    return found


async def removed_payments_invoices(
    client: QboClient, store: Payments, tenant: str, found: QboChanges
) -> None:
    """Read the synced invoices that payments deleted or voided in QBO were applied to.

    A deleted payment cannot be read, a voided one has no lines left: syncd's record of
    each tells its invoices, whose balance QBO gave back (an Invoice event for that is
    UNCONFIRMED, qbo.md §11.4, so they are read whether or not one came).
    """
    if not found.removed_payments:
        return
    records = await store.payments_in_qbo(tenant, sorted(found.removed_payments))
    wanted = {r.qbo_invoice_id for r in records if r.qbo_invoice_id}
    found.invoices.update(await by_ids(client, "Invoice", wanted - set(found.invoices)))
