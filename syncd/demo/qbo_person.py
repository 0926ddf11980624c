"""A person working in QuickBooks: records and deletes payments, voids, adds items.

They use the sandbox's API with a token of their own on the tenant's company (as QBO's
own web app would), through syncd's QBO client library; syncd hears of it by webhook.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp

from syncd.demo.services import CLIENT_ID, CLIENT_SECRET, Services
from syncd.qbo import (
    App,
    Endpoints,
    MemoryTokens,
    QboAuth,
    QboClient,
    authorize_url,
    exchange_code,
)


class QboPerson:
    """Someone at the books of one company."""

    def __init__(self, client: QboClient) -> None:
        self.client = client

    @classmethod
    async def sign_in(
        cls, http: aiohttp.ClientSession, services: Services, realm: str
    ) -> QboPerson:
        """Consent for the company `realm` and take a token of their own."""
        endpoints = Endpoints.for_environment("sandbox", services.sandbox_url)
        app = App(CLIENT_ID, CLIENT_SECRET, f"{services.syncd_url}/oauth/callback")
        consent = authorize_url(endpoints, app, "person") + f"&realmId={realm}"
        async with http.get(consent, allow_redirects=False) as r:
            code = parse_qs(urlparse(r.headers["Location"]).query)["code"][0]
        token = await exchange_code(http, endpoints, app, code)
        auth = QboAuth(
            http,
            endpoints,
            app,
            tenant="person",
            realm_id=realm,
            token=token,
            store=MemoryTokens(),
        )
        return cls(QboClient(http, endpoints.api, auth))

    async def invoice(self, qbo_id: str) -> dict[str, Any]:
        """The invoice as QBO has it."""
        return await self.client.read("Invoice", qbo_id)

    async def receive_payment(self, qbo_id: str, amount: Decimal) -> dict[str, Any]:
        """Record a customer's payment against the invoice."""
        invoice = await self.invoice(qbo_id)
        body = {
            "CustomerRef": invoice["CustomerRef"],
            "TotalAmt": amount,
            "Line": [
                {
                    "Amount": amount,
                    "LinkedTxn": [{"TxnId": qbo_id, "TxnType": "Invoice"}],
                }
            ],
        }
        return await self.client.create("Payment", body, _once())

    async def rows(self, statement: str, entity: str) -> list[dict[str, Any]]:
        """What a query finds."""
        return await self.client.query_all(statement, entity)

    async def delete_payment(self, qbo_id: str) -> dict[str, Any]:
        """Delete a payment (the invoice it paid is open again)."""
        payment = await self.client.read("Payment", qbo_id)
        key = {"Id": qbo_id, "SyncToken": str(payment["SyncToken"])}
        return await self.client.delete("Payment", key, _once())

    async def void(self, qbo_id: str) -> dict[str, Any]:
        """Void the invoice."""
        invoice = await self.invoice(qbo_id)
        key = {"Id": qbo_id, "SyncToken": str(invoice["SyncToken"])}
        return await self.client.void("Invoice", key, _once())

    async def add_item(self, name: str) -> dict[str, Any]:
        """Add a service item to the product list."""
        rows = await self.client.query("select * from Account where Name = 'Services'")
        account = rows["Account"][0]["Id"]
        body = {"Name": name, "Type": "Service", "IncomeAccountRef": {"value": account}}
        return await self.client.create("Item", body, _once())


def _once() -> str:
    return "person-" + secrets.token_hex(8)
