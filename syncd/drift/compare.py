"""One invoice, the CRM's side against QBO's: the differences and their causes. Pure.

What the CRM last said is the invoice syncd keeps: its status and total from the CRM's
snapshot, and its content as syncd last wrote it to QBO (`pushed_body`: the snapshot
mapped through the rules, so an item name and its QBO Item compare as one). What QBO
holds is the invoice QBO answers now. Amounts compare as decimals to the cent, dates as
dates, text with its whitespace collapsed: "100" and "100.00", or a trailing space, are
never a difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from syncd.engine.qbo_events import qbo_status, token_floor
from syncd.models import Invoice, SyncState
from syncd.rules.model import Rules

CENT = Decimal("0.01")
CDC_WINDOW = timedelta(days=30)  # older QBO changes: neither CDC nor a webhook tells
SAFETY = timedelta(seconds=2)  # QBO's clock and syncd's differ a little

# field → the [drift.owner] group that decides who wins
GROUP = {
    "invoice": "existence",
    "status": "status",
    "total": "lines",
    "tax": "lines",
    "lines": "lines",
    "due_date": "due_date",
    "customer": "customer",
    "balance": "payments",  # what payments and credits left open
}
# cause → what the report says
CAUSES = {
    "qbo_edited": "edited in QBO by hand after syncd's last write",
    "missed": "changed in QBO; the webhook and CDC both missed it",
    "deleted_in_qbo": "deleted in QBO",
    "refused": "a move the rules refused",
    "other_company": "synced to another QBO company",
    "merged_customer": "the customer was merged in QBO",
    "not_synced": "syncd's write to QBO failed",
    "created_in_qbo": "created in QBO; the CRM was never told",
    "unknown": "no cause syncd can tell",
}
# QBO's state of an invoice → the QBO event whose [qbo_events] status the CRM should have
_EVENT_OF = {
    "paid": "payment_created",
    "partially_paid": "payment_created_partial",
    "voided": "invoice_voided",
    "deleted": "invoice_deleted",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """One difference on one invoice, before any action."""

    field: str
    crm: str | None
    qbo: str | None
    cause: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """What the check knows beyond the two invoices (read once for every invoice)."""

    now: datetime
    rules: Rules
    gone_customers: frozenset[str] = frozenset()  # QBO customers merged away or deleted
    paying: frozenset[str] = frozenset()  # invoices with syncd's own payments under way


def drift(inv: Invoice, obj: dict[str, Any] | None, seen: Seen) -> list[Found]:
    """Where `inv` (the CRM's side) and `obj` (QBO's, None: not in QBO) disagree."""
    if inv.sync_state is SyncState.PENDING or inv.invoice_id in seen.paying:
        return []  # syncd's own write is under way: nothing has settled to compare
    if obj is None:
        return _missing(inv, seen)
    found = _status(inv, obj, seen) + _balance(inv, obj)
    voided = qbo_status(obj, seen.now.date()) == "voided"  # its amounts are zeroed
    if (
        inv.pushed_body is not None
        and inv.sync_state is SyncState.SYNCED
        and not voided
    ):
        found += _content(inv, obj, seen)
    return found


def _missing(inv: Invoice, seen: Seen) -> list[Found]:
    if inv.sync_state is SyncState.OTHER_COMPANY:
        return [_gone(inv, "other_company")]
    if inv.qbo_id is None:
        if inv.sync_state is SyncState.FAILED and inv.status in seen.rules.sync.on:
            return [_gone(inv, "not_synced")]
        return []  # never meant for QBO (a draft, filtered out, before `since`)
    if inv.qbo_status == "deleted":
        # syncd deleted it (the CRM asked), or saw QBO's delete and told the CRM on its
        # state, with a move through the rules (a refused one is an open failure)
        return []
    return [_gone(inv, "deleted_in_qbo")]


def _gone(inv: Invoice, cause: str) -> Found:
    return Found(field="invoice", crm=inv.status, qbo=None, cause=cause)


def _status(inv: Invoice, obj: dict[str, Any], seen: Seen) -> list[Found]:
    now_status = _plain(qbo_status(obj, seen.now.date()))
    return _status_against(inv, now_status, _plain(inv.qbo_status), seen)


def _status_against(inv: Invoice, qbo: str, known: str, seen: Seen) -> list[Found]:
    """The CRM's status against the one [qbo_events] gives QBO's state."""
    rules = seen.rules
    event = _EVENT_OF.get(qbo)
    paid = {
        rules.qbo_events.get(e) for e in ("payment_created", "payment_created_partial")
    }
    if event is None and qbo == "open" and inv.status in paid - {""}:
        event = "payment_removed"  # paid in the CRM, not (any more) in QBO
    target = rules.qbo_events.get(event, "") if event else ""
    if not target or target == inv.status:
        return []
    if inv.status in rules.sync.void_on + rules.sync.delete_on:
        cause = "not_synced"  # the CRM voided or deleted it; QBO never followed
    elif known == qbo:  # syncd saw QBO's state: the CRM's status could not follow
        cause = "refused" if not rules.allows(inv.status, target) else "unknown"
    else:
        cause = "missed"
    return [Found(field="status", crm=inv.status, qbo=qbo, cause=cause)]


def _plain(status: str | None) -> str:
    """Overdue is open with a date passed: the day's pass marks it, not a difference."""
    return "open" if status == "overdue" else (status or "")


