"""qbo.md §3-§4: SyncToken, full and sparse updates, fault shapes, 401s, requestid."""

from __future__ import annotations

from decimal import Decimal

from tests.sandbox_process import Connection


async def test_synctoken_grows_and_a_stale_one_is_5010(qbo: Connection):
    """§3: +1 per change; a stale SyncToken gives 400 Fault 5010."""
    customer = await qbo.customer()
    body = {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "first"}
    updated = (await qbo.call("POST", "customer", body))["Customer"]
    assert updated["SyncToken"] == "1"
    again = (
        await qbo.call(
            "POST", "customer", {**body, "SyncToken": "1", "Notes": "second"}
        )
    )["Customer"]
    assert again["SyncToken"] == "2"
    fault = await qbo.call("POST", "customer", body, expect=400)
    error = fault["Fault"]["Error"][0]
    assert (error["code"], error["Message"]) == ("5010", "Stale Object Error")
    assert error["Detail"].startswith("Stale Object Error : You and ")


async def test_full_update_clears_omitted_fields_sparse_keeps_them(qbo: Connection):
    """§3: a full update NULLs what it omits; a sparse one changes only what it sends."""
    customer = await qbo.customer(
        Notes="keep me", PrimaryEmailAddr={"Address": "a@b.test"}
    )
    sparse = (
        await qbo.call(
            "POST",
            "customer",
            {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "new"},
        )
    )["Customer"]
    assert sparse["PrimaryEmailAddr"] == {"Address": "a@b.test"}
    assert sparse["Notes"] == "new"
    full = (
        await qbo.call(
            "POST",
            "customer",
            {"Id": customer["Id"], "SyncToken": "1", "DisplayName": "Acme Ltd"},
        )
    )["Customer"]
    assert "PrimaryEmailAddr" not in full
    assert "Notes" not in full


async def test_invoice_update_recomputes_and_keeps_payments(qbo: Connection):
    """§3: a sparse Line update replaces the lines (the sandbox's pick) and keeps the balance right."""
    customer, item = await qbo.customer(), await qbo.item()
    invoice = await qbo.invoice(customer, item, "100.00")
    await qbo.create(
        "Payment",
        {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": Decimal("40.00"),
            "Line": [
                {
                    "Amount": Decimal("40.00"),
                    "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
                }
            ],
        },
    )
    current = (await qbo.call("GET", f"invoice/{invoice['Id']}"))["Invoice"]
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("150.00"),
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    body = {
        "Id": invoice["Id"],
        "SyncToken": current["SyncToken"],
        "sparse": True,
        "Line": [line],
    }
    updated = (await qbo.call("POST", "invoice", body))["Invoice"]
    assert updated["TotalAmt"] == Decimal("150.00")
    assert updated["Balance"] == Decimal("110.00")
    assert updated["DocNumber"] == invoice["DocNumber"]
    assert len(updated["LinkedTxn"]) == 1


async def test_fault_shape_and_codes(qbo: Connection):
    """§3: Fault JSON (Error list, string code, element); 2020, 2500, 610."""
    fault = await qbo.call("POST", "invoice", {"Line": []}, expect=400)
    assert set(fault) == {"Fault", "time"}
    error = fault["Fault"]["Error"][0]
    assert (error["code"], error["element"], fault["Fault"]["type"]) == (
        "2020",
        "CustomerRef",
        "ValidationFault",
    )
    fault = await qbo.call(
        "POST", "invoice", {"CustomerRef": {"value": "99999"}, "Line": []}, expect=400
    )
    assert fault["Fault"]["Error"][0]["code"] == "2500"
    fault = await qbo.call("GET", "customer/424242", expect=400)
    assert fault["Fault"]["Error"][0]["code"] == "610"
    customer = await qbo.customer()
    fault = await qbo.call(
        "POST", "customer", {"Id": customer["Id"], "DisplayName": "x"}, expect=400
    )
    assert fault["Fault"]["Error"][0]["element"] == "SyncToken"


async def test_duplicate_doc_number_is_6140_unless_allowed(qbo: Connection):
    """§3: a DocNumber already used gives 6140; `include=allowduplicatedocnum` bypasses it."""
    customer, item = await qbo.customer(), await qbo.item()
    await qbo.invoice(customer, item, DocNumber="INV-7")
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 5,
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    body = {
        "CustomerRef": {"value": customer["Id"]},
        "Line": [line],
        "DocNumber": "INV-7",
    }
    fault = await qbo.call("POST", "invoice", body, expect=400)
    assert fault["Fault"]["Error"][0]["code"] == "6140"
    twin = (
        await qbo.call(
            "POST", "invoice", body, params={"include": "allowduplicatedocnum"}
        )
    )["Invoice"]
    assert twin["DocNumber"] == "INV-7"


async def test_auth_failures_have_the_gateways_shape(qbo: Connection, sandbox, http):
    """§3: 401 with the lower-case body, code 3200; another realm's token gives 100."""
    for token in ("", "garbage"):
        status, _, data = await qbo.call(
            "GET", "preferences", token=token or " ", expect=401, raw=True
        )
        body = __import__("json").loads(data)
        assert body["fault"]["error"][0]["code"] == "3200"
        assert body["fault"]["type"] == "AUTHENTICATION"
        assert (
            body["fault"]["error"][0]["message"]
            == "message=AuthenticationFailed; errorCode=003200; statusCode=401"
        )
        assert body["batchItemResponse"] == [] and body["cdcresponse"] == []
    other = await Connection(http, sandbox.origin).connect()
    fault = await qbo.call(
        "GET", "preferences", token=other.tokens["access_token"], expect=401
    )
    assert fault["Fault"]["Error"][0]["code"] == "100"


async def test_expired_access_token_is_3200_token_expired(qbo: Connection):
    """§8: an expired access token gives 401 3200 "Token expired"."""
    await qbo.admin("POST", "tokens/expire", {"realm": qbo.realm})
    fault = await qbo.call("GET", "preferences", expect=401)
    assert fault["fault"]["error"][0]["detail"].startswith("Token expired")


async def test_requestid_replays_the_first_answer(qbo: Connection):
    """§4: the same requestid gives the same response, not a second object."""
    body = {"DisplayName": "Only Once"}
    first = (await qbo.call("POST", "customer", body, params={"requestid": "req-1"}))[
        "Customer"
    ]
    second = (await qbo.call("POST", "customer", body, params={"requestid": "req-1"}))[
        "Customer"
    ]
    assert first["Id"] == second["Id"]
    rows = await qbo.call(
        "GET",
        "query",
        params={
            "query": "select count(*) from Customer where DisplayName = 'Only Once'"
        },
    )
    assert rows["QueryResponse"]["totalCount"] == 1
