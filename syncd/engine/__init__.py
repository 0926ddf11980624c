"""The rules and the decisions: what a CRM message means, with no I/O.

Owns the rules (`rules`, read by `tables`), the live rule sets (`rulebook`), the
state machine (`machine`), the CRM-side decisions (`decide`: one message → a ChangeSet
with its QBO jobs) and the one failure path (`failures`: a record and `…/sync/failed`).

May import: the top-level modules and `syncd.bus.events` (the shapes of the messages a
decision causes). Nothing here touches the network or the store.
"""

from __future__ import annotations
