"""The QBO sandbox: QuickBooks Online's API, OAuth and webhooks, on this machine.

It shares no code with `syncd.qbo` (the client): two independent readings of
`shared/spec/qbo.md` keep each other honest.
"""

from __future__ import annotations
