"""qbo.md §6: per-realm throttling (429, code 3001) and batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.sandbox_process import Connection, SandboxProcess


@pytest.fixture
async def tight(tmp_path) -> AsyncIterator[SandboxProcess]:
    process = SandboxProcess(tmp_path, "--per-minute", "5", "--concurrent", "2")
    await asyncio.to_thread(process.start)
    yield process
    process.stop()


async def test_over_the_minute_quota_is_429_3001(
    tight: SandboxProcess, http: aiohttp.ClientSession
):
    """§6: past the per-realm requests a minute, 429 with Fault 3001; other realms unaffected."""
    qbo = await Connection(http, tight.origin).connect()
    for _ in range(5):
        await qbo.call("GET", "preferences")
    status, _, data = await qbo.call("GET", "preferences", expect=429, raw=True)
    body = __import__("json").loads(data)
    assert body["Fault"]["type"] == "SERVICE"
    assert body["Fault"]["Error"][0]["code"] == "3001"
    assert (
        body["Fault"]["Error"][0]["Message"]
        == "message=ThrottleExceeded; errorCode=003001; statusCode=429"
    )
    other = await Connection(http, tight.origin).connect()
    await other.call("GET", "preferences")
    # the sandbox counts what was passed, by realm and limit (the chaos runs check it)
    refused = await qbo.admin("GET", "throttle")
    assert refused == {qbo.realm: {"minute": 1}}


async def test_over_the_concurrency_limit_is_429(
    tight: SandboxProcess, http: aiohttp.ClientSession
):
    """§6: more requests at once than allowed: the extra ones get 429."""
    qbo = await Connection(http, tight.origin).connect()
    await qbo.admin("PUT", "faults", {"api": {"slow": 1.0, "slow_seconds": 0.5}})
    try:
        answers = await asyncio.gather(
            *(qbo.call("GET", "preferences", expect=None, raw=True) for _ in range(4))
        )
    finally:
        await qbo.admin("PUT", "faults", {"api": {"slow": 0.0}})
    assert sorted(a[0] for a in answers) == [200, 200, 429, 429]
    assert await qbo.admin("GET", "throttle") == {qbo.realm: {"concurrent": 2}}


async def test_batch_items_answer_one_by_one(qbo: Connection):
    """§6: per-item results and Faults; queries in a batch; at most 30 items."""
    customer = await qbo.customer()
    request = {
        "BatchItemRequest": [
            {
                "bId": "1",
                "operation": "create",
                "Customer": {"DisplayName": "Batch One"},
            },
            {
                "bId": "2",
                "operation": "create",
                "Customer": {"DisplayName": customer["DisplayName"]},
            },
            {
                "bId": "3",
                "Query": "select * from Customer where DisplayName = 'Batch One'",
            },
            {
                "bId": "4",
                "operation": "update",
                "Customer": {
                    "Id": customer["Id"],
                    "SyncToken": "0",
                    "sparse": True,
                    "Notes": "b",
                },
            },
        ]
    }
    answer = await qbo.call("POST", "batch", request)
    items = {i["bId"]: i for i in answer["BatchItemResponse"]}
    assert items["1"]["Customer"]["DisplayName"] == "Batch One"
    assert items["2"]["Fault"]["Error"][0]["code"] == "6240"
    assert items["2"]["Fault"]["type"] == "ValidationFault"
    assert len(items["3"]["QueryResponse"]["Customer"]) == 1
    assert items["4"]["Customer"]["SyncToken"] == "1"
    too_many = {
        "BatchItemRequest": [
            {"bId": str(n), "Query": "select * from Item"} for n in range(31)
        ]
    }
    fault = await qbo.call("POST", "batch", too_many, expect=400)
    assert "at most 30" in fault["Fault"]["Error"][0]["Detail"]


async def test_injected_faults_are_seeded(qbo: Connection):
    """The admin API injects 429s and 5xx at a rate, repeatably with a seed."""

    async def statuses() -> list[int]:
        await qbo.admin(
            "PUT", "faults", {"seed": 7, "api": {"rate_429": 0.3, "rate_5xx": 0.3}}
        )
        out = [
            (await qbo.call("GET", "preferences", expect=None, raw=True))[0]
            for _ in range(20)
        ]
        return out

    try:
        first, second = await statuses(), await statuses()
    finally:
        await qbo.admin("PUT", "faults", {"api": {"rate_429": 0, "rate_5xx": 0}})
    assert first == second
    assert {200, 429, 500} <= set(first)


async def test_batch_requests_have_their_own_minute_quota(qbo: Connection):
    """§6: 40 batch requests a minute per realm; the 41st gets 429."""
    request = {"BatchItemRequest": [{"bId": "1", "Query": "select count(*) from Item"}]}
    for _ in range(40):
        await qbo.call("POST", "batch", request)
    fault = await qbo.call("POST", "batch", request, expect=429)
    assert fault["Fault"]["Error"][0]["code"] == "3001"
    await qbo.call("GET", "preferences")  # plain requests still pass


async def test_slow_after_commit_means_it_happened_anyway(qbo: Connection):
    """Fault: the write commits, the answer is late; the client times out, QBO has it."""
    await qbo.admin(
        "PUT", "faults", {"api": {"slow_after_commit": 1.0, "slow_seconds": 1.0}}
    )
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await qbo.customer("Late Answer Co")
    finally:
        await qbo.admin("PUT", "faults", {"api": {"slow_after_commit": 0.0}})
    found = await qbo.call(
        "GET",
        "query",
        params={"query": "select * from Customer where DisplayName = 'Late Answer Co'"},
    )
    assert len(found["QueryResponse"]["Customer"]) == 1


async def test_a_sandbox_company_allows_10_requests_a_second(tmp_path, http):
    """§10: sandbox companies are limited to 10 requests a second: the 11th is a 429."""
    process = SandboxProcess(tmp_path, "--per-second", "10")
    await asyncio.to_thread(process.start)
    try:
        qbo = await Connection(http, process.origin).connect()
        answers = [
            (await qbo.call("GET", "preferences", expect=None, raw=True))[0]
            for _ in range(11)
        ]
        assert answers[:10] == [200] * 10
        assert answers[10] == 429
        await asyncio.sleep(1.1)
        await qbo.call("GET", "preferences")
    finally:
        process.stop()
