"""A QBO company's life beside syncd: connecting, clients, books, tokens, reads.

Owns the OAuth consent and callback (`connect`), each tenant's client with its limiter
(`connections`), what the company's settings are (`settings`), the switch to another
company as a plan applied once (`books`), the health of the grant (`health`), Intuit's
metered reads (`reads`) and the sealing of secrets at rest (`secrets`).

May import: the top-level modules, `syncd.qbo` and `syncd.rules`.
"""
