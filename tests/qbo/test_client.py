"""syncd's QBO client against the sandbox over real HTTP: calls, errors, tokens, limits."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest
from aiohttp import web

import syncd.qbo
from syncd.exceptions import (
    QboAuthError,
    QboNotFoundError,
    QboRejectedError,
    QboStaleError,
    QboTransientError,
    StoreError,
)
from syncd.qbo import (
    App,
    BatchItem,
    Endpoints,
    MemoryTokens,
    QboAuth,
    QboClient,
    RealmLimiter,
    RefreshGate,
    authorize_url,
    exchange_code,
)
from syncd.qbo.auth import leeway
from tests.sandbox_process import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT,
    Connection,
    SandboxProcess,
)

APP = App(CLIENT_ID, CLIENT_SECRET, REDIRECT)


class HeldTokens(MemoryTokens):
    """A store whose writes wait until released (a slow disk), or fail (a full one)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = asyncio.Event(), asyncio.Event()
        self.failing = False

    async def keep(self, token: dict[str, Any]) -> None:
        self.entered.set()
        await self.release.wait()
        if self.failing:
            raise StoreError("the store cannot be used: database or disk is full")
        await super().keep(token)


async def connect(
    http: aiohttp.ClientSession,
    origin: str,
    limiter: RealmLimiter | None = None,
    store: MemoryTokens | None = None,
    gate: RefreshGate | None = None,
):
    endpoints = Endpoints.for_environment("sandbox", origin)
    async with http.get(
        authorize_url(endpoints, APP, "st-1"), allow_redirects=False
    ) as r:
        callback = parse_qs(urlparse(r.headers["Location"]).query)
    token = await exchange_code(http, endpoints, APP, callback["code"][0])
    store = store or MemoryTokens()
    auth = QboAuth(
        http,
        endpoints,
        APP,
        tenant="acme",
        realm_id=callback["realmId"][0],
        token=token,
        store=store,
        gate=gate,
    )
    return QboClient(http, endpoints.api, auth, limiter), auth, store


def test_public_names():
    """The qbo package's public surface is what its __all__ says."""
    assert sorted(syncd.qbo.__all__) == sorted(
        [
            "BATCH_ITEMS",
            "App",
            "BatchItem",
            "Endpoints",
            "MemoryTokens",
            "QboAuth",
            "QboClient",
            "RealmLimiter",
            "RefreshGate",
            "StoredToken",
            "TokenStore",
            "authorize_url",
            "exchange_code",
            "queries",
            "revoke",
            "spare",
        ]
    )


def test_endpoints_default_to_intuits_hosts():
    """Without base_url the client talks to Intuit's production or sandbox hosts."""
    assert (
        Endpoints.for_environment("production").api
        == "https://quickbooks.api.intuit.com"
    )
    sandbox = Endpoints.for_environment("sandbox")
    assert sandbox.api == "https://sandbox-quickbooks.api.intuit.com"
    assert sandbox.token == "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"