def _balance(inv: Invoice, obj: dict[str, Any]) -> list[Found]:
    """The balance the CRM was last told (payments and credits in QBO) against QBO's."""
    told, now = _money(inv.balance), _money(obj.get("Balance"))
    if told is None or now is None or told == now:
        return []
    paid_by = sorted(
        str(t.get("TxnId"))
        for t in obj.get("LinkedTxn") or []
        if t.get("TxnType") == "Payment"
    )  # which QBO payments (and credits, applied by payments) make QBO's balance
    qbo = f"{now} (payments {', '.join(paid_by)})" if paid_by else str(now)
    return [Found(field="balance", crm=str(told), qbo=qbo, cause="missed")]


def _content(inv: Invoice, obj: dict[str, Any], seen: Seen) -> list[Found]:
    """What the CRM owns: lines, total, tax, due date, customer."""
    pushed = inv.pushed_body or {}
    found: list[Found] = []
    ours, theirs = _lines(pushed.get("Line")), _lines(obj.get("Line"))
    crm_total, qbo_total = _money(inv.total), _money(obj.get("TotalAmt"))
    same = _same_lines(ours, theirs)
    if not same:
        found.append(Found(field="lines", crm=_said(ours), qbo=_said(theirs), cause=""))
    if crm_total is not None and qbo_total is not None and crm_total != qbo_total:
        # the lines agree: what differs is the tax QBO computed
        what = "total" if not same else "tax"
        crm, qbo = str(crm_total), str(qbo_total)
        if what == "tax":
            tax = _money((obj.get("TxnTaxDetail") or {}).get("TotalTax")) or Decimal(0)
            crm, qbo = str(crm_total - qbo_total + tax), str(tax)
        found.append(Found(field=what, crm=crm, qbo=qbo, cause=""))
    due_crm, due_qbo = _day(pushed.get("DueDate")), _day(obj.get("DueDate"))
    if due_crm is not None and due_crm != due_qbo:
        found.append(
            Found(field="due_date", crm=str(due_crm), qbo=str(due_qbo), cause="")
        )
    ours_c = str((pushed.get("CustomerRef") or {}).get("value") or "")
    theirs_c = str((obj.get("CustomerRef") or {}).get("value") or "")
    if ours_c and ours_c != theirs_c:
        merged = ours_c in seen.gone_customers
        name = (obj.get("CustomerRef") or {}).get("name")
        found.append(
            Found(
                field="customer",
                crm=ours_c,
                qbo=f"{theirs_c} ({name})" if name else theirs_c,
                cause="merged_customer" if merged else "",
            )
        )
    cause = _edit_cause(inv, obj, seen.now)
    return [f if f.cause else _with(f, cause) for f in found]


def _with(found: Found, cause: str) -> Found:
    return Found(field=found.field, crm=found.crm, qbo=found.qbo, cause=cause)


def _edit_cause(inv: Invoice, obj: dict[str, Any], now: datetime) -> str:
    """Why QBO's content differs from what syncd wrote."""
    changed = _time((obj.get("MetaData") or {}).get("LastUpdatedTime"))
    floor = token_floor(inv.qbo_sync_token)
    unseen = floor is not None and _int(obj.get("SyncToken")) > floor
    if changed is not None and unseen and changed < now - CDC_WINDOW:
        return "missed"  # past CDC's window, and syncd never heard of it
    # QBO keeps whole seconds: a change within them of syncd's write is after it (what
    # syncd wrote is what QBO answered, so a write alone leaves no difference)
    written = inv.last_synced_at
    if changed is not None and (written is None or changed >= written - SAFETY):
        return "qbo_edited"
    return "unknown"


# a line as compared: kind, amount, item, quantity, unit price, description, discount
_Line = tuple[
    str,
    Decimal | None,
    str | None,
    Decimal | None,
    Decimal | None,
    str | None,
    str | None,
]


def _lines(lines: Any) -> list[_Line]:
    """Item and discount lines, QBO's own subtotal line left out, in their order."""
    out: list[_Line] = []
    for line in lines if isinstance(lines, list) else []:
        kind = str(line.get("DetailType") or "")
        if kind == "SubTotalLineDetail":
            continue
        detail = line.get(kind) or {}
        discount = ""
        if kind == "DiscountLineDetail":
            percent = _money(detail.get("DiscountPercent"))
            discount = f"{percent}%" if detail.get("PercentBased") else ""
        out.append(
            (
                kind,
                _money(line.get("Amount")),
                str((detail.get("ItemRef") or {}).get("value") or "") or None,
                _number(detail.get("Qty")),
                _number(detail.get("UnitPrice")),
                _text(line.get("Description")) or None,
                discount or None,
            )
        )
    return out


def _same_lines(ours: list[_Line], theirs: list[_Line]) -> bool:
    """Each line as syncd wrote it.

    What syncd left out (a quantity, a discount's amount) QBO fills in: no difference.
    """
    if len(ours) != len(theirs):
        return False
    return all(
        all(o is None or o == t for o, t in zip(mine, qbos, strict=True))
        for mine, qbos in zip(ours, theirs, strict=True)
    )


def _said(lines: list[_Line]) -> str:
    """Lines for a person: `item x qty = amount "description"`, one per line."""
    said = []
    for kind, amount, item, qty, _price, text, discount in lines:
        if kind == "DiscountLineDetail":
            said.append(f"discount {discount or amount}")
            continue
        qty_part = f" x {qty.normalize()}" if qty is not None else ""
        said.append(
            f"item {item}{qty_part} = {amount}" + (f' "{text}"' if text else "")
        )
    return "; ".join(said)


def _money(value: Any) -> Decimal | None:
    number = _number(value)
    return number.quantize(CENT, ROUND_HALF_UP) if number is not None else None


def _number(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _text(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value or "")).strip()


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1
