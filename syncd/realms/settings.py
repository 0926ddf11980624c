"""What a QBO company has (OD2): its preferences, tax codes and accounts, read once.

Read at connection (and before the first sync when QBO throttled the callback), so
syncs need no look-ups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import stamina

from syncd.exceptions import QboTransientError
from syncd.qbo import QboClient, queries

_T = TypeVar("_T")
# the settings read at the callback: 8 tries, pauses 0.25 s doubling to 4 s (~16 s at most)
SETTINGS_TRIES, SETTINGS_FIRST_PAUSE, SETTINGS_PAUSE_CAP = 8, 0.25, 4.0


def custom_field_ids(prefs: dict[str, Any]) -> dict[str, str]:
    """Sales-form custom field names → DefinitionId, from Preferences.SalesFormsPrefs."""
    found: dict[str, str] = {}
    for group in prefs.get("SalesFormsPrefs", {}).get("CustomField", []):
        for entry in group.get("CustomField", []):
            name = str(entry.get("Name", ""))
            if name.startswith("SalesFormsPrefs.SalesCustomName") and entry.get(
                "StringValue"
            ):
                found[str(entry["StringValue"])] = name.removeprefix(
                    "SalesFormsPrefs.SalesCustomName"
                )
    return found


async def read_settings(client: QboClient) -> dict[str, Any]:
    """What the company has (OD2), read once at connection so syncs need no look-ups.

    Each read is retried on QBO's transient answers (429 included, with short pauses
    rather than the minute QBO asks for), within what a browser waits at the callback.
    """
    prefs = await _patiently(client.preferences)
    taxes = await _patiently(
        lambda: client.query_all(queries.every("TaxCode"), "TaxCode")
    )
    accounts = await _patiently(
        lambda: client.query_all(queries.every("Account"), "Account")
    )
    currency = prefs.get("CurrencyPrefs", {})
    return {
        "home_currency": currency.get("HomeCurrency", {}).get("value", "USD"),
        "multicurrency": bool(currency.get("MultiCurrencyEnabled")),
        # qbo.md §10: QBO then ignores tax codes; only a TotalTax override is honoured
        "automated_sales_tax": bool(prefs.get("TaxPrefs", {}).get("PartnerTaxEnabled")),
        "custom_fields": custom_field_ids(prefs),
        "tax_codes": {t["Name"]: str(t["Id"]) for t in taxes},
        "accounts": {a["Name"]: str(a["Id"]) for a in accounts},
    }


async def _patiently(read: Callable[[], Awaitable[_T]]) -> _T:
    """`read`, tried again on QBO's transient faults (stamina: growing, jittered pauses)."""
    async for attempt in stamina.retry_context(
        on=QboTransientError,
        attempts=SETTINGS_TRIES,
        timeout=None,
        wait_initial=SETTINGS_FIRST_PAUSE,
        wait_max=SETTINGS_PAUSE_CAP,
        wait_jitter=SETTINGS_FIRST_PAUSE,
    ):
        with attempt:
            return await read()
    raise AssertionError("unreachable")  # pragma: no cover -- stamina re-raises
