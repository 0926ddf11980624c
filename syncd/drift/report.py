"""A drift report (issue 27): what one check found, kept whole, shown as it was kept."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True, kw_only=True)
class Difference:
    """One difference on one invoice, with its cause and what syncd did about it."""

    invoice_id: str | None  # None: an invoice only QBO has
    qbo_id: str | None
    field: str
    crm: str | None
    qbo: str | None
    cause: str
    action: str
    found_at: str  # ISO time it was first found (kept while it stays)

    @property
    def key(self) -> tuple[str | None, ...]:
        """The same difference in two checks: same invoice, field and values."""
        return (self.invoice_id, self.qbo_id, self.field, self.crm, self.qbo)

    def as_dict(self) -> dict[str, Any]:
        """As the API and `drift.found` say it."""
        return asdict(self)


@dataclass(slots=True, kw_only=True)
class Report:
    """One tenant's check."""

    tenant: str
    started_at: datetime
    checked_at: datetime
    invoices_checked: int = 0  # syncd's invoices compared
    qbo_invoices: int = 0  # QBO's invoices listed
    qbo_reads: int = 0
    reads_target: int = 0  # pages + 1 + what changed: the budget it kept to
    healed: bool = False  # the owners' mends were made (else only listed)
    differences: list[Difference] = field(default_factory=list)

    def to_json(self) -> bytes:
        """The stored and served document."""
        return orjson.dumps(
            {
                "tenant": self.tenant,
                "started_at": self.started_at.isoformat(),
                "checked_at": self.checked_at.isoformat(),
                "invoices_checked": self.invoices_checked,
                "qbo_invoices": self.qbo_invoices,
                "qbo_reads": self.qbo_reads,
                "reads_target": self.reads_target,
                "healed": self.healed,
                "differences": [d.as_dict() for d in self.differences],
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Report:
        """A stored report."""
        data = orjson.loads(raw)
        return cls(
            tenant=data["tenant"],
            started_at=datetime.fromisoformat(data["started_at"]),
            checked_at=datetime.fromisoformat(data["checked_at"]),
            invoices_checked=data["invoices_checked"],
            qbo_invoices=data["qbo_invoices"],
            qbo_reads=data["qbo_reads"],
            reads_target=data["reads_target"],
            healed=data["healed"],
            differences=[Difference(**d) for d in data["differences"]],
        )
