"""CRM → QBO: the job worker and the writes it makes (the intent ledger).

Owns the job worker (`jobs`: due jobs in queue order, retry policy, results recorded
on the invoice as it stands), the invoice writes (`push`: resolve, build, write,
record), payments, receipts and customer updates (`payments`), finding or making what a
body names (`resolve`) and the pure CRM snapshot → QBO body mapping (`mapping`).

May import: the top-level modules, `syncd.engine`, `syncd.qbo`.
"""

from __future__ import annotations
