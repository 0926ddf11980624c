"""qbo.md §1 and §5: the query language and its response shapes."""

from __future__ import annotations

import pytest

from tests.sandbox_process import Connection


async def _q(qbo: Connection, text: str, expect: int = 200):
    return await qbo.call("GET", "query", params={"query": text}, expect=expect)


async def test_response_shapes(qbo: Connection):
    """§1: rows, startPosition, maxResults = rows returned; totalCount for Invoice only."""
    customer, item = await qbo.customer(), await qbo.item()
    for _ in range(3):
        await qbo.invoice(customer, item)
    rows = (await _q(qbo, "select * from Invoice maxresults 2"))["QueryResponse"]
    assert (
        len(rows["Invoice"]),
        rows["startPosition"],
        rows["maxResults"],
        rows["totalCount"],
    ) == (2, 1, 2, 3)
    customers = (await _q(qbo, "select * from Customer"))["QueryResponse"]
    assert "totalCount" not in customers
    assert (await _q(qbo, "select * from Invoice where DocNumber = 'none'"))[
        "QueryResponse"
    ] == {}
    assert (await _q(qbo, "SELECT count(*) FROM Invoice"))["QueryResponse"] == {
        "totalCount": 3
    }


async def test_operators_escapes_and_case(qbo: Connection):
    """§5: = < > <= >= IN LIKE; backslash-escaped quotes; keywords and fields case-blind."""
    for name in ("King's Groceries", "Kingston Ltd", "Acme"):
        await qbo.customer(name)
    found = await _q(
        qbo, r"select * from Customer where DisplayName = 'King\'s Groceries'"
    )
    assert [c["DisplayName"] for c in found["QueryResponse"]["Customer"]] == [
        "King's Groceries"
    ]
    like = await _q(
        qbo,
        "SELECT * FROM customer WHERE displayname LIKE 'King%' ORDERBY DisplayName DESC",
    )
    assert [c["DisplayName"] for c in like["QueryResponse"]["Customer"]] == [
        "Kingston Ltd",
        "King's Groceries",
    ]
    ids = [c["Id"] for c in like["QueryResponse"]["Customer"]]
    inside = await _q(
        qbo, f"select * from Customer where Id in ('{ids[0]}', '{ids[1]}')"
    )
    assert len(inside["QueryResponse"]["Customer"]) == 2
    balance = await _q(
        qbo, "select * from Customer where Balance >= '0' and Balance < '1'"
    )
    assert len(balance["QueryResponse"]["Customer"]) == 3


async def test_paging(qbo: Connection):
    """§5: STARTPOSITION is 1-based; MAXRESULTS at most 1000."""
    for n in range(5):
        await qbo.customer(f"C{n}")
    page = await _q(
        qbo, "select * from Customer orderby DisplayName startposition 3 maxresults 2"
    )
    assert [c["DisplayName"] for c in page["QueryResponse"]["Customer"]] == ["C2", "C3"]
    assert page["QueryResponse"]["startPosition"] == 3


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (
            "select * from Customer startposition 0",
            "value 0 is too small. Min allowed value is 1",
        ),
        ("select * from Customer maxresults 1001", "Max allowed value is 1000"),
        ("select * from Customer where Id = '1' or Id = '2'", "OR is not supported"),
        ("select * from Nothing", "Invalid context declaration"),
        ("select DisplayName from Customer", "Only SELECT *"),
        ("select * from Customer where Id != '1'", "not supported"),
    ],
)
async def test_bad_queries_are_4001(qbo: Connection, text, detail):
    """§5: what the language refuses gives 400 Fault 4001."""
    fault = await _q(qbo, text, expect=400)
    error = fault["Fault"]["Error"][0]
    assert error["code"] == "4001"
    assert detail in error["Detail"]


async def test_post_query_and_inactive_and_metadata(qbo: Connection):
    """§5: POST with application/text; inactive name-list objects hidden; MetaData filter."""
    customer = await qbo.customer("Gone Co")
    await qbo.call(
        "POST",
        "customer",
        {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Active": False},
    )
    status, _, data = await qbo.call(
        "POST", "query", None, raw=True, params=None, expect=400
    )
    assert status == 400
    url = f"{qbo.origin}/v3/company/{qbo.realm}/query"
    headers = {
        "Authorization": f"Bearer {qbo.tokens['access_token']}",
        "Content-Type": "application/text",
        "Accept": "application/json",
    }
    async with qbo.session.post(
        url, data="select * from Customer", headers=headers
    ) as r:
        assert r.status == 200
        assert (await r.json())["QueryResponse"] == {}
    inactive = await _q(qbo, "select * from Customer where Active = false")
    assert [c["DisplayName"] for c in inactive["QueryResponse"]["Customer"]] == [
        "Gone Co"
    ]
    recent = await _q(
        qbo,
        "select * from Customer where Active = false and MetaData.LastUpdatedTime > '2020-01-01T00:00:00-07:00'",
    )
    assert len(recent["QueryResponse"]["Customer"]) == 1
