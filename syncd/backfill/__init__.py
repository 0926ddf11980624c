"""Backfill: the CRM's history from before the connection, handed over and synced.

`history` reads the CRM's file into messages in dependency order; `handover` publishes
them to the running daemon on the normal topics and follows them through the store.
May import: the shared modules (config, models, store) and the broker link's TLS set-up.
"""
