"""The rules and the decisions: what a CRM message means, with no I/O.

Decides with the rules (`syncd.rules`), held live per tenant (`rulebook`); owns the
state machine (`machine`), the CRM-side decisions (`decide`: one message → a ChangeSet
with its QBO jobs), the QBO-side moves (`qbo_events`: QBO's view of an invoice, what
changed in it, and the CRM status that maps to) and the one failure path (`failures`: a
record and `…/sync/failed`).

May import: `syncd.const`, `syncd.exceptions`, `syncd.models`, `syncd.messages` (the
typed intents a decision appends: the store renders them into topics, envelopes and ids
at commit) and `syncd.rules`. Never `bus`, `store`, `qbo` or `config`: `rules_try` reads
history through its own small protocol, which the store fills.
"""

from __future__ import annotations
