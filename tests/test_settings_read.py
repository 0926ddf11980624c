"""The company's settings read once at connection (OD2), patient with QBO's hiccups."""

from __future__ import annotations

from typing import Any, cast

import pytest
import stamina

from syncd.exceptions import QboAuthError, QboTransientError
from syncd.qbo import QboClient
from syncd.realms.settings import SETTINGS_TRIES, read_settings


class _Company:
    """Answers like QBO after `hiccups` transient faults on each kind of read."""

    def __init__(self, hiccups: int, fault: Exception | None = None) -> None:
        self.hiccups = {"prefs": hiccups, "TaxCode": hiccups, "Account": hiccups}
        self.fault = fault or QboTransientError("503", "10000")
        self.calls = 0

    def _maybe_fail(self, what: str) -> None:
        self.calls += 1
        if self.hiccups[what] > 0:
            self.hiccups[what] -= 1
            raise self.fault

    async def preferences(self) -> dict[str, Any]:
        self._maybe_fail("prefs")
        currency = {"HomeCurrency": {"value": "CAD"}, "MultiCurrencyEnabled": True}
        return {"CurrencyPrefs": currency, "TaxPrefs": {"PartnerTaxEnabled": False}}

    async def query_all(self, query: str, entity: str) -> list[dict[str, Any]]:
        self._maybe_fail(entity)
        if entity == "TaxCode":
            return [{"Name": "GST", "Id": 3}]
        return [{"Name": "Sales", "Id": 79}]


@pytest.fixture(autouse=True)
def _no_pauses():
    """Keep the tries, drop the pauses (stamina's test mode)."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


async def test_transient_faults_are_tried_again_and_the_settings_read():
    company = _Company(hiccups=3)
    settings = await read_settings(cast(QboClient, company))
    assert settings["home_currency"] == "CAD" and settings["multicurrency"]
    assert settings["tax_codes"] == {"GST": "3"}
    assert settings["accounts"] == {"Sales": "79"}
    assert company.calls == 3 * 4  # three reads, each failing three times first


async def test_the_read_gives_up_after_its_tries():
    company = _Company(hiccups=SETTINGS_TRIES)
    with pytest.raises(QboTransientError):
        await read_settings(cast(QboClient, company))
    assert company.calls == SETTINGS_TRIES


async def test_a_refusal_is_not_tried_again():
    company = _Company(hiccups=1, fault=QboAuthError("revoked", "3200"))
    with pytest.raises(QboAuthError):
        await read_settings(cast(QboClient, company))
    assert company.calls == 1
