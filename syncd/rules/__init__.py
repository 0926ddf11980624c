"""The rules an admin edits (`rules/*.toml`): read, typed and checked before any use.

`tables` reads TOML into typed values, collecting every problem; `model` is the rules
themselves (statuses, moves, what syncs, how QBO events map) and their checks. The
engine decides with them; `config` loads one set per tenant.

May import: `syncd.const` and `syncd.exceptions` only (the engine and `config` build on
it, never the reverse).
"""
