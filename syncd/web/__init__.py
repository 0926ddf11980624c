"""HTTP: the aiohttp application, the admin API, the OAuth routes, the webhook route.

Owns the app and its routes (`app`, `keys`), the admin API (`admin`: invoices,
failures and their retry, the QBO PDF), connecting QBO (`oauth`) and the QBO webhook
endpoint (`webhook`: signature checked, body stored before the 200).

May import: everything but `syncd.sandbox` (it serves the daemon's parts).
"""

from __future__ import annotations
