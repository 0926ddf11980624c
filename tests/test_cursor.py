"""The admin API's page cursors (issue 23: a decision with a test of its own)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.web import cursor


@given(st.text(), st.text())
def test_a_cursor_names_what_it_was_given(updated_at, invoice_id):
    """Any two strings go round the cursor unchanged."""
    assert cursor.decode(cursor.encode(updated_at, invoice_id)) == (
        updated_at,
        invoice_id,
    )


@pytest.mark.parametrize(
    "text",
    [
        "%%%%",
        "x" * 5000,
        "bm90IGpzb24=",
        "WzFd",
        "WyJhIiwxXQ==",
        "WyJhIiwiYiIsImMiXQ==",
        "é",
    ],
)
def test_anything_else_is_refused_with_one_reason(text):
    """Bad base64, not JSON, not a list of two strings: one message for the 400."""
    with pytest.raises(ValueError, match="after: not a cursor this API gave"):
        cursor.decode(text)
