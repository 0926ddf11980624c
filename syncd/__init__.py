"""syncd: keeps a CRM on an MQTT bus and QuickBooks Online in two-way sync."""

from __future__ import annotations

__version__ = "0.1.0"
