"""Rules files: the contract's format, and every problem `syncd check` must report (RO7)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from syncd.exceptions import ConfigError
from syncd.rules import model as rules_module
from syncd.rules.model import CustomerRules, TaxRules, load_rules, parse_rules

DEFAULT = Path(__file__).resolve().parent.parent / "rules" / "default.toml"


def _default() -> dict[str, Any]:
    return tomllib.loads(DEFAULT.read_text())


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_rules(data, "r.toml")
    return info.value.problems


def test_default_rules_load():
    """The shipped rules are valid and keep the contract's statuses and moves."""
    rules = load_rules(DEFAULT)
    assert rules.initial == "draft"
    assert rules.final == {"voided", "deleted"}
    assert rules.allows("draft", "open")
    assert not rules.allows("draft", "paid")
    assert rules.sync.on == ("open", "sent")
    assert str(rules.sync.min_total) == "0.01"
    assert rules.qbo_events["payment_created"] == "paid"


def test_unknown_keys_are_reported_with_their_path():
    """A typo anywhere is an error, named with file and key."""
    data = _default()
    data["syncc"] = {}
    data["sync"]["onn"] = ["open"]
    data["customers"]["matchh"] = "email"
    problems = _problems(data)
    assert any(p.startswith("r.toml: syncc: unknown key") for p in problems)
    assert any(p.startswith("r.toml: sync.onn: unknown key") for p in problems)
    assert any(p.startswith("r.toml: customers.matchh: unknown key") for p in problems)


def test_unknown_statuses_in_moves_are_reported():
    """Moves may only name declared statuses, on either side."""
    data = _default()
    data["moves"]["drafted"] = ["open"]
    data["moves"]["open"] = ["sent", "payed"]
    problems = _problems(data)
    assert "r.toml: moves.drafted: unknown status 'drafted'" in problems
    assert "r.toml: moves.open: unknown status 'payed'" in problems


def test_moves_out_of_final_statuses_are_refused():
    """PD7: a voided invoice is final; a move out of it is a rules error."""
    data = _default()
    data["moves"]["voided"] = ["open"]
    assert "r.toml: moves.voided: 'voided' is final: no move may leave it" in _problems(
        data
    )


def test_sync_status_that_no_move_reaches_is_refused():
    """RO7: a sync.on status unreachable from the initial status would never sync."""
    data = _default()
    data["statuses"]["all"].append("archived")
    data["sync"]["on"] = ["open", "archived"]
    problems = _problems(data)
    assert any(
        p.startswith("r.toml: sync.on: 'archived' cannot be reached from 'draft'")
        for p in problems
    )


def test_qbo_event_status_that_no_move_reaches_is_refused():
    """RO7: a QBO event mapped to a status nothing moves into never works."""
    data = _default()
    data["statuses"]["all"].append("settled")
    data["qbo_events"]["payment_created"] = "settled"
    assert any(
        p.startswith("r.toml: qbo_events.payment_created: 'settled' cannot be reached")
        for p in _problems(data)
    )


def test_qbo_event_target_no_synced_status_moves_to_is_refused():
    """RO7: reachable is not enough; a synced invoice must be able to move there."""
    data = _default()
    # 'archived' is reachable only from draft, but invoices sync in open/sent: from
    # there no move leads back to draft or archived
    data["statuses"]["all"].append("archived")
    data["moves"]["draft"] = ["open", "deleted", "archived"]
    data["moves"]["open"] = ["sent", "partially_paid", "paid", "overdue", "voided"]
    data["qbo_events"]["invoice_updated"] = "archived"
    problems = _problems(data)
    assert any(
        p.startswith("r.toml: qbo_events.invoice_updated: no status a synced invoice")
        for p in problems
    )


def test_unknown_statuses_elsewhere_are_reported():
    """initial, final, sync lists and qbo_events must name declared statuses."""
    data = _default()
    data["statuses"]["initial"] = "new"
    data["statuses"]["final"] = ["voided", "gone"]
    data["sync"]["send_on"] = ["mailed"]
    data["qbo_events"]["invoice_voided"] = "cancelled"
    problems = _problems(data)
    assert "r.toml: statuses.initial: unknown status 'new'" in problems
    assert "r.toml: statuses.final: unknown status 'gone'" in problems
    assert "r.toml: sync.send_on: unknown status 'mailed'" in problems
    assert "r.toml: qbo_events.invoice_voided: unknown status 'cancelled'" in problems


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("sync", "on", "open", "sync.on: must be a list of strings"),
        ("sync", "since", "yesterday", "sync.since: 'yesterday' is not"),
        ("customers", "match", "phone", "customers.match: 'phone' is not one of"),
        (
            "customers",
            "create_missing",
            "yes",
            "customers.create_missing: must be true",
        ),
        ("items", "on_missing", "skip", "items.on_missing: 'skip' is not one of"),
        ("fields", "due_days", -1, "fields.due_days: must be at least 0"),
        ("fields", "due_days", "30", "fields.due_days: must be an integer"),
        ("fields", "due_days", 3000000, "fields.due_days: must be at most 3650"),
        ("reviews", "on_first_payment", 1, "reviews.on_first_payment: must be true"),
    ],
)
def test_mistyped_values_are_reported(section, key, value, expected):
    """Every value is type-checked, and the problem names the key."""
    data = _default()
    data[section][key] = value
    assert any(p.startswith(f"r.toml: {expected}") for p in _problems(data))


def test_money_in_rules_must_be_a_decimal_string():
    """A float minimum total is refused (money is never a float)."""
    data = _default()
    data["sync"]["filters"]["min_total"] = 0.01
    assert any(
        "sync.filters.min_total: must be a decimal string" in p for p in _problems(data)
    )


