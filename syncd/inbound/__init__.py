"""QBO → CRM: stored webhooks and reconciliation, turned into checked status moves.

Owns the inbound worker (`worker`: stored webhook bodies and the CRM's refresh
requests, one realm's notifications applied whole or not at all), the decisions
(`plan`: load what the store knows, then decide without I/O), the news for the CRM
(`news`: imported invoices, new customers, review requests) and the reconciliation
pass (`reconcile`: CDC, queries for gaps, overdue as days pass).

May import: the top-level modules, `syncd.engine`, `syncd.qbo`.
"""

from __future__ import annotations
