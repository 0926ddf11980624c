"""The QBO sandbox as a real process: `python -m syncd sandbox` on a free port."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import aiohttp
import simplejson

from tests.eventually import until
from tests.mosquitto import free_port

CLIENT_ID, CLIENT_SECRET, VERIFIER = "test-client", "test-secret", "test-verifier"
REDIRECT = "http://127.0.0.1:9/callback"


class SandboxProcess:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"sandbox-{self.port}.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "syncd",
            "sandbox",
            "--port",
            str(self.port),
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
            "--verifier-token",
            VERIFIER,
            # QBO's 10 a second per sandbox company is off unless a test asks for it: the
            # tests' own reads share the realm with syncd (tests/contract/test_limits.py)
            *(() if "--per-second" in self.args else ("--per-second", "0")),
            *self.args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        until(self._answers, timeout=20)

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(self.log_path.read_text())
        urllib.request.urlopen(self.origin + "/_sandbox/realms", timeout=1).close()
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


def basic() -> str:
    return "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


class Connection:
    """An app connected to one sandbox company over real HTTP, as QBO clients do."""

    def __init__(self, session: aiohttp.ClientSession, origin: str) -> None:
        self.session, self.origin = session, origin
        self.realm = ""
        self.tokens: dict[str, Any] = {}

    async def connect(self, realm: str | None = None) -> Connection:
        params = {
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": "com.intuit.quickbooks.accounting",
            "state": "s-1",
        }
        if realm:
            params["realmId"] = realm
        url = f"{self.origin}/connect/oauth2?{urlencode(params)}"
        async with self.session.get(url, allow_redirects=False) as r:
            assert r.status == 302
            callback = parse_qs(urlparse(r.headers["Location"]).query)
        assert callback["state"] == ["s-1"]
        self.realm = callback["realmId"][0]
        self.tokens = await self.token_call(
            {
                "grant_type": "authorization_code",
                "code": callback["code"][0],
                "redirect_uri": REDIRECT,
            }
        )
        return self

    async def token_call(
        self, form: dict[str, str], expect: int = 200
    ) -> dict[str, Any]:
        headers = {"Authorization": basic(), "Accept": "application/json"}
        async with self.session.post(
            f"{self.origin}/oauth2/v1/tokens/bearer", data=form, headers=headers
        ) as r:
            body = await r.json()
            assert r.status == expect, body
            return dict(body)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        expect: int | None = 200,
        token: str | None = None,
        raw: bool = False,
    ) -> Any:
        headers = {
            "Accept": "application/json",
            "Authorization": f"Bearer {token or self.tokens['access_token']}",
        }
        url = f"{self.origin}/v3/company/{self.realm}/{path}"
        data = None if body is None else simplejson.dumps(body, use_decimal=True)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(
            method, url, data=data, params=params, headers=headers
        ) as r:
            answer = await r.read()
            if expect is not None:
                assert r.status == expect, answer[:2000]
            if raw:
                return r.status, r.headers, answer
            return await r.json(loads=_loads)

    async def admin(
        self, method: str, path: str, body: Any = None, expect: int = 200
    ) -> Any:
        url = f"{self.origin}/_sandbox/{path}"
        data = None if body is None else simplejson.dumps(body, use_decimal=True)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self.session.request(method, url, data=data, headers=headers) as r:
            assert r.status == expect, await r.text()
            return await r.json(loads=_loads) if r.status != 204 else None

    async def pay_by_hand(
        self, realm: str, invoice: dict[str, Any], amount: Any
    ) -> dict[str, Any]:
        """A bookkeeper records a payment of `amount` on `invoice` in QBO."""
        body = {
            "CustomerRef": invoice["CustomerRef"],
            "TotalAmt": amount,
            "Line": [
                {
                    "Amount": amount,
                    "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
                }
            ],
        }
        answer = await self.admin("POST", f"realms/{realm}/payment", body, expect=201)
        return dict(answer["Payment"])

    async def create(
        self, entity: str, body: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        answer = await self.call("POST", entity.lower(), body, **kw)
        return dict(answer[entity])

    async def customer(self, name: str = "Acme Ltd", **extra: Any) -> dict[str, Any]:
        return await self.create("Customer", {"DisplayName": name, **extra})

    async def item(self, name: str = "Consulting") -> dict[str, Any]:
        return await self.create(
            "Item", {"Name": name, "IncomeAccountRef": {"value": "1"}}
        )

    async def invoice(
        self,
        customer: dict[str, Any],
        item: dict[str, Any],
        amount: str = "100.00",
        **extra: Any,
    ) -> dict[str, Any]:
        line = {
            "DetailType": "SalesItemLineDetail",
            "Amount": Decimal(amount),
            "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
        }
        body = {"CustomerRef": {"value": customer["Id"]}, "Line": [line], **extra}
        return await self.create("Invoice", body)


def _loads(text: str) -> Any:
    return simplejson.loads(text, use_decimal=True)