async def test_writes_reads_and_exact_money(sandbox: SandboxProcess, http):
    """Create, sparse update, query, send, void, delete, PDF; amounts stay Decimal."""
    client, _, _ = await connect(http, sandbox.origin)
    customer = await client.create("Customer", {"DisplayName": "Client Co"}, "r-1")
    item = await client.create(
        "Item", {"Name": "Work", "IncomeAccountRef": {"value": "1"}}, "r-2"
    )
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("0.10"),
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    body = {
        "CustomerRef": {"value": customer["Id"]},
        "Line": [line, {**line, "Amount": Decimal("0.20")}],
    }
    invoice = await client.create("Invoice", body, "r-3")
    assert invoice["TotalAmt"] == Decimal("0.30")  # never 0.30000000000000004
    updated = await client.update(
        "Invoice",
        {"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "n"},
        "r-4",
    )
    assert updated["SyncToken"] == "1"
    rows = await client.query(f"select * from Invoice where Id = '{invoice['Id']}'")
    assert rows["Invoice"][0]["PrivateNote"] == "n"
    sent = await client.send("Invoice", invoice["Id"], "ap@client.test")
    assert sent["EmailStatus"] == "EmailSent"
    assert (await client.pdf("Invoice", invoice["Id"])).startswith(b"%PDF-")
    voided = await client.void(
        "Invoice", {"Id": invoice["Id"], "SyncToken": sent["SyncToken"]}, "r-5"
    )
    assert voided["TotalAmt"] == 0
    again = await client.create("Invoice", body, "r-6")
    deleted = await client.delete(
        "Invoice", {"Id": again["Id"], "SyncToken": "0"}, "r-7"
    )
    assert deleted["status"] == "Deleted"
    prefs = await client.preferences()
    assert prefs["CurrencyPrefs"]["HomeCurrency"] == {"value": "USD"}


async def test_requestid_makes_a_repeated_create_the_same_object(sandbox, http):
    """A retried write with the same requestid does not create a second object."""
    client, _, _ = await connect(http, sandbox.origin)
    first = await client.create("Customer", {"DisplayName": "Once Co"}, "same-id")
    second = await client.create("Customer", {"DisplayName": "Once Co"}, "same-id")
    assert first["Id"] == second["Id"]


async def test_faults_become_errors_that_say_what_to_do(sandbox, http):
    """6240 → rejected, 5010 → stale, 610 → not found; codes and details kept."""
    client, _, _ = await connect(http, sandbox.origin)
    customer = await client.create("Customer", {"DisplayName": "Dup Co"}, "a")
    with pytest.raises(QboRejectedError) as rejected:
        await client.create("Customer", {"DisplayName": "Dup Co"}, "b")
    assert rejected.value.code == "6240"
    assert not rejected.value.retryable
    await client.update(
        "Customer",
        {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "x"},
        "c",
    )
    with pytest.raises(QboStaleError) as stale:
        await client.update(
            "Customer",
            {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "y"},
            "d",
        )
    assert stale.value.code == "5010"
    with pytest.raises(QboNotFoundError):
        await client.read("Invoice", "999999")


async def test_throttle_and_server_errors_are_transient(sandbox, http):
    """429 → transient with a minute's pause; 5xx retried in the call, then transient."""
    client, _, _ = await connect(http, sandbox.origin)
    admin = Connection(http, sandbox.origin)
    await admin.admin("PUT", "faults", {"seed": 1, "api": {"rate_429": 1.0}})
    try:
        with pytest.raises(QboTransientError) as throttled:
            await client.preferences()
        assert (throttled.value.code, throttled.value.retry_after) == ("3001", 60.0)
        assert client.calls["read"] == 1  # no in-call retry of a 429
        await admin.admin("PUT", "faults", {"api": {"rate_429": 0.0, "rate_5xx": 1.0}})
        with pytest.raises(QboTransientError):
            await client.preferences()
        assert client.calls["read"] == 1 + 3
    finally:
        await admin.admin("PUT", "faults", {"api": {"rate_429": 0.0, "rate_5xx": 0.0}})


async def test_expired_tokens_refresh_once_and_are_saved_first(sandbox, http):
    """Ten calls on an expired token make one refresh; the new token is stored."""
    client, auth, store = await connect(http, sandbox.origin)
    old_refresh = auth.refresh_token
    await Connection(http, sandbox.origin).admin(
        "POST", "tokens/expire", {"realm": client.realm_id}
    )
    await asyncio.gather(*(client.preferences() for _ in range(10)))
    assert auth.refreshes == 1
    assert [t["refresh_token"] for t in store.saved] == [auth.refresh_token]
    assert auth.refresh_token != old_refresh


async def test_a_refresh_outlives_its_cancelled_caller_and_is_kept(sandbox, http):
    """Issue 22 §8: the caller of a refresh cancelled (syncd stopping) loses no token.

    Intuit has rotated the refresh token once it answers: cancelling the save with its
    caller left the store holding the spent one, and the next start lost the connection.
    """
    store, gate = HeldTokens(), RefreshGate()
    client, auth, _ = await connect(http, sandbox.origin, store=store, gate=gate)
    old_refresh = auth.refresh_token
    await Connection(http, sandbox.origin).admin(
        "POST", "tokens/expire", {"realm": client.realm_id}
    )
    caller = asyncio.create_task(client.preferences())
    await store.entered.wait()  # Intuit answered; the new token is being saved
    caller.cancel()
    await asyncio.sleep(0)
    assert caller.cancelled()
    store.release.set()
    await gate.close()  # what a stopping syncd waits for before closing its store
    assert [t["refresh_token"] for t in store.saved] == [auth.refresh_token]
    assert auth.refresh_token != old_refresh
    assert gate.closed
    await Connection(http, sandbox.origin).admin(
        "POST", "tokens/expire", {"realm": client.realm_id}
    )
    with pytest.raises(QboTransientError, match="syncd is stopping"):
        await client.preferences()  # due again, and no refresh may start now
    assert auth.refreshes == 1


async def test_a_rotated_token_the_store_cannot_keep_is_kept_in_memory(sandbox, http):
    """Issue 22 §8: a full disk at the refresh costs no connection: saved once it can be."""
    store = HeldTokens()
    client, auth, _ = await connect(http, sandbox.origin, store=store)
    await Connection(http, sandbox.origin).admin(
        "POST", "tokens/expire", {"realm": client.realm_id}
    )
    store.failing = True
    store.release.set()
    with pytest.raises(StoreError):
        await client.preferences()
    assert store.saved == []
    store.failing = False
    await client.preferences()  # saves the token it holds first, then calls
    assert auth.refreshes == 1
    assert [t["refresh_token"] for t in store.saved] == [auth.refresh_token]


async def test_a_token_another_replica_refreshed_is_adopted_never_presented(
    sandbox, http
):
    """Issue 25: two syncd processes serve one realm from one store.

    A refreshes (the refresh token rotates); B held the old set, and before the store's
    turn re-read the token B presented the spent one: invalid_grant, tenant lost.
    """
    a_client, a_auth, store = await connect(http, sandbox.origin)
    endpoints = Endpoints.for_environment("sandbox", sandbox.origin)
    b_auth = QboAuth(
        http,
        endpoints,
        APP,
        tenant="acme",
        realm_id=a_client.realm_id,
        token=dict(a_auth._token),
        store=store,
    )
    b_client = QboClient(http, endpoints.api, b_auth)
    admin = Connection(http, sandbox.origin)
    before = (await admin.admin("GET", "tokens"))["spent_presented"]  # other tests'
    for _ in range(3):
        await admin.admin("POST", "tokens/expire", {"realm": a_client.realm_id})
        await asyncio.gather(a_client.preferences(), b_client.preferences())
    assert a_auth.refreshes + b_auth.refreshes == 3  # one refresh per expiry
    assert a_auth.adopted + b_auth.adopted == 3
    assert (
        a_auth.refresh_token == b_auth.refresh_token == store.saved[-1]["refresh_token"]
    )
    issued = await admin.admin("GET", "tokens")
    assert issued["spent_presented"] == before


def test_a_short_lived_token_is_refreshed_at_half_its_life():
    """Issue 22 §8: a 310 s token with a 300 s leeway was refreshed on every call."""
    assert leeway({"expires_in": 310}) == 155
    assert leeway({"expires_in": 3600}) == 300
    assert leeway({}) == 300


async def test_a_401_after_the_last_transient_fault_refreshes_and_answers(
    sandbox, http, aiohttp_server_of
):
    """Two 5xx, then a 401 (the token died meanwhile): one refresh, then the answer.

    The chaos run found the 401 on the last try ended in AssertionError("unreachable").
    """
    _, auth, _ = await connect(http, sandbox.origin)
    script = [503, 503, 401, 200]
    seen: list[str] = []

    async def customer(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        status = script.pop(0)
        if status == 200:
            return web.json_response({"Customer": {"Id": "7", "SyncToken": "0"}})
        fault = {"Fault": {"Error": [{"code": "3200" if status == 401 else "10000"}]}}
        return web.json_response(fault, status=status)

    origin = await aiohttp_server_of({"/v3/company/{realm}/customer": customer})
    client = QboClient(http, origin, auth)
    created = await client.create("Customer", {"DisplayName": "A"}, "rid-1")
    assert created["Id"] == "7"
    assert auth.refreshes == 1
    assert seen[2] != seen[3]  # the retry after the 401 carried the new token


async def test_a_401_again_after_a_refresh_is_transient_not_a_lost_grant(
    sandbox, http, aiohttp_server_of
):
    """A token refused again right after a refresh is tried later, not a lost grant.

    The chaos run expired the new token in that moment, and the tenant was paused as
    "reconnect needed" while its grant was fine.
    """
    _, auth, _ = await connect(http, sandbox.origin)

    async def refused(request: web.Request) -> web.Response:
        fault = {"Fault": {"Error": [{"code": "3200", "Message": "Token expired"}]}}
        return web.json_response(fault, status=401)

    origin = await aiohttp_server_of({"/v3/company/{realm}/customer": refused})
    client = QboClient(http, origin, auth)
    with pytest.raises(QboTransientError, match="again after a refresh"):
        await client.create("Customer", {"DisplayName": "A"}, "rid-1")
    assert auth.refreshes == 1


async def test_a_write_refused_after_an_unanswered_try_may_have_been_done(
    sandbox, http, aiohttp_server_of
):
    """Issue 14: a 5xx, then a 429: the write is not known undone (`maybe_written`).

    The CI chaos run found it: a batch whose first try got no answer and whose resend
    was throttled was taken as not written; its invoices were sent again in another
    batch and QBO refused them as duplicate numbers (6140). A 429 alone is a refusal.
    """
    _, auth, _ = await connect(http, sandbox.origin)
    script: list[int] = []

    async def batch(request: web.Request) -> web.Response:
        status = script.pop(0)
        code = "3001" if status == 429 else "10000"
        return web.json_response({"Fault": {"Error": [{"code": code}]}}, status=status)

    origin = await aiohttp_server_of({"/v3/company/{realm}/batch": batch})
    client = QboClient(http, origin, auth)
    item = BatchItem("1", "Customer", "create", {"DisplayName": "A"})
    script[:] = [503, 429]
    with pytest.raises(QboTransientError) as unanswered_first:
        await client.batch([item], "rid-1")
    assert unanswered_first.value.maybe_written
    script[:] = [429]
    with pytest.raises(QboTransientError) as refused:
        await client.batch([item], "rid-2")
    assert not refused.value.maybe_written
    script[:] = [503, 503, 503]
    with pytest.raises(QboTransientError) as never:
        await client.batch([item], "rid-3")
    assert never.value.maybe_written


async def test_a_revoked_grant_is_an_auth_error(sandbox, http):
    """After revoke, calls fail with QboAuthError: reconnect needed."""
    client, auth, _ = await connect(http, sandbox.origin)
    await syncd.qbo.revoke(
        http,
        Endpoints.for_environment("sandbox", sandbox.origin),
        APP,
        auth.refresh_token,
    )
    with pytest.raises(QboAuthError, match="reconnect needed"):
        await client.preferences()


# the sandbox's minute is a second (--time-scale 60); the limiter's window is a quarter
# longer: a request held up on a busy machine must not land in the sandbox's next window
# beside the one sent after it (1.05 s failed once in CI's year-ahead pass)
WINDOW = 1.25


async def test_the_limiter_keeps_under_the_quota(tmp_path, http):
    """A client limited to the realm's quota never meets a 429."""
    tight = SandboxProcess(tmp_path, "--per-minute", "5", "--time-scale", "60")
    await asyncio.to_thread(tight.start)
    try:
        client, _, _ = await connect(
            http, tight.origin, RealmLimiter(per_minute=5, window=WINDOW)
        )
        for _ in range(12):
            await client.preferences()
        assert client.calls["read"] == 12
    finally:
        tight.stop()


async def test_the_limiter_keeps_under_a_sandbox_companys_10_a_second(tmp_path, http):
    """qbo.md §10: sandbox companies allow 10 requests a second; paced at 9, none is refused."""
    sandbox = SandboxProcess(tmp_path, "--per-second", "10")
    await asyncio.to_thread(sandbox.start)
    try:
        client, _, _ = await connect(http, sandbox.origin, RealmLimiter(per_second=9))
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(client.preferences() for _ in range(30)))
        assert client.calls["read"] == 30  # every one answered 200 (a 429 would raise)
        assert asyncio.get_running_loop().time() - started >= 2.0  # 30 at 9 a second
    finally:
        sandbox.stop()


async def test_a_batch_answers_each_item_and_a_resent_batch_writes_nothing_twice(
    sandbox, http
):
    """Issue 14, qbo.md §6: creates and updates in one request, a fault per item.

    One refused item (a duplicate name) leaves the others written; the same batch
    sent again with its requestid gets the first answer, and no second object.
    """
    client, _, _ = await connect(http, sandbox.origin)
    old = await client.create("Customer", {"DisplayName": "Old Name"}, "old")
    items = [
        BatchItem("1", "Customer", "create", {"DisplayName": "Batch A"}),
        BatchItem("2", "Customer", "create", {"DisplayName": "Old Name"}),
        BatchItem(
            "3",
            "Customer",
            "update",
            {
                "Id": old["Id"],
                "SyncToken": old["SyncToken"],
                "sparse": True,
                "DisplayName": "New Name",
            },
        ),
    ]
    first = await client.batch(items, "batch-1")
    assert isinstance(first["1"], dict) and first["1"]["DisplayName"] == "Batch A"
    assert isinstance(first["2"], QboRejectedError) and first["2"].code == "6240"
    assert isinstance(first["3"], dict) and first["3"]["DisplayName"] == "New Name"
    again = await client.batch(items, "batch-1")
    assert isinstance(again["1"], dict) and again["1"]["Id"] == first["1"]["Id"]
    listed = await client.query("select * from Customer where DisplayName = 'Batch A'")
    assert len(listed["Customer"]) == 1
    assert client.calls["write"] == 3  # one create, two batch requests
    with pytest.raises(ValueError, match="1 to 30"):
        await client.batch(items * 11, "too-many")


async def test_the_limiter_keeps_batches_under_their_own_quota(tmp_path, http):
    """QBO allows 40 batch requests a minute besides the 500: paced, none is refused."""
    tight = SandboxProcess(tmp_path, "--batch-per-minute", "3", "--time-scale", "60")
    await asyncio.to_thread(tight.start)
    try:
        client, _, _ = await connect(
            http, tight.origin, RealmLimiter(window=WINDOW, batches_per_minute=3)
        )
        for n in range(7):
            item = BatchItem("1", "Customer", "create", {"DisplayName": f"Paced {n}"})
            [answer] = (await client.batch([item], f"paced-{n}")).values()
            assert isinstance(answer, dict)
        assert client.calls["write"] == 7  # a 429 would have raised
    finally:
        tight.stop()


async def goes(limiter: RealmLimiter, batch: bool = False) -> bool:
    """Whether a request is admitted at once (else it waits for the next minute)."""

    async def admitted() -> None:
        async with limiter.slot(batch):
            pass

    try:
        await asyncio.wait_for(admitted(), 0.2)
    except TimeoutError:
        return False
    return True


async def test_spare_requests_leave_the_minute_room_for_the_batches_to_come():
    """Issue 25: singles sent for spent batches take only the room batches do not need.

    A minute of 6 requests, 3 of them batches; one batch sent: two batches are still to
    come, so spare singles stop at 6 - 2 = 4 requests in the minute, and the two
    batches still go. A plain request is not held back so.
    """
    limiter = RealmLimiter(per_minute=6, batches_per_minute=3, window=60)
    assert await goes(limiter, batch=True)
    with syncd.qbo.spare():
        assert [await goes(limiter) for _ in range(4)] == [True, True, True, False]
    assert limiter.batch_free()
    assert await goes(limiter, batch=True) and await goes(limiter, batch=True)
    assert not limiter.batch_free()  # three batches in the minute: the rest waits
    assert not await goes(limiter)  # six requests in the minute


async def test_spare_requests_take_the_whole_minute_once_its_batches_are_spent():
    """With the minute's batches spent, spare singles fill every other request."""
    limiter = RealmLimiter(per_minute=5, batches_per_minute=1, window=60)
    assert await goes(limiter, batch=True)
    assert not limiter.batch_free()
    with syncd.qbo.spare():
        assert [await goes(limiter) for _ in range(5)] == [True] * 4 + [False]


@pytest.fixture
async def aiohttp_server_of():
    """A real HTTP server on a free loopback port answering the given POST routes."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Any]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_post(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()
