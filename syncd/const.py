"""Names and defaults fixed by the contract: topics, message types, limits."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

TENANT_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_MESSAGE_ID_LEN: Final = 128
MAX_TEXT_LEN: Final = 4000  # QBO's longest text field (a line's description)
MAX_VERSION: Final = 2**63 - 1  # the store's INTEGER
# any integer in a message, and how deep it may nest (orjson writes at most 254 levels)
INT_RANGE: Final = (-(2**63), 2**63 - 1)
MAX_DEPTH: Final = 32
DEFAULT_MAX_PAYLOAD_BYTES: Final = 256 * 1024
# the years a date in a message may name: what businesses (and QBO) use; at the ends of
# Python's range a due date or a time zone overflows (year 9999 + 30 days, year 1 at +14:00)
DATE_YEARS: Final = (1900, 2199)
# a CRM's clock may run this far ahead of syncd's (a local time sent as UTC, at most 14 h)
CLOCK_AHEAD_LIMIT: Final = timedelta(days=1)

# The message types a CRM may publish (contract: "CRM → syncd").
CRM_TYPES: Final = frozenset(
    {
        "invoice.upserted",
        "invoice.deleted",
        "payment.recorded",
        "payment.deleted",
        "payment.refunded",
        "credit_note.upserted",
        "contact.upserted",
        "command.sync",
        "command.send",
        "command.void",
        "command.delete",
        "command.refresh",
        "command.link",
        "command.unlink",
    }
)

# syncd → CRM topics, below "<prefix>/<tenant>/".
TOPIC_STATE: Final = "sync/invoice/{invoice_id}"
TOPIC_REJECTED: Final = "out/input/rejected"
TOPIC_SET_STATUS: Final = "out/invoice/set_status"
TOPIC_SYNC_FAILED: Final = "out/sync/failed"
TOPIC_STATUS: Final = "status"  # below "<prefix>/" only

TYPE_SYNC_STATE: Final = "invoice.sync_state"
TYPE_REJECTED: Final = "input.rejected"

QBO_EVENTS: Final = (
    "invoice_updated",
    "payment_created",
    "payment_created_partial",
    "invoice_voided",
    "invoice_deleted",
    "payment_removed",  # a payment on the invoice deleted or voided in QBO (issue 26)
    "credit_applied",  # a credit applied to it in QBO ("" = as a payment)
)
