"""Is the broker open? One anonymous connection attempt, to warn the operator.

syncd takes the tenant from the topic, so tenant isolation on the broker is its ACL: a
broker that lets anyone in lets anyone void any tenant's invoices (issue 22 §1).
"""

from __future__ import annotations

import secrets
import ssl

import aiomqtt

from syncd.config import MqttConfig

_PROBE_TIMEOUT = 5.0


async def accepts_anonymous(config: MqttConfig, tls: ssl.SSLContext | None) -> bool:
    """Whether the broker lets a client in with no user name and no password."""
    client = aiomqtt.Client(
        config.host,
        config.port,
        identifier=f"syncd-probe-{secrets.token_hex(4)}",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        tls_context=tls,
        timeout=_PROBE_TIMEOUT,
    )
    try:
        async with client:
            return True
    except aiomqtt.MqttError:
        return False
