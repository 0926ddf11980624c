"""A real (if plain) PDF of an invoice: one page of Helvetica text, valid xref."""

from __future__ import annotations

from typing import Any


def invoice_pdf(
    company_name: str, obj: dict[str, Any], entity: str = "Invoice"
) -> bytes:
    """Render the invoice's header, lines and totals."""
    lines = [
        company_name,
        f"{entity} {obj.get('DocNumber', obj['Id'])}",
        f"Customer: {obj['CustomerRef'].get('name', obj['CustomerRef']['value'])}",
        f"Date: {obj.get('TxnDate', '')}    Due: {obj.get('DueDate', '')}",
        "",
    ]
    for line in obj.get("Line", []):
        if line.get("DetailType") == "SalesItemLineDetail":
            item = line["SalesItemLineDetail"]["ItemRef"].get("name", "")
            lines.append(f"{line.get('Description') or item}    {line['Amount']}")
    currency = obj.get("CurrencyRef", {}).get("value", "")
    lines += [
        "",
        f"Total: {obj.get('TotalAmt')} {currency}",
        f"Balance due: {obj.get('Balance', 0)} {currency}",
    ]
    return _pdf(lines)


def _escape(text: str) -> str:
    safe = text.encode("latin-1", "replace").decode("latin-1")
    return safe.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _pdf(lines: list[str]) -> bytes:
    text = ["BT", "/F1 11 Tf", "14 TL", "50 790 Td"]
    text += [f"({_escape(line)}) Tj T*" for line in lines]
    text.append("ET")
    stream = "\n".join(text).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
