"""QBO queries are built in one place, with every value quoted (qbo.md §4, §5)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from syncd.qbo import queries

# a literal: quotes, then anything but a quote or backslash, or a backslash escape
LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'", re.DOTALL)


@given(st.text())
def test_any_value_stays_one_literal(value):
    """No name (O'Brien, a trailing backslash…) can end the literal early."""
    quoted = queries.quote(value)
    assert LITERAL.fullmatch(quoted)
    unescaped = re.sub(r"\\(.)", r"\1", quoted[1:-1], flags=re.DOTALL)
    assert unescaped == value


def test_the_questions_syncd_asks():
    """Look-ups by name, a customer's invoices in a date range, Ids, changes since."""
    assert (
        queries.named("Customer", "DisplayName", "O'Brien")
        == r"select * from Customer where DisplayName = 'O\'Brien'"
    )
    assert queries.of_customer("Invoice", "58", "2026-01-01", None) == (
        "select * from Invoice where CustomerRef = '58' and TxnDate >= '2026-01-01'"
    )
    assert queries.by_ids("Invoice", {"9", "10"}) == (
        "select * from Invoice where Id in ('10', '9')"
    )
    assert queries.updated_since("Payment", "2026-11-01T00:00:00-08:00") == (
        "select * from Payment where MetaData.LastUpdatedTime >= "
        "'2026-11-01T00:00:00-08:00'"
    )
    assert queries.every("TaxCode") == "select * from TaxCode"
