"""The commit edge: a decided message becomes a topic, an envelope and a fresh id.

The one renderer of `syncd.messages`: it runs in the transaction that commits a
ChangeSet, so the id is minted once and stays the same however often the row is
published again.
"""

from __future__ import annotations

import uuid

import orjson

from syncd.messages import Message
from syncd.models import Outbound


def render(prefix: str, message: Message) -> Outbound:
    """`message` for tenant T as `<prefix>/T/<subtopic>`, in the contract's envelope."""
    body = {
        "id": f"evt-{uuid.uuid4().hex}",
        "type": message.type,
        "tenant": message.tenant,
        "occurred_at": message.at.isoformat().replace("+00:00", "Z"),
        "data": message.data,
    }
    if message.causation_id is not None:
        body["causation_id"] = message.causation_id
    return Outbound(
        topic=f"{prefix}/{message.tenant}/{message.subtopic()}",
        payload=orjson.dumps(body),
        retain=message.retain,
    )
