"""Issue 14, backfill: a history file read into messages, in dependency order."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import orjson

from syncd.backfill.handover import eta_minutes
from syncd.backfill.history import read_history

SINCE = date(2025, 1, 1)


def _write(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def _env(kind: str, data: dict[str, Any], tenant: str = "acme") -> dict[str, Any]:
    return {"id": "x", "type": kind, "tenant": tenant, "data": data}


def _inv(invoice_id: str, version: int, created: str | None, **extra: Any):
    data = {"invoice_id": invoice_id, "version": version, "status": "open", **extra}
    if created:
        data["created_at"] = created
    return _env("invoice.upserted", data)


def _pay(payment_id: str, invoice_id: Any, day: str):
    data = {
        "payment_id": payment_id,
        "amount": "1.00",
        "date": day,
        "customer": {"name": "A"},
        "currency": "USD",
        "kind": "invoice" if invoice_id else "booking",
    }
    if invoice_id:
        data["invoice_id"] = invoice_id
    return _env("payment.recorded", data)


def test_contacts_then_invoices_then_payments_newest_versions_only(tmp_path):
    """Dependency order whatever the file's order; an invoice's highest version wins."""
    path = _write(
        tmp_path / "h.jsonl",
        [
            _pay("P-2", "I-2", "2025-05-01"),
            _inv("I-2", 4, "2025-03-01", total="9.00"),
            _pay("P-1", "I-1", "2025-04-01"),
            _inv("I-1", 2, "2025-02-01"),
            _inv("I-2", 3, "2025-03-01", total="1.00"),  # older, later in the file
            _env("contact.upserted", {"contact_id": "C-1", "name": "A"}),
        ],
    )
    history = read_history(path, "acme", SINCE)
    kinds = [m.type for m in history.messages]
    assert kinds == [
        "contact.upserted",
        "invoice.upserted",
        "invoice.upserted",
        "payment.recorded",
        "payment.recorded",
    ]
    assert [m.subject for m in history.invoices] == ["I-1", "I-2"]  # oldest first
    assert history.invoices[1].data["total"] == "9.00" and history.replaced == 1
    assert all(m.data["backfill"] is True for m in history.invoices)
    assert [m.subject for m in history.payments] == ["P-1", "P-2"]


def test_what_came_before_since_stays_out_with_its_payments(tmp_path):
    """Created before `--since` (else issued before): out, and its payment too.

    A receipt (no invoice) counts by its own date.
    """
    path = _write(
        tmp_path / "h.jsonl",
        [
            _inv("OLD", 1, "2024-12-31T23:00:00+00:00"),
            _inv("ISSUED-OLD", 1, None, issue_date="2024-06-01"),
            _inv("NEW", 1, "2025-01-01"),
            _inv("UNDATED", 1, None),
            _pay("P-OLD", "OLD", "2025-02-01"),
            _pay("R-OLD", None, "2024-12-01"),
            _pay("R-NEW", None, "2025-12-01"),
        ],
    )
    history = read_history(path, "acme", SINCE)
    assert {m.subject for m in history.invoices} == {"NEW", "UNDATED"}
    assert [m.subject for m in history.payments] == ["R-NEW"]
    assert history.before_since == 4


def test_bad_lines_are_listed_and_the_rest_goes_on(tmp_path):
    """Not JSON, another tenant, an unknown type, no id: each refused with its line."""
    path = _write(
        tmp_path / "h.jsonl",
        [
            "{oops",
            _inv("B", 1, "2025-02-01") | {"tenant": "beta"},
            _env("command.void", {"invoice_id": "A"}),
            _env("invoice.upserted", {"version": 1}),
            "[1, 2]",
            "",
            _inv("A", 1, "2025-02-01"),
        ],
    )
    history = read_history(path, "acme", SINCE)
    assert [m.subject for m in history.invoices] == ["A"]
    assert [r.split(":")[0] for r in history.refused] == [
        "line 1",
        "line 2",
        "line 3",
        "line 4",
        "line 5",
    ]
    assert "tenant 'beta' is not 'acme'" in history.refused[1]


def test_message_ids_follow_the_content(tmp_path):
    """Read twice, the same ids (a rerun is deduplicated); another version, another id."""
    first = read_history(
        _write(tmp_path / "a", [_inv("A", 1, "2025-02-01")]), "acme", SINCE
    )
    again = read_history(
        _write(tmp_path / "b", [_inv("A", 1, "2025-02-01")]), "acme", SINCE
    )
    newer = read_history(
        _write(tmp_path / "c", [_inv("A", 2, "2025-02-01")]), "acme", SINCE
    )
    assert first.invoices[0].id == again.invoices[0].id != newer.invoices[0].id
    assert len(first.invoices[0].id) <= 128


def test_the_eta_follows_qbos_quota():
    """1,140 invoices a minute in batches; 412 single writes a minute beside them."""
    assert eta_minutes(1140, 0) == 1
    assert eta_minutes(0, 412) == 1
    assert eta_minutes(11400, 824) == 12


def test_a_line_syncd_would_refuse_is_listed_and_the_rest_go(tmp_path):
    """Issue 22 §9: a payment whose invoice_id is a list crashed the whole command.

    Each line now meets the door's own checks: one that syncd would refuse is listed
    with the reason, never sent, and never fatal.
    """
    path = _write(
        tmp_path / "h.jsonl",
        [
            _inv("I-1", 1, "2025-02-01"),
            _pay("P-LIST", ["I-1"], "2025-04-01"),
            _pay("P-OBJ", {"id": "I-1"}, "2025-04-01"),
            _inv("I-9999", 1, "2025-02-01", issue_date="9999-12-31"),
            _pay("P-1", "I-1", "2025-04-01"),
        ],
    )
    history = read_history(path, "acme", SINCE)
    assert [m.subject for m in history.messages] == ["I-1", "P-1"]
    assert len(history.refused) == 3
    assert "line 2: data.invoice_id must be a string" in history.refused[0]
    assert "must fall in the years 1900 to 2199" in history.refused[2]