def test_every_problem_is_listed_at_once():
    """Problems are collected, not reported one per run."""
    data = _default()
    data["moves"]["voided"] = ["open"]
    data["moves"]["open"].append("nowhere")
    data["extra"] = 1
    assert len(_problems(data)) >= 3


def test_bad_toml_and_missing_file_are_reported(tmp_path: Path):
    """Syntax errors and unreadable files are problems too, never tracebacks."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[moves\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_refusal_explains_what_to_change():
    """The refusal text names the move, what is allowed, and the rule to edit."""
    rules = load_rules(DEFAULT)
    text = rules.explain_refusal("draft", "paid")
    assert "draft → paid" in text
    assert "open, deleted" in text
    assert "[moves] draft" in text
    assert "final" in rules.explain_refusal("voided", "open")


def test_absent_sections_take_their_dataclass_defaults():
    """One place for each default: a section left out is its dataclass's defaults."""
    data = _default()
    for section in ("customers", "items", "taxes", "payments", "fields", "reviews"):
        data.pop(section, None)
    rules = parse_rules(data, "t.toml")
    assert rules.customers == CustomerRules()
    assert rules.taxes == TaxRules()
    assert (rules.items.on_missing, rules.payments.deposit_account) == (
        "create",
        "Undeposited Funds",
    )
    assert (rules.fields.due_days, dict(rules.fields.custom)) == (30, {})
    data["taxes"] = {"method": "override", "map": {"VAT20": "TAX"}}
    taxes = parse_rules(data, "t.toml").taxes
    assert (taxes.method, dict(taxes.map), taxes.after_discount) == (
        "override",
        {"VAT20": "TAX"},
        True,
    )


def test_deeply_nested_toml_is_a_problem_not_a_recursion_error(tmp_path):
    """Issue 22 §9: tomllib recurses; 2,000 levels were a RecursionError everywhere."""
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(ConfigError, match="not valid TOML: nested too deeply"):
        load_rules(path)


def test_the_reachability_check_walks_the_moves_once(monkeypatch):
    """Issue 22 §5: a walk per sync.on status per QBO event made an 80 KB file 7 s.

    2,500 statuses in a ring, all of them in sync.on: the moves are walked a bounded
    number of times, whatever the number of statuses.
    """
    walks = []
    real = rules_module._reachable_from

    def counted(starts, moves):
        walks.append(len(starts))
        return real(starts, moves)

    monkeypatch.setattr(rules_module, "_reachable_from", counted)
    names = [f"s{n}" for n in range(2500)]
    ring = "\n".join(
        f'{a} = ["{b}"]' for a, b in zip(names, names[1:] + names[:1], strict=True)
    )
    text = (
        f"[statuses]\nall = {names!r}\n[moves]\n{ring}\n"
        f"[sync]\non = {names!r}\n"
        '[qbo_events]\ninvoice_updated = "s1"\npayment_created = "s2"\n'
        'payment_created_partial = "s3"\ninvoice_voided = "s4"\ninvoice_deleted = "s5"\n'
    ).replace("'", '"')
    rules = parse_rules(tomllib.loads(text), "ring")
    assert len(rules.statuses) == 2500
    assert len(walks) <= 2


def test_a_status_listed_twice_is_a_problem():
    """Issue 22 §5: 150,000 copies of one status in sync.on multiplied every check."""
    data = tomllib.loads(DEFAULT.read_text())
    data["sync"]["on"] = ["open"] * 1000
    with pytest.raises(ConfigError, match=r"sync\.on: lists 'open' more than once"):
        parse_rules(data, "x")


def test_the_money_after_the_invoice_rules_are_checked():
    """Issue 26: `[payments]` fees and deletes, `[refunds]`, `payment_removed`."""
    rules = load_rules(DEFAULT)
    assert (rules.payments.fee_account, rules.payments.on_delete) == (
        "Bank Charges",
        "delete",
    )
    assert (rules.refunds.as_, rules.refunds.account) == ("refund_receipt", "")
    assert rules.qbo_events["payment_removed"] == "open"
    data = _default()
    data["payments"]["on_delete"] = "shred"
    data["refunds"]["as"] = "cheque"
    data["refunds"]["acount"] = "Checking"
    data["qbo_events"]["payment_removed"] = "reopened"
    problems = _problems(data)
    assert any(p.startswith("r.toml: payments.on_delete:") for p in problems)
    assert any(p.startswith("r.toml: refunds.as:") for p in problems)
    assert any(p.startswith("r.toml: refunds.acount: unknown key") for p in problems)
    assert "r.toml: qbo_events.payment_removed: unknown status 'reopened'" in problems


def test_the_drift_rules_are_checked():
    """Issue 27: `[drift] interval`, and each group's owner among those it can have."""
    rules = load_rules(DEFAULT)
    assert rules.drift.interval == 86400
    assert set(rules.drift.owner.values()) == {"report"}
    data = _default()
    data["drift"]["interval"] = -1
    data["drift"]["owner"]["status"] = "crm"  # QBO's payments are not undone
    data["drift"]["owner"]["lines"] = "qbo"
    data["drift"]["owner"]["notes"] = "crm"
    problems = _problems(data)
    assert any(
        p.startswith("r.toml: drift.interval: must be at least 0") for p in problems
    )
    assert any(p.startswith("r.toml: drift.owner.status:") for p in problems)
    assert any(p.startswith("r.toml: drift.owner.notes: unknown key") for p in problems)
    assert not any("drift.owner.lines" in p for p in problems)
    assert parse_rules(_default() | {"drift": {}}, "x").drift.interval == 0
