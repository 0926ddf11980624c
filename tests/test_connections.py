"""Connection state, without Intuit: books, a company switch, sealing, reconnect needed.

A real store; the client is built but never called (no network in these tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from syncd.config import load_config
from syncd.exceptions import ConfigError, ConnectError, StoreError
from syncd.models import (
    ChangeSet,
    Connection,
    Invoice,
    Job,
    JobKind,
    Link,
    LinkKind,
    SyncState,
)
from syncd.realms.connections import Connections
from syncd.realms.secrets import Cipher
from syncd.realms.settings import custom_field_ids
from syncd.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
KEY = Fernet.generate_key().decode()
ENV = {"SYNCD_QBO_CLIENT_ID": "id", "SYNCD_QBO_CLIENT_SECRET": "secret"}


@pytest.fixture
async def connections(store) -> AsyncIterator[Connections]:
    config = load_config(ROOT / "syncd.toml", ENV)
    conns = Connections(config, store, lambda: NOW, Cipher(KEY))
    await conns.open()
    yield conns
    await conns.close()


def _synced(invoice_id: str, qbo_id: str) -> Invoice:
    return Invoice(
        tenant="acme",
        invoice_id=invoice_id,
        status="open",
        version=1,
        data={},
        updated_at=NOW,
        sync_state=SyncState.SYNCED,
        qbo_id=qbo_id,
        qbo_sync_token="0",
        qbo_doc_number=f"10{qbo_id}",
    )


async def _connect(store: SqliteStore, realm: str, key: str = KEY) -> None:
    conn = Connection(
        tenant="acme",
        realm_id=realm,
        status="connected",
        sealed_token=Cipher(key).seal(
            {"access_token": "A", "refresh_token": "R", "expires_at": 2**40}
        ),
        connected_at=NOW,
    )
    await store.save_connection(conn)


def test_custom_field_names_map_to_their_definition_ids():
    """OD2, HS9: QBO's sales-form custom fields, read once at connection."""
    prefs = {
        "SalesFormsPrefs": {
            "CustomField": [
                {
                    "CustomField": [
                        {
                            "Name": "SalesFormsPrefs.UseSalesCustom1",
                            "BooleanValue": True,
                        },
                        {
                            "Name": "SalesFormsPrefs.SalesCustomName1",
                            "StringValue": "PO Number",
                        },
                        {"Name": "SalesFormsPrefs.SalesCustomName2", "StringValue": ""},
                    ]
                }
            ]
        }
    }
    assert custom_field_ids(prefs) == {"PO Number": "1"}


async def test_a_first_connection_opens_the_books_and_builds_a_client(
    store, connections
):
    """OD1, HL8: the first company is the tenant's books, since its first connection."""
    await _connect(store, "R1")
    assert await connections.client("acme") is not None
    assert await store.books("acme") is None  # a client changes nothing (issue 23)
    await connections.open_all_books()  # at start, and at each connection
    assert await store.books("acme") == ("R1", NOW)
    stored = await store.connection("acme")
    assert stored is not None and b"refresh_token" not in stored.sealed_token


async def test_switching_company_sets_every_old_reference_aside(store, connections):
    """Issue 10: ids of the old company are never used with the new one.

    Links are forgotten; a synced invoice is `other_company` with a reason naming the
    old copy, one with a push queued is `pending` (it goes to the new company), and
    both keep a history line.
    """
    await _connect(store, "R1")
    await connections.open_all_books()
    waiting = Job.for_invoice("acme", JobKind.INVOICE_PUSH, "I-2", NOW)
    await store.commit(
        ChangeSet(
            invoices={
                ("acme", "I-1"): _synced("I-1", "7"),
                ("acme", "I-2"): _synced("I-2", "8"),
            },
            links=[Link(tenant="acme", kind=LinkKind.CUSTOMER, key="a@x", qbo_id="58")],
            jobs=[waiting],
        )
    )
    await connections.needs_reconnect("acme", "switching")
    await _connect(store, "R2")
    await connections.open_all_books()
    assert await store.books("acme") == ("R2", NOW)  # since: the first connection
    one, two = await store.invoice("acme", "I-1"), await store.invoice("acme", "I-2")
    assert one is not None and two is not None
    assert (one.sync_state, one.qbo_id) == (SyncState.OTHER_COMPANY, None)
    assert "synced to QBO company R1 as invoice 7 (#107)" in str(one.error)
    assert (two.sync_state, two.qbo_id) == (SyncState.PENDING, None)
    assert await store.link("acme", LinkKind.CUSTOMER, "a@x") is None
    [moved] = await store.history("acme", "I-1")
    assert "switched to R2" in moved.cause


async def test_reconnect_needed_pauses_the_tenant(store, connections):
    """A refused refresh: no client until the admin reconnects; the reason is kept."""
    await _connect(store, "R1")
    assert await connections.client("acme") is not None
    await connections.needs_reconnect("acme", "invalid_grant")
    assert await connections.client("acme") is None
    stored = await store.connection("acme")
    assert stored is not None
    assert (stored.status, stored.error) == ("needs_reconnect", "invalid_grant")


async def test_tokens_sealed_with_another_key_are_a_store_error(store, connections):
    """A wrong SYNCD_SECRET_KEY never yields garbage tokens: it says so."""
    await _connect(store, "R1", key=Fernet.generate_key().decode())
    with pytest.raises(StoreError, match="wrong SYNCD_SECRET_KEY"):
        await connections.client("acme")


async def test_without_a_secret_key_no_token_is_kept(store):
    """Tokens are only ever stored sealed: no key, no connection."""
    config = load_config(ROOT / "syncd.toml", ENV)
    bare = Connections(config, store, lambda: NOW, None)
    await bare.open()
    await _connect(store, "R1")
    try:
        with pytest.raises(ConfigError, match="SYNCD_SECRET_KEY"):
            await bare.client("acme")
    finally:
        await bare.close()


async def test_oauth_states_are_single_use_and_expire(store, connections):
    """OD1, issue 9 §7: a state older than ten minutes is refused, and used up."""
    url = await connections.start("acme", force=False)
    state = url.split("state=")[1].split("&")[0]
    config = load_config(ROOT / "syncd.toml", ENV)
    late = Connections(config, store, lambda: NOW + timedelta(minutes=11), Cipher(KEY))
    callback = {"state": state, "code": "C", "realmId": "R1"}
    with pytest.raises(ConnectError, match="expired state"):
        await late.finish(callback)
    with pytest.raises(ConnectError, match="unknown or expired"):
        await connections.finish(callback)  # taken once, even by a refused callback
    with pytest.raises(ConnectError, match="not served"):
        await connections.start("globex", force=False)


async def test_concurrent_first_callers_share_one_client(store, connections):
    """Issue 22 §8: two clients for one realm each refresh the same rotating token.

    After a restart the job worker and the reconciliation ask for a tenant's client at
    once; each built its own (with its own refresh lock) from the stored token, both
    refreshed, and Intuit refused the second as a spent token: reconnect needed.
    """
    await _connect(store, "R1")
    first, second, third = await asyncio.gather(
        *(connections.client("acme") for _ in range(3))
    )
    assert first is not None and first is second is third
