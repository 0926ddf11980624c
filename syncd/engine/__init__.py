"""The rules and the decisions: what a CRM message means, with no I/O.

Owns the rules (`rules`, read by `tables`), the live rule sets (`rulebook`), the
state machine (`machine`), the CRM-side decisions (`decide`: one message → a ChangeSet
with its QBO jobs), the QBO-side moves (`qbo_events`: QBO's view of an invoice, what
changed in it, and the CRM status that maps to) and the one failure path (`failures`: a
record and `…/sync/failed`).

May import: the top-level modules and `syncd.bus.events` (the shapes of the messages a
decision causes). Nothing here touches the network or the store.
"""

from __future__ import annotations
