"""Issue 12: `syncd rules try` replays a tenant's history against new rules."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from syncd.engine.rules_try import SHOWN, compare, render, replay
from syncd.models import ChangeSet, HistoryEntry, Invoice
from syncd.rules.model import load_rules
from syncd.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "rules" / "default.toml"
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _stricter(tmp_path: Path) -> Path:
    """No more paid → open, `sent` syncs too, a QBO void goes nowhere."""
    text = DEFAULT.read_text()
    text = text.replace(
        'paid = ["partially_paid", "open"]', 'paid = ["partially_paid"]'
    )
    text = text.replace('on = ["open", "sent"]', 'on = ["open", "sent", "overdue"]')
    text = text.replace('invoice_voided = "voided"', 'invoice_voided = ""')
    path = tmp_path / "new.toml"
    path.write_text(text)
    return path


def _invoice(invoice_id: str, status: str, qbo_id: str | None = None) -> Invoice:
    return Invoice(
        tenant="acme",
        invoice_id=invoice_id,
        status=status,
        version=3,
        data={},
        updated_at=NOW,
        qbo_id=qbo_id,
    )


def _move(invoice_id: str, source: str | None, target: str, cause: str) -> HistoryEntry:
    return HistoryEntry(
        tenant="acme",
        invoice_id=invoice_id,
        from_status=source,
        to_status=target,
        cause=cause,
        event_id=f"e-{invoice_id}-{target}",
        at=NOW,
    )


def test_what_new_rules_would_change(tmp_path):
    """Refused moves, invoices that would start syncing, QBO events mapped elsewhere."""
    old, new = load_rules(DEFAULT), load_rules(_stricter(tmp_path))
    invoices = [_invoice("I-1", "open", "130"), _invoice("I-2", "overdue")]
    history = {
        "I-1": [
            _move("I-1", None, "draft", "crm invoice.upserted (created)"),
            _move("I-1", "draft", "open", "crm invoice.upserted"),
            _move("I-1", "paid", "open", "qbo invoice_updated"),
        ],
        "I-2": [_move("I-2", "open", "overdue", "qbo overdue")],
    }
    report = compare(old, new, invoices, history)
    assert report.refused == [
        "I-1: paid → open (qbo invoice_updated, 2026-11-27 10:00) would be refused"
    ]
    assert report.now_synced == ["I-2 (overdue) would be copied to QBO"]
    assert report.remapped == ["QBO invoice_voided: voided → (nothing)"]
    assert report.changes == 3
    assert render(compare(old, old, invoices, history)) == ["nothing would change"]


async def test_the_command_reads_the_tenants_store(tmp_path):
    """`syncd rules try NEW --tenant T` against the store syncd.toml names."""
    store = SqliteStore(tmp_path / "syncd.db")
    await store.open()
    inv = _invoice("I-1", "open", "130")
    await store.commit(
        ChangeSet(
            invoices={("acme", "I-1"): inv},
            history=[_move("I-1", "paid", "open", "qbo invoice_updated")],
        )
    )
    await store.close()
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[store]\nurl = "sqlite:syncd.db"\n'
        f'[[tenants]]\nid = "acme"\nrules = "{DEFAULT}"\n'
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncd",
            "rules",
            "try",
            str(_stricter(tmp_path)),
            "--tenant",
            "acme",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "history of 1 invoice(s)" in done.stdout
    assert "I-1: paid → open" in done.stdout and "3 change(s)" not in done.stdout
    assert "QBO invoice_voided: voided → (nothing)" in done.stdout


async def test_a_big_store_is_replayed_a_page_at_a_time(tmp_path, store):
    """2,500 invoices over 3 pages: every one counted, each section's list kept short."""
    old, new = load_rules(DEFAULT), load_rules(_stricter(tmp_path))
    invoices = {
        ("acme", f"I-{n}"): _invoice(f"I-{n}", "overdue" if n % 2 else "open")
        for n in range(2500)
    }
    history = [
        _move(f"I-{n}", "paid", "open", "qbo invoice_updated")
        for n in range(0, 2500, 5)
    ]
    await store.commit(ChangeSet(invoices=invoices, history=history))
    seen, report = await replay(store, "acme", old, new, page=1000)
    assert seen == 2500
    assert report.counts["now_synced"] == 1250  # every overdue one, none twice
    assert report.counts["refused"] == 500  # paid → open, one each
    assert report.counts["remapped"] == 1  # said once, not once a page
    assert len(report.now_synced) == SHOWN
    lines = render(report)
    assert "invoices that would now go to QBO (1250):" in lines
    assert f"  … and {1250 - SHOWN} more" in lines
