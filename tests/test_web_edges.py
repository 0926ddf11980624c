"""Issue 22 §9: the admin side's small edges, each once a 500, a loop or an injection."""

from __future__ import annotations

import pytest

from syncd.web import admin, page


@pytest.mark.parametrize(
    ("number", "name"),
    [
        ("1001", "invoice-1001.pdf"),
        (
            "1\"; filename*=UTF-8''evil.html",
            "invoice-1___filename__UTF-8__evil.html.pdf",
        ),
        ("7\r\nSet-Cookie: a=b", "invoice-7__Set-Cookie__a_b.pdf"),
        ("..", "invoice-copy.pdf"),
        ("x" * 300, "invoice-" + "x" * 64 + ".pdf"),
    ],
)
def test_the_pdfs_file_name_keeps_only_safe_characters(number, name):
    """The CRM's number went into Content-Disposition as it was (parameter injection)."""
    assert admin.pdf_filename(number) == name


@pytest.mark.parametrize(
    ("value", "read"),
    [("3", 3), ("²", 1), ("٣", 1), ("-2", 1), ("9" * 40, 1), (None, 1)],
)
def test_a_page_number_is_ascii_digits_or_the_first_page(value, read):
    """`?page=²`: "²".isdigit() is True and int("²") raised (a 500)."""
    assert page._int(value, 1) == read


@pytest.mark.parametrize("value", ["²", "٣", "0", "1001", "1e3"])
def test_a_limit_is_ascii_digits_in_range(value):
    """`limit=²` answered Python's own message; `limit=٣` was taken as 3."""
    with pytest.raises(ValueError, match="a whole number from 1 to 1000"):
        admin._limit(value)


@pytest.mark.parametrize(
    ("origin", "refused"),
    [
        ("http://syncd.test:8080", True),
        ("http://10.0.0.5:8080", True),
        ("https://syncd.example.com", False),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
        ("", False),
    ],
)
def test_a_log_in_over_plain_http_off_this_machine_says_why(origin, refused):
    """The Secure cookie was dropped and the browser looped back to /login, silently."""
    why = page._plain_http_elsewhere(origin)
    assert (why is not None) is refused
    if why:
        assert "needs HTTPS" in why and origin in why
