"""Backfill: the CRM's history from before the connection, handed over and synced."""
