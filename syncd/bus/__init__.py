"""The MQTT side: the broker link, the CRM's messages in, syncd's messages out.

Owns the link (`link`, with aiomqtt's internals fenced in `wire`), the envelope and
payload checks (`envelope`, `topics`, `payloads`), the CRM inbox (`inbox`: parse, decide
with `syncd.engine`, one commit, then ack) and the publisher (`publisher`: the
outbox, in order, at QoS 1).

May import: the top-level modules (models, config, clock, exceptions, store), and
`syncd.engine` (the inbox decides through it). Never `outbound`, `inbound` or `web`.
"""

from __future__ import annotations
