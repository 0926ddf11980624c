"""The live rules of every tenant, with their machines, swapped whole on reload."""

from __future__ import annotations

from collections.abc import Mapping

from syncd.engine.machine import InvoiceMachine
from syncd.rules.model import Rules


class RuleBook:
    """Tenant id → its InvoiceMachine; a reload replaces all of them at once."""

    def __init__(self, rules: Mapping[str, Rules]) -> None:
        self._machines = _build(rules)

    def machine(self, tenant: str) -> InvoiceMachine | None:
        """Return the tenant's machine, or None for a tenant syncd does not serve."""
        return self._machines.get(tenant)

    @property
    def loaded(self) -> bool:
        """Tell whether rules are loaded (for /readyz)."""
        return bool(self._machines)

    def replace(self, rules: Mapping[str, Rules]) -> None:
        """Swap in new, already validated rules."""
        self._machines = _build(rules)


def _build(rules: Mapping[str, Rules]) -> dict[str, InvoiceMachine]:
    return {tenant: InvoiceMachine(r) for tenant, r in rules.items()}
